"""Faults during training, on real `mnist-keras fit` processes (tests/faults.py injects them): forked from one
that has loaded TensorFlow (faults.Forked), the two reference runs as `python tests/faults.py` itself.

kill -9 at chosen and at random moments, Ctrl-C and a failing write are each followed by `fit --resume`;
the finished run must hold the weights of an uninterrupted run bit for bit (deterministic ops, and the
dropout seed state is saved beside each checkpoint), every epoch once in its history, and after every
fault a state.json that names a checkpoint which loads. Also: a NaN loss, full and read-only disks, and
two runs started in the same second. MNIST_KERAS_FAULT_SEED picks other random moments.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from faults import Forked

SPEC = """
name: chain
seed: 11
data: {source: bundled, max_train: 1024, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers:
    - flatten
    - dense: {units: 32, activation: relu}
    - dropout: 0.2
    - dense: 10
train:
  epochs: 6
  optimizer: {type: adam, learning_rate: 0.003}
  lr_schedule: {type: exponential, decay_rate: 0.8}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""
EPOCHS, STEPS, VALIDATION_STEPS, TEST_STEPS = 6, 12, 4, 32  # 768 / 64, 256 / 64, 2000 / 64
SEED = int(os.environ.get("MNIST_KERAS_FAULT_SEED", "8"))


def mnist_keras(fault: str, *args, cwd: Path) -> subprocess.Popen:
    """`mnist-keras ARGS` in a new process, with FAULT injected (see tests/faults.py): `python tests/faults.py`
    itself, TensorFlow's import and all. The other faults run in a Forked (the same, forked after the import)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faults.py"), fault, *map(str, args)], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def finish(process: subprocess.Popen | Forked) -> tuple[int, str, str]:
    if isinstance(process, Forked):
        return process.finish(timeout=300)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def load(path: Path):
    from mnist_keras.backend import keras

    return keras.models.load_model(path)


def check_consistent(run: Path) -> dict:
    """state.json parses and names a checkpoint that loads; best.keras loads. Returns the state."""
    state = json.loads((run / "state.json").read_text())
    if state.get("checkpoint"):
        load(run / state["checkpoint"])
    if (run / "checkpoints/best.keras").exists():
        load(run / "checkpoints/best.keras")
    assert [h["epoch"] for h in state["history"]] == list(range(1, state["epochs_done"] + 1))
    return state


def check_finished_like(run: Path, reference: dict) -> None:
    """The run finished with the reference's weights (exactly) and its per-epoch history."""
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    assert [h["loss"] for h in metrics["history"]] == reference["losses"]
    for got, expected in zip(load(run / "model.keras").get_weights(), reference["weights"]):
        np.testing.assert_array_equal(got, expected)  # tolerance: none, bit for bit
    assert metrics["test"] == reference["test"]
    assert not list(run.rglob(".tmp-*"))


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "chain.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory):
    """Two uninterrupted runs, started together in the background, that create their run directories in
    the same second; call the fixture's value to wait for their results."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "arrivals").mkdir()
    processes = [mnist_keras(f"run-dir-together:{folder / 'arrivals'}:2", "fit", spec, "--runs", "runs", cwd=folder)
                 for _ in range(2)]

    @functools.cache
    def results() -> dict:
        outs = [finish(p) for p in processes]
        assert [rc for rc, _, _ in outs] == [0, 0], [err[-2000:] for _, _, err in outs]
        runs = sorted((folder / "runs/chain").iterdir())
        weights = [load(run / "model.keras").get_weights() for run in runs]
        metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
        return {"runs": runs, "on_time": all("run-dir-together: on time" in out for _, out, _ in outs),
                "weights": weights[0], "all_weights": weights, "test": metrics[0]["test"],
                "losses": [h["loss"] for h in metrics[0]["history"]], "all_metrics": metrics}

    yield results
    for process in processes:
        process.kill()
        process.wait()


def injected_faults(rng: random.Random) -> list[tuple[str, int | None]]:
    """(fault, epochs done expected after it) in an order drawn by rng, each at a random epoch and step
    no earlier than the previous one; None where the epoch cannot be known in advance."""
    kinds = ["kill-at-batch", "kill-in-validation", "kill-in-write-checkpoint", "kill-after-write-checkpoint",
             "kill-in-write-state", "kill-in-write-best", "sigint-at-batch", "fail-in-write-checkpoint"]
    rng.shuffle(kinds)
    faults, done = [], 0
    for kind in kinds:
        epoch = rng.randint(done + 1, min(EPOCHS, done + 2))
        checkpoint = f"epoch-{epoch:04d}.keras:1"
        fault = {
            "kill-at-batch": f"kill-at-batch:{epoch}:{rng.randint(1, STEPS)}",
            "sigint-at-batch": f"sigint-at-batch:{epoch}:{rng.randint(1, STEPS)}",
            "kill-in-validation": f"kill-in-validation:{epoch}:{rng.randint(1, VALIDATION_STEPS)}",
            "kill-in-write-checkpoint": f"kill-in-write:{checkpoint}",
            "kill-after-write-checkpoint": f"kill-after-write:{checkpoint}",
            "fail-in-write-checkpoint": f"fail-in-write:{checkpoint}",
            "kill-in-write-state": f"kill-in-write:state.json:{epoch - done + 1}",  # the first is at the start
            "kill-in-write-best": "kill-in-write:best.keras:1",
        }[kind]
        expected = None if kind == "kill-in-write-best" else epoch - 1
        faults.append((fault, expected))
        done = epoch - 1 if expected is not None else done
    return faults + [(f"kill-in-test:{rng.randint(1, TEST_STEPS)}", EPOCHS)]


def test_injected_kills_then_resume_end_exactly_like_an_uninterrupted_run(spec, reference, tmp_path):
    faults = injected_faults(random.Random(SEED))
    run, done, survived = None, 0, 0
    for fault, expected in faults:
        args = ["fit", "--resume", run] if run else ["fit", spec, "--runs", tmp_path / "runs"]
        rc, out, err = finish(Forked(fault, *args, cwd=tmp_path))
        run = run or next((tmp_path / "runs/chain").iterdir())
        state = check_consistent(run)
        if fault.startswith("sigint"):
            assert rc == 130, err
            assert f"interrupted after epoch {expected}; resume with: mnist-keras fit --resume {run}" in err
            assert state["status"] == "interrupted"
        elif fault.startswith("fail"):
            assert rc == 1 and "Traceback" not in err, err
            assert re.search(rf"error: cannot write \S+{fault.split(':')[1]}: No space left on device; training "
                             rf"stopped after epoch {expected}, whose checkpoint is kept.*resume with: mnist-keras "
                             rf"fit --resume {re.escape(str(run))}", err), err
        else:
            assert rc == -signal.SIGKILL, (fault, rc, err[-2000:])
        if expected is not None:
            assert state["epochs_done"] == expected
        assert state["epochs_done"] >= done  # no finished epoch is ever lost
        done, survived = state["epochs_done"], survived + 1
    rc, out, err = finish(Forked("none", "fit", "--resume", run, cwd=tmp_path))
    assert rc == 0, err
    check_finished_like(run, reference())
    print(f"\nfault seed {SEED}: {survived} faults survived, identical weights: {[f for f, _ in faults]}")


def test_kill_9_at_random_times_then_resume(spec, reference, tmp_path):
    """The parent kills the trainer at a random instant after training starts, three times, then Ctrl-C."""
    rng, run, kills = random.Random(SEED + 1), None, 0
    for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, signal.SIGINT):
        args = ["fit", "--resume", run] if run else ["fit", spec, "--runs", tmp_path / "runs"]
        process = Forked("none", *args, cwd=tmp_path)
        while (not any(line.startswith("mnist-keras: training") for line in process.stdout().splitlines())
               and process.poll() is None):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.7))
        process.send_signal(sig)
        rc, err = process.wait(timeout=300), process.stderr()
        run = run or next((tmp_path / "runs/chain").iterdir())
        state = check_consistent(run)
        if state["status"] == "finished":  # the signal came too late (or never: rc 0)
            break
        assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err[-2000:]
        kills += 1
        if sig == signal.SIGINT:
            assert f"resume with: mnist-keras fit --resume {run}" in err and state["status"] == "interrupted"
    if state["status"] != "finished":
        assert finish(Forked("none", "fit", "--resume", run, cwd=tmp_path))[0] == 0
    check_finished_like(run, reference())
    print(f"\nfault seed {SEED}: {kills} random-time signals survived, identical weights")


def test_same_second_same_spec_two_run_directories(reference):
    results = reference()
    first, second = results["runs"]
    assert first != second and first.parent == second.parent
    if results["on_time"]:  # both created their directory at the same instant
        assert second.name == first.name + "-2"
    for a, b in zip(*results["all_weights"]):  # and deterministic ops repeat a run exactly
        np.testing.assert_array_equal(a, b)
    assert results["all_metrics"][0]["test"] == results["all_metrics"][1]["test"]


# ------------------------------------------------------------------------- in-process faults


TINY = """
name: tiny
seed: 3
data: {source: bundled, max_train: 640, validation: 128, batch_size: 64, shuffle: 500}
model: {layers: [flatten, {dense: 16}, {dense: 10}]}
train:
  epochs: 3
  optimizer: {type: sgd, learning_rate: LR}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""


def fit(*args):
    from mnist_keras.cli import main

    return CliRunner().invoke(main, ["fit", *map(str, args)])


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(write_spec, tmp_path, monkeypatch):
    """Weights turned to NaN after step 3 of epoch 2: the loss is NaN at step 4, training stops there."""
    from mnist_keras.backend import keras
    from mnist_keras.train import loop

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch + 1) == (2, 3):
                kernel = self.model.layers[1].kernel
                kernel.assign(np.full(kernel.shape, np.nan))

    make = loop.make_callbacks
    monkeypatch.setattr(loop, "make_callbacks", lambda *a: (lambda cbs, guard: ([*cbs, Poison()], guard))(*make(*a)))
    result = fit(write_spec(TINY.replace("LR", "0.05")), "--runs", tmp_path / "runs")
    assert result.exit_code == 1
    assert "the loss became NaN at epoch 2, step 4" in result.stderr
    assert "the last good checkpoint (epoch 1) is kept in" in result.stderr
    assert "Try a lower learning rate (the spec sets 0.05)" in result.stderr
    run = next((tmp_path / "runs/tiny").iterdir())
    state = check_consistent(run)
    assert state["status"] == "failed" and state["epochs_done"] == 1
    assert state["checkpoint"] == "checkpoints/epoch-0001.keras"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.keras", "epoch-0001.keras"]
    weights = load(run / "checkpoints/epoch-0001.keras").get_weights()
    assert all(np.isfinite(w).all() for w in weights)


def test_diverging_learning_rate_is_reported_in_the_first_epoch(write_spec, tmp_path):
    result = fit(write_spec(TINY.replace("LR", "1.0e+8")), "--runs", tmp_path / "runs")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(r"the loss became NaN at epoch 1, step \d+; no epoch finished, so there is no good checkpoint "
                     r"yet. Try a lower learning rate \(the spec sets 1e\+08\)", result.stderr), result.stderr
    run = next((tmp_path / "runs/tiny").iterdir())
    assert check_consistent(run)["epochs_done"] == 0 and not list((run / "checkpoints").iterdir())


def test_ctrl_c_before_training_exits_130_and_creates_nothing(write_spec, tmp_path, monkeypatch):
    from mnist_keras.train import loop

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "prepare", interrupted)
    result = fit(write_spec(TINY.replace("LR", "0.05")), "--runs", tmp_path / "runs")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (skips where mounting is not allowed); remount(options)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True)
        if result.returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # a failed fit may leave its CSV log open


def test_small_or_read_only_disk_is_refused_before_training(write_spec, tmpfs, tmp_path):
    disk = tmpfs("1m")
    result = fit(write_spec(TINY.replace("LR", "0.05")), "--runs", disk / "runs")
    assert result.exit_code == 2
    assert f"{disk}/runs/tiny: only 1 MiB free on this disk; a run needs at least 50 MiB" in result.stderr
    assert not list((disk / "runs/tiny").iterdir())
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = fit(write_spec(TINY.replace("LR", "0.05")), "--runs", disk / "other")
    assert result.exit_code == 2
    assert f"{disk}/other/tiny: cannot create the runs folder (Read-only file system)" in result.stderr


def test_disk_full_during_training_keeps_earlier_checkpoints(write_spec, tmpfs, tmp_path, monkeypatch):
    """A real full disk: a tmpfs with room for one epoch's checkpoints; the next epoch's write fails."""
    from mnist_keras.runs import files

    monkeypatch.setattr(files, "MIN_FREE_BYTES", 0)
    disk = tmpfs("200k")
    result = fit(write_spec(TINY.replace("LR", "0.05")), "--runs", disk)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    run = next((disk / "tiny").iterdir())
    assert re.search(rf"error: cannot write {re.escape(str(run))}\S*: No space left on device; training stopped "
                     rf"after epoch 1, whose checkpoint is kept", result.stderr), result.stderr
    state = check_consistent(run)
    assert state["epochs_done"] == 1 and state["checkpoint"] == "checkpoints/epoch-0001.keras"
    assert not list(run.rglob(".tmp-*"))
    subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
    result = fit("--resume", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["epochs_done"] == 3
