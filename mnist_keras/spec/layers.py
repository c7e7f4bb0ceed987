"""The layer vocabulary: one registry from spec names to layer schemas, shape rules and Keras factories.

Every layer knows, without TensorFlow, the shape it outputs and the weights it owns, so a spec is
checked and summarised before Keras is imported. Stacks and templates expand to plain layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, create_model, model_validator
from pydantic_core import PydanticCustomError

from .applications import APPLICATIONS, Described, input_problem
from .applications import describe as describe_application
from .fields import (
    MAX_INT,
    ActivationName,
    Fraction,
    InitializerSpec,
    KerasObject,
    Pair,
    PositiveFloat,
    PositiveInt,
    Regularizer,
    Side,
    StrictModel,
)

Shape = tuple[int, ...]
Padding = Literal["valid", "same"]


class ShapeError(Exception):
    """A layer cannot accept its input; `field` names the argument to blame, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _fmt(shape: Shape) -> str:
    return str(tuple(shape))


def _need_image(kind: str, shape: Shape) -> None:
    if len(shape) != 3:
        raise ShapeError(
            f"{kind} needs an image input of shape (height, width, channels), got {_fmt(shape)}; "
            "check data.preprocess.channel_axis, or add a reshape before it"
        )


def _window_out(shape: Shape, window: list[int], strides: list[int], dilation: list[int], padding: str,
                what: str, field: str) -> Shape:
    """Output height and width of a sliding window; ShapeError if the (dilated) window is larger than
    its input, which with `same` padding would only see padding (and can exhaust memory)."""
    span = [d * (w - 1) + 1 for w, d in zip(window, dilation)]
    if any(s > size for s, size in zip(span, shape[:2])):
        raise ShapeError(
            f"{what} {span[0]}x{span[1]} is larger than its {shape[0]}x{shape[1]} input "
            f"(with padding '{padding}' too); use a smaller {field}", field,
        )
    if padding == "same":
        return tuple(math.ceil(size / s) for size, s in zip(shape[:2], strides))
    return tuple((size - sp) // s + 1 for size, sp, s in zip(shape[:2], span, strides))


def _describe(text: str):
    return Field(description=text)


class Layer(KerasObject):
    """A spec entry that is exactly one Keras layer, `keras_class`, with its arguments as fields."""

    keras_module = "keras.layers"
    kind: ClassVar[str]
    shorthand: ClassVar[str | None] = None  # the argument a scalar value stands for: `dropout: 0.5`

    def expand(self, num_classes: int) -> list[tuple["Layer", tuple]]:
        return [(self, ())]

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def weight_counts(self, shape: Shape) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts for an input of `shape`."""
        return 0, 0

    def keras(self, name: str):
        """The Keras layer, made by Keras' own registry from this layer's arguments."""
        from ..backend import keras

        config = self.keras_config()
        return keras.layers.deserialize({**config, "config": {**config["config"], "name": name}})


class WeightedLayer(Layer):
    """Arguments shared by the layers that own a kernel and a bias."""

    activation: ActivationName | None = Field(None, description="applied to the output (default: none, linear)")
    use_bias: bool = Field(True, description="add a learned bias")
    kernel_initializer: InitializerSpec = Field("glorot_uniform", description="initial values of the kernel")
    bias_initializer: InitializerSpec = Field("zeros", description="initial values of the bias")
    kernel_regularizer: Regularizer | None = Field(None, description="weight penalty on the kernel")
    bias_regularizer: Regularizer | None = Field(None, description="weight penalty on the bias")


class Dense(WeightedLayer):
    """A fully connected layer: units outputs, each a weighted sum of all inputs."""

    kind = "dense"
    keras_class = "Dense"
    shorthand = "units"
    units: PositiveInt = _describe("output width (number of neurons)")

    def output_shape(self, shape):
        if not shape:
            raise ShapeError("dense needs an input with at least one axis")
        return shape[:-1] + (self.units,)

    def weight_counts(self, shape):
        return shape[-1] * self.units + self.units * self.use_bias, 0


class Conv2D(WeightedLayer):
    """A 2D convolution: `filters` kernels slid over the image."""

    kind = "conv2d"
    keras_class = "Conv2D"
    filters: PositiveInt = _describe("number of output channels")
    kernel_size: Pair = _describe("[height, width] of the kernel (or one number), dilated at most the input size")
    strides: Pair = Field([1, 1], description="step of the kernel, [height, width] or one number")
    padding: Padding = Field("valid", description="valid: no padding; same: pad so that output = input / strides")
    dilation_rate: Pair = Field([1, 1], description="spacing of the kernel taps; with strides > 1 not allowed")

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ShapeError("strides > 1 cannot be combined with dilation_rate > 1", "strides")
        field = "dilation_rate" if max(self.dilation_rate) > 1 else "kernel_size"
        out = _window_out(shape, self.kernel_size, self.strides, self.dilation_rate, self.padding, "kernel", field)
        return out + (self.filters,)

    def weight_counts(self, shape):
        kh, kw = self.kernel_size
        return kh * kw * shape[2] * self.filters + self.filters * self.use_bias, 0


class Pool2D(Layer):
    """Arguments shared by max and average pooling."""

    shorthand = "pool_size"
    pool_size: Pair = Field([2, 2], description="[height, width] of the window (or one number), at most the input "
                          "size (default: 2x2, as Keras' max pooling)")
    strides: Pair | None = Field(None, description="step of the window (default: pool_size, as in Keras)")
    padding: Padding = Field("valid", description="valid: drop the edge that does not fill a window; same: pad it")

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        out = _window_out(shape, self.pool_size, self.strides or self.pool_size, [1, 1], self.padding,
                          "pool", "pool_size")
        return out + (shape[2],)


class MaxPool2D(Pool2D):
    """The maximum of each window."""

    kind = "max_pool2d"
    keras_class = "MaxPooling2D"


class AvgPool2D(Pool2D):
    """The mean of each window."""

    kind = "avg_pool2d"
    keras_class = "AveragePooling2D"


class Flatten(Layer):
    """All axes but the batch as one."""

    kind = "flatten"
    keras_class = "Flatten"

    def output_shape(self, shape):
        return (math.prod(shape),)


class Dropout(Layer):
    """Sets a random fraction of the values to 0 while training."""

    kind = "dropout"
    keras_class = "Dropout"
    shorthand = "rate"
    rate: Fraction = _describe("fraction of the inputs set to 0 while training")


class BatchNorm(Layer):
    """Normalizes each channel by the batch's statistics (moving averages at inference)."""

    kind = "batch_norm"
    keras_class = "BatchNormalization"
    momentum: Annotated[float, Field(gt=0, lt=1)] = Field(0.99, description="momentum of the moving mean and variance")
    epsilon: PositiveFloat = Field(1e-3, description="added to the variance, for numerical stability")
    center: bool = Field(True, description="learn an offset (beta)")
    scale: bool = Field(True, description="learn a scale (gamma)")

    def output_shape(self, shape):
        if not shape:
            raise ShapeError("batch_norm needs an input with at least one axis")
        return shape

    def weight_counts(self, shape):
        return shape[-1] * (self.center + self.scale), 2 * shape[-1]


class Activation(Layer):
    """Applies an activation function."""

    kind = "activation"
    keras_class = "Activation"
    shorthand = "activation"
    activation: ActivationName = _describe("the function applied to every value")


class Reshape(Layer):
    """The same values in a new shape."""

    kind = "reshape"
    keras_class = "Reshape"
    shorthand = "target_shape"
    target_shape: Annotated[list[Annotated[int, Field(ge=-1, le=MAX_INT)]], Field(min_length=1)] = _describe(
        "the new shape without the batch axis, with the same number of values; one -1 is inferred")

    def output_shape(self, shape):
        size, target = math.prod(shape), self.target_shape
        if 0 in target or target.count(-1) > 1:
            raise ShapeError("target_shape takes positive sizes and at most one -1", "target_shape")
        known = math.prod(d for d in target if d != -1)
        if -1 in target and size % known == 0:
            return tuple(size // known if d == -1 else d for d in target)
        if known != size:
            raise ShapeError(f"cannot reshape {_fmt(shape)} ({size} values) to {target}", "target_shape")
        return tuple(target)


class Resizing(Layer):
    """Resizes images to height x width."""

    kind = "resizing"
    keras_class = "Resizing"
    height: Side = _describe("output height in pixels (at most 8192)")
    width: Side = _describe("output width in pixels (at most 8192)")
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian"] = Field(
        "bilinear", description="how new pixels are computed")
    crop_to_aspect_ratio: bool = Field(False, description="crop to the output's aspect ratio instead of distorting")

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        return (self.height, self.width, shape[2])


class Rescaling(Layer):
    """x * scale + offset."""

    kind = "rescaling"
    keras_class = "Rescaling"
    shorthand = "scale"
    scale: float = _describe("multiplies every value")
    offset: float = Field(0.0, description="added after scaling")


FillMode = Literal["constant", "nearest", "reflect", "wrap"]
Factor = Annotated[float, Field(ge=0, le=1)]


class ImageAugmentation(Layer):
    """A random image transform, active only while training (data augmentation inside the model)."""

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        return shape


class Augmentation(ImageAugmentation):
    """A random geometric transform, active only while training."""

    fill_mode: FillMode = Field("reflect", description="how pixels moved in from outside the image are filled")
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="how moved pixels are computed")


class RandomTranslation(Augmentation):
    """Shifts images randomly while training."""

    kind = "random_translation"
    keras_class = "RandomTranslation"
    shorthand = "height_factor"
    height_factor: Factor = _describe("shift up or down by up to this fraction of the height")
    width_factor: Factor | None = Field(None, description="shift sideways by up to this fraction of the width "
                                        "(default: height_factor; Keras requires it)")

    def keras_arguments(self):
        return {"width_factor": self.height_factor, **super().keras_arguments()}


class RandomRotation(Augmentation):
    """Rotates images randomly while training."""

    kind = "random_rotation"
    keras_class = "RandomRotation"
    shorthand = "factor"
    factor: Factor = _describe("rotate by up to factor * 360 degrees either way")


class RandomZoom(Augmentation):
    """Zooms images randomly while training."""

    kind = "random_zoom"
    keras_class = "RandomZoom"
    shorthand = "height_factor"
    height_factor: Factor = _describe("zoom in or out by up to this fraction of the height")
    width_factor: Factor | None = Field(None, description="the same for the width (default: None, Keras zooms "
                                        "both sides alike)")


class RandomFlip(ImageAugmentation):
    """Mirrors images randomly while training."""

    kind = "random_flip"
    keras_class = "RandomFlip"
    shorthand = "mode"
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = Field(
        "horizontal_and_vertical", description="horizontal: left-right; vertical: upside down; or either")


class RandomCrop(ImageAugmentation):
    """Crops a random height x width window while training, the centre one at inference."""

    kind = "random_crop"
    keras_class = "RandomCrop"
    height: Side = _describe("output height in pixels, at most the input's")
    width: Side = _describe("output width in pixels, at most the input's")

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        for field, want, have in (("height", self.height, shape[0]), ("width", self.width, shape[1])):
            if want > have:
                raise ShapeError(f"random_crop {field} {want} is larger than the input's {have}", field)
        return (self.height, self.width, shape[2])


def _ordered(value: list[float]) -> list[float]:
    if value[0] >= value[1]:
        raise ValueError(f"value_range is [low, high] with low < high, got {value}")
    return value


class ValueAugmentation(ImageAugmentation):
    """A random change of pixel values within `value_range`."""

    shorthand = "factor"
    factor: Factor = _describe("the strength of the change, 0 to 1")
    value_range: Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_ordered)] = Field(
        [0.0, 1.0], description="[low, high] of the pixels it sees (default: 0 to 1, as after scale 1/255); "
        "results are clipped to it")


class RandomBrightness(ValueAugmentation):
    """Adds a random brightness shift, up to factor * the value range, while training."""

    kind = "random_brightness"
    keras_class = "RandomBrightness"


class RandomContrast(ValueAugmentation):
    """Scales each image's contrast about its mean by a random 1 +- factor while training."""

    kind = "random_contrast"
    keras_class = "RandomContrast"


class Unfreeze(StrictModel):
    """Train only the backbone's last layers."""

    last: PositiveInt = _describe("how many of the backbone's last layers with weights train (counted from its "
                                  "output; its BatchNorm layers stay frozen)")


Trainable = Annotated[Union[bool, Unfreeze], Field(union_mode="left_to_right")]


def _known_application(name: str) -> str:
    if name not in APPLICATIONS:
        raise ValueError(f"unknown backbone '{name}'{did_you_mean(name, APPLICATIONS)}; known: "
                         + ", ".join(APPLICATIONS))
    return name


class Backbone(Layer):
    """A pretrained network, first in the layer list (only augmentation may come before it).

    A `keras.applications` network by name, without its top, or an earlier run's model up to one of its
    layers. It takes the pixels as the data gives them and applies its own preprocessing inside the model
    (`preprocess_input`, or the run's)."""

    kind = "backbone"
    keras_class = "Sequential"
    shorthand = "name"
    name: Annotated[str, AfterValidator(_known_application)] | None = Field(
        None, description="a keras.applications network: " + ", ".join(APPLICATIONS))
    weights: str | None = Field(None, description="imagenet (Keras' file, downloaded once; the default), none "
                                "(random), or the path of a .keras, .h5 or .weights.h5 file of the same network")
    pooling: Literal["avg", "max", "none"] | None = Field(None, description="how the network's last feature map "
                                                          "becomes a vector: avg (the default), max, or none (keep "
                                                          "the map)")
    run: str | None = Field(  # absolute once the spec is validated (Spec._resolve), so in the run's spec.yaml
        None, description="an earlier run directory whose best model (else its final one) is the backbone")
    until: str | Annotated[int, Field(ge=0, le=MAX_INT)] | None = Field(
        None, description="with run: the last layer taken, by name or index (default: the one before its "
        "output layer)")
    trainable: Trainable = Field(False, description="false: frozen (its BatchNorm layers in inference mode); "
                                 "true: all of it trains; {last: N}: only its last N layers with weights")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.run is None):
            raise ValueError("a backbone is either `name: NETWORK` (keras.applications) or `run: RUN_DIR`")
        if self.run is not None:
            extra = [f for f in ("weights", "pooling") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"{' and '.join(extra)} belong to a keras.applications backbone, not to `run:`")
        elif self.until is not None:
            raise ValueError("`until` picks a layer of an earlier run (`run:`), not of a keras.applications network")
        return self

    def weights_file(self) -> str | None:
        """The weights file path, if `weights` names one."""
        return None if self.weights in (None, "imagenet", "none") else self.weights

    def pretrained(self) -> bool:
        """True for Keras' ImageNet weights."""
        return self.weights in (None, "imagenet")

    def pool(self) -> str:
        return self.pooling or "avg"

    def describe(self, shape: Shape) -> Described:
        """The network for this input shape (a keras.applications one; a run's is described by the Spec)."""
        problem = input_problem(self.name, shape)
        if problem:
            raise ShapeError(problem)
        return describe_application(self.name, tuple(shape), self.pool())


class Macro(StrictModel):
    """A spec entry that expands to several layers (a stack or a template)."""

    kind: ClassVar[str]
    shorthand: ClassVar[str | None] = None

    def expand(self, num_classes: int) -> list[tuple[Layer, tuple]]:
        raise NotImplementedError


def _activation_block(act: str | None, batch_norm: bool, origin: tuple) -> list[tuple[Layer, tuple]]:
    """BatchNorm then the activation, for a layer built without its own activation."""
    block: list[tuple[Layer, tuple]] = [(BatchNorm(), ("batch_norm",))] if batch_norm else []
    if batch_norm and act not in (None, "linear"):
        block.append((Activation(activation=act), origin))
    return block


class _Stack(Macro):
    """Arguments shared by the stacks, given to each of their layers."""

    activation: ActivationName | None = Field("relu", description="of each layer (after batch norm if any)")
    batch_norm: bool = Field(False, description="batch norm after each layer, before its activation")
    kernel_initializer: InitializerSpec = Field("glorot_uniform", description="initial values of each kernel")
    kernel_regularizer: Regularizer | None = Field(None, description="weight penalty on each kernel")


class DenseStack(_Stack):
    """Dense layers of the given widths, each optionally followed by batch norm and dropout."""

    kind = "dense_stack"
    shorthand = "units"
    units: Annotated[list[PositiveInt], Field(min_length=1)] = Field(description="the width of each dense layer")
    dropout: Fraction | list[Fraction] | None = Field(None, description="dropout after each layer: one rate, or "
                                                      "one per layer (default: none)")
    use_bias: bool = Field(True, description="add a learned bias to each layer")

    def expand(self, num_classes):
        rates = self.dropout if isinstance(self.dropout, list) else [self.dropout] * len(self.units)
        if len(rates) != len(self.units):
            raise ShapeError(f"dropout lists {len(rates)} rates for {len(self.units)} layers", "dropout")
        out: list[tuple[Layer, tuple]] = []
        for i, (units, rate) in enumerate(zip(self.units, rates)):
            dense = Dense(
                units=units, activation=None if self.batch_norm else self.activation, use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer, kernel_regularizer=self.kernel_regularizer,
            )
            out.append((dense, ("units", i)))
            out += _activation_block(self.activation, self.batch_norm, ("activation",))
            if rate:
                out.append((Dropout(rate=rate), ("dropout",)))
        return out


class ConvPoolStack(_Stack):
    """Blocks of conv2d (optional batch norm) then pooling, one block per entry of `filters`."""

    kind = "conv_pool_stack"
    shorthand = "filters"
    filters: Annotated[list[PositiveInt], Field(min_length=1)] = Field(description="the filters of each block's conv2d")
    kernel_size: Pair = Field([3, 3], description="kernel of each conv2d")
    padding: Padding = Field("same", description="padding of each conv2d")
    pool: Literal["max", "avg"] | None = Field("max", description="the pooling after each conv2d (null: none)")
    pool_size: Pair = Field([2, 2], description="window of each pooling")
    dropout: Fraction | None = Field(None, description="dropout rate at the end of each block (default: none)")

    def expand(self, num_classes):
        pool_cls = {"max": MaxPool2D, "avg": AvgPool2D}.get(self.pool)
        out: list[tuple[Layer, tuple]] = []
        for i, filters in enumerate(self.filters):
            conv = Conv2D(
                filters=filters, kernel_size=self.kernel_size, padding=self.padding,
                activation=None if self.batch_norm else self.activation,
                kernel_initializer=self.kernel_initializer, kernel_regularizer=self.kernel_regularizer,
            )
            out.append((conv, ("filters", i)))
            out += _activation_block(self.activation, self.batch_norm, ("activation",))
            if pool_cls:
                out.append((pool_cls(pool_size=self.pool_size), ("pool_size",)))
            if self.dropout:
                out.append((Dropout(rate=self.dropout), ("dropout",)))
        return out


class LeNet5(Macro):
    """LeCun et al. 1998: `{activation: tanh, pool: avg}` is the paper, the defaults the modern variant."""

    kind = "lenet5"
    activation: ActivationName = Field("relu", description="of every layer but the output (the paper: tanh)")
    pool: Literal["max", "avg"] = Field("max", description="the subsampling layers S2, S4 (the paper: avg)")
    padding: Padding = Field("valid", description="of the first conv: `same` fits 28x28 input like the paper's "
                             "32x32")
    num_classes: PositiveInt | None = Field(None, description="output width (default: the dataset's num_classes)")

    def expand(self, num_classes):
        pool = MaxPool2D if self.pool == "max" else AvgPool2D
        act = self.activation
        return [
            (Conv2D(filters=6, kernel_size=[5, 5], padding=self.padding, activation=act), ("C1",)),
            (pool(), ("S2",)),
            (Conv2D(filters=16, kernel_size=[5, 5], activation=act), ("C3",)),
            (pool(), ("S4",)),
            (Flatten(), ()),
            (Dense(units=120, activation=act), ("C5",)),
            (Dense(units=84, activation=act), ("F6",)),
            (Dense(units=self.num_classes or num_classes), ("output",)),
        ]


LAYERS: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Dropout, BatchNorm, Activation, Reshape, Resizing,
                Rescaling, RandomTranslation, RandomRotation, RandomZoom, RandomFlip, RandomCrop,
                RandomBrightness, RandomContrast, Backbone)
}
MACROS: dict[str, type[Macro]] = {cls.kind: cls for cls in (DenseStack, ConvPoolStack, LeNet5)}
TEMPLATES: dict[str, type[Macro]] = {"lenet5": LeNet5}
ENTRIES: dict[str, type[Layer] | type[Macro]] = {**LAYERS, **MACROS}


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for a near miss, else ''; case is ignored, so 'ReLU' -> 'relu'."""
    import difflib

    lowered = {str(choice).lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


def normalize_entry(value: Any, registry: dict[str, type], what: str) -> dict:
    """`name`, `name: scalar` and `name: null` entries as `{name: {arguments}}`."""
    if isinstance(value, str):
        value = {value: None}
    if not isinstance(value, dict) or len(value) != 1:
        raise PydanticCustomError(
            "entry_shape", f"a {what} is written as `name: {{arguments}}` or `name` (a mapping with one key)"
        )
    (name, args), = value.items()
    if name not in registry:
        raise PydanticCustomError(
            "unknown_entry", f"unknown {what} '{name}'{did_you_mean(name, registry)}; known: {', '.join(registry)}"
        )
    shorthand = registry[name].shorthand
    if args is None:
        args = {}
    elif not isinstance(args, dict) and shorthand:
        args = {shorthand: args}
    return {name: args}


def entry_description(name: str, cls: type) -> str:
    """What an editor shows on hover over `name:`: the class's first paragraph, and its short form."""
    text = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
    if issubclass(cls, Layer) and cls is not Backbone:
        text += f" Built as {cls.keras_module}.{cls.keras_class}."
    if cls.shorthand:
        text += f" `{name}: VALUE` is short for `{name}: {{{cls.shorthand}: VALUE}}`."
    return text


def _entry_union(registry: dict[str, type], what: str):
    """A pydantic type for `- name: {args}` entries (also `- name` and `- name: scalar`)."""

    def normalize(value: Any) -> Any:
        return normalize_entry(value, registry, what)

    def tag(value: Any) -> str:
        return next(iter(value)) if isinstance(value, dict) else next(iter(type(value).model_fields))

    members = tuple(
        Annotated[create_model(f"{cls.__name__}Entry", __base__=StrictModel,
                               **{name: (cls, Field(description=entry_description(name, cls)))}), Tag(name)]
        for name, cls in registry.items()
    )
    return Annotated[Union[members], Discriminator(tag), BeforeValidator(normalize)]


LayerEntry = _entry_union(ENTRIES, "layer")
TemplateEntry = _entry_union(TEMPLATES, "template")


def entry_content(entry) -> tuple[str, Layer | Macro]:
    """(name, arguments) of a validated layer or template entry."""
    name = next(iter(type(entry).model_fields))
    return name, getattr(entry, name)


@dataclass(frozen=True)
class PlannedLayer:
    """One Keras layer of the model, with its place in the spec and its shapes known in advance."""

    name: str
    layer: Layer
    origin: tuple
    output_shape: Shape
    trainable: int
    non_trainable: int
    backbone: Described | None = None  # a backbone's own layers


def frozen_counts(layers, trainable, keep_batch_norm_frozen: bool) -> tuple[int, int]:
    """(trainable, non-trainable) weights of a backbone's `layers` under a `trainable` setting."""
    count = len(layers) if trainable is True else 0 if trainable is False else trainable.last
    on = [i >= len(layers) - count and not (keep_batch_norm_frozen and layer.batch_norm)
          for i, layer in enumerate(layers)]
    total = sum(layer.trainable for layer, o in zip(layers, on) if o)
    return total, sum(layer.trainable + layer.non_trainable for layer in layers) - total


def _check_first(planned: list[PlannedLayer], path: tuple) -> None:
    """ShapeError unless everything before the backbone is augmentation."""
    before = [p.name for p in planned if not isinstance(p.layer, ImageAugmentation)]
    if before:
        raise ShapeError(f"a backbone must be the first layer (only augmentation layers may come before it), "
                         f"but {', '.join(before)} come{'s' * (len(before) == 1)} before it")


def plan_layers(entries: list[tuple[tuple, Any]], input_shape: Shape, num_classes: int,
                describe_run=None) -> list[PlannedLayer]:
    """Expand `(spec path, entry)` pairs and infer every shape; ShapeError.path says where it broke.
    `describe_run(backbone, shape)` describes a backbone taken from an earlier run."""
    planned, counts, shape = [], {}, tuple(input_shape)
    for path, entry in entries:
        name, content = entry_content(entry)
        base = path + (name,)
        try:
            expanded = content.expand(num_classes)
        except ShapeError as err:
            err.path = base + ((err.field,) if err.field else ())
            raise
        for layer, origin in expanded:
            described = None
            try:
                if isinstance(layer, Backbone):
                    _check_first(planned, path)
                    described = describe_run(layer, shape) if layer.run else layer.describe(shape)
                    out = described.output_shape
                    trainable, frozen = frozen_counts(described.layers, layer.trainable, layer.trainable is not True)
                else:
                    out = layer.output_shape(shape)
                    trainable, frozen = layer.weight_counts(shape)
            except ShapeError as err:
                err.path = base + ((err.field,) if err.field and layer is content else origin)
                raise
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            label = "backbone" if described else f"{layer.kind}_{counts[layer.kind]}"
            planned.append(PlannedLayer(label, layer, base + origin, out, trainable, frozen, described))
            shape = out
    return planned
