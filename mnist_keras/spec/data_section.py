"""The `data` section of a spec: where the images come from, their preprocessing, and the paths and
class counts resolved from the data."""

from __future__ import annotations

import os
from pathlib import Path as FilePath
from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, BeforeValidator, Field, PrivateAttr, ValidationInfo, field_validator,
                      model_validator)

from .fields import Fraction, NonNegativeInt, PositiveFloat, PositiveInt, Side, StrictModel
from .messages import did_you_mean

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

    def pixel_range(self) -> tuple[float, float]:
        """The lowest and highest value a pixel can take after scale, offset and normalize (over every channel)."""
        ends = [0 * self.scale + self.offset, 255 * self.scale + self.offset]
        if self.normalize:
            mean, std = self.normalize.mean, self.normalize.std
            channels = max(len(v) if isinstance(v, list) else 1 for v in (mean, std))
            ends = [(end - (mean[c] if isinstance(mean, list) else mean)) / (std[c] if isinstance(std, list) else std)
                    for end in ends for c in range(channels)]
        return min(ends), max(ends)


Alpha = Annotated[float, Field(ge=0, le=100)]


class Augment(StrictModel):
    """MixUp and CutMix of training batches in the input pipeline: images and one-hot labels mixed in pairs."""

    mixup: Alpha = Field(0.0, description="MixUp: alpha of the Beta(alpha, alpha) each image's share is drawn from "
                         "(0.2 is usual); the image is blended with another of its batch, labels alike; 0: off")
    cutmix: Alpha = Field(0.0, description="CutMix: alpha of the Beta(alpha, alpha) of each image's kept area (1.0 is "
                          "usual); a box of another image of its batch is pasted in, labels mixed by area; 0: off")
    prob: Annotated[float, Field(ge=0, le=1)] = Field(1.0, description="the chance that a batch is mixed at all; "
                                                      "with both mixup and cutmix, one of them is drawn per batch")

    def on(self) -> bool:
        """Whether any batch is mixed."""
        return bool(self.mixup or self.cutmix) and self.prob > 0


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
    augment: Augment = Field(Augment(), description="MixUp and CutMix of training batches (never of validation or "
                             "test batches)")
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


TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000}  # training images of the named datasets


def augment_problems(data: Data, loss: str) -> list[tuple[tuple, str]]:
    """What data.augment cannot do with the spec's labels (`loss`, resolved), at its spec path."""
    augment = data.augment
    if not augment.on():
        return []
    key = "mixup" if augment.mixup else "cutmix"
    what = f"{'MixUp' if augment.mixup else 'CutMix'} mixes the labels of two images into class shares that sum to 1"
    if loss == "mse":
        return [(("data", "augment", key), f"{what}, but loss: mse regresses the label value itself; train a "
                 "classifier (data.preprocess.one_hot: true, train.loss: auto) or leave data.augment out")]
    if loss == "sparse_categorical_crossentropy":
        return [(("data", "augment", key), f"{what}, which needs one-hot labels, but the loss is "
                 "sparse_categorical_crossentropy (integer labels); set data.preprocess.one_hot: true and "
                 "train.loss: auto (or categorical_crossentropy)")]
    return []
