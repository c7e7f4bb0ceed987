"""The spec schema: data, model, train and runtime sections, with defaults and cross-checks.

Structure is checked by pydantic; `Spec.problems()` then checks what needs the whole spec
(shapes, the output layer against the loss, labels against the loss, the parameter budget).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, PrivateAttr, Tag, model_validator

from .fields import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, StrictModel
from .layers import LayerEntry, PlannedLayer, ShapeError, TemplateEntry, plan_layers

Path = tuple

# ----------------------------------------------------------------------------------------- data


class Normalize(StrictModel):
    """Subtract `mean` and divide by `std`, after scaling."""

    mean: float
    std: PositiveFloat


class Preprocess(StrictModel):
    """Pixel transforms, in order: x * scale + offset, then normalize, then resize."""

    scale: float = 1 / 255
    offset: float = 0.0
    normalize: Normalize | None = None
    resize: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    resize_method: Literal["bilinear", "nearest", "bicubic", "area"] = "bilinear"
    channel_axis: bool = True  # add a trailing channel axis: 28x28 -> 28x28x1
    one_hot: bool = True  # one-hot labels (categorical loss); false gives integer labels (sparse loss)


class Data(StrictModel):
    """Where the images come from and how the tf.data pipeline feeds them."""

    dataset: str = Field("mnist", min_length=1)  # mnist | fashion_mnist | a folder of IDX files | an .npz file
    source: Literal["auto", "keras", "files", "bundled"] = "auto"
    data_dir: str | None = None  # a folder with the dataset's files, tried first
    image_shape: Annotated[list[PositiveInt], Field(min_length=2, max_length=3)] = [28, 28, 1]
    num_classes: PositiveInt = 10
    validation: Union[NonNegativeInt, Fraction] = 0.1  # the last N training images, or a fraction
    max_train: PositiveInt | None = None  # use only the first N training images (quick runs)
    preprocess: Preprocess = Preprocess()
    shuffle: NonNegativeInt | Literal["all"] = "all"  # all: a fresh uniform permutation each epoch; N: a buffer of N (moves each image fewer than N places); 0: off
    batch_size: PositiveInt = 128  # the global batch: one step's images, split across all replicas when distributed
    drop_remainder: bool = False
    cache: bool = True
    prefetch: bool = True


# ---------------------------------------------------------------------------------------- model


class Model(StrictModel):
    """The layers, either listed or from a template (`template: lenet5`)."""

    input_shape: Annotated[list[PositiveInt], Field(min_length=1)] | None = None  # default: from data
    template: TemplateEntry | None = None
    layers: Annotated[list[LayerEntry], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.template is None) == (self.layers is None):
            raise ValueError("give either `layers` (a list) or `template` (e.g. `template: lenet5`), not both")
        return self

    def entries(self) -> list[tuple[Path, Any]]:
        """(spec path, entry) of every entry, for planning and error messages."""
        if self.template is not None:
            return [(("model", "template"), self.template)]
        return [(("model", "layers", i), entry) for i, entry in enumerate(self.layers)]


# ---------------------------------------------------------------------------------------- train


class _Optimizer(StrictModel):
    learning_rate: PositiveFloat | None = None  # default: Keras' default for the optimizer
    weight_decay: NonNegativeFloat | None = None
    clipnorm: PositiveFloat | None = None
    clipvalue: PositiveFloat | None = None
    global_clipnorm: PositiveFloat | None = None

    @model_validator(mode="after")
    def _one_clip(self):
        if sum(x is not None for x in (self.clipnorm, self.clipvalue, self.global_clipnorm)) > 1:
            raise ValueError("use only one of clipnorm, clipvalue, global_clipnorm")
        return self


class SGD(_Optimizer):
    type: Literal["sgd"] = "sgd"
    momentum: Fraction = 0.0
    nesterov: bool = False


class _AdamFamily(_Optimizer):
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: PositiveFloat = 1e-7


class Adam(_AdamFamily):
    type: Literal["adam"] = "adam"
    amsgrad: bool = False


class AdamW(_AdamFamily):
    type: Literal["adamw"] = "adamw"
    amsgrad: bool = False


class Nadam(_AdamFamily):
    type: Literal["nadam"] = "nadam"


class RMSprop(_Optimizer):
    type: Literal["rmsprop"] = "rmsprop"
    rho: Fraction = 0.9
    momentum: Fraction = 0.0
    epsilon: PositiveFloat = 1e-7
    centered: bool = False


class Adagrad(_Optimizer):
    type: Literal["adagrad"] = "adagrad"
    initial_accumulator_value: NonNegativeFloat = 0.1
    epsilon: PositiveFloat = 1e-7


class Adadelta(_Optimizer):
    type: Literal["adadelta"] = "adadelta"
    rho: Fraction = 0.95
    epsilon: PositiveFloat = 1e-7


def _typed_union(*classes, default: str):
    """A union told apart by its `type` key (`sgd`), also written as a bare name (`optimizer: sgd`)."""

    def tag(value: Any) -> str:
        return value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)

    def bare_name(value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    members = tuple(Annotated[cls, Tag(cls.model_fields["type"].default)] for cls in classes)
    return Annotated[Union[members], Discriminator(tag), BeforeValidator(bare_name)]


Optimizer = _typed_union(SGD, Adam, AdamW, Nadam, RMSprop, Adagrad, Adadelta, default="adam")


class _Schedule(StrictModel):
    unit: Literal["epoch", "step"] = "epoch"  # the unit of every count below


class Constant(_Schedule):
    type: Literal["constant"] = "constant"


class Exponential(_Schedule):
    """lr * decay_rate ** (t / every)."""

    type: Literal["exponential"] = "exponential"
    decay_rate: Annotated[float, Field(gt=0, le=1)]
    every: PositiveFloat = 1
    staircase: bool = False


class Step(_Schedule):
    """lr * gamma ** floor(t / every)."""

    type: Literal["step"] = "step"
    every: PositiveFloat
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1


class MultiStep(_Schedule):
    """lr * gamma ** (number of milestones passed)."""

    type: Literal["multistep"] = "multistep"
    milestones: Annotated[list[PositiveFloat], Field(min_length=1)]
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1

    @model_validator(mode="after")
    def _increasing(self):
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError("milestones must be strictly increasing")
        return self


class Polynomial(_Schedule):
    """From lr to end_learning_rate over decay_steps (default: the whole run), with `power`."""

    type: Literal["polynomial"] = "polynomial"
    end_learning_rate: NonNegativeFloat = 0.0001
    decay_steps: PositiveFloat | None = None
    power: PositiveFloat = 1.0


class Cosine(_Schedule):
    """Linear warmup from 0 to lr, then cosine decay to alpha * lr over decay_steps."""

    type: Literal["cosine"] = "cosine"
    decay_steps: PositiveFloat | None = None  # default: the whole run after warmup
    alpha: Fraction = 0.0
    warmup: NonNegativeFloat = 0


class InverseTime(_Schedule):
    """Caffe's "inv" policy: lr * (1 + gamma * t) ** -power."""

    type: Literal["inverse_time"] = "inverse_time"
    gamma: PositiveFloat
    power: PositiveFloat = 1.0


class Plateau(StrictModel):
    """Multiply lr by `factor` when `monitor` stops improving for `patience` epochs."""

    type: Literal["plateau"] = "plateau"
    monitor: str = "val_loss"
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: NonNegativeInt = 5
    min_delta: NonNegativeFloat = 1e-4
    cooldown: NonNegativeInt = 0
    min_lr: NonNegativeFloat = 0.0


LRSchedule = _typed_union(
    Constant, Exponential, Step, MultiStep, Polynomial, Cosine, InverseTime, Plateau, default="constant"
)


class Checkpoint(StrictModel):
    """The last epoch is always saved (for --resume); the best by `monitor` too if save_best."""

    enabled: bool = True
    monitor: str = "val_accuracy"
    mode: Literal["auto", "min", "max"] = "auto"
    save_best: bool = True


class TensorBoard(StrictModel):
    enabled: bool = True
    histograms: bool = False  # weight histograms every epoch
    graph: bool = True
    profile_batches: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None  # [first, last]


class EarlyStopping(StrictModel):
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: NonNegativeInt = 5
    min_delta: NonNegativeFloat = 0.0
    restore_best_weights: bool = True


class Train(StrictModel):
    """Loss, optimizer, learning-rate schedule and callbacks."""

    epochs: PositiveInt = 10
    loss: Literal["auto", "categorical_crossentropy", "sparse_categorical_crossentropy", "mse"] = "auto"
    label_smoothing: Fraction = 0.0
    optimizer: Optimizer = Adam()
    lr_schedule: LRSchedule = Constant()
    validation_freq: PositiveInt = 1  # evaluate on the validation set every N epochs
    checkpoint: Checkpoint = Checkpoint()
    tensorboard: TensorBoard = TensorBoard()
    early_stopping: EarlyStopping | None = None
    terminate_on_nan: bool = True
    csv_log: bool = True


# -------------------------------------------------------------------------------------- runtime


class Threads(StrictModel):
    intra_op: NonNegativeInt = 0  # 0: TensorFlow decides
    inter_op: NonNegativeInt = 0


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|gpu|gpu:\d+", value):
        raise ValueError(f"expected auto, cpu, gpu or gpu:N (e.g. gpu:1), got {value!r}")
    return value


def _run_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(f"a name is 1-64 letters, digits, '_', '.' or '-' (it names run directories), got {value!r}")
    return value


class Runtime(StrictModel):
    """Where and how the model runs."""

    device: Annotated[str, AfterValidator(_device_name)] = "auto"
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"  # mirrored: this machine's GPUs; multi_worker: several machines
    gpus: list[NonNegativeInt] | None = None  # the GPUs distribute uses (default: all)
    mixed_precision: bool | Literal["float16", "bfloat16"] = False  # true: float16 on GPU, bfloat16 on CPU
    jit_compile: bool = False  # compile each step with XLA
    # "epoch" (a whole epoch per call into TensorFlow) is 18-50% faster on CPU (benchmarks/throughput.py), but the
    # progress bar, per-batch callbacks and the NaN check then see only the end of each epoch.
    steps_per_execution: Union[PositiveInt, Literal["epoch"]] = 1  # N (a divisor of the epoch's steps) or epoch
    deterministic: bool = False  # deterministic TensorFlow ops: bit-exact repeats, slower
    threads: Threads = Threads()
    max_params: PositiveInt = 50_000_000  # refuse to build larger models; raise it to go bigger


# ----------------------------------------------------------------------------------------- spec


class Spec(StrictModel):
    """A whole spec file."""

    name: Annotated[str, AfterValidator(_run_name)] = "model"
    description: str | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    data: Data = Data()
    model: Model
    train: Train = Train()
    runtime: Runtime = Runtime()
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)  # spec path -> value of each --set

    @property
    def overrides(self) -> dict[str, Any]:
        """The values set over the file (`--set`, sweep values), by spec path, as the run record keeps them."""
        return self._overrides

    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape: `model.input_shape`, else the dataset's after preprocessing."""
        if self.model.input_shape:
            return tuple(self.model.input_shape)
        prep = self.data.preprocess
        height, width = prep.resize or self.data.image_shape[:2]
        channels = self.data.image_shape[2] if len(self.data.image_shape) == 3 else 1
        return (height, width, channels) if prep.channel_axis else (height, width)

    def loss(self) -> str:
        """The resolved loss name (`auto` follows data.preprocess.one_hot)."""
        if self.train.loss != "auto":
            return self.train.loss
        return "categorical_crossentropy" if self.data.preprocess.one_hot else "sparse_categorical_crossentropy"

    def plan(self) -> list[PlannedLayer]:
        """Every Keras layer with its output shape and parameter counts; raises ShapeError."""
        return plan_layers(self.model.entries(), self.input_shape(), self.data.num_classes)

    def problems(self) -> list[tuple[Path, str]]:
        """What is wrong with the spec as a whole, as (spec path, message) pairs."""
        problems = self._label_problems()
        try:
            planned = self.plan()
        except ShapeError as err:
            return problems + [(err.path, str(err))]
        problems += self._output_problems(planned) + self._runtime_problems()
        total = sum(p.trainable + p.non_trainable for p in planned)
        if total > self.runtime.max_params:
            problems.append(
                (("model",), f"the model has {total:,} parameters, over runtime.max_params = "
                 f"{self.runtime.max_params:,}; raise runtime.max_params if you mean it")
            )
        return problems

    def _runtime_problems(self) -> list[tuple[Path, str]]:
        runtime = self.runtime
        if runtime.distribute == "none" and runtime.gpus is not None:
            return [(("runtime", "gpus"), "only distribute: mirrored or multi_worker takes a list of GPUs; "
                     "to train on one GPU, use device: gpu:N")]
        if runtime.distribute != "none" and runtime.device.startswith("gpu:"):
            return [(("runtime", "device"), f"'{runtime.device}' picks one GPU, but distribute is "
                     f"{runtime.distribute}; list its GPUs in runtime.gpus instead")]
        return []

    def _label_problems(self) -> list[tuple[Path, str]]:
        loss, one_hot = self.train.loss, self.data.preprocess.one_hot
        if loss == "sparse_categorical_crossentropy" and one_hot:
            return [(("train", "loss"), "sparse_categorical_crossentropy takes integer labels, but "
                     "data.preprocess.one_hot is true; set one_hot: false or use categorical_crossentropy")]
        if loss == "categorical_crossentropy" and not one_hot:
            return [(("train", "loss"), "categorical_crossentropy takes one-hot labels, but "
                     "data.preprocess.one_hot is false; set one_hot: true or use sparse_categorical_crossentropy")]
        if loss == "mse" and one_hot:
            return [(("data", "preprocess", "one_hot"), "a regression spec (loss: mse) predicts the label "
                     "value itself: set one_hot: false")]
        return []

    def _output_problems(self, planned: list[PlannedLayer]) -> list[tuple[Path, str]]:
        last = planned[-1]
        act = getattr(last.layer, "activation", None)
        if act in ("softmax", "log_softmax", "sigmoid"):
            return [(last.origin, f"the model ends in {act}, but the loss is computed from logits; "
                     "remove the final activation (the last layer must output raw scores)")]
        expected = 1 if self.loss() == "mse" else self.data.num_classes
        units = last.output_shape[-1]
        if len(last.output_shape) != 1 or units != expected:
            what = "1 value (regression, loss: mse)" if expected == 1 else f"{expected} logits, one per class"
            return [(last.origin, f"the model outputs shape {last.output_shape}, but it must output {what}; "
                     f"end with `dense: {{units: {expected}}}`")]
        return []
