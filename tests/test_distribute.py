"""tf.distribute on CPU: mirrored over two logical CPU devices, two workers on 127.0.0.1, mixed precision,
and clear errors for devices that are not there. Strategies run in processes of their own, so that their
TensorFlow set-up (logical devices, collective ops) stays out of the other tests' process: the workers in
processes forked after TensorFlow's import (tests/faults.py's Forked), one Ctrl-C test through the real
`python -m mnist_keras`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from faults import Forked
from mnist_keras.cli import main
from mnist_keras.train.cluster import cluster_from_flags
from mnist_keras.train.distribute import Placement, precision_policy
from mnist_keras.backend import tf
from mnist_keras.spec import Runtime

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))
without_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the messages for a missing GPU")

# SGD, not Adam: Adam is blind to a constant factor on the gradients, so it would hide a replica
# count that the loss were not divided by.
SPEC = """
name: small
seed: 3
data: {source: bundled, max_train: 1536, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers:
    - flatten
    - dense: {units: 32, activation: relu}
    - dense: 10
train:
  epochs: 2
  optimizer: {type: sgd, learning_rate: 0.1, momentum: 0.9}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""

# Sets up two logical CPU devices before TensorFlow starts, then runs each argument as a command line
# (a word with a * is the one path it matches).
TWO_CPUS = """
import glob, sys
from mnist_keras.backend import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mnist_keras.cli import main
for args in sys.argv[1:]:
    main([glob.glob(word)[0] if "*" in word else word for word in args.split()], standalone_mode=False)
"""

WEIGHTS_TOLERANCE = 1e-4  # max |difference| of any weight after 40 steps; float sums in another order
LOSS_TOLERANCE = 1e-5  # relative


def environment(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp)}


def run_dir(runs: Path, name: str) -> Path:
    (run,) = (runs / name).iterdir()
    return run


def weights(run: Path) -> list[np.ndarray]:
    from mnist_keras.model.objects import load_model

    return load_model(run / "model.keras").get_weights()


def test_mirrored_over_two_cpus_matches_one_device_and_resumes(write_spec, tmp_path):
    spec, runs = write_spec(SPEC), tmp_path / "runs"
    fit = f"fit {spec} --runs {runs}"
    commands = [f"{fit} --name single", f"{fit} --name mirrored --distribute mirrored",
                f"{fit} --name resumed --distribute mirrored --epochs 1", f"fit --resume {runs}/resumed/* --epochs 2"]
    result = subprocess.run([sys.executable, "-c", TWO_CPUS, *commands], capture_output=True, text=True,
                            timeout=300, env=environment(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epochs 2-2" in result.stdout  # the last run resumed

    metrics = {name: json.loads((run_dir(runs, name) / "metrics.json").read_text())
               for name in ("single", "mirrored", "resumed")}
    assert metrics["single"]["device"].startswith("cpu")
    assert metrics["mirrored"]["device"] == metrics["resumed"]["device"] == "mirrored over 2 logical CPU devices"
    assert metrics["mirrored"]["test"]["accuracy"] > 0.8  # it trains (chance is 0.1)
    for name in ("mirrored", "resumed"):
        for ours, single in zip(metrics[name]["history"], metrics["single"]["history"]):
            assert ours["loss"] == pytest.approx(single["loss"], rel=LOSS_TOLERANCE)
        assert metrics[name]["test"]["loss"] == pytest.approx(metrics["single"]["test"]["loss"], rel=LOSS_TOLERANCE)
        differences = [np.abs(a - b).max() for a, b in zip(weights(run_dir(runs, name)), weights(run_dir(runs, "single")))]
        assert max(differences) < WEIGHTS_TOLERANCE
    assert list((tmp_path).glob("mnist-keras-worker-*")) == []


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ended(procs: list, within: float = 240) -> tuple[list, list[str]]:
    """The workers' exit codes and outputs once all have ended (killed, and None, when still running after
    `within` seconds)."""
    deadline, codes = time.monotonic() + within, []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except TimeoutError:  # faults.Forked's
            proc.kill()
            proc.wait(timeout=60)
            codes.append(None)
    return codes, [proc.stdout() for proc in procs]


def test_two_workers_train_in_step_and_only_the_chief_writes(write_spec, tmp_path):
    from mnist_keras.train.loop import weights_digest
    from mnist_keras.model.objects import load_model

    spec, scratch = write_spec(SPEC), tmp_path / "tmp"
    scratch.mkdir()
    cluster = [arg for port in free_ports(2) for arg in ("--worker", f"127.0.0.1:{port}")]
    procs = []
    try:
        for index in range(2):
            procs.append(Forked("none", "fit", spec, "--epochs", "1", "--runs", tmp_path / f"runs-{index}",
                                "--distribute", "multi_worker", *cluster, "--task-index", index, cwd=tmp_path,
                                env={"TMPDIR": str(scratch)}, merge=True))
    finally:
        codes, outputs = ended(procs)
    assert codes == [0, 0], "\n".join(outputs)

    chief_run = run_dir(tmp_path / "runs-0", "small")
    metrics = json.loads((chief_run / "metrics.json").read_text())
    assert metrics["device"] == "multi_worker, worker 0 of 2 (CPU), 2 replicas in all"
    assert metrics["test"]["accuracy"] > 0.7 and len(metrics["history"]) == 1
    digest = weights_digest(load_model(chief_run / "model.keras"))
    assert metrics["weights_sha256"] == digest
    assert f"weights {digest}" in outputs[0] and f"weights {digest}" in outputs[1]  # the same weights on both
    assert "worker 1 of 2" in outputs[1] and "the chief writes the run" in outputs[1]
    assert not (tmp_path / "runs-1").exists()  # the other worker wrote no run directory
    assert list(scratch.iterdir()) == []  # and left nothing in its scratch folder


@pytest.fixture
def float32_after():
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


@without_gpu
def test_mixed_precision_keeps_logits_in_float32(write_spec, tmp_path, float32_after):
    spec = write_spec(SPEC)
    args = ["fit", str(spec), "--runs", str(tmp_path / "runs"), "--set", "runtime.mixed_precision=true",
            "--set", "data.max_train=768", "--epochs", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "on cpu" in result.output and "TensorFlow sees no GPU), mixed_bfloat16" in result.output
    from mnist_keras.model.objects import load_model

    model = load_model(run_dir(tmp_path / "runs", "small") / "model.keras")
    assert model.layers[-1].name == "float32_logits" and model.layers[-1].dtype_policy.name == "float32"
    assert {layer.dtype_policy.name for layer in model.layers[:-1]} == {"mixed_bfloat16"}
    assert model.count_params() == 784 * 32 + 32 + 32 * 10 + 10  # the float32 layer adds no parameter
    assert model(np.zeros((1, 28, 28, 1), "float32")).dtype.name == "float32"


def test_precision_policy_follows_the_device():
    on_gpu, on_cpu = Placement("gpu:0", on_gpu=True), Placement("cpu")
    assert precision_policy(Runtime(), on_gpu) == "float32"
    assert precision_policy(Runtime(mixed_precision=True), on_gpu) == "mixed_float16"
    assert precision_policy(Runtime(mixed_precision=True), on_cpu) == "mixed_bfloat16"
    assert precision_policy(Runtime(mixed_precision="bfloat16"), on_gpu) == "mixed_bfloat16"


def test_worker_flags_give_a_tf_config():
    assert cluster_from_flags(("a:1", "b:2"), 1) == {"cluster": {"worker": ["a:1", "b:2"]},
                                                     "task": {"type": "worker", "index": 1}}
    assert cluster_from_flags(("a:1,b:2", "c:3"), 2) == {"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                                                           "task": {"type": "worker", "index": 2}}
    assert cluster_from_flags((), None) is None


@without_gpu
@pytest.mark.parametrize("args, tf_config, message", [
    (["--device", "gpu"], None, "runtime.device: 'gpu' was asked for, but TensorFlow sees no GPU"),
    (["--distribute", "mirrored"], None, "'mirrored' splits each batch across this machine's GPUs, but TensorFlow sees no GPU"),
    (["--distribute", "mirrored", "--device", "cpu"], None, "but runtime.device is cpu"),
    (["--distribute", "multi_worker"], None, "multi_worker needs the cluster: set TF_CONFIG"),
    (["--distribute", "multi_worker"], "{not json", "TF_CONFIG: expected"),
    (["--distribute", "multi_worker"], '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "TF_CONFIG: task index 3 is not one of the 1 worker addresses"),
    (["--worker", "127.0.0.1:2222"], None, "--workers and --worker-index go together"),
    (["--worker", "localhost", "--task-index", "0"], None, "--workers: expected HOST:PORT"),
    (["--workers", "a:1,localhost", "--worker-index", "0"], None, "--workers: expected HOST:PORT"),
    (["--worker", "a:1", "--task-index", "1"], None, "--worker-index: 1 is not one of the 1 workers"),
    (["--workers", "a:1,b:2,a:1", "--worker-index", "1"], None, "names one address twice"),
    (["--worker", "a:1", "--task-index", "0"], None, "use them with --distribute multi_worker"),
    (["--set", "runtime.gpus=[0]"], None, "runtime.gpus: only distribute: mirrored or multi_worker takes a list"),
    (["--distribute", "mirrored", "--device", "gpu:1"], None, "runtime.device: 'gpu:1' picks one GPU"),
])
def test_missing_devices_and_bad_clusters_are_clear_errors(write_spec, tmp_path, monkeypatch, args, tf_config, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    result = CliRunner().invoke(main, ["fit", str(write_spec(SPEC)), "--runs", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_devices_lists_what_tensorflow_sees():
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("TensorFlow 2.") and lines[1].startswith("CPU:0")
    if HAS_GPU:
        assert lines[2].startswith("GPU:0") and "GiB usable" in lines[2]
    else:
        assert lines[2].startswith("no GPU")


def listening(port: int) -> bool:
    """Whether a socket listens on `port` on this machine (Linux's /proc/net/tcp, tcp6)."""
    tables = [Path(f"/proc/net/{name}") for name in ("tcp", "tcp6")]
    rows = [line.split() for table in tables if table.exists() for line in table.read_text().splitlines()[1:]]
    return any(row[1].endswith(f":{port:04X}") and row[3] == "0A" for row in rows)  # 0A: LISTEN


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_worker_waiting_for_the_others_stops_on_ctrl_c(write_spec, tmp_path, sig):
    """The wait for the other workers is inside TensorFlow's C++: Ctrl-C and SIGTERM still end it at once, in
    `python -m mnist_keras`, the real entry point (a process forked from one that loaded TensorFlow may be
    stopped otherwise than the command's own, so neither signal goes to a fork)."""
    ports = free_ports(2)
    cluster = [arg for port in ports for arg in ("--worker", f"127.0.0.1:{port}")]
    args = ["fit", str(write_spec(SPEC)), "--runs", str(tmp_path / "runs"), "--distribute", "multi_worker", *cluster,
            "--task-index", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "mnist_keras", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment(tmp_path))
    line = proc.stdout.readline()
    try:
        assert "waiting for the other workers" in line, line
        deadline = time.monotonic() + 60
        while not listening(ports[0]) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # until its server is up: it waits inside TensorFlow then
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 128 + sig  # as a shell reports a stop by the signal: 130 for Ctrl-C
        output = proc.stdout.read()
        assert f"stopped by {sig.name} while waiting for the other workers" in output
        assert "Traceback" not in output and len(output.splitlines()) <= 3, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "runs").exists()


def test_a_port_taken_on_this_machine_is_a_clear_error(write_spec, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (other,) = free_ports(1)
        result = CliRunner().invoke(main, ["fit", str(write_spec(SPEC)), "--runs", str(tmp_path / "runs"),
                                           "--distribute", "multi_worker", "--workers",
                                           f"127.0.0.1:{port},127.0.0.1:{other}", "--worker-index", "0"])
    assert result.exit_code == 2, result.output
    assert f"worker 0 of 2: cannot listen on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_workers_with_different_specs_all_stop_naming_the_one_that_differs(write_spec, tmp_path):
    spec = write_spec(SPEC)
    cluster = ["--workers", ",".join(f"127.0.0.1:{port}" for port in free_ports(2))]
    procs = [Forked("none", "fit", spec, "--runs", tmp_path / f"runs-{index}", "--distribute", "multi_worker",
                    *cluster, "--worker-index", index, *(["--set", "train.epochs=3"] if index else []),
                    cwd=tmp_path, merge=True) for index in range(2)]
    codes, outputs = ended(procs)
    assert codes == [2, 2], "\n".join(outputs)
    for output in outputs:
        assert "the spec of worker 1 at 127.0.0.1:" in output and "is not the chief's" in output, output
    assert not list((tmp_path / "runs-0").glob("*/*/checkpoints/*.keras"))  # nothing trained
