"""Compiling a model as its spec says: the optimizer, the learning-rate schedule, the loss and metrics."""

from __future__ import annotations

from ..backend import keras, tf
from ..spec import Spec
from ..model.objects import InverseTimePower, OneCycle, build_before_tracing, one_cycle, rounded_accuracy


def spans_the_run(spec: Spec) -> bool:
    """True for a schedule whose length is the run's (one-cycle, cosine or polynomial without decay_steps)."""
    sched = spec.train.lr_schedule
    return sched.type == "one_cycle" or sched.type in ("cosine", "polynomial") and not sched.decay_steps


def make_schedule(spec: Spec, steps_per_epoch: int, found: float | None = None):
    """The learning rate: a float, or a Keras schedule of the optimizer's step counter; `found`: the rate the run's
    range test chose, which `learning_rate: auto` stands for (the schedule's base rate)."""
    sched, lr = spec.train.lr_schedule, spec.train.optimizer.resolved_learning_rate(found)
    if sched.type in ("constant", "plateau"):
        return lr
    total = spec.train.epochs * steps_per_epoch
    if sched.type == "one_cycle":
        peak = sched.max if sched.max is not None else lr
        return OneCycle(peak, total, sched.warmup, sched.div, sched.final_div)
    per_unit = steps_per_epoch if sched.unit == "epoch" else 1

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


class CycledMomentum(float):
    """An optimizer's momentum (or beta_1) under a one-cycle schedule. Keras' optimizers test it in Python when
    they build and trace (`momentum != 0`) and save it in their config: there it is the float it was. In the
    update, which TensorFlow traces once, it is a tensor, `current()`, that the traced function computes afresh
    at each step: tf.convert_to_tensor calls __tf_tensor__, and the arithmetic below computes with it."""

    dtype = "float32"  # Keras infers the dtype of what it computes with from this, not from the class's name

    def __new__(cls, nominal: float, current):
        cycled = super().__new__(cls, nominal)
        cycled.current = current
        return cycled

    def __tf_tensor__(self, dtype=None, name=None):
        return tf.cast(self.current(), dtype or "float32", name=name)

    def __reduce__(self):  # a copy is the float
        return float, (float(self),)

    def __add__(self, other):
        return self.current() + other

    def __radd__(self, other):
        return other + self.current()

    def __sub__(self, other):
        return self.current() - other

    def __rsub__(self, other):
        return other - self.current()

    def __mul__(self, other):
        return self.current() * other

    def __rmul__(self, other):
        return other * self.current()

    def __truediv__(self, other):
        return self.current() / other

    def __rtruediv__(self, other):
        return other / self.current()


def cycle_momentum(optimizer, spec: Spec, steps_per_epoch: int) -> None:
    """One-cycle's momentum cycle, where the spec's schedule has one: the optimizer's momentum (or beta_1) moves
    from max_momentum down to base_momentum and back, inversely to the rate, step by step."""
    sched = spec.train.lr_schedule
    name = sched.cycled(spec.train.optimizer) if sched.type == "one_cycle" else None
    if name:
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        total, high = spec.train.epochs * steps_per_epoch, sched.max_momentum
        setattr(inner, name, CycledMomentum(getattr(inner, name), lambda: one_cycle(
            inner.iterations, total, sched.warmup, high, sched.base_momentum, high)))


def make_loss_and_metrics(spec: Spec):
    loss = spec.loss()
    if loss == "mse":
        return keras.losses.MeanSquaredError(), [keras.metrics.MeanMetricWrapper(rounded_accuracy, name="accuracy")]
    if loss == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    smoothing = spec.train.label_smoothing
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing), ["accuracy"]


def layers_without_xla(model) -> list[str]:
    """The Keras classes of the model's layers (nested ones too) that XLA cannot compile: Keras runs such a model
    without XLA whatever jit_compile says, so compile_model does it without Keras' warning."""
    names, todo = [], list(model.layers)
    while todo:
        layer = todo.pop(0)
        names += [] if layer.supports_jit or type(layer).__name__ in names else [type(layer).__name__]
        todo += getattr(layer, "layers", [])
    return names


def compile_model(model, spec: Spec, steps_per_epoch: int, found: float | None = None) -> None:
    """Compile as the spec says; `found`: the rate `learning_rate: auto` stands for (make_schedule). jit_compile
    applies where every layer supports XLA (layers_without_xla)."""
    loss, metrics = make_loss_and_metrics(spec)
    group = spec.runtime.steps_per_execution
    optimizer = spec.train.optimizer.keras(make_schedule(spec, steps_per_epoch, found))
    cycle_momentum(optimizer, spec, steps_per_epoch)
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics,
        jit_compile=spec.runtime.jit_compile and not layers_without_xla(model),
        steps_per_execution=steps_per_epoch if group == "epoch" else group,
    )
    build_before_tracing(model)


def current_lr(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
