"""The averaged weights of `train.optimizer.ema` (Keras' use_ema) where a run's results come from.

Keras keeps the average in the optimizer and puts it into the model when `fit` ends. Here the average is in
the model from the epoch's validation until every callback has seen the epoch (so the validation metrics, the
best and last checkpoints, early stopping's best weights and the dashboards are those of the average), and the
raw weights are back for the next epoch's training. A checkpoint thus holds the average in the model and the
raw weights in the optimizer's average slots: a run resumed within a stage swaps them back before it trains.
The swap copies values (Keras' own SwapEMAWeights swaps by adding and subtracting, which rounds), so a resumed
run goes on bit for bit.
"""

from __future__ import annotations

from ..backend import keras
from ..spec import Spec


def averaging(model):
    """The model's optimizer when it keeps an average of the weights (inside a LossScaleOptimizer too), else None."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return optimizer if getattr(optimizer, "use_ema", False) else None


def swap_average(optimizer) -> None:
    """The averaged weights into the model and the model's into the average slots, exactly."""
    for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        if average is not None:
            weights = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(weights)


class AveragedWeights(keras.callbacks.Callback):
    """The first callback: puts the average in the model at validation (or, without one, at the epoch's end);
    `back`, the last callback, puts the raw weights back after the epoch. `resumed`: the model comes from a
    checkpoint with its optimizer, so the average is in it and the raw weights go back before training."""

    def __init__(self, resumed: bool):
        super().__init__()
        self.swapped, self.back = resumed, _RawWeightsBack(self)

    def swap(self) -> None:
        optimizer = averaging(self.model)
        if optimizer is not None:
            swap_average(optimizer)
            self.swapped = not self.swapped

    def on_train_begin(self, logs=None):
        if self.swapped:
            self.swap()
        self.swapped = False  # a stage compiled anew starts from what is in the model

    def on_test_begin(self, logs=None):
        if not self.swapped:
            self.swap()

    def on_epoch_end(self, epoch, logs=None):
        if not self.swapped:
            self.swap()


class _RawWeightsBack(keras.callbacks.Callback):
    def __init__(self, averaged: AveragedWeights):
        super().__init__()
        self.averaged = averaged

    def on_epoch_end(self, epoch, logs=None):
        if self.averaged.swapped:
            self.averaged.swap()


def with_averaged_weights(callbacks: list, spec: Spec, resumed: bool) -> list:
    """The run's callbacks between AveragedWeights and its `back` when any stage averages the weights."""
    if not any(stage.spec.train.optimizer.ema for stage in spec.stages()):
        return callbacks
    averaged = AveragedWeights(resumed)
    return [averaged, *callbacks, averaged.back]
