"""One sweep path: `--grid` flags are an in-memory grid study run by Optuna's Study.optimize as a sweep file's is
(a rerun trains the grid again, a --random draw trains the drawn combinations in order, a diverging combination
fails alone, a --set of a gridded path is refused), Ctrl-C in a sweep file's trial is resumed by the same command,
and the sweeps use Optuna's public API only."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from conftest import ROOT, in_process
from mnist_keras.cli import main
from test_sweeps import state, trials_of, write_sweep

TINY = """
name: tiny
seed: 7
data: {source: bundled, max_train: 320, validation: 64, batch_size: 64, shuffle: 1000}
model:
  layers: [flatten, {dense: {units: 8, activation: relu}}, {dense: 10}]
train:
  epochs: 1
  optimizer: {type: sgd, learning_rate: 0.01}
  tensorboard: {enabled: false}
"""


def test_a_grid_is_an_in_memory_grid_study_and_a_rerun_trains_it_again(write_spec, tmp_path):
    import mnist_keras as mk

    spec, runs = write_spec(TINY, "tiny.yaml"), tmp_path / "runs"
    first = mk.sweep(spec, ["train.optimizer.learning_rate=0.01,0.003"], runs=runs)
    assert first.grid and first.study == "tiny" and first.metric == "val_accuracy"
    assert sorted(t.params["train.optimizer.learning_rate"] for t in first.trials) == ["0.003", "0.01"]  # as typed
    assert all(t.state == "finished" and t.run.state == "finished" for t in first.trials)
    values = [t.value for t in first.trials]
    assert values == sorted(values, reverse=True) and values == [t.run.best_validation_accuracy for t in first.trials]
    second = mk.sweep(spec, ["train.optimizer.learning_rate=0.01,0.003"], runs=runs)
    assert len(second.trials) == 2 and {t.run_dir for t in first.trials}.isdisjoint(t.run_dir for t in second.trials)
    assert sorted(os.listdir(runs)) == ["tiny"] and len(os.listdir(runs / "tiny")) == 4  # no study database
    for trial in second.trials:
        recorded = json.loads((Path(trial.run_dir) / "state.json").read_text())["overrides"]
        assert recorded == {"train.optimizer.learning_rate": float(trial.params["train.optimizer.learning_rate"])}


def test_a_random_draw_trains_the_drawn_combinations_in_their_order(write_spec, tmp_path):
    import mnist_keras as mk
    from mnist_keras.sweeps.grid import combinations

    grids = ["train.optimizer.learning_rate=0.01,0.02,0.03", "data.batch_size=32,64"]
    result = mk.sweep(write_spec(TINY, "tiny.yaml"), grids, sample=2, seed=5, runs=tmp_path / "runs")
    drawn = [dict(str(o).split("=", 1) for o in combo) for combo in combinations(grids, 2, 5)]
    assert [t.params for t in sorted(result.trials, key=lambda t: t.number)] == drawn
    assert len(os.listdir(tmp_path / "runs" / "tiny")) == 2


def test_a_diverging_combination_fails_alone_and_the_grid_goes_on(write_spec, tmp_path):
    spec = write_spec(TINY, "tiny.yaml")
    result = CliRunner().invoke(main, ["sweep", str(spec), "--grid", "train.optimizer.learning_rate=1.0e+30,0.01",
                                       "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "-> failed: the loss became NaN" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\d+ ", line)]
    assert [(row[0], row[1], row[-2]) for row in rows] == [("1", "0.01", "finished"), ("2", "1.0e+30", "failed")]
    assert len(os.listdir(tmp_path / "runs" / "tiny")) == 2


def test_a_set_of_a_gridded_path_is_refused_naming_the_grid(write_spec, tmp_path):
    spec = write_spec(TINY, "tiny.yaml")
    result = CliRunner().invoke(main, ["sweep", str(spec), "--grid", "train.epochs=1,2", "--epochs", "3",
                                       "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: --epochs 3: --grid train.epochs searches this path, so each trial's "
                                    "value would replace it"), result.stderr
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_in_a_trial_then_the_same_command_resumes_it(tmp_path):
    write_sweep(tmp_path, trials=1, epochs=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stopped = subprocess.run([sys.executable, str(ROOT / "tests" / "faults.py"), "sigint-at-batch:2:1", "sweep",
                              "sweep.yaml"], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=400)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stdout + stopped.stderr
    assert "interrupted after epoch 1; the study keeps its trials: run the same command to go on" in stopped.stderr
    interrupted, retry = trials_of(tmp_path)  # failed by Study.optimize, and its retry queued
    assert interrupted.state == optuna.trial.TrialState.FAIL and "error" not in interrupted.user_attrs
    assert retry.state == optuna.trial.TrialState.WAITING and retry.user_attrs["run_dir"] == \
        interrupted.user_attrs["run_dir"] and retry.params == interrupted.params
    done = in_process("sweep", "sweep.yaml", cwd=tmp_path)  # the same command, here: no second TensorFlow to load
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"trial 1 \(retry of #0, resumed after epoch 1\)", done.stdout), done.stdout
    assert "crashed, retried as #1" in done.stdout
    (run,) = tmp_path.glob("runs/sweep/*/state.json")
    assert state(run.parent)["status"] == "finished" and state(run.parent)["epochs_done"] == 2


@pytest.mark.parametrize("private", [r"\._storage\b", r"\._trial_id\b", r"\.ask\(", r"optuna\.storages\._", r"import _rdb"])
def test_the_sweeps_use_optunas_public_api(private):
    """Optuna's storage and trial internals and a hand-written ask/tell loop stay out; Study.optimize runs trials."""
    sources = [ROOT / "mnist_keras" / "api.py", *(ROOT / "mnist_keras" / "cli").glob("*.py"),
               *(ROOT / "mnist_keras" / "sweeps").glob("*.py")]
    used = [f"{p.relative_to(ROOT)}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(private, line)]
    assert not used, used
