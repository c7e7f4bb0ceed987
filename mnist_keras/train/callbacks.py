"""The callbacks of a run: epoch statistics, the NaN stop, the graph, the stateful callbacks
(plateau, early stopping) that save and restore their own state, the stop at train.stop_at's targets, then the
recorder that writes the checkpoint and the run record (and which rule, if any, ended training) at the end of
each epoch.

Every write is atomic and state.json is written last, naming the files it belongs to, so a kill at any
moment leaves the run record and its checkpoints consistent; files no record names are removed after.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import keras, tf
from ..runs.files import atomic_write, run_file
from ..runs.record import Best
from ..runs.run import Run
from ..spec import Spec
from ..spec.targets import reaches, rises
from .compile import current_lr


def finite_or_none(logs: dict) -> dict[str, float | None]:
    """Each logged value as a float, None where it is not finite (a NaN loss has no JSON number)."""
    return {key: (float(value) if math.isfinite(float(value)) else None) for key, value in logs.items()}


class EpochStats(keras.callbacks.Callback):
    """Adds learning_rate, epoch_seconds and images_per_second to each epoch's logs, and the stage number
    when the spec trains in stages."""

    def __init__(self, images_per_epoch: int, spec: Spec):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.stages = spec.stages() if spec.train.stages else []

    def on_epoch_begin(self, epoch, logs=None):
        self.lr, self.start, self.train_end = current_lr(self.model), time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.train_end = self.train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs["learning_rate"] = self.lr
        logs["epoch_seconds"] = now - self.start
        logs["images_per_second"] = self.images_per_epoch / ((self.train_end or now) - self.start)
        if self.stages:
            logs["stage"] = next(s.number for s in self.stages if s.first <= epoch < s.end)


class NaNGuard(keras.callbacks.Callback):
    """Stops at the first NaN or infinite loss (train.terminate_on_nan) and says where: Keras reports the
    loss after each group of runtime.steps_per_execution steps, so `where` is the group's last step."""

    def __init__(self):
        super().__init__()
        self.where = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where, self.lr = (self.epoch + 1, batch + 1), current_lr(self.model)
            self.model.stop_training = True


class GraphWriter(keras.callbacks.Callback):
    """Writes the model's forward graph for TensorBoard's Graphs tab (Keras 3's callback writes only
    the model config)."""

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = log_dir

    def on_train_begin(self, logs=None):
        forward = tf.function(lambda x: self.model(x, training=False))
        spec = tf.TensorSpec((None, *self.model.input_shape[1:]), "float32")
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default():
            tf.summary.graph(forward.get_concrete_function(spec).graph)
        writer.close()


class _OwnState:
    """A Keras callback that saves its state with get_state() and restores it with set_state() when
    training (re)starts. An epoch whose logs lack the monitored metric (no validation that epoch) is
    passed over: nothing is compared, nothing counts."""

    def __init__(self, *args, saved: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.saved = saved or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.set_state(self.saved)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in (logs or {}):
            super().on_epoch_end(epoch, logs)
        self.saved = self.get_state()  # what the next stage's fit starts from


def _number(value) -> float | None:
    return None if value is None else float(value)


class Plateau(_OwnState, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau; the reduced rate itself lives in the optimizer, saved in the checkpoint."""

    def get_state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _number(self.best), "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict) -> None:
        self.wait, self.cooldown_counter = int(state.get("wait", 0)), int(state.get("cooldown_counter", 0))
        self.best = _number(state.get("best"))


class EarlyStop(_OwnState, keras.callbacks.EarlyStopping):
    """EarlyStopping whose best weights outlive the process: with restore_best_weights, they are saved
    to checkpoints/early-stopping-epoch-N.npz whenever a better epoch comes, and loaded on resume."""

    def __init__(self, *args, run_dir: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_dir, self.weights_file = run_dir, None

    def on_epoch_end(self, epoch, logs=None):
        before = self.best_epoch if self.best_weights is not None else None
        super().on_epoch_end(epoch, logs)
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch != before:
            self.weights_file = f"checkpoints/early-stopping-epoch-{self.best_epoch + 1:04d}.npz"
            atomic_write(self.run_dir / self.weights_file, lambda tmp: np.savez(tmp, *self.best_weights))

    def get_state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _number(self.best), "best_epoch": self.best_epoch,
                "weights": self.weights_file}

    def set_state(self, state: dict) -> None:
        self.wait, self.best_epoch = int(state.get("wait", 0)), int(state.get("best_epoch", 0))
        self.best, self.weights_file = _number(state.get("best")), state.get("weights")
        if self.weights_file:
            with np.load(run_file(self.run_dir, self.weights_file), allow_pickle=False) as saved:
                self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]


def restore_best_weights(model, callbacks: list) -> None:
    """For a session that trained nothing (the run had stopped itself, or every epoch was done), what the end of
    `fit` would do to the model: early stopping's best weights put back (restore_best_weights)."""
    for callback in callbacks:
        if isinstance(callback, EarlyStop) and callback.restore_best_weights:
            callback.set_state(callback.saved)
            if callback.best_weights is not None:
                model.set_weights(callback.best_weights)


class StopAtTarget(keras.callbacks.Callback):
    """train.stop_at: ends training after the first epoch that reaches every target (an epoch that lacks one of
    the metrics, one that does not validate, reaches none). Nothing to resume: the run ends with that epoch."""

    def __init__(self, targets: dict[str, float]):
        super().__init__()
        self.targets, self.reached = targets, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if all(name in logs and reaches(name, float(logs[name]), target) for name, target in self.targets.items()):
            self.reached = epoch
            self.model.stop_training = True


def _seed_states(model) -> dict[str, list]:
    """The random-number state of each dropout or augmentation layer: Keras keeps it out of checkpoints."""
    return {layer.name: [v for v in layer.variables if not any(v is w for w in layer.weights)]
            for layer in model.layers}


def rng_state(model) -> dict[str, list]:
    """The seed states, as saved in state.json beside the checkpoint."""
    return {name: [keras.ops.convert_to_numpy(v).tolist() for v in states]
            for name, states in _seed_states(model).items() if states}


def restore_rng_state(model, saved: dict[str, list]) -> None:
    for name, states in _seed_states(model).items():
        for variable, value in zip(states, saved.get(name, [])):
            variable.assign(value)


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: the model and optimizer to checkpoints/epoch-N.keras, the best one to
    best.keras, then state.json pointing at them, then the files it no longer names are removed.
    An epoch whose loss is not finite is not recorded when train.terminate_on_nan stops the run there."""

    def __init__(self, run: Run, stateful: dict, stop_at: StopAtTarget | None = None):
        super().__init__()
        self.run, self.stateful, self.stop_at, cfg = run, stateful, stop_at, run.spec.train.checkpoint
        self.higher_is_better = cfg.mode == "max" or (cfg.mode == "auto" and rises(cfg.monitor))

    def stopped_by(self, epoch: int) -> str | None:
        """The run's own rule that ends training with this epoch: stop_at first, then early stopping."""
        if self.stop_at and self.stop_at.reached == epoch:
            return "stop_at"
        early = self.stateful.get("early_stopping")
        return "early_stopping" if early and epoch > 0 and early.stopped_epoch == epoch else None

    def improved(self, value: float) -> bool:
        best = self.run.state.best
        return best is None or (value > best.value if self.higher_is_better else value < best.value)

    def on_epoch_end(self, epoch, logs=None):
        logs, spec, run_dir = finite_or_none(logs or {}), self.run.spec, self.run.path
        cfg = spec.train.checkpoint
        if logs.get("loss", 0.0) is None and spec.train.terminate_on_nan:
            return  # the NaN stop: keep the last good checkpoint and state.json as they are
        name = f"checkpoints/epoch-{epoch + 1:04d}.keras" if cfg.enabled else None
        if name:
            atomic_write(run_dir / name, self.model.save)
        value, best = logs.get(cfg.monitor), self.run.state.best
        if cfg.enabled and cfg.save_best and value is not None and self.improved(value):
            atomic_write(run_dir / "checkpoints/best.keras", self.model.save)
            best = Best(monitor=cfg.monitor, value=value, epoch=epoch + 1)
        callbacks = {key: callback.get_state() for key, callback in self.stateful.items()}
        self.run.record_epoch({"epoch": epoch + 1, **logs}, name, best, current_lr(self.model), rng_state(self.model),
                              callbacks, self.stopped_by(epoch))
        named = {name} | {saved.get("weights") for saved in callbacks.values()}
        for old in [*run_dir.glob("checkpoints/epoch-*.keras"), *run_dir.glob("checkpoints/early-stopping-*.npz")]:
            if f"checkpoints/{old.name}" not in named:
                old.unlink(missing_ok=True)


class Board(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, which prefixes `epoch_` to every logged name: the seconds per epoch
    are logged as `seconds`, so TensorBoard shows `epoch_seconds` (not `epoch_epoch_seconds`)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, {("seconds" if k == "epoch_seconds" else k): v for k, v in (logs or {}).items()})


def make_callbacks(run: Run, images_per_epoch: int) -> tuple[list, NaNGuard | None]:
    """The run's callbacks, in order, and the NaN guard (None when train.terminate_on_nan is false)."""
    spec, state, run_dir = run.spec, run.state, run.path
    saved, stateful = state.callbacks, {}
    if spec.train.lr_schedule.type == "plateau":
        p = spec.train.lr_schedule
        stateful["plateau"] = Plateau(monitor=p.monitor, factor=p.factor, patience=p.patience, min_delta=p.min_delta,
                                      cooldown=p.cooldown, min_lr=p.min_lr, saved=saved.get("plateau"))
    if spec.train.early_stopping:
        e = spec.train.early_stopping
        stateful["early_stopping"] = EarlyStop(
            monitor=e.monitor, mode=e.mode, patience=e.patience, min_delta=e.min_delta,
            restore_best_weights=e.restore_best_weights, saved=saved.get("early_stopping"), run_dir=run_dir)
    guard = NaNGuard() if spec.train.terminate_on_nan else None
    stop_at = StopAtTarget(spec.train.stop_at) if spec.train.stop_at else None
    callbacks = [EpochStats(images_per_epoch, spec), *([guard] if guard else []), *stateful.values(),
                 *([stop_at] if stop_at else []), RunRecorder(run, stateful, stop_at)]
    tb = spec.train.tensorboard
    if tb.enabled:
        callbacks.append(Board(
            log_dir=str(run_dir / "logs"), histogram_freq=int(tb.histograms), write_graph=tb.graph,
            profile_batch=tuple(tb.profile_batches) if tb.profile_batches else 0,
        ))
        if tb.graph and not state.epochs_done:
            callbacks.append(GraphWriter(run_dir / "logs" / "train"))
    if spec.train.csv_log:
        callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    return callbacks, guard
