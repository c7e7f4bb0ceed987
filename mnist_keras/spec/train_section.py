"""The `train` section of a spec: optimizers (each naming its Keras class), checkpoints, TensorBoard, early
stopping and stages, and the cross-checks of its training recipes; the schedules are in schedules.py."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from .fields import (Fraction, KerasObject, NonNegativeFloat, PositiveFloat, PositiveInt, StrictModel, type_tag,
                     typed_union)
from .backbone_layer import Trainable
from .schedules import Constant, LRSchedule, MinDelta, Mode, Monitor, Patience
from .yamlfile import dotted



# a number or `auto`; anything else is checked as a number alone, so its message names no `auto`
LearningRate = Annotated[Union[Annotated[PositiveFloat, Tag("rate")], Annotated[Literal["auto"], Tag("auto")]],
                         Discriminator(lambda value: "auto" if value == "auto" else "rate")]


class _Optimizer(KerasObject):
    """A Keras optimizer (`keras_class`), its fields that optimizer's arguments."""

    keras_module = "keras.optimizers"

    learning_rate: LearningRate | None = Field(
        None, description="the initial learning rate, or `auto`: found by a range test (as `mnist-keras lr-find` "
        "runs it) before the first epoch and recorded in the run, which a resume reads; a schedule starts from the "
        "found rate (a cosine warmup, and one_cycle without max, climb to it) (default: None, Keras' default for "
        "the optimizer)")
    weight_decay: NonNegativeFloat | None = Field(None, description="decoupled weight decay (default: None, none)")
    clipnorm: PositiveFloat | None = Field(None, description="clip each gradient to this norm (default: None, off)")
    clipvalue: PositiveFloat | None = Field(None, description="clip each gradient value to +-this (default: None, "
                                            "off)")
    global_clipnorm: PositiveFloat | None = Field(None, description="clip all gradients to this global norm "
                                                  "(default: None, off)")
    ema: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="keep an exponential moving average of the weights with this momentum, e.g. 0.999 (Keras' "
        "use_ema and ema_momentum): validation, the test set, the checkpoints, the saved model and exports use the "
        "averaged weights, training goes on from the raw ones. The average starts at the first step's weights, so "
        "it wants a run of well over 1 / (1 - ema) steps (default: None, off)")

    keras_names: ClassVar[dict[str, tuple[str, ...]]] = {"ema": ("use_ema", "ema_momentum")}  # spec field -> Keras'
    momentum_name: ClassVar[str | None] = None  # the argument a one-cycle schedule cycles, where there is one

    @model_validator(mode="after")
    def _one_clip(self):
        if sum(x is not None for x in (self.clipnorm, self.clipvalue, self.global_clipnorm)) > 1:
            raise ValueError("use only one of clipnorm, clipvalue, global_clipnorm")
        return self

    def keras_arguments(self) -> dict[str, Any]:
        arguments = super().keras_arguments()
        ema = arguments.pop("ema", None)
        return arguments if ema is None else {**arguments, "use_ema": True, "ema_momentum": ema}

    def momentum_argument(self) -> str | None:
        """The momentum argument (momentum or beta_1), None where the optimizer has none or it is 0."""
        name = self.momentum_name
        return name if name and getattr(self, name) > 0 else None

    def keras(self, learning_rate):
        """The Keras optimizer with this spec's arguments and `learning_rate` (a float or a Keras
        LearningRateSchedule), made by Keras' deserializer as a saved model's is (Keras 3.15's
        keras.optimizers.get does not know Lamb)."""
        from ..backend import keras

        config = self.keras_config()
        return keras.saving.deserialize_keras_object(
            {**config, "config": {**config["config"], "learning_rate": learning_rate}})

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
    keras_class, momentum_name = "SGD", "momentum"
    type: Literal["sgd"] = type_tag("sgd", "optimizer")
    momentum: Momentum = 0.0
    nesterov: bool = Field(False, description="Nesterov momentum")


class _AdamFamily(_Optimizer):
    momentum_name = "beta_1"
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
    keras_class, momentum_name = "RMSprop", "momentum"
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


class Adamax(_AdamFamily):
    """Adam with the infinity norm of the gradients in place of their mean square."""

    keras_class = "Adamax"
    type: Literal["adamax"] = type_tag("adamax", "optimizer")


class Lamb(_AdamFamily):
    """Adam with each layer's step scaled by its weights' norm over the step's (layer-wise trust ratio)."""

    keras_class = "Lamb"
    type: Literal["lamb"] = type_tag("lamb", "optimizer")


class Lion(_Optimizer):
    """The sign of a running mean of the gradients (Chen et al., 2023); usually wants a 3-10x smaller learning
    rate than Adam and a larger weight decay."""

    keras_class = "Lion"
    type: Literal["lion"] = type_tag("lion", "optimizer")
    beta_1: Annotated[float, Field(gt=0, le=1)] = Field(0.9, description="how much of the running mean, against the "
                                                        "gradient, the step's sign is taken of")
    beta_2: Fraction = Field(0.99, description="decay rate of the running mean of the gradients")


class Adafactor(_Optimizer):
    """Adam's second moments factored into row and column means, with steps relative to the weights' size."""

    keras_class = "Adafactor"
    type: Literal["adafactor"] = type_tag("adafactor", "optimizer")
    beta_2_decay: Annotated[float, Field(lt=0)] = Field(-0.8, description="the second moments decay at rate "
                                                        "1 - step ** beta_2_decay")
    epsilon_1: PositiveFloat = Field(1e-30, description="added to the squared gradients")
    epsilon_2: PositiveFloat = Field(1e-3, description="the smallest weight scale a step is relative to")
    clip_threshold: PositiveFloat = Field(1.0, description="clip each update's root mean square to this")
    relative_step: bool = Field(True, description="with a constant learning rate, use min(learning_rate, "
                                "1 / sqrt(step))")


class Ftrl(_Optimizer):
    """Follow The Regularized Leader, with its own L1 and L2 penalties (McMahan et al., 2013)."""

    keras_class = "Ftrl"
    type: Literal["ftrl"] = type_tag("ftrl", "optimizer")
    learning_rate_power: Annotated[float, Field(le=0)] = Field(-0.5, description="how the per-weight rate falls as "
                                                               "its gradients add up (0: a fixed rate)")
    initial_accumulator_value: NonNegativeFloat = Field(0.1, description="starting value of the accumulators")
    l1_regularization_strength: NonNegativeFloat = Field(0.0, description="the L1 penalty")
    l2_regularization_strength: NonNegativeFloat = Field(0.0, description="the L2 penalty")
    l2_shrinkage_regularization_strength: NonNegativeFloat = Field(0.0, description="an L2 penalty on the "
                                                                   "magnitude of the weights")
    beta: NonNegativeFloat = Field(0.0, description="added to the accumulators' square root (FTRL's beta)")


Optimizer = typed_union(SGD, Adam, AdamW, Nadam, RMSprop, Adagrad, Adadelta, Adamax, Lamb, Lion, Adafactor, Ftrl,
                        default="adam")



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


def _trainings(train: Train) -> list[tuple[Any, tuple, Any, tuple, int]]:
    """(optimizer, its spec path, schedule, its spec path, epochs trained) of each stage, or of the whole run."""
    if not train.stages:
        return [(train.optimizer, ("train", "optimizer"), train.lr_schedule, ("train", "lr_schedule"), train.epochs)]
    parts, first = [], 0
    for i, stage in enumerate(train.stages):
        if first >= train.epochs:
            break
        own = ("train", "stages", i)
        parts.append((stage.optimizer or train.optimizer, own + ("optimizer",) if stage.optimizer else
                      ("train", "optimizer"), stage.lr_schedule or train.lr_schedule,
                      own + ("lr_schedule",) if stage.lr_schedule else ("train", "lr_schedule"),
                      min(stage.epochs, train.epochs - first)))
        first += stage.epochs
    return parts


def recipe_problems(train: Train) -> list[tuple[tuple, str]]:
    """What contradicts itself in the training recipes (EMA, one-cycle), each at its spec path."""
    problems: dict[tuple, str] = {}
    for optimizer, where, schedule, scheduled, epochs in _trainings(train):
        if optimizer.ema is not None and epochs == 1:
            problems[where + ("ema",)] = (
                "an average of the weights over a one-epoch run: Keras' average starts at the first step's weights "
                f"and keeps {optimizer.ema:g} of itself each step, so after one epoch it still lags far behind the "
                "training; train for more epochs or leave ema out")
        if schedule.type != "one_cycle":
            continue
        rate = optimizer.learning_rate
        if schedule.max is not None and isinstance(rate, float) and schedule.max < rate:
            problems[scheduled + ("max",)] = (
                f"one_cycle peaks at max = {schedule.max:g}, below {dotted(where)}.learning_rate = {rate:g}; the "
                "cycle starts at max / div and rises to max: set max to the peak you want, or leave it out to peak "
                "at the learning rate")
        if schedule.cycle_momentum and not optimizer.momentum_argument():
            name = optimizer.momentum_name
            has = f"{name} is 0" if name else f"{optimizer.type} has no momentum"
            problems[scheduled + ("cycle_momentum",)] = (
                f"cycle_momentum: true, but {dotted(where)} has nothing to cycle ({has}); set cycle_momentum: false, "
                "or use sgd or rmsprop with momentum, or adam, adamw, nadam, adamax or lamb")
    return list(problems.items())
