"""Keras objects of our own (schedules, a metric, a layer), registered for saving, and loading a saved model.

Cheap to import beside TensorFlow: loading a model never needs the training modules.
"""

from __future__ import annotations

import math
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..backend import keras, tf
from ..errors import UserError, first_line

if TYPE_CHECKING:
    from ..runs.run import Run


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


def one_cycle(step, total_steps: int, warmup: float, start: float, peak: float, end: float):
    """PyTorch's OneCycleLR curve at `step` (counted from 0): a cosine from `start` to `peak` up to step
    warmup * total_steps - 1, then a cosine from `peak` to `end` at step total_steps - 1, `end` after."""
    turn = warmup * total_steps - 1
    step = keras.ops.cast(step, "float32")

    def cosine(first: float, last: float, fraction):
        return last + (first - last) / 2 * (keras.ops.cos(math.pi * fraction) + 1)

    rising = cosine(start, peak, step / max(turn, 1.0))  # a turn before step 1: step 0 is the rise's only step
    falling = cosine(peak, end, keras.ops.minimum((step - turn) / (total_steps - 1 - turn), 1.0))
    return keras.ops.where(step <= turn, rising, falling)


@keras.saving.register_keras_serializable(package="mnist_keras")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's one-cycle learning rate, as PyTorch's OneCycleLR: from max / div up to max at `warmup` of the
    steps, then down to max / (div * final_div) at the last."""

    def __init__(self, max_learning_rate: float, total_steps: int, warmup: float, div: float, final_div: float):
        self.max_learning_rate, self.total_steps, self.warmup = max_learning_rate, total_steps, warmup
        self.div, self.final_div = div, final_div

    def __call__(self, step):
        start = self.max_learning_rate / self.div
        return one_cycle(step, self.total_steps, self.warmup, start, self.max_learning_rate, start / self.final_div)

    def get_config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps, "warmup": self.warmup,
                "div": self.div, "final_div": self.final_div}


@keras.saving.register_keras_serializable(package="mnist_keras")
def rounded_accuracy(y_true, y_pred):
    """Accuracy of a regression on the digit value: the rounded prediction equals the label."""
    return keras.ops.cast(keras.ops.equal(keras.ops.round(y_pred), keras.ops.round(y_true)), "float32")


@keras.saving.register_keras_serializable(package="mnist_keras")
class AugMix(keras.layers.AugMix):
    """keras.layers.AugMix whose chains' operations are drawn per batch by its seed generator. Keras draws them with
    Python's `random` while the training step is traced, so a compiled fit applied one fixed sequence of operations
    to every batch, and a resumed run could draw another."""

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        seed = seed or self._get_seed_generator(self.backend._backend)
        return {"chain_mixing_weights": self._sample_from_dirichlet([self.num_chains], self.alpha, seed),
                "weight_sample": self.backend.random.beta(shape=(), alpha=self.alpha, beta=self.alpha, seed=seed),
                # an operation per step of each chain, the last index none
                "picks": self.backend.random.randint((self.num_chains, self.chain_depth), 0,
                                                     len(self._augment_layers) + 1, seed=seed)}

    def _step(self, name: str):
        """One operation, its random magnitudes drawn as it runs (only the operation picked is run)."""
        layer = getattr(self, name)

        def apply(images):
            seed = self._get_seed_generator(self.backend._backend)
            return layer.transform_images(images, layer.get_random_transformation(images, seed=seed))

        return apply

    def transform_images(self, images, transformation, training=True):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training:
            return images
        weights = keras.ops.cast(transformation["chain_mixing_weights"], self.compute_dtype)
        kept = keras.ops.cast(transformation["weight_sample"], self.compute_dtype)
        steps = [self._step(name) for name in self._augment_layers] + [lambda same: same]
        picks = transformation["picks"]

        def add_chain(chain, mixed):  # loops, so that each operation is traced once
            chained = keras.ops.fori_loop(0, self.chain_depth,
                                          lambda depth, x: keras.ops.switch(picks[chain, depth], steps, x), images)
            return mixed + chained * weights[chain]

        mixed = keras.ops.fori_loop(0, self.num_chains, add_chain, keras.ops.zeros_like(images))
        return keras.ops.clip(kept * images + (1 - kept) * mixed, self.value_range[0], self.value_range[1])


OWN_LAYERS = {"mnist_keras>AugMix": AugMix}  # by registered name: spec layers built as our own classes


def check_model_fits(model, spec, where: str) -> None:
    """UserError unless the model takes the spec's input shape and gives its number of outputs."""
    taken, given = tuple(model.input_shape[1:]), tuple(spec.input_shape())
    outputs, expected = model.output_shape[-1], 1 if spec.loss() == "mse" else spec.data.num_classes
    if taken != given:
        raise UserError(f"{where}: the spec does not fit the model: the model takes images of shape {list(taken)}, "
                        f"the spec gives {list(given)}")
    if outputs != expected:
        raise UserError(f"{where}: the spec does not fit the model: the model outputs {outputs} values, the spec "
                        f"expects {expected}")


def load_model(path: Path, spec=None):
    """A saved .keras model (with its optimizer), loaded in Keras' safe mode and, given the spec it is used
    with, checked against it; UserError if it cannot be loaded or does not fit."""
    try:
        if not stat.S_ISREG(Path(path).stat().st_mode):
            raise UserError(f"{path}: not a regular file")
    except OSError as err:
        raise UserError(f"{path}: cannot read this model ({err.strerror})") from None
    try:
        with warnings.catch_warnings():  # a mixed_float16 model's loss-scale variables: unused here
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model = keras.models.load_model(path, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged archive
        what = "checkpoint" if Path(path).parent.name == "checkpoints" else "model"
        raise UserError(f"{path}: cannot load this {what} ({type(err).__name__}: {first_line(err)})") from None
    if spec is not None:
        check_model_fits(model, spec, str(path))
    if model.compiled:
        build_before_tracing(model)
    return model


def build_before_tracing(model) -> None:
    """Make a compiled model's optimizer slots and metric variables now, as Keras does under a tf.distribute
    strategy: otherwise Keras makes them inside the first traced step, which TensorFlow then traces again."""
    if tf.distribute.has_strategy() or model.optimizer is None:  # under a strategy Keras builds them itself
        return
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    outputs = keras.ops.zeros((1, *model.output_shape[1:]))
    sparse = isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    model.compute_metrics(None, keras.ops.zeros((1,), "int32") if sparse else outputs, outputs, sample_weight=None)
    model.reset_metrics()


def load_run_model(run: "Run", which: Literal["final", "best", "last"] = "final"):
    """A run's trained model (model.keras, or its best or last checkpoint), checked against the run's spec."""
    return load_model(run.model_file(which), run.spec)
