"""Several machines for real: multi_worker training and a shared sweep on hosts that are network namespaces of their
own (tests/hosts.py: each its own address on a private bridge and its own host name; each host works in a folder of
its own, as if on its own disk). Hosts are lost the two ways machines are: every process killed -9, or the link cut.
Skipped where namespaces cannot be made (not root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from hosts import Hosts, skip_reason

REASON = skip_reason()
pytestmark = [pytest.mark.hosts, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

PORT = 12345
LOST_WITHIN_S = 60  # every other worker exits this soon after a host is lost (docs/gpus-and-several-machines.md)
ACCURACY_TOLERANCE = 0.03  # the test accuracy of N workers against one process (2,000 test images)

SPEC = """
name: small
seed: 3
data: {source: bundled, max_train: 3072, validation: 256, batch_size: BATCH, shuffle: 1000}
model:
  layers:
    - flatten
    - dense: {units: 64, activation: relu}
    - dense: 10
train:
  epochs: EPOCHS
  optimizer: {type: sgd, learning_rate: RATE, momentum: 0.9}
runtime: {cluster_wait: 60}
"""


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def fit_command(spec: Path, hosts, index: int, *more: str) -> list[str]:
    """The command every host runs: the same but for its --worker-index (docs/kubernetes/train.yaml runs it)."""
    workers = ",".join(f"{host.address}:{PORT}" for host in hosts)
    return [sys.executable, "-m", "mnist_keras", "fit", str(spec), "--runs", "runs", "--distribute", "multi_worker",
            "--workers", workers, "--worker-index", str(index), *more]


class Worker:
    """One host's command, its output in a file (read while it runs)."""

    def __init__(self, host, argv: list[str], folder: Path, tag: str):
        folder.mkdir(exist_ok=True)
        self.host, self.log = host, folder / f"{tag}.log"
        with open(self.log, "w") as out:
            self.proc = host.popen(argv, cwd=folder, env=environment(), stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.host.kill()
            self.proc.wait(timeout=30)
            pytest.fail(f"{self.host.name} still ran after {timeout:.0f} s:\n{self.output()}")


def start(spec: Path, hosts, tmp: Path, tag: str, *more: str) -> list[Worker]:
    return [Worker(host, fit_command(spec, hosts, host.index, *more), tmp / f"host-{host.index}", tag) for host in hosts]


def finish(workers: list[Worker], timeout: float = 300) -> list[str]:
    codes = [worker.wait(timeout) for worker in workers]
    outputs = [worker.output() for worker in workers]
    assert codes == [0] * len(workers), "\n\n".join(outputs)
    return outputs


def chief_run(tmp: Path) -> Path:
    (run,) = (tmp / "host-0" / "runs" / "small").iterdir()
    return run


def write_spec(tmp: Path, epochs: int, batch: int = 64) -> Path:
    path = tmp / "small.yaml"
    rate = 0.1 * batch / 64  # the learning rate follows the global batch
    path.write_text(SPEC.replace("EPOCHS", str(epochs)).replace("BATCH", str(batch)).replace("RATE", f"{rate:g}"))
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The spec's metrics trained by one process, on no cluster."""
    tmp = tmp_path_factory.mktemp("one")
    spec = write_spec(tmp, 3)
    subprocess.run([sys.executable, "-m", "mnist_keras", "fit", str(spec), "--runs", str(tmp / "runs")], check=True,
                   capture_output=True, env=environment(), timeout=300)
    (run,) = (tmp / "runs" / "small").iterdir()
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("count", [2, 3])
def test_hosts_train_like_one_process_and_only_the_chief_writes(tmp_path, one_process, count):
    spec = write_spec(tmp_path, 3)
    with Hosts(count) as hosts:
        outputs = finish(start(spec, hosts, tmp_path, "fit", "--set", "runtime.steps_per_execution=epoch"))
    assert "runs as 1 under multi_worker" in outputs[0]  # Keras' loop of several steps fails under the strategy
    run = chief_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["device"] == f"multi_worker, worker 0 of {count} (CPU), {count} replicas in all"
    assert [epoch["epoch"] for epoch in metrics["history"]] == [1, 2, 3]
    assert abs(metrics["test"]["accuracy"] - one_process["test"]["accuracy"]) <= ACCURACY_TOLERANCE
    assert metrics["test"]["accuracy"] > 0.85
    # the chief alone wrote a run, its TensorBoard logs and checkpoints; every worker ends with the same weights
    assert list((run / "logs").rglob("events.out.tfevents.*")) and list((run / "checkpoints").glob("epoch-*.keras"))
    for index in range(1, count):
        assert not (tmp_path / f"host-{index}" / "runs").exists()
        assert f"weights {metrics['weights_sha256']}" in outputs[index] and "the chief writes the run" in outputs[index]
    assert json.loads((run / "state.json").read_text())["cluster"] == [f"{h.address}:{PORT}" for h in hosts]


def wait_for(worker: Worker, pattern: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, worker.output()):
        assert worker.proc.poll() is None and time.monotonic() < deadline, worker.output()
        time.sleep(0.05)


@pytest.mark.parametrize("how, victim, count", [("kill", 1, 3), ("cut", 2, 3), ("kill", 0, 2)],
                         ids=["worker-killed", "link-cut", "chief-killed"])
def test_a_lost_host_stops_every_worker_and_the_same_command_resumes(tmp_path, how, victim, count):
    spec = write_spec(tmp_path, 4, batch=16)  # 176 steps of about 10 ms an epoch
    with Hosts(count) as hosts:
        workers = start(spec, hosts, tmp_path, "first")
        wait_for(workers[0], r"epoch 2/4 ")
        time.sleep(0.5)  # into epoch 3
        lost_at = time.monotonic()
        hosts[victim].kill() if how == "kill" else hosts[victim].cut()
        others = [w for w in workers if w.host.index != victim]
        codes = [w.wait(LOST_WITHIN_S + 30) for w in others]
        took = time.monotonic() - lost_at
        assert codes == [1] * len(others), "\n\n".join(w.output() for w in others)
        assert took < LOST_WITHIN_S
        lost = f"worker {victim} at {hosts[victim].address}:{PORT}"
        for worker in others:
            errors = [line for line in worker.output().splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "Traceback" not in worker.output(), worker.output()
            assert "lost" in errors[0] and "Run the same command on every worker again" in errors[0]
            if how == "kill" or worker.host.index == 0:  # a cut worker's peers see it silent; it sees the chief so
                assert lost in errors[0], errors[0]
        if how == "cut":
            hosts[victim].kill()
            hosts[victim].reconnect()
        done = json.loads((chief_run(tmp_path) / "state.json").read_text())["epochs_done"]
        assert done in (2, 3)

        outputs = finish(start(spec, hosts, tmp_path, "again"))
    assert "resuming" in outputs[0] and f"epochs {done + 1}-4" in outputs[0]
    metrics = json.loads((chief_run(tmp_path) / "metrics.json").read_text())
    assert [epoch["epoch"] for epoch in metrics["history"]] == [1, 2, 3, 4]  # every epoch exactly once
    assert metrics["test"]["accuracy"] > 0.85
    for index in range(1, count):
        assert f"weights {metrics['weights_sha256']}" in outputs[index]


def test_an_address_that_never_answers_is_reported_in_bounded_time(tmp_path):
    spec = write_spec(tmp_path, 1)
    with Hosts(2) as hosts:
        argv = [*fit_command(spec, hosts, 0, "--set", "runtime.cluster_wait=5")]
        argv[argv.index("--workers") + 1] = f"{hosts[0].address}:{PORT},10.77.0.99:{PORT}"  # no such host
        began = time.monotonic()
        worker = Worker(hosts[0], argv, tmp_path / "host-0", "alone")
        assert worker.wait(60) == 2
    took, output = time.monotonic() - began, worker.output()
    assert took < 30, took
    assert f"worker 1 at 10.77.0.99:{PORT}: no answer" in output and "within 5 s" in output, output
    assert "Traceback" not in output and not (tmp_path / "host-0" / "runs" / "small").exists()


SWEEP_SPEC = """
name: tiny
seed: 7
data: {source: bundled, max_train: 3000, validation: 256, batch_size: 16, shuffle: 1000}
model:
  layers: [flatten, {dense: {units: 32, activation: relu}}, {dense: 10}]
train:
  epochs: 6
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
"""

SWEEP = """spec: tiny.yaml
trials: 5
sampler: random
space:
  train.optimizer.learning_rate: {loguniform: [1.0e-3, 3.0e-2]}
"""


def sweep_command(sweep_file: str, storage: str, study: str, *more: str) -> list[str]:
    """The command every host of a sweep runs (docs/kubernetes/sweep.yaml runs it)."""
    return [sys.executable, "-m", "mnist_keras", "sweep", sweep_file, "--storage", storage, "--study", study,
            "--jobs", "1", *more]


@pytest.fixture
def database_host(tmp_path):
    """Four hosts, a PostgreSQL server on the fourth (at its own address, port 5432): (hosts, storage URL)."""
    import pwd
    import shutil
    import tempfile

    from test_sweeps_postgres import BINARIES, as_owner

    if not BINARIES:
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    owner = pwd.getpwnam("postgres").pw_name  # the server refuses to run as root
    bin_dir, folder = Path(BINARIES[-1]), Path(tempfile.mkdtemp(prefix="mnist-keras-pg-"))
    shutil.chown(folder, owner)
    try:
        subprocess.run(as_owner(owner, bin_dir / "initdb", "-D", folder / "data", "-U", "postgres", "--auth=trust"),
                       check=True, capture_output=True)
        with open(folder / "data" / "pg_hba.conf", "a") as rules:  # the hosts' bridge
            rules.write("host all all 10.77.0.0/24 trust\n")
        with Hosts(4) as hosts:
            db = hosts[3]
            options = f"-p 5432 -k {folder} -c listen_addresses={db.address}"
            subprocess.run(db.command(as_owner(owner, bin_dir / "pg_ctl", "-D", folder / "data", "-o", options, "-l",
                                               folder / "log", "-w", "start")), check=True, capture_output=True)
            yield hosts[:3], f"postgresql://postgres@{db.address}:5432/postgres"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


TRIALS = """
import json, sys
import optuna
from mnist_keras.sweeps.study import quiet, retry_of
with quiet():
    trials = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1]).trials
print(json.dumps([{"number": t.number, "state": t.state.name, "params": t.params, "user_attrs": t.user_attrs,
                   "retry_of": retry_of(t)} for t in trials]))
"""


def study_trials(host, storage: str, study: str) -> list[dict]:
    """The study's trials, read on `host` (the database is on the hosts' bridge, out of this machine's reach)."""
    read = subprocess.run(host.command([sys.executable, "-c", TRIALS, storage, study]), env=environment(),
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(read.stdout)


def test_a_sweep_on_three_hosts_retries_the_trial_of_a_host_killed_mid_trial(tmp_path, database_host):
    hosts, storage = database_host
    sweepers = []
    for host in hosts:
        folder = tmp_path / f"host-{host.index}"
        folder.mkdir()
        (folder / "tiny.yaml").write_text(SWEEP_SPEC)
        (folder / "sweep.yaml").write_text(SWEEP)
        sweepers.append(Worker(host, sweep_command("sweep.yaml", storage, "shared"), folder, "sweep"))
        time.sleep(1)  # the first creates the study's tables
    deadline = time.monotonic() + 180
    while not any(json.loads(path.read_text() or "{}").get("epochs_done", 0) >= 1 and
                  json.loads(path.read_text() or "{}").get("status") == "running"
                  for path in (tmp_path / "host-1" / "runs" / "shared").glob("*/state.json")):
        assert sweepers[1].proc.poll() is None and time.monotonic() < deadline, sweepers[1].output()
        time.sleep(0.05)
    hosts[1].kill()  # in the middle of a trial: an epoch done, more to go
    (killed,) = [t for t in study_trials(hosts[0], storage, "shared")
                 if t["user_attrs"].get("run_host") == hosts[1].name and t["state"] == "RUNNING"]
    for sweeper in (sweepers[0], sweepers[2]):
        assert sweeper.wait(300) == 0, sweeper.output()

    trials = study_trials(hosts[0], storage, "shared")
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    unplanned = [t["number"] for t in trials if t["user_attrs"].get("surplus")]  # drawn by two workers at once
    assert len(complete) == 5 and [t["number"] for t in trials if t["state"] != "COMPLETE"
                                   and t["number"] not in unplanned] == [killed["number"]]
    assert all(not trial["params"] for trial in trials if trial["number"] in unplanned)  # untrained
    (retry,) = [t for t in complete if t["retry_of"] == killed["number"]]  # the killed one failed and was retried
    assert retry["params"] == killed["params"] and retry["user_attrs"]["run_host"] in (hosts[0].name, hosts[2].name)
    names = {host.name: tmp_path / f"host-{host.index}" for host in hosts}
    runs = [(t["user_attrs"]["run_host"], t["user_attrs"]["run_dir"]) for t in complete]
    assert len(set(runs)) == 5  # each trained once, to completion, in a run of its own
    for host, run_dir in runs:  # on the disk of the host that ran it
        assert json.loads((names[host] / run_dir / "state.json").read_text())["status"] == "finished"
    for host in (hosts[0], hosts[2]):
        shown = subprocess.run(host.command(sweep_command("sweep.yaml", storage, "shared", "--show")),
                               cwd=names[host.name], env=environment(), capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        table = shown.stdout
        for t in trials:
            assert re.search(rf"^\s*\d+\s+{t['number']}\s", table, re.MULTILINE), (t["number"], table)
        others = [run_dir for run_host, run_dir in runs if run_host != host.name]
        assert all(f":{run_dir}" in table for run_dir in others), table
