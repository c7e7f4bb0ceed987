"""The spec schema: data, model, train and runtime sections, with defaults and cross-checks.

Structure is checked by pydantic field by field; `Spec`'s own validator then checks what needs the
whole spec (shapes, the output layer against the loss, labels against the loss, monitored metrics,
the parameter and memory budgets), so no way of making a `Spec` gives an invalid one.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, Iterator, Literal, Union

from pydantic import (AfterValidator, BeforeValidator, Field, PrivateAttr, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import InitErrorDetails

from .layout import class_names  # standard library only: validation counts classes without numpy or TensorFlow
from ..errors import UserError
from .fields import (
    MAX_COUNT,
    Count,
    Fraction,
    KerasObject,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    Side,
    StrictModel,
    type_tag,
    typed_union,
)
from .applications import Described, LayerWeights
from .layers import (Backbone, LayerEntry, PlannedLayer, ShapeError, TemplateEntry, Trainable, did_you_mean,
                     frozen_counts, plan_layers)
from .yamlfile import read_yaml_file

Path = tuple
MAX_THREADS = 1024

# ----------------------------------------------------------------------------------------- data


DATASET_FORMS = ("mnist or fashion_mnist, a folder of IDX files, an .npz file, a .json.gz file (mnist.json.gz: "
                 "train, validation and test splits), a folder of class folders (optionally inside train/, test/ "
                 "and validation/), or a .csv of path,label lines")


class Places(dict):
    """{field: "FILE:LINE:COL"} where a spec file gives each field: left out of the spec's equality (the same
    spec written in two files is one spec)."""

    def __eq__(self, other) -> bool:
        return isinstance(other, dict)

    __hash__ = None


def missing_dataset(path: str | FilePath) -> str:
    """What to say of a data.dataset path that names nothing: every form data.dataset takes."""
    return (f"{path}: no such file or folder{did_you_mean(FilePath(path).name, TRAIN_SIZES)}; data.dataset is "
            f"{DATASET_FORMS} (a relative path is inside the spec file's folder, or inside data.data_dir or "
            "--data-dir)")


def absolute(path: str, base: str | FilePath | None = None) -> str:
    """`path` (~ expanded) as an absolute path; a relative one is taken inside `base` (default: the current folder)."""
    return os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(path)))


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # of ImageNet's RGB pixels in 0..1
PerChannel = Annotated[list[float], Field(min_length=1, max_length=3)]


class Normalize(StrictModel):
    """Subtract `mean` and divide by `std`, after scaling: one number for all channels, or one per channel."""

    mean: float | PerChannel = Field(description="subtracted from every pixel (a list: one per channel)")
    std: PositiveFloat | Annotated[list[PositiveFloat], Field(min_length=1, max_length=3)] = Field(
        description="then every pixel is divided by it (a list: one per channel)")


def _preset(value):
    return Normalize(**IMAGENET) if value == "imagenet" else value


def _names_as_text(value):
    """`{0: 2.0}` as `{"0": 2.0}`: class names are text, YAML reads digits as numbers."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class Preprocess(StrictModel):
    """Pixel transforms, in order: x * scale + offset, then normalize, then resize."""

    scale: float = Field(1 / 255, description="multiplies every pixel (1/255: bytes to [0, 1])")
    offset: float = Field(0.0, description="added to every pixel after scaling")
    normalize: Annotated[Normalize | Literal["imagenet"], AfterValidator(_preset)] | None = Field(
        None, description="standardize after scaling: {mean, std}, each a number or one per channel, or imagenet "
        "(RGB pixels scaled to 0..1; default: none)")
    fit: Literal["stretch", "crop", "pad"] = Field("stretch", description="images (files or arrays) of another "
                                                   "size than data.image_shape: stretch them, crop the centre, or "
                                                   "pad with black")
    resize: Annotated[list[Side], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[height, width] to resize the images to, each at most 8192 (default: keep)")
    resize_method: Literal["bilinear", "nearest", "bicubic", "area"] = Field("bilinear", description="how resize "
                                                                             "computes new pixels")
    channel_axis: bool = Field(True, description="add a trailing channel axis: 28x28 -> 28x28x1")
    one_hot: bool = Field(True, description="one-hot labels (categorical loss); false gives integer labels "
                          "(sparse loss)")


class Data(StrictModel):
    """Where the images come from and how the tf.data pipeline feeds them."""

    dataset: str = Field("mnist", min_length=1, description=DATASET_FORMS + " (a relative path: see data_dir)")
    source: Literal["auto", "keras", "files", "bundled"] = Field("auto", description="where to read the dataset "
                                                                 "(auto: data_dir, the Keras cache, a download, "
                                                                 "then the bundled sample)")
    data_dir: str | None = Field(None, description="a folder with the dataset's files, tried first; a relative "
                                 "dataset path is read inside it (without one: inside the spec file's folder)")
    image_shape: Annotated[list[Side], Field(min_length=2, max_length=3)] = Field(
        [28, 28, 1], description="[height, width] or [height, width, channels] of the images, each at most 8192; "
        "every source is read at this size (data.preprocess.fit), gray (1 channel) or RGB (3)")
    num_classes: PositiveInt = Field(10, description="number of classes (the width of the output layer); default: "
                                     "the class folders or CSV labels the dataset has, else 10")
    validation: Union[NonNegativeInt, Fraction] = Field(0.1, description="held out for validation: the last N "
                                                        "training images, or a fraction (image files: drawn per "
                                                        "class, unless there is a validation/ folder; ignored "
                                                        "for a .json.gz, which has its own)")
    test_split: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2, description="image files without a test/ folder: the fraction of each class held out for testing, "
        "drawn with `seed`")
    on_bad_file: Literal["refuse", "skip"] = Field("refuse", description="image files that cannot be decoded: "
                                                   "refuse (list them and stop) or skip (and count them)")
    class_weight: Annotated[Literal["balanced"] | dict[str, PositiveFloat], BeforeValidator(_names_as_text)] | None \
        = Field(None, description="weights of the classes in the loss: balanced (inverse to their counts) or "
                "{class name: weight}, 1 for the classes not named (default: none, all 1)")
    max_train: PositiveInt | None = Field(None, description="use only the first N training images (quick runs)")
    preprocess: Preprocess = Field(Preprocess(), description="pixel and label transforms")
    shuffle: NonNegativeInt | Literal["all"] = Field(
        "all", description="all: a fresh uniform permutation each epoch; N: a buffer of N (moves each image "
        "fewer than N places); 0: off")
    batch_size: PositiveInt = Field(128, description="the global batch: one step's images, split across all "
                                    "replicas when distributed")
    drop_remainder: bool = Field(False, description="drop the last, smaller batch of each epoch")
    cache: Literal["memory", "disk", "none"] | bool = Field(
        "memory", description="memory: decode and preprocess each split once, in memory; disk: image files decoded "
        "once into cache_dir and read from there; none: decode every epoch (true and false mean memory and none)")
    cache_dir: str | None = Field(None, description="where cache: disk keeps decoded images (default: the run's "
                                  "cache/ folder)")
    prefetch: bool = Field(True, description="prepare the next batches while the model trains")
    _places: Places = PrivateAttr(default_factory=lambda: Places())  # field -> "FILE:LINE:COL" where a file gives it

    def class_labels(self) -> list[str]:
        """The class names of data that names none: "0" to "N-1" (MNIST's digits)."""
        return [str(i) for i in range(self.num_classes)]

    def place(self, field: str) -> str:
        """`FILE:LINE:COL: data.FIELD` where a spec file (or a flag) gives the field, else `data.FIELD`: what a
        message about the field's value starts with."""
        where = self._places.get(field)
        return f"{where}: data.{field}" if where else f"data.{field}"

    @field_validator("image_shape")
    @classmethod
    def _colour_mode(cls, shape: list[int], info: ValidationInfo) -> list[int]:
        """MNIST and Fashion-MNIST are read gray or RGB, as the channels ask; other counts cannot be made."""
        dataset = info.data.get("dataset")
        if dataset in TRAIN_SIZES and shape[2:] not in ([], [1], [3]):
            raise ValueError(f"{dataset} is read as gray (1 channel) or RGB (3), not {shape[2]} channels; "
                             f"set data.image_shape: [{shape[0]}, {shape[1]}, 1] or [{shape[0]}, {shape[1]}, 3]")
        return shape

    @model_validator(mode="after")
    def _per_channel(self):
        channels = self.image_shape[2] if len(self.image_shape) == 3 else 1
        norm = self.preprocess.normalize
        for name in ("mean", "std"):
            value = getattr(norm, name, None)
            if isinstance(value, list) and len(value) != channels:
                raise ValueError(f"preprocess.normalize.{name} lists {len(value)} values, but the images have "
                                 f"{channels} channel{'s' * (channels > 1)} (data.image_shape {self.image_shape})")
        return self


# ---------------------------------------------------------------------------------------- model


class Model(StrictModel):
    """The layers, either listed or from a template (`template: lenet5`)."""

    input_shape: Annotated[list[PositiveInt], Field(min_length=1)] | None = Field(
        None, description="the model's input shape without the batch axis (default: from data)")
    template: TemplateEntry | None = Field(None, description="a named model, e.g. `template: lenet5`")
    layers: Annotated[list[LayerEntry], Field(min_length=1)] | None = Field(
        None, description="the layers, in order: `- name: {arguments}`, `- name: value` or `- name`")

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


class _Optimizer(KerasObject):
    """A Keras optimizer (`keras_class`), its fields that optimizer's arguments."""

    keras_module = "keras.optimizers"

    learning_rate: PositiveFloat | None = Field(
        None, description="the initial learning rate (default: None, Keras' default for the optimizer)")
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

    def resolved_learning_rate(self) -> float:
        """The spec's learning_rate, else Keras' default for this optimizer."""
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


# -------------------------------------------------------------------------------------- runtime


class Threads(StrictModel):
    """TensorFlow's thread pools."""

    intra_op: Annotated[int, Field(ge=0, le=MAX_THREADS)] = Field(
        0, description="threads inside one op, at most 1024 (0: TensorFlow decides)")
    inter_op: Annotated[int, Field(ge=0, le=MAX_THREADS)] = Field(
        0, description="ops run in parallel, at most 1024 (0: TensorFlow decides)")


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|gpu|gpu:\d+", value):
        raise ValueError(f"expected auto, cpu, gpu or gpu:N (e.g. gpu:1), got {value!r}")
    return value


def check_run_name(value: str) -> str:
    """A name that becomes a folder (a run's, a study's): ValueError unless it is a plain name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(f"a name is 1-64 letters, digits, '_', '.' or '-' (it names run directories), got {value!r}")
    return value


class Runtime(StrictModel):
    """Where and how the model runs."""

    device: Annotated[str, AfterValidator(_device_name)] = Field("auto", description="auto, cpu, gpu or gpu:N")
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="mirrored: this machine's GPUs; multi_worker: several machines")
    gpus: list[NonNegativeInt] | None = Field(None, description="the GPUs distribute uses (default: all)")
    mixed_precision: bool | Literal["float16", "bfloat16", "auto"] = Field(
        False, description="true: float16 on GPU, bfloat16 on CPU; auto: bfloat16 where the hardware computes in it "
        "(CPUs with AVX512_BF16 or AMX, GPUs of compute capability 8.0 and up), else float32")
    jit_compile: bool = Field(False, description="compile each step with XLA")
    # "epoch" (a whole epoch per call into TensorFlow) is 18-50% faster on CPU (benchmarks/throughput.py), but the
    # progress bar, per-batch callbacks and the NaN check then see only the end of each epoch.
    steps_per_execution: Union[PositiveInt, Literal["epoch"]] = Field(
        1, description="steps per call into TensorFlow: N (a divisor of the epoch's steps) or epoch")
    deterministic: bool = Field(False, description="deterministic TensorFlow ops: bit-exact repeats, slower")
    threads: Threads = Field(Threads(), description="TensorFlow's thread pools")
    max_params: PositiveInt = Field(50_000_000, description="refuse to build larger models; raise it to go bigger")
    max_activation_bytes: Annotated[int, Field(gt=0, le=2**50)] = Field(
        8 * 2**30, description="refuse models whose layer outputs for one batch (float32) take more bytes; "
        "raise it to go bigger")


# ----------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class StagePlan:
    """One stage: its number (from 1), its epochs [first, end) counted from 0, the spec as it trains in it (its
    optimizer, schedule and train.epochs), and the backbone's trainable setting (None without a backbone)."""

    number: int
    first: int
    end: int
    spec: "Spec"
    trainable: Any


_RECORDED: ContextVar[dict[str, Described]] = ContextVar("backbone runs as a run's record keeps them", default={})
_OPENING: ContextVar[tuple[str, ...]] = ContextVar("backbone runs being described", default=())


@contextmanager
def recorded_backbones(described: dict[str, Described]) -> Iterator[None]:
    """Within this, a backbone `run:` named here (by absolute path) is described as given, without reading
    it: a finished run's spec is checked against its own record, so it no longer needs the earlier run."""
    token = _RECORDED.set({**_RECORDED.get(), **described})
    try:
        yield
    finally:
        _RECORDED.reset(token)


class BackboneCycle(UserError):
    """Runs that name each other (or themselves) as backbones: reported as it is from however deep it is found."""


def _described_run(backbone: Backbone, shape: tuple) -> Described:
    """The earlier run's backbone, from a record (recorded_backbones) or its own spec; UserError naming the
    chain when runs name each other (or themselves) as backbones."""
    key = os.path.abspath(backbone.run)
    if key in _RECORDED.get():
        return _RECORDED.get()[key]
    chain = _OPENING.get()
    if key in chain:
        cycle = " -> ".join([*chain[chain.index(key):], key])
        raise BackboneCycle(f"backbone runs form a cycle: {cycle} (each one's spec.yaml names the next as its "
                            "backbone run); a backbone run must be an earlier run")
    token = _OPENING.set((*chain, key))
    try:
        return _run_backbone(backbone, shape)
    finally:
        _OPENING.reset(token)


def _run_backbone(backbone: Backbone, shape: tuple) -> Described:
    """An earlier run's model up to `until`, described from the run's own spec (no TensorFlow)."""
    run = FilePath(backbone.run)
    spec_file = run / "spec.yaml"
    if not (spec_file.is_file() and (run / "state.json").is_file()):
        raise ShapeError(f"{run} is not a run directory (a run has spec.yaml and state.json)", "run")
    try:
        source = Spec.model_validate(read_yaml_file(spec_file)[0], context={"base": str(run)})
    except BackboneCycle:
        raise
    except (UserError, ValueError) as err:
        first = (err.messages[0] if isinstance(err, UserError) else str(err).splitlines()[0])[:300]
        raise ShapeError(f"{spec_file} cannot be read as a spec ({first})", "run") from None
    planned = source.plan()
    names = [p.name for p in planned]
    until = backbone.until if backbone.until is not None else max(0, len(planned) - 2)
    index = names.index(until) if until in names else until if isinstance(until, int) else None
    if index is None or index >= len(planned):
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(names))
        raise ShapeError(f"the run {run} has no layer {until!r}; its layers are {listed}", "until")
    if tuple(source.input_shape()) != tuple(shape):
        raise ShapeError(f"the run's model takes images of shape {list(source.input_shape())}, but this spec gives "
                         f"{list(shape)}; match data.image_shape and data.preprocess.resize to the run's", "run")
    layers = tuple(LayerWeights(p.name, p.trainable, p.non_trainable, p.layer.kind == "batch_norm")
                   for p in planned[:index + 1] if p.trainable + p.non_trainable)
    return Described(planned[index].output_shape, layers, index)


class SpecProblems(ValueError):
    """What is wrong with a spec as a whole: `problems` lists (spec path, message) pairs."""

    def __init__(self, problems: list[tuple[Path, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000}  # training images of the named datasets


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


class Spec(StrictModel):
    """A whole spec file."""

    name: Annotated[str, AfterValidator(check_run_name)] = Field("model", description="names the run directories "
                                                            "(default: the file's name)")
    description: str | None = Field(None, description="free text, shown in listings")
    seed: Seed = Field(42, description="seeds weights, shuffling, dropout and augmentation; 0 to 4,294,967,295")
    data: Data = Field(Data(), description="the dataset and its input pipeline")
    model: Model = Field(description="the layers")
    train: Train = Field(Train(), description="loss, optimizer, schedule and callbacks")
    runtime: Runtime = Field(Runtime(), description="device, distribution, precision and limits")
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)  # spec path -> value of each --set

    @property
    def overrides(self) -> dict[str, Any]:
        """The values set over the file (`--set`, sweep values), by spec path, as the run record keeps them."""
        return self._overrides

    @model_validator(mode="after")
    def _whole_spec(self, info: ValidationInfo):
        """Make the paths absolute and infer data.num_classes (see _resolve), then raise every problem of the
        whole spec, each at its own spec path (a pydantic `value_error` whose `ctx["error"]` is a SpecProblems
        holding that one problem)."""
        problems, classes = self._resolve(info.context or {})
        problems = problems or self.problems(classes)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type="value_error", loc=path, input=None, ctx={"error": SpecProblems([(path, msg)])})
                for path, msg in problems
            ])
        return self

    def _resolve(self, context: dict) -> tuple[list[tuple[Path, str]], list[str] | None]:
        """Every path made absolute, and data.num_classes, when the spec leaves it out, inferred from the class
        folders or CSV labels of the dataset: (the problems found on the way, the classes inferred from).

        A relative path is inside context["base"] (the spec file's folder), or the current folder when there is
        none or context["overridden"] holds its spec path (a `--set`); a relative data.dataset is inside the data
        folder when there is one (context["data_dir"], from --data-dir, else data.data_dir)."""
        base, overridden = context.get("base"), set(context.get("overridden", ()))

        def resolved(path: Path, value: str, folder: str | None = None) -> str:
            set_here = any(path[:n] in overridden for n in range(len(path) + 1))
            return absolute(value, folder or (None if set_here else base))

        data, update, classes = self.data, {}, None
        for name in ("data_dir", "cache_dir"):
            if getattr(data, name):
                update[name] = resolved(("data", name), getattr(data, name))
        if data.dataset not in TRAIN_SIZES:
            folder = absolute(context["data_dir"]) if context.get("data_dir") else update.get("data_dir")
            update["dataset"] = resolved(("data", "dataset"), data.dataset, folder)
            if "num_classes" not in data.model_fields_set:
                if data.source in ("auto", "files") and not FilePath(update["dataset"]).exists():
                    return [(("data", "dataset"), missing_dataset(update["dataset"]))], None  # classes unknown
                try:
                    classes = class_names(FilePath(update["dataset"]))
                except (UserError, OSError) as err:
                    return [(("data", "dataset"), err.messages[0] if isinstance(err, UserError) else str(err))], None
                if classes:
                    update["num_classes"] = len(classes)
        object.__setattr__(self, "data", data.model_copy(update=update))
        layers = list(self.model.layers or [])
        for i, entry in enumerate(layers):
            backbone = getattr(entry, "backbone", None)
            if isinstance(backbone, Backbone) and (backbone.run or backbone.weights_file()):
                name = "run" if backbone.run else "weights"
                path = ("model", "layers", i, "backbone", name)
                layers[i] = entry.model_copy(update={"backbone": backbone.model_copy(
                    update={name: resolved(path, getattr(backbone, name))})})
        if self.model.layers:
            object.__setattr__(self, "model", self.model.model_copy(update={"layers": layers}))
        return [], classes

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
        return plan_layers(self.model.entries(), self.input_shape(), self.data.num_classes, _described_run)

    def backbone(self) -> Backbone | None:
        """The model's backbone layer, if it has one."""
        return next((e.backbone for _, e in self.model.entries() if isinstance(getattr(e, "backbone", None),
                                                                               Backbone)), None)

    def stages(self) -> list[StagePlan]:
        """The stages up to train.epochs (one, the whole run, without train.stages)."""
        backbone = self.backbone()
        default = backbone.trainable if backbone else None
        if not self.train.stages:
            return [StagePlan(1, 0, self.train.epochs, self, default)]
        plans, first = [], 0
        for number, stage in enumerate(self.train.stages, 1):
            if first >= self.train.epochs:
                break
            train = self.train.model_copy(update={"epochs": stage.epochs, "stages": None,
                                                  "optimizer": stage.optimizer or self.train.optimizer,
                                                  "lr_schedule": stage.lr_schedule or self.train.lr_schedule})
            trainable = default if stage.trainable is None or not backbone else stage.trainable
            plans.append(StagePlan(number, first, first + stage.epochs, self.model_copy(update={"train": train}),
                                   trainable))
            first += stage.epochs
        return plans

    def keeps_batch_norm_frozen(self) -> bool:
        """True when the backbone is frozen (wholly or in part) at any stage: its BatchNorm layers then stay in
        inference mode throughout, as Keras' transfer-learning guide prescribes."""
        return any(stage.trainable is not True for stage in self.stages()) if self.backbone() else False

    def stage_weights(self, planned: list[PlannedLayer], stage: StagePlan) -> list[tuple[int, int]]:
        """(trainable, frozen) weights of each planned layer in a stage."""
        return [frozen_counts(p.backbone.layers, stage.trainable, self.keeps_batch_norm_frozen()) if p.backbone
                else (p.trainable, p.non_trainable) for p in planned]

    def problems(self, classes: list[str] | None = None) -> list[tuple[Path, str]]:
        """What is wrong with the spec as a whole, as (spec path, message) pairs; `classes`: the class names
        data.num_classes was inferred from, for the message of an output layer that does not fit them."""
        problems = self._label_problems() + self._train_problems() + self._runtime_problems()
        try:
            planned = self.plan()
        except ShapeError as err:
            return problems + [(err.path, str(err))]
        return problems + self._output_problems(planned, classes) + self._budget_problems(planned)

    def largest_batch(self) -> int:
        """The most images one batch can hold: data.batch_size, but no more than max_train or the training set
        of a named dataset (a larger batch is one batch of the whole split)."""
        known = self.data.max_train or TRAIN_SIZES.get(self.data.dataset, self.data.batch_size)
        return min(self.data.batch_size, known)

    def _budget_problems(self, planned: list[PlannedLayer]) -> list[tuple[Path, str]]:
        runtime, problems = self.runtime, []
        total = sum(p.trainable + p.non_trainable for p in planned)
        if total > runtime.max_params:
            problems.append((("model",), f"the model has {total:,} parameters, over runtime.max_params = "
                             f"{runtime.max_params:,}; raise runtime.max_params if you mean it"))
        batch = self.largest_batch()
        sizes = [math.prod(p.output_shape) * batch * 4 for p in planned]
        used = math.prod(self.input_shape()) * batch * 4 + sum(sizes)
        if used > runtime.max_activation_bytes:
            largest = planned[sizes.index(max(sizes))]
            problems.append((("model",), f"one batch of {batch:,} images needs {_gib(used)} of layer outputs, "
                             f"over runtime.max_activation_bytes = {_gib(runtime.max_activation_bytes)}; the largest "
                             f"is {largest.name}, output {largest.output_shape} ({_gib(max(sizes))}); use smaller "
                             "layers or images, a smaller data.batch_size, or raise runtime.max_activation_bytes"))
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

    def _stage_problems(self) -> list[tuple[Path, str]]:
        stages, problems = self.train.stages or [], []
        total = sum(stage.epochs for stage in stages)
        if stages and self.train.epochs > total:
            problems.append((("train", "epochs"), f"{self.train.epochs} epochs, but the stages cover {total}; "
                             "leave train.epochs out (it is their total) or lengthen a stage"))
        problems += [(("train", "stages", i, "lr_schedule"), "plateau watches the whole run: set it as "
                      "train.lr_schedule, not in a stage") for i, stage in enumerate(stages)
                     if stage.lr_schedule and stage.lr_schedule.type == "plateau"]
        if not self.backbone():
            problems += [(("train", "stages", i, "trainable"), "there is no backbone to freeze or unfreeze; "
                          "add a `backbone` as the first layer or leave trainable out")
                         for i, stage in enumerate(stages) if stage.trainable is not None]
        return problems

    def _train_problems(self) -> list[tuple[Path, str]]:
        train, problems = self.train, self._stage_problems()
        watched = [(("train", "lr_schedule", "monitor"), getattr(train.lr_schedule, "monitor", None)),
                   (("train", "early_stopping", "monitor"), train.early_stopping and train.early_stopping.monitor)]
        if "monitor" in train.checkpoint.model_fields_set and train.checkpoint.save_best:
            watched.append((("train", "checkpoint", "monitor"), train.checkpoint.monitor))
        if self.data.validation == 0:
            problems += [(path, f"'{metric}' is measured on validation images, but data.validation is 0; "
                          f"monitor '{metric.removeprefix('val_')}' or hold out validation images")
                         for path, metric in watched if metric and metric.startswith("val_")]
        batches = train.tensorboard.profile_batches
        if batches and batches[0] > batches[1]:
            problems.append((("train", "tensorboard", "profile_batches"), f"profile_batches is [first, last], "
                             f"but {batches[0]} > {batches[1]}"))
        return problems

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

    def _output_problems(self, planned: list[PlannedLayer], classes: list[str] | None) -> list[tuple[Path, str]]:
        last = planned[-1]
        act = getattr(last.layer, "activation", None)
        if act in ("softmax", "log_softmax", "sigmoid"):
            return [(last.origin, f"the model ends in {act}, but the loss is computed from logits; "
                     "remove the final activation (the last layer must output raw scores)")]
        expected = 1 if self.loss() == "mse" else self.data.num_classes
        units = last.output_shape[-1]
        if len(last.output_shape) != 1 or units != expected:
            what = "1 value (regression, loss: mse)" if expected == 1 else f"{expected} logits, one per class"
            if classes and expected != 1:
                what += f" (data.num_classes is left out, and {self.data.dataset} has {expected} classes: " \
                        f"{', '.join(classes[:20])}{', ...' if expected > 20 else ''})"
            return [(last.origin, f"the model outputs shape {last.output_shape}, but it must output {what}; "
                     f"end with `dense: {{units: {expected}}}`")]
        return []
