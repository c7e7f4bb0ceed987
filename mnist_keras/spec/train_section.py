"""The `train` section of a spec: optimizers and learning-rate schedules (each naming its Keras class),
checkpoints, TensorBoard, early stopping and stages."""

from __future__ import annotations

import inspect
from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from .fields import (MAX_COUNT, Count, Fraction, KerasObject, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, StrictModel, type_tag, typed_union)
from .backbone_layer import Trainable



# a number or `auto`; anything else is checked as a number alone, so its message names no `auto`
LearningRate = Annotated[Union[Annotated[PositiveFloat, Tag("rate")], Annotated[Literal["auto"], Tag("auto")]],
                         Discriminator(lambda value: "auto" if value == "auto" else "rate")]


class _Optimizer(KerasObject):
    """A Keras optimizer (`keras_class`), its fields that optimizer's arguments."""

    keras_module = "keras.optimizers"

    learning_rate: LearningRate | None = Field(
        None, description="the initial learning rate, or `auto`: found by a range test (as `mnist-keras lr-find` "
        "runs it) before the first epoch and recorded in the run, which a resume reads; a schedule starts from the "
        "found rate (a cosine warmup climbs to it) (default: None, Keras' default for the optimizer)")
    weight_decay: NonNegativeFloat | None = Field(None, description="decoupled weight decay (default: None, none)")
    clipnorm: PositiveFloat | None = Field(None, description="clip each gradient to this norm (default: None, off)")
    clipvalue: PositiveFloat | None = Field(None, description="clip each gradient value to +-this (default: None, "
                                            "off)")
    global_clipnorm: PositiveFloat | None = Field(None, description="clip all gradients to this global norm "
                                                  "(default: None, off)")

    @model_validator(mode="after")
    def _one_clip(self):
        if sum(x is not None for x in (self.clipnorm, self.clipvalue, self.global_clipnorm)) > 1:
            raise ValueError("use only one of clipnorm, clipvalue, global_clipnorm")
        return self

    def keras(self, learning_rate):
        """The Keras optimizer with this spec's arguments and `learning_rate` (a float or a Keras
        LearningRateSchedule), made by Keras' registry."""
        from ..backend import keras

        config = self.keras_config()
        return keras.optimizers.get({**config, "config": {**config["config"], "learning_rate": learning_rate}})

    def resolved_learning_rate(self, found: float | None = None) -> float:
        """The spec's learning_rate; for `auto`, `found`: the rate the run's range test chose, as the run records
        it (RunState.found_learning_rate); without one, Keras' default for this optimizer."""
        if self.learning_rate == "auto":
            if found is None:
                raise ValueError("learning_rate: auto stands for the rate a run's range test found; pass it")
            return found
        if self.learning_rate is not None:
            return self.learning_rate
        from ..backend import keras

        return inspect.signature(getattr(keras.optimizers, self.keras_class)).parameters["learning_rate"].default


Momentum = Annotated[Fraction, Field(description="momentum: the fraction of the last update added to this one")]
Epsilon = Annotated[PositiveFloat, Field(description="added to denominators, for numerical stability")]


class SGD(_Optimizer):
    keras_class = "SGD"
    type: Literal["sgd"] = type_tag("sgd", "optimizer")
    momentum: Momentum = 0.0
    nesterov: bool = Field(False, description="Nesterov momentum")


class _AdamFamily(_Optimizer):
    beta_1: Fraction = Field(0.9, description="decay rate of the running mean of the gradients")
    beta_2: Fraction = Field(0.999, description="decay rate of the running mean of the squared gradients")
    epsilon: Epsilon = 1e-7


class Adam(_AdamFamily):
    keras_class = "Adam"
    type: Literal["adam"] = type_tag("adam", "optimizer")
    amsgrad: bool = Field(False, description="the AMSGrad variant")


class AdamW(Adam):
    keras_class = "AdamW"
    type: Literal["adamw"] = type_tag("adamw", "optimizer")
    weight_decay: NonNegativeFloat = Field(0.004, description="decoupled weight decay")


class Nadam(_AdamFamily):
    keras_class = "Nadam"
    type: Literal["nadam"] = type_tag("nadam", "optimizer")


class RMSprop(_Optimizer):
    keras_class = "RMSprop"
    type: Literal["rmsprop"] = type_tag("rmsprop", "optimizer")
    rho: Fraction = Field(0.9, description="decay rate of the running mean of the squared gradients")
    momentum: Momentum = 0.0
    epsilon: Epsilon = 1e-7
    centered: bool = Field(False, description="divide by the gradients' variance instead of their mean square")


class Adagrad(_Optimizer):
    keras_class = "Adagrad"
    type: Literal["adagrad"] = type_tag("adagrad", "optimizer")
    initial_accumulator_value: NonNegativeFloat = Field(0.1, description="starting value of the accumulators")
    epsilon: Epsilon = 1e-7


class Adadelta(_Optimizer):
    keras_class = "Adadelta"
    type: Literal["adadelta"] = type_tag("adadelta", "optimizer")
    rho: Fraction = Field(0.95, description="decay rate of the running means")
    epsilon: Epsilon = 1e-7


Optimizer = typed_union(SGD, Adam, AdamW, Nadam, RMSprop, Adagrad, Adadelta, default="adam")


class _Schedule(StrictModel):
    unit: Literal["epoch", "step"] = Field("epoch", description="the unit of every count below")


Decay = Annotated[float, Field(gt=0, le=1)]
EVERY = "epochs or steps per decay (at most 1e9)"


class Constant(_Schedule):
    """The learning rate stays as it is."""

    type: Literal["constant"] = type_tag("constant", "schedule")


class Exponential(_Schedule):
    """lr * decay_rate ** (t / every)."""

    type: Literal["exponential"] = type_tag("exponential", "schedule")
    decay_rate: Decay = Field(description="the factor per `every`")
    every: Count = Field(1, description=EVERY)
    staircase: bool = Field(False, description="decay in steps (floor of t / every) instead of smoothly")


class Step(_Schedule):
    """lr * gamma ** floor(t / every)."""

    type: Literal["step"] = type_tag("step", "schedule")
    every: Count = Field(description=EVERY)
    gamma: Decay = Field(0.1, description="the factor per `every`")


class MultiStep(_Schedule):
    """lr * gamma ** (number of milestones passed)."""

    type: Literal["multistep"] = type_tag("multistep", "schedule")
    milestones: Annotated[list[Count], Field(min_length=1)] = Field(
        description="strictly increasing times (at most 1e9) at which lr is multiplied by gamma")
    gamma: Decay = Field(0.1, description="the factor at each milestone")

    @model_validator(mode="after")
    def _increasing(self):
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError("milestones must be strictly increasing")
        return self


class Polynomial(_Schedule):
    """From lr to end_learning_rate over decay_steps (default: the whole run), with `power`."""

    type: Literal["polynomial"] = type_tag("polynomial", "schedule")
    end_learning_rate: NonNegativeFloat = Field(0.0001, description="the learning rate at the end of the decay")
    decay_steps: Count | None = Field(None, description="length of the decay, at most 1e9 (default: the whole run)")
    power: PositiveFloat = Field(1.0, description="the polynomial's power (1: linear)")


class Cosine(_Schedule):
    """Linear warmup from 0 to lr, then cosine decay to alpha * lr over decay_steps."""

    type: Literal["cosine"] = type_tag("cosine", "schedule")
    decay_steps: Count | None = Field(None, description="length of the decay, at most 1e9 (default: the whole run "
                                      "after warmup)")
    alpha: Fraction = Field(0.0, description="the final learning rate as a fraction of lr")
    warmup: Annotated[float, Field(ge=0, le=MAX_COUNT)] = Field(
        0, description="length of the linear warmup (at most 1e9)")


class InverseTime(_Schedule):
    """Caffe's "inv" policy: lr * (1 + gamma * t) ** -power."""

    type: Literal["inverse_time"] = type_tag("inverse_time", "schedule")
    gamma: PositiveFloat = Field(description="how fast the rate falls, per unit")
    power: PositiveFloat = Field(1.0, description="the exponent")


Monitor = Annotated[str, Field(description="the metric watched: loss, accuracy, or val_loss / val_accuracy (these "
                                           "need validation images: data.validation > 0)")]
Mode = Annotated[Literal["auto", "min", "max"], Field(description="whether the monitored metric should fall (min) "
                                                                  "or rise (max); auto: rise for accuracy")]
Patience = Annotated[NonNegativeInt, Field(description="epochs without improvement before acting")]
MinDelta = Annotated[NonNegativeFloat, Field(description="the smallest change that counts as an improvement")]


class Plateau(StrictModel):
    """Multiply lr by `factor` when `monitor` stops improving for `patience` epochs."""

    type: Literal["plateau"] = type_tag("plateau", "schedule")
    monitor: Monitor = "val_loss"
    factor: Annotated[float, Field(gt=0, lt=1)] = Field(0.1, description="multiplies lr at each plateau")
    patience: Patience = 5
    min_delta: MinDelta = 1e-4
    cooldown: NonNegativeInt = Field(0, description="epochs to wait after a reduction before watching again")
    min_lr: NonNegativeFloat = Field(0.0, description="the learning rate never falls below this")


LRSchedule = typed_union(
    Constant, Exponential, Step, MultiStep, Polynomial, Cosine, InverseTime, Plateau, default="constant"
)


class Checkpoint(StrictModel):
    """The last epoch is always saved (for --resume); the best by `monitor` too if save_best."""

    enabled: bool = Field(True, description="save checkpoints")
    monitor: Monitor = Field("val_accuracy", description="the metric that picks the best epoch (the default "
                             "val_accuracy keeps no best checkpoint when data.validation is 0)")
    mode: Mode = "auto"
    save_best: bool = Field(True, description="also keep the best epoch by `monitor`")


class TensorBoard(StrictModel):
    """TensorBoard logs in the run's logs/ folder."""

    enabled: bool = Field(True, description="write TensorBoard logs")
    histograms: bool = Field(False, description="weight histograms every epoch")
    graph: bool = Field(True, description="write the model's graph")
    images_every: PositiveInt = Field(1, description="draw the validation confusion matrix and misclassified "
                                      "images every N epochs and after the last (each costs a prediction pass)")
    profile_batches: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[first, last] batch to profile, first <= last (default: no profiling)")


class EarlyStopping(StrictModel):
    """Stop training when `monitor` stops improving."""

    monitor: Monitor = "val_loss"
    mode: Mode = "auto"
    patience: Patience = 5
    min_delta: MinDelta = 0.0
    restore_best_weights: bool = Field(True, description="end with the weights of the best epoch")


class Stage(StrictModel):
    """Part of the training with its own backbone freezing, optimizer and schedule (whose counts start at the
    stage's first epoch)."""

    epochs: PositiveInt = Field(description="the stage's epochs")
    trainable: Trainable | None = Field(None, description="the backbone in this stage: false, true or {last: N} "
                                        "(default: the backbone's own trainable)")
    optimizer: Optimizer | None = Field(None, description="the optimizer of this stage, new at its start "
                                        "(default: train.optimizer)")
    lr_schedule: LRSchedule | None = Field(None, description="the schedule of this stage (default: "
                                           "train.lr_schedule)")


class Train(StrictModel):
    """Loss, optimizer, learning-rate schedule and callbacks."""

    epochs: PositiveInt = Field(10, description="passes over the training images")
    loss: Literal["auto", "categorical_crossentropy", "sparse_categorical_crossentropy", "mse"] = Field(
        "auto", description="auto: categorical or sparse categorical cross-entropy, following data.preprocess.one_hot")
    label_smoothing: Fraction = Field(0.0, description="label smoothing of categorical cross-entropy")
    optimizer: Optimizer = Field(Adam(), description="`{type: NAME, arguments}` or just the name")
    lr_schedule: LRSchedule = Field(Constant(), description="how the learning rate changes during training")
    validation_freq: PositiveInt = Field(1, description="evaluate on the validation set every N epochs")
    checkpoint: Checkpoint = Field(Checkpoint(), description="checkpoints of the model and optimizer")
    tensorboard: TensorBoard = Field(TensorBoard(), description="TensorBoard logs")
    early_stopping: EarlyStopping | None = Field(None, description="stop when a metric stops improving "
                                                 "(default: off)")
    stop_at: Annotated[dict[str, float], Field(min_length=1, max_length=4)] | None = Field(
        None, description="end training after the first epoch that reaches every target, e.g. `{val_accuracy: "
        "0.99}`: an accuracy (accuracy, val_accuracy) must be at least its target, a loss (loss, val_loss) at most; "
        "val_* metrics need data.validation > 0 and are seen only on epochs that validate. The run records that "
        "epoch and the training seconds up to it, and ends finished (default: off)")
    terminate_on_nan: bool = Field(True, description="stop (and mark the run failed) at a NaN loss")
    csv_log: bool = Field(True, description="write each epoch's metrics to history.csv")
    stages: Annotated[list[Stage], Field(min_length=1, max_length=100)] | None = Field(
        None, description="train in stages, one after another (e.g. a frozen backbone, then fine-tuning); "
        "train.epochs is then their total unless set lower (default: one stage)")

    @model_validator(mode="before")
    @classmethod
    def _epochs_of_stages(cls, data):
        """train.epochs defaults to the stages' total."""
        stages = data.get("stages") if isinstance(data, dict) else None
        if isinstance(stages, list) and "epochs" not in data and all(
                isinstance(s, dict) and type(s.get("epochs")) is int for s in stages):
            data = {**data, "epochs": max(1, sum(s["epochs"] for s in stages))}
        return data
