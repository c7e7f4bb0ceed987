"""Training recipes of a run's length and rate: train.stop_at (a real fit on the bundled sample that stops at its
target, the time to target recorded and listed, resumes that train no further), early stopping resumed after its
stopping epoch, the learning-rate range test (`lr-find`, `mk.lr_find`) and `learning_rate: auto` inside `fit`,
and the specs refused at their paths."""

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import in_process

TINY = """
name: tiny
seed: 7
data: {source: bundled, max_train: 384, validation: 128, batch_size: 64}
model:
  layers: [flatten, {dense: {units: 16, activation: relu}}, {dense: 10}]
train:
  epochs: 3
  optimizer: {type: adam, learning_rate: LR}
  tensorboard: {enabled: false}
EXTRA
"""


def spec_text(extra: str = "", lr: str = "0.003") -> str:
    return TINY.replace("EXTRA", extra).replace("LR", lr)


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.glob("*/*") if p.is_dir()]
    return run


def state_of(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def weights(model_file: Path) -> list:
    from mnist_keras.model.objects import load_model

    return load_model(model_file).get_weights()


def killed_before_finishing(run: Path) -> None:
    """The run as a kill leaves it after its last epoch was recorded, before the test set and metrics.json."""
    state = state_of(run)
    (run / "state.json").write_text(json.dumps({**state, "status": "interrupted"}))
    (run / "metrics.json").unlink()
    (run / "model.keras").unlink()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """3 epochs planned, a target the first epoch reaches: the run ends finished after epoch 1."""
    folder = tmp_path_factory.mktemp("stop-at")
    (folder / "tiny.yaml").write_text(spec_text("  stop_at: {val_accuracy: 0.1, loss: 100}"))
    result = in_process("fit", folder / "tiny.yaml", "--runs", folder / "runs")
    assert result.returncode == 0, result.stderr
    assert "stopped after epoch 1: every train.stop_at target reached in " in result.stdout
    return only_run(folder / "runs")


def test_stop_at_ends_the_run_finished_at_the_first_epoch_that_reaches_every_target(stopped_run):
    import mnist_keras as mk

    run = mk.open_run(stopped_run)
    assert run.state.status == "finished" and run.state.epochs_done == 1 and len(run.state.history) == 1
    assert run.state.history[0].get("val_accuracy") >= 0.1 and run.state.history[0].get("loss") <= 100
    stopped = run.state.stopped
    assert (stopped.by, stopped.epoch) == ("stop_at", 1) and run.metrics.stopped == stopped
    assert stopped.seconds == pytest.approx(run.state.history[0].epoch_seconds) and stopped.seconds > 0
    assert not (stopped_run / "checkpoints/epoch-0002.keras").exists()
    listed = in_process("runs", stopped_run.parent.parent)
    header, row = listed.stdout.splitlines()
    assert "to target" in header and f"{stopped.seconds:.1f} s (epoch 1)" in row and " 1/3 " in row
    from mnist_keras.reports.page import _metrics_rows

    rows = dict(_metrics_rows(run))
    assert rows["time to target"] == f"{stopped.seconds:.1f} s of training, epoch 1 (val_accuracy >= 0.1, loss <= 100)"


def test_a_finished_run_stopped_at_its_target_is_not_resumed(stopped_run, tmp_path):
    run = Path(shutil.copytree(stopped_run, tmp_path / "runs" / "tiny" / stopped_run.name))
    before = (run / "state.json").read_text()
    for args in ([], ["--epochs", "5"]):
        result = in_process("fit", "--resume", run, *args)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "the run stopped itself after epoch 1 (every train.stop_at target reached) and trains no " \
               "further" in result.stderr
    assert (run / "state.json").read_text() == before


def test_a_run_killed_after_its_target_epoch_resumes_without_training(stopped_run, tmp_path):
    run = Path(shutil.copytree(stopped_run, tmp_path / "runs" / "tiny" / stopped_run.name))
    killed_before_finishing(run)
    result = in_process("fit", "--resume", run)
    assert result.returncode == 0, result.stderr
    assert "stopped after epoch 1 (every train.stop_at target reached): evaluating" in result.stdout
    state = state_of(run)
    assert state["status"] == "finished" and state["epochs_done"] == 1 and len(state["history"]) == 1
    assert json.loads((run / "metrics.json").read_text())["stopped"]["epoch"] == 1
    for a, b in zip(weights(run / "model.keras"), weights(stopped_run / "model.keras")):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_killed_after_its_stopping_epoch_ends_as_one_uninterrupted_run(tmp_path):
    """Monitoring the training loss in mode max with patience 0: epoch 1 is the best, epoch 2 stops the run, and
    the model ends with epoch 1's weights, with a kill before the end or without."""
    spec = tmp_path / "es.yaml"
    spec.write_text(spec_text("  early_stopping: {monitor: loss, mode: max, patience: 0}"))
    assert in_process("fit", spec, "--runs", tmp_path / "runs").returncode == 0
    run = only_run(tmp_path / "runs")
    state = state_of(run)
    assert state["epochs_done"] == 2 and state["stopped"]["by"] == "early_stopping" and state["stopped"]["epoch"] == 2
    uninterrupted = weights(run / "model.keras")
    assert not all(np.array_equal(a, b) for a, b in zip(uninterrupted, weights(run / "checkpoints/epoch-0002.keras")))
    killed_before_finishing(run)
    result = in_process("fit", "--resume", run)
    assert result.returncode == 0, result.stderr
    assert "stopped after epoch 2 (early stopping): evaluating" in result.stdout
    assert state_of(run)["epochs_done"] == 2 and state_of(run)["status"] == "finished"
    for a, b in zip(weights(run / "model.keras"), uninterrupted):
        np.testing.assert_array_equal(a, b)
    header = in_process("runs", tmp_path / "runs").stdout.splitlines()[0]  # no target, so no such column
    assert "to target" not in header and header.split()[-2:] == ["state", "directory"]


# ---------------------------------------------------------------------------------- the range test


def test_rates_rise_exponentially_and_the_suggestion_follows_its_rule():
    from mnist_keras.train.lr_find import RULE, rates_of, smooth, suggest

    rates = rates_of(10, 1e-6, 1e-3)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1e-3)
    assert np.allclose(np.diff(np.log(rates)), math.log(1e3) / 9)
    assert smooth([2.0, 1.0]) == pytest.approx([2.0, (0.98 * 0.02 * 2 + 0.02 * 1) / (1 - 0.98**2)])
    smoothed = [3.0, 2.0, 1.0, 0.5, 0.8, 5.0, 9.0, 12.0, 20.0, 30.0]
    assert suggest(rates, smoothed, True, 1e-6, 1e-3) == (pytest.approx(rates[3] / 10), [])
    assert RULE.startswith("minimum / 10")
    low, notes = suggest(rates, sorted(smoothed), True, 1e-6, 1e-3)  # lowest at the first rate
    assert low == 1e-6 and "try a lower --min-lr" in notes[0]
    high, notes = suggest(rates, sorted(smoothed, reverse=True), False, 1e-6, 1e-3)  # still falling at the end
    assert high == pytest.approx(1e-4) and "try a higher --max-lr" in notes[0]


def test_lr_find_leaves_only_its_figure_and_the_global_state_as_found(tmp_path, monkeypatch):
    import mnist_keras as mk
    from tensorflow.python.framework import config

    from mnist_keras.backend import keras

    (tmp_path / "tiny.yaml").write_text(spec_text("runtime: {deterministic: true, mixed_precision: bfloat16}"))
    monkeypatch.chdir(tmp_path)
    random.seed(3)
    np.random.seed(3)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    policy, deterministic = keras.config.dtype_policy().name, config.is_op_determinism_enabled()
    found = mk.lr_find("tiny.yaml", steps=30, min_lr=1e-5, max_lr=1.0, out="figure.png")
    assert isinstance(found, mk.LRFinding) and found.rule.startswith("minimum / 10")
    assert math.isfinite(found.suggestion) and 1e-5 <= found.suggestion <= 1.0
    assert 1 < len(found.rates) == len(found.losses) == len(found.smoothed) <= 30 and found.rates[0] == 1e-5
    assert found.figure == Path("figure.png") and (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "tiny.yaml"]  # no runs/ folder
    assert (keras.config.dtype_policy().name, config.is_op_determinism_enabled()) == (policy, deterministic)
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))


@pytest.mark.parametrize("args, message", [
    (["--steps", "5"], "--steps: a range test takes 10 to 1,000 steps, got 5"),
    (["--min-lr", "0.1", "--max-lr", "0.01"], "--min-lr 0.1 must be below --max-lr 0.01"),
    (["--min-lr", "0"], "--min-lr: a learning rate is a number above 0, got 0.0"),
    (["--out", "no/such/folder/lr.png"], "the folder no/such/folder does not exist"),
    (["--set", "runtime.distribute=multi_worker"], "runtime.distribute: lr-find runs on this machine alone"),
])
def test_lr_find_refuses_bad_input_in_one_line(args, message, tmp_path):
    (tmp_path / "tiny.yaml").write_text(spec_text())
    result = in_process("lr-find", "tiny.yaml", *args, cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_learning_rate_auto_records_the_rate_and_a_resume_never_tests_again(tmp_path, monkeypatch):
    import mnist_keras.train.lr_find as lr_find

    spec = tmp_path / "auto.yaml"
    spec.write_text(spec_text(lr="auto").replace("epochs: 3", "epochs: 1"))
    result = in_process("fit", spec, "--runs", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    state = state_of(run)
    found = state["range_test"]
    assert found["rule"].startswith("minimum / 10") and 1e-7 <= found["rate"] <= 10 and found["steps"] <= 100
    assert f"learning rate {found['rate']:.3g}, found by a range test" in result.stdout
    assert state["history"][0]["learning_rate"] == pytest.approx(found["rate"], rel=1e-6)
    assert (run / "lr-find.png").read_bytes()[:4] == b"\x89PNG" and (run / "spec.yaml").read_text().count("auto")

    def never(*args, **kwargs):
        raise AssertionError("the range test ran again")

    monkeypatch.setattr(lr_find, "range_test", never)
    resumed = in_process("fit", "--resume", run, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    state = state_of(run)
    assert state["range_test"] == found and [h["epoch"] for h in state["history"]] == [1, 2]
    assert state["history"][1]["learning_rate"] == pytest.approx(found["rate"], rel=1e-6)


def test_the_found_rate_is_the_base_or_peak_of_every_schedule(tmp_path):
    """`auto` stands for the rate a run found: a decay starts from it, a cosine warmup and one_cycle without a
    max climb to it (no training: the schedules as compile_model makes them)."""
    from mnist_keras.spec.loader import load_spec
    from mnist_keras.train.compile import make_schedule

    def schedule(sched: str):
        (tmp_path / "s.yaml").write_text(spec_text(f"  lr_schedule: {sched}", lr="auto"))
        return make_schedule(load_spec(tmp_path / "s.yaml"), 4, found=0.02)

    assert schedule("constant") == 0.02
    assert float(schedule("{type: exponential, decay_rate: 0.5}")(0)) == pytest.approx(0.02)
    assert float(schedule("{type: cosine, warmup: 1}")(4)) == pytest.approx(0.02)
    assert float(schedule("{type: one_cycle, warmup: 0.25}")(2)) == pytest.approx(0.02)  # the peak: step 3 of 12
    assert float(schedule("{type: one_cycle, max: 0.1, warmup: 0.25}")(2)) == pytest.approx(0.1)
    (tmp_path / "s.yaml").write_text(spec_text(lr="auto"))
    with pytest.raises(ValueError, match="auto stands for the rate a run's range test found"):
        make_schedule(load_spec(tmp_path / "s.yaml"), 4)


# ---------------------------------------------------------------------------------- specs


@pytest.mark.parametrize("extra, place, message", [
    ("  stop_at: {val_acc: 0.99}", "train.stop_at.val_acc", "unknown metric 'val_acc' (did you mean 'val_accuracy'?)"),
    ("  stop_at: {accuracy: 99}", "train.stop_at.accuracy", "at most 1, got 99 (did you mean 0.99?)"),
    ("  stop_at: {val_loss: 0}", "train.stop_at.val_loss", "a loss target is above 0"),
    ("  stop_at: {val_loss: 0.1}\n  validation_freq: 4", "train.stop_at.val_loss",
     "measured every 4 epochs, so never in 3"),
    ("  stop_at: {}", "train.stop_at", ""),
    ("  optimizer: {type: sgd, learning_rate: auto}\nruntime: {distribute: multi_worker}",
     "train.optimizer.learning_rate", "auto runs a range test on one machine"),
    ("  stages: [{epochs: 3, optimizer: {type: sgd, learning_rate: auto}}]",
     "train.stages[0].optimizer.learning_rate", "auto is found once, before the first epoch"),
])
def test_bad_recipes_are_refused_at_their_spec_path_in_one_line(extra, place, message, tmp_path):
    text = spec_text(extra)
    if "optimizer: {type: sgd, learning_rate: auto}\n" in extra:  # the spec's own optimizer line replaced
        text = text.replace("  optimizer: {type: adam, learning_rate: 0.003}\n", "")
    (tmp_path / "bad.yaml").write_text(text)
    result = in_process("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f": {place}: " in result.stderr and message in result.stderr, result.stderr


def test_validation_images_are_needed_for_a_val_target(tmp_path):
    (tmp_path / "bad.yaml").write_text(spec_text("  stop_at: {val_accuracy: 0.99}").replace("validation: 128",
                                                                                             "validation: 0"))
    result = in_process("fit", "bad.yaml", "--runs", "runs", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "train.stop_at.val_accuracy: 'val_accuracy' is measured on validation images, but data.validation " \
           "is 0" in result.stderr and not (tmp_path / "runs").exists()


def test_summary_and_validate_say_what_each_recipe_adds(tmp_path):
    (tmp_path / "r.yaml").write_text(spec_text("  stop_at: {val_accuracy: 0.99, val_loss: 0.05}\n"
                                               "  lr_schedule: {type: one_cycle}", lr="auto"))
    lines = ["one-cycle: lr peak / 25 -> peak at 30% -> peak / 250000, the peak found by a range test, beta_1 0.95 "
             "-> 0.85 -> 0.95", "stop at val_accuracy >= 0.99 and val_loss <= 0.05",
             "learning rate: found by a range test before training"]
    checked = in_process("validate", "r.yaml", cwd=tmp_path)
    assert checked.returncode == 0 and checked.stdout.splitlines()[1:] == [f"  {line}" for line in lines]
    summary = in_process("summary", "r.yaml", cwd=tmp_path)
    assert summary.returncode == 0 and summary.stdout.splitlines()[-3:] == lines
