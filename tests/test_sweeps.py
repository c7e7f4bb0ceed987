"""Hyperparameter search on Optuna (issue 17): sweep files checked before training, studies shared by processes,
kill -9 in the middle of a trial, pruning, the best spec. Real `mnist-keras sweep` processes on the bundled sample."""

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from conftest import ROOT, in_process
from mnist_keras.cli import main

TINY = """
name: tiny
seed: 7
data: {source: bundled, max_train: 640, validation: 128, batch_size: 64, shuffle: 1000}
model:
  layers: [flatten, {dense: {units: 16, activation: relu}}, {dense: 10}]
train:
  epochs: EPOCHS
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""

SWEEP = """spec: tiny.yaml
trials: TRIALS
sampler: random
pruner: PRUNER
space:
  train.optimizer.learning_rate: {loguniform: [1.0e-3, 3.0e-2]}
  data.batch_size: {choice: [32, 64]}
"""


def write_sweep(folder: Path, trials: int = 4, epochs: int = 1, pruner: str = "none", space: str = "") -> Path:
    (folder / "tiny.yaml").write_text(TINY.replace("EPOCHS", str(epochs)))
    text = SWEEP.replace("TRIALS", str(trials)).replace("PRUNER", pruner)
    if space:
        text = text[: text.index("space:")] + space
    (folder / "sweep.yaml").write_text(text)
    return folder / "sweep.yaml"


def sweep_process(folder: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mnist_keras", "sweep", "sweep.yaml", *map(str, args)], cwd=folder,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, out + err
    assert "Traceback" not in err and "Warning" not in err, err
    return out


def trials_of(folder: Path, study: str = "sweep") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{folder / 'runs' / 'sweeps.db'}").trials


def state(run: str | Path) -> dict:
    return json.loads((Path(run) / "state.json").read_text())


# ---------------------------------------------------------------------------------- bad input


BAD = {
    "unknown spec path": ("  train.optimizer.learnin_rate: {loguniform: [1.0e-3, 1.0e-2]}\n",
                          r"sweep.yaml:6:3: space.train.optimizer.learnin_rate = 0.001: train.optimizer.learnin_rate: "
                          r"unknown key 'learnin_rate' \(did you mean 'learning_rate'\?\)"),
    "low above high": ("  train.epochs: {int: [3, 1]}\n",
                       r"sweep.yaml:6:18: space.train.epochs.int: the low end must be below the high end, got \[3, 1\]"),
    "log range from 0": ("  train.optimizer.learning_rate: {loguniform: [0, 0.1]}\n",
                         r"sweep.yaml:6:\d+: space.train.optimizer.learning_rate.loguniform: a log range needs ends "
                         r"above 0"),
    "log range below 0": ("  train.optimizer.learning_rate: {loguniform: [-1, 0.1]}\n",
                          r"sweep.yaml:6:\d+: space.train.optimizer.learning_rate.loguniform: a log range needs ends "
                          r"above 0"),
    "one choice": ("  data.batch_size: {choice: [64]}\n",
                   r"sweep.yaml:6:\d+: space.data.batch_size.choice: expected at least 2 values"),
    "unknown kind": ("  data.batch_size: {choise: [32, 64]}\n",
                     r"sweep.yaml:6:\d+: space.data.batch_size.choise: unknown key 'choise' \(did you mean 'choice'\?\)"),
    "range end not a valid spec": ("  data.batch_size: {int: [0, 64]}\n",
                                   r"sweep.yaml:6:3: space.data.batch_size = 0: data.batch_size: expected a value "
                                   r"greater than 0"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_sweep_file_is_one_placed_message_and_exit_2(tmp_path, monkeypatch, case):
    space, expected = BAD[case]
    write_sweep(tmp_path, space="space:\n" + space)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sweep", "sweep.yaml"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.match("error: " + expected, lines[0]), result.output
    assert not list(tmp_path.glob("runs/*/*/state.json"))


def test_the_shipped_sweep_file_checks():
    from mnist_keras.sweeps.file import check_points, read_sweep

    sweep = read_sweep(ROOT / "model_specs" / "sweeps" / "dense.yaml")
    check_points(sweep, [])
    assert sweep.spec_file.resolve() == ROOT / "model_specs" / "dense.yaml"


def test_unreachable_storage_and_a_study_of_another_space_are_refused(tmp_path, monkeypatch):
    write_sweep(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sweep", "sweep.yaml", "--storage", "postgresql://me:secret@127.0.0.1:9/none"])
    assert result.exit_code == 2 and "cannot open it" in result.output and "secret" not in result.output
    from mnist_keras.sweeps.search import open_search

    open_search("sweep.yaml", study="shared")  # makes the study, trains nothing
    (tmp_path / "other.yaml").write_text((tmp_path / "sweep.yaml").read_text().replace("[32, 64]", "[16, 64]"))
    result = CliRunner().invoke(main, ["sweep", "other.yaml", "--study", "shared"])
    assert result.exit_code == 2, result.output
    assert "study 'shared'" in result.output and "space differs at data.batch_size" in result.output


# ---------------------------------------------------------------------------------- real searches


def wait_for_study(db: Path, process: subprocess.Popen, name: str = "sweep") -> None:
    """Until `process` has made the study in `db` (read without writing: Optuna would make the tables itself)."""
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "the first sweep process made no study"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                if c.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone():
                    return
        except sqlite3.Error:  # no file yet, or no tables yet
            pass
        time.sleep(0.1)


def test_two_processes_share_one_sqlite_study_and_the_best_spec_loads(tmp_path):
    write_sweep(tmp_path, trials=4)
    first = sweep_process(tmp_path)
    wait_for_study(tmp_path / "runs" / "sweeps.db", first)  # the first makes the study; the second joins it
    second = sweep_process(tmp_path)
    outputs = [finish(first), finish(second)]
    trials = trials_of(tmp_path)
    assert 4 <= len(trials) <= 5  # both may start a last trial at the same moment
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(runs)) == len(runs) == len(list(tmp_path.glob("runs/sweep/*/state.json")))
    assert all(state(tmp_path / run)["status"] == "finished" for run in runs)
    assert all(re.search(r"^trial \d+: ", out, re.M) for out in outputs)  # each process trained some
    best = tmp_path / "runs" / "sweep-best.yaml"
    assert "best spec: runs/sweep-best.yaml" in outputs[1]
    import mnist_keras as mk

    spec = mk.load_spec(best)
    top = max((t for t in trials), key=lambda t: t.value)
    assert spec.data.batch_size == top.params["data.batch_size"]
    shown = in_process("sweep", "sweep.yaml", "--show", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.count(" finished ") == len(trials), shown.stdout + shown.stderr


def test_show_does_not_import_tensorflow(tmp_path):
    write_sweep(tmp_path)
    from mnist_keras.sweeps.search import open_search

    open_search(tmp_path / "sweep.yaml", runs=tmp_path / "runs")
    code = ("import sys; from click.testing import CliRunner; from mnist_keras.cli import main; "
            "r = CliRunner().invoke(main, ['sweep', 'sweep.yaml', '--show']); print(r.exit_code); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert shown.stdout.split() == ["0", "False", "False"], shown.stdout + shown.stderr


def test_kill_9_in_the_middle_of_a_trial_then_the_same_command_resumes_it(tmp_path):
    write_sweep(tmp_path, trials=2, epochs=3)
    process = sweep_process(tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until a trial's run has checkpointed an epoch (the kill may land after its last)
        running = [p.parent for p in tmp_path.glob("runs/sweep/*/state.json")
                   if state(p.parent)["status"] == "running" and state(p.parent)["epochs_done"] >= 1]
        if running:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    (killed,) = running
    resumed = in_process("sweep", "sweep.yaml", cwd=tmp_path)  # the same command, here: no second TensorFlow to load
    assert resumed.returncode == 0 and "Warning" not in resumed.stderr, resumed.stdout + resumed.stderr
    out = resumed.stdout
    trials = trials_of(tmp_path)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    crashed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(done) == 2 and len(crashed) == 1 and len(trials) == 3, [t.state for t in trials]
    (retry,) = [t for t in done if t.user_attrs["run_dir"] == crashed[0].user_attrs["run_dir"]]
    assert Path(tmp_path / retry.user_attrs["run_dir"]) == killed
    assert retry.params == crashed[0].params
    assert re.search(rf"trial {retry.number} \(retry of #{crashed[0].number}, resumed after epoch [123]\)", out), out
    assert state(killed)["status"] == "finished" and state(killed)["epochs_done"] == 3
    assert len(list(tmp_path.glob("runs/sweep/*/state.json"))) == 2  # no run trained twice
    assert f"crashed, retried as #{retry.number}" in out


def test_a_pruned_trial_stops_after_its_epoch_and_its_run_says_pruned(tmp_path, monkeypatch):
    sweep_file = write_sweep(tmp_path, trials=6, epochs=3, pruner="median")
    from mnist_keras.sweeps.search import open_search

    study = open_search(sweep_file, runs=tmp_path / "runs").study
    for _ in range(5):  # five finished trials far better than anything a tiny run reaches: the sixth is pruned
        study.add_trial(optuna.trial.create_trial(
            params={"train.optimizer.learning_rate": 0.01, "data.batch_size": 64}, value=0.999,
            distributions=_distributions(sweep_file),
            intermediate_values={0: 0.999, 1: 0.999, 2: 0.999}))
    done = in_process("sweep", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stdout + done.stderr
    out = done.stdout
    (real,) = [t for t in trials_of(tmp_path) if "run_dir" in t.user_attrs]
    assert real.state == optuna.trial.TrialState.PRUNED and "pruned after epoch 1" in out, out
    run = tmp_path / real.user_attrs["run_dir"]
    assert state(run)["status"] == "pruned" and state(run)["epochs_done"] == 1
    assert json.loads((run / "metrics.json").read_text())["status"] == "pruned"
    monkeypatch.chdir(tmp_path)
    listed = CliRunner().invoke(main, ["runs"])
    assert listed.exit_code == 0 and re.search(r"1/3 .* pruned ", listed.output), listed.output


def test_show_ranks_the_trials_writes_the_best_spec_and_the_figures(tmp_path, monkeypatch):
    sweep_file = write_sweep(tmp_path)
    from mnist_keras.sweeps.search import open_search

    from mnist_keras.spec import dump_spec

    search = open_search(sweep_file, runs=tmp_path / "runs")
    for number, (rate, batch, value) in enumerate([(0.01, 64, 0.8), (0.002, 32, 0.9), (0.02, 32, 0.7)]):
        params = {"train.optimizer.learning_rate": rate, "data.batch_size": batch}
        search.study.add_trial(optuna.trial.create_trial(
            params=params, value=value, distributions=_distributions(sweep_file),
            user_attrs={"epochs": 1, "run_dir": f"runs/sweep/{number}",
                        "spec": dump_spec(search.sweep.load_point(params, []))}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sweep", "sweep.yaml", "--show", "--plots", "figures"])
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    assert re.match(r"1 +1 +90\.00% +1 +0\.002 +32 +finished +runs/sweep/1$", table[1]), result.output
    import mnist_keras as mk

    best = mk.load_spec(tmp_path / "runs" / "sweep-best.yaml")
    assert (best.train.optimizer.learning_rate, best.data.batch_size) == (0.002, 32)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["history.png", "importances.png",
                                                                        "parallel.png"]


def _distributions(sweep_file: Path) -> dict:
    from mnist_keras.sweeps.file import read_sweep
    from mnist_keras.sweeps.study import distributions

    return distributions(read_sweep(sweep_file))
