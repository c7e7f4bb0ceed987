"""Training: optimizer, loss, learning-rate schedule and callbacks from the spec; fit and resume.

Resume is exact: checkpoints hold the model and the optimizer (whose step counter drives every
step-based schedule), state.json holds the epoch counter and the state of the stateful callbacks
(plateau, early stopping, best checkpoint) and the dropout/augmentation seed states, and the
data pipeline's order depends only on (seed, epoch).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .builder import build_model
from .errors import UserError
from .runs import atomic_write, write_json
from .backend import keras, tf
from .distribute import configure
from .spec import Spec


OPTIMIZERS = {
    "sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam, "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
}


class TrainingFailed(Exception):
    """Training stopped on its own (a NaN loss); the run is kept and marked failed."""


@keras.saving.register_keras_serializable(package="mnist_keras")
class InverseTimePower(keras.optimizers.schedules.LearningRateSchedule):
    """Caffe's "inv" policy: lr * (1 + gamma * step) ** -power."""

    def __init__(self, initial_learning_rate: float, gamma: float, power: float):
        self.initial_learning_rate, self.gamma, self.power = initial_learning_rate, gamma, power

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return self.initial_learning_rate * keras.ops.power(1.0 + self.gamma * step, -self.power)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "gamma": self.gamma, "power": self.power}


@keras.saving.register_keras_serializable(package="mnist_keras")
def rounded_accuracy(y_true, y_pred):
    """Accuracy of a regression on the digit value: the rounded prediction equals the label."""
    return keras.ops.cast(keras.ops.equal(keras.ops.round(y_pred), keras.ops.round(y_true)), "float32")


def base_learning_rate(spec: Spec) -> float:
    """The optimizer's learning rate: the spec's, else Keras' default for that optimizer."""
    opt = spec.train.optimizer
    if opt.learning_rate is not None:
        return opt.learning_rate
    return inspect.signature(OPTIMIZERS[opt.type]).parameters["learning_rate"].default


def make_schedule(spec: Spec, steps_per_epoch: int):
    """The learning rate: a float, or a Keras schedule of the optimizer's step counter."""
    sched, lr = spec.train.lr_schedule, base_learning_rate(spec)
    if sched.type in ("constant", "plateau"):
        return lr
    per_unit = steps_per_epoch if sched.unit == "epoch" else 1
    total = spec.train.epochs * steps_per_epoch

    def steps(count: float) -> int:
        return max(1, round(count * per_unit))

    schedules = keras.optimizers.schedules
    if sched.type == "exponential":
        return schedules.ExponentialDecay(lr, steps(sched.every), sched.decay_rate, staircase=sched.staircase)
    if sched.type == "step":
        return schedules.ExponentialDecay(lr, steps(sched.every), sched.gamma, staircase=True)
    if sched.type == "multistep":
        bounds = [steps(m) - 1 for m in sched.milestones]  # Keras keeps values[i] while step <= bound
        return schedules.PiecewiseConstantDecay(bounds, [lr * sched.gamma**i for i in range(len(bounds) + 1)])
    if sched.type == "polynomial":
        decay = steps(sched.decay_steps) if sched.decay_steps else total
        return schedules.PolynomialDecay(lr, decay, sched.end_learning_rate, power=sched.power)
    if sched.type == "cosine":
        warmup = round(sched.warmup * per_unit)
        decay = steps(sched.decay_steps) if sched.decay_steps else max(1, total - warmup)
        if not warmup:
            return schedules.CosineDecay(lr, decay, alpha=sched.alpha)
        return schedules.CosineDecay(0.0, decay, alpha=sched.alpha, warmup_target=lr, warmup_steps=warmup)
    return InverseTimePower(lr, sched.gamma / per_unit, sched.power)  # inverse_time; gamma per step


def make_optimizer(spec: Spec, steps_per_epoch: int):
    opt = spec.train.optimizer
    kwargs = opt.model_dump(exclude={"type", "learning_rate"}, exclude_none=True)
    return OPTIMIZERS[opt.type](learning_rate=make_schedule(spec, steps_per_epoch), **kwargs)


def make_loss_and_metrics(spec: Spec):
    loss = spec.loss()
    if loss == "mse":
        return keras.losses.MeanSquaredError(), [keras.metrics.MeanMetricWrapper(rounded_accuracy, name="accuracy")]
    if loss == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    smoothing = spec.train.label_smoothing
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing), ["accuracy"]


def compile_model(model, spec: Spec, steps_per_epoch: int) -> None:
    loss, metrics = make_loss_and_metrics(spec)
    group = spec.runtime.steps_per_execution
    model.compile(
        optimizer=make_optimizer(spec, steps_per_epoch), loss=loss, metrics=metrics,
        jit_compile=spec.runtime.jit_compile, steps_per_execution=steps_per_epoch if group == "epoch" else group,
    )


# ------------------------------------------------------------------------------------ callbacks


def current_lr(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochStats(keras.callbacks.Callback):
    """Adds learning_rate, epoch_seconds and images_per_second to each epoch's logs."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.lr, self.start, self.train_end = current_lr(self.model), time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.train_end = self.train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs["learning_rate"] = self.lr
        logs["epoch_seconds"] = now - self.start
        logs["images_per_second"] = self.images_per_epoch / ((self.train_end or now) - self.start)


class NaNGuard(keras.callbacks.Callback):
    """Stops at the first NaN or infinite loss and says where: Keras reports the loss after each group of
    runtime.steps_per_execution steps, so `where` is the last step of the group that saw it."""

    def __init__(self):
        super().__init__()
        self.where = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1)
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


class Resumable:
    """A Keras callback whose counters are saved in state.json and restored on resume."""

    state_keys: tuple[str, ...] = ()

    def __init__(self, *args, restored: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.restored = restored or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in self.restored.items():
            setattr(self, key, value)

    def state(self) -> dict:
        return {key: float(getattr(self, key)) for key in self.state_keys}


class ResumableEarlyStopping(Resumable, keras.callbacks.EarlyStopping):
    state_keys = ("wait", "best")


class ResumablePlateau(Resumable, keras.callbacks.ReduceLROnPlateau):
    state_keys = ("wait", "best", "cooldown_counter")


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: the model and optimizer to checkpoints/epoch-N.keras, the best one to
    best.keras, then state.json (history, epoch counter, callback state) pointing at them.
    Every write is atomic, so a kill at any moment leaves state.json and its checkpoint consistent."""

    def __init__(self, run: Path, spec: Spec, state: dict, stateful: dict):
        super().__init__()
        self.run, self.state, self.stateful = run, state, stateful
        cfg = spec.train.checkpoint
        self.enabled, self.monitor, self.save_best = cfg.enabled, cfg.monitor, cfg.save_best
        self.higher_is_better = cfg.mode == "max" or (cfg.mode == "auto" and "acc" in cfg.monitor)

    def improved(self, value: float) -> bool:
        best = self.state.get("best")
        return best is None or (value > best if self.higher_is_better else value < best)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not math.isfinite(logs.get("loss", 0.0)):
            return  # the loss became NaN: keep the last good checkpoint and state.json as they are
        name = f"checkpoints/epoch-{epoch + 1:04d}.keras" if self.enabled else None
        if name:
            atomic_write(self.run / name, self.model.save)
        value = logs.get(self.monitor)
        if self.enabled and self.save_best and value is not None and self.improved(value):
            atomic_write(self.run / "checkpoints/best.keras", self.model.save)
            self.state.update(best=float(value), best_epoch=epoch + 1)
        self.state["history"].append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
        self.state.update(epochs_done=epoch + 1, checkpoint=name, learning_rate=current_lr(self.model),
                          rng=rng_state(self.model),
                          callbacks={key: cb.state() for key, cb in self.stateful.items()})
        write_json(self.run / "state.json", self.state)
        for old in (self.run / "checkpoints").glob("epoch-*.keras"):
            if old.name != Path(name or "").name:
                old.unlink(missing_ok=True)


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


def make_callbacks(spec: Spec, run: Path, state: dict, images_per_epoch: int) -> tuple[list, NaNGuard]:
    restored = state.get("callbacks", {})
    stateful: dict[str, Any] = {}
    if spec.train.lr_schedule.type == "plateau":
        p = spec.train.lr_schedule
        stateful["plateau"] = ResumablePlateau(
            monitor=p.monitor, factor=p.factor, patience=p.patience, min_delta=p.min_delta,
            cooldown=p.cooldown, min_lr=p.min_lr, restored=restored.get("plateau"),
        )
    if spec.train.early_stopping:
        e = spec.train.early_stopping
        stateful["early_stopping"] = ResumableEarlyStopping(
            monitor=e.monitor, mode=e.mode, patience=e.patience, min_delta=e.min_delta,
            restore_best_weights=e.restore_best_weights, restored=restored.get("early_stopping"),
        )
    guard = NaNGuard()
    callbacks = [EpochStats(images_per_epoch), guard, *stateful.values(), RunRecorder(run, spec, state, stateful)]
    tb = spec.train.tensorboard
    if tb.enabled:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run / "logs"), histogram_freq=int(tb.histograms), write_graph=tb.graph,
            profile_batch=tuple(tb.profile_batches) if tb.profile_batches else 0,
        ))
        if tb.graph and not state["epochs_done"]:
            callbacks.append(GraphWriter(run / "logs" / "train"))
    if spec.train.csv_log:
        callbacks.append(keras.callbacks.CSVLogger(str(run / "history.csv"), append=True))
    return callbacks, guard


# ------------------------------------------------------------------------------------------ fit


def load_checkpoint(path: Path):
    """A compiled model with its optimizer state; UserError if the file is missing or corrupt."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint missing; the run cannot be resumed")
    try:
        return keras.models.load_model(path)
    except Exception as err:  # Keras raises many types for a damaged archive
        raise UserError(f"{path}: cannot load this checkpoint ({type(err).__name__}: {err})") from None


def versions() -> dict[str, str]:
    return {"mnist_keras": __version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def weights_digest(model) -> str:
    """A short fingerprint of the model's weights (every worker of a cluster ends with the same one)."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.tobytes())
    return digest.hexdigest()[:16]


def prepare(spec: Spec, data_dir: str | None, cluster: dict | None = None):
    """Set up the device or strategy and load the data, before any run directory exists: (placement, arrays)."""
    from .data import load_arrays

    return configure(spec.runtime, spec.seed, cluster), load_arrays(spec.data, data_dir)


def fit(spec: Spec, run: Path, prepared: tuple, state: dict) -> dict:
    """Train the run in `run` from `state` (a new run's, or state.json's to resume) with what prepare() gave;
    return the metrics written to metrics.json."""
    from .dashboards import dashboard_callbacks, write_test_metrics
    from .data import make_pipelines

    placement, arrays = prepared
    described = placement.described
    start = state["epochs_done"]
    pipes = make_pipelines(spec, arrays, start_epoch=start)
    with placement.scope():
        if start:
            if not state.get("checkpoint"):
                raise UserError(f"{run}: no checkpoint was saved (train.checkpoint.enabled is false); cannot resume")
            model = load_checkpoint(run / state["checkpoint"])
            restore_rng_state(model, state.get("rng", {}))
        else:
            model = build_model(spec)
            compile_model(model, spec, pipes.steps_per_epoch)
        images_per_epoch = pipes.steps_per_epoch * spec.data.batch_size
        callbacks, guard = make_callbacks(spec, run, state, min(images_per_epoch, pipes.n_train))
        if spec.train.tensorboard.enabled:
            callbacks += dashboard_callbacks(spec, run / "logs", state, arrays, pipes.validation)
        state.update(status="running", device=described, provenance=arrays.provenance, pid=os.getpid(),
                     host=socket.gethostname())
        write_json(run / "state.json", state)
        print(f"mnist-keras: training {spec.name} on {described}, {pipes.n_train:,} train / {pipes.n_val:,} "
              f"validation / {pipes.n_test:,} test images, " + (f"epochs {start + 1}-{spec.train.epochs}"
              if start < spec.train.epochs else "all epochs done: evaluating"), flush=True)
        started = time.perf_counter()
        model.fit(
            pipes.train, epochs=spec.train.epochs, initial_epoch=start, steps_per_epoch=pipes.steps_per_epoch,
            validation_data=pipes.validation, validation_freq=spec.train.validation_freq,
            callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2, shuffle=False,
        )
        wall = time.perf_counter() - started
        if guard.where:
            state["status"] = "failed"
            write_json(run / "state.json", state)
            epoch, step = guard.where
            exact = spec.runtime.steps_per_execution == 1
            where = f"at epoch {epoch}, step {step}" if exact else f"in epoch {epoch}, by step {step}"
            raise TrainingFailed(
                f"the loss became NaN {where}; the last good checkpoint is kept in "
                f"{run / 'checkpoints'}. Try a lower learning rate (now {current_lr(model):.3g}) or gradient clipping"
            )
        test = model.evaluate(pipes.test, verbose=0, return_dict=True)
        if spec.train.tensorboard.enabled:
            write_test_metrics(run / "logs", test, len(state["history"]) - 1)
    atomic_write(run / "model.keras", model.save)
    history = state["history"]
    epoch_seconds = [h["epoch_seconds"] for h in history]
    metrics = {
        "name": spec.name, "run_dir": str(run), "status": "finished", "seed": spec.seed,
        "epochs_done": len(history), "device": described, "versions": versions(),
        "data": arrays.provenance, "history": history,
        "test": {k: float(v) for k, v in test.items()},
        "seconds_per_epoch": epoch_seconds, "wall_seconds_this_session": wall,
        "images_per_second": sum(h["images_per_second"] for h in history) / max(1, len(history)),
        "weights_sha256": weights_digest(model),
    }
    write_json(run / "metrics.json", metrics)
    state["status"] = "finished"
    write_json(run / "state.json", state)
    return metrics
