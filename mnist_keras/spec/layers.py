"""The layer vocabulary: one registry from spec names to layer schemas, shape rules and Keras factories.

Every layer knows, without TensorFlow, the shape it outputs and the weights it owns, so a spec is
checked and summarised before Keras is imported. Stacks and templates expand to plain layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, create_model
from pydantic_core import PydanticCustomError

from .fields import (
    ActivationName,
    Fraction,
    InitializerSpec,
    Pair,
    PositiveFloat,
    PositiveInt,
    Regularizer,
    StrictModel,
    keras_initializer,
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


def _window_out(size: int, window: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - dilation * (window - 1) - 1) // stride + 1


class Layer(StrictModel):
    """A spec entry that is exactly one Keras layer."""

    kind: ClassVar[str]
    shorthand: ClassVar[str | None] = None  # the argument a scalar value stands for: `dropout: 0.5`

    def expand(self, num_classes: int) -> list[tuple["Layer", tuple]]:
        return [(self, ())]

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def weights(self, shape: Shape) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts for an input of `shape`."""
        return 0, 0

    def keras(self, name: str):
        raise NotImplementedError


class WeightedLayer(Layer):
    """Arguments shared by the layers that own a kernel and a bias."""

    activation: ActivationName | None = None
    use_bias: bool = True
    kernel_initializer: InitializerSpec = "glorot_uniform"
    bias_initializer: InitializerSpec = "zeros"
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None

    def weight_kwargs(self) -> dict[str, Any]:
        return {
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras_initializer(self.kernel_initializer),
            "bias_initializer": keras_initializer(self.bias_initializer),
            "kernel_regularizer": self.kernel_regularizer and self.kernel_regularizer.keras(),
            "bias_regularizer": self.bias_regularizer and self.bias_regularizer.keras(),
        }


class Dense(WeightedLayer):
    kind = "dense"
    shorthand = "units"
    units: PositiveInt

    def output_shape(self, shape):
        if not shape:
            raise ShapeError("dense needs an input with at least one axis")
        return shape[:-1] + (self.units,)

    def weights(self, shape):
        return shape[-1] * self.units + self.units * self.use_bias, 0

    def keras(self, name):
        import keras

        return keras.layers.Dense(self.units, name=name, **self.weight_kwargs())


class Conv2D(WeightedLayer):
    kind = "conv2d"
    filters: PositiveInt
    kernel_size: Pair
    strides: Pair = [1, 1]
    padding: Padding = "valid"
    dilation_rate: Pair = [1, 1]

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ShapeError("strides > 1 cannot be combined with dilation_rate > 1", "strides")
        out = tuple(
            _window_out(size, k, s, d, self.padding)
            for size, k, s, d in zip(shape[:2], self.kernel_size, self.strides, self.dilation_rate)
        )
        if min(out) < 1:
            span = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation_rate)]
            raise ShapeError(
                f"kernel {span[0]}x{span[1]} is larger than its {shape[0]}x{shape[1]} input "
                "with padding 'valid'; use a smaller kernel_size or padding: same",
                "kernel_size",
            )
        return out + (self.filters,)

    def weights(self, shape):
        kh, kw = self.kernel_size
        return kh * kw * shape[2] * self.filters + self.filters * self.use_bias, 0

    def keras(self, name):
        import keras

        return keras.layers.Conv2D(
            self.filters, tuple(self.kernel_size), strides=tuple(self.strides), padding=self.padding,
            dilation_rate=tuple(self.dilation_rate), name=name, **self.weight_kwargs(),
        )


class Pool2D(Layer):
    """Arguments shared by max and average pooling."""

    shorthand = "pool_size"
    pool_size: Pair = [2, 2]
    strides: Pair | None = None  # default: pool_size, as in Keras
    padding: Padding = "valid"

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        strides = self.strides or self.pool_size
        out = tuple(
            _window_out(size, p, s, 1, self.padding) for size, p, s in zip(shape[:2], self.pool_size, strides)
        )
        if min(out) < 1:
            raise ShapeError(
                f"pool {self.pool_size[0]}x{self.pool_size[1]} is larger than its {shape[0]}x{shape[1]} input; "
                "the model has shrunk the image to nothing here",
                "pool_size",
            )
        return out + (shape[2],)

    def keras_pool(self, cls, name):
        return cls(tuple(self.pool_size), strides=self.strides and tuple(self.strides), padding=self.padding, name=name)


class MaxPool2D(Pool2D):
    kind = "max_pool2d"

    def keras(self, name):
        import keras

        return self.keras_pool(keras.layers.MaxPooling2D, name)


class AvgPool2D(Pool2D):
    kind = "avg_pool2d"

    def keras(self, name):
        import keras

        return self.keras_pool(keras.layers.AveragePooling2D, name)


class Flatten(Layer):
    kind = "flatten"

    def output_shape(self, shape):
        return (math.prod(shape),)

    def keras(self, name):
        import keras

        return keras.layers.Flatten(name=name)


class Dropout(Layer):
    kind = "dropout"
    shorthand = "rate"
    rate: Fraction

    def keras(self, name):
        import keras

        return keras.layers.Dropout(self.rate, name=name)


class BatchNorm(Layer):
    kind = "batch_norm"
    momentum: Annotated[float, Field(gt=0, lt=1)] = 0.99
    epsilon: PositiveFloat = 1e-3
    center: bool = True
    scale: bool = True

    def output_shape(self, shape):
        if not shape:
            raise ShapeError("batch_norm needs an input with at least one axis")
        return shape

    def weights(self, shape):
        return shape[-1] * (self.center + self.scale), 2 * shape[-1]

    def keras(self, name):
        import keras

        return keras.layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, center=self.center, scale=self.scale, name=name
        )


class Activation(Layer):
    kind = "activation"
    shorthand = "activation"
    activation: ActivationName

    def keras(self, name):
        import keras

        return keras.layers.Activation(self.activation, name=name)


class Reshape(Layer):
    kind = "reshape"
    shorthand = "target_shape"
    target_shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(min_length=1)]

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

    def keras(self, name):
        import keras

        return keras.layers.Reshape(tuple(self.target_shape), name=name)


class Resizing(Layer):
    kind = "resizing"
    height: PositiveInt
    width: PositiveInt
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian"] = "bilinear"
    crop_to_aspect_ratio: bool = False

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        return (self.height, self.width, shape[2])

    def keras(self, name):
        import keras

        return keras.layers.Resizing(
            self.height, self.width, interpolation=self.interpolation,
            crop_to_aspect_ratio=self.crop_to_aspect_ratio, name=name,
        )


class Rescaling(Layer):
    kind = "rescaling"
    shorthand = "scale"
    scale: float
    offset: float = 0.0

    def keras(self, name):
        import keras

        return keras.layers.Rescaling(self.scale, offset=self.offset, name=name)


FillMode = Literal["constant", "nearest", "reflect", "wrap"]
Factor = Annotated[float, Field(ge=0, le=1)]


class Augmentation(Layer):
    """Random image transforms, active only while training (data augmentation inside the model)."""

    fill_mode: FillMode = "constant"
    interpolation: Literal["bilinear", "nearest"] = "bilinear"

    def output_shape(self, shape):
        _need_image(self.kind, shape)
        return shape


class RandomTranslation(Augmentation):
    kind = "random_translation"
    shorthand = "height_factor"
    height_factor: Factor  # shift by up to this fraction of the height
    width_factor: Factor | None = None  # default: height_factor

    def keras(self, name):
        import keras

        width = self.height_factor if self.width_factor is None else self.width_factor
        return keras.layers.RandomTranslation(
            self.height_factor, width, fill_mode=self.fill_mode, interpolation=self.interpolation, name=name
        )


class RandomRotation(Augmentation):
    kind = "random_rotation"
    shorthand = "factor"
    factor: Factor  # rotate by up to factor * 360 degrees either way

    def keras(self, name):
        import keras

        return keras.layers.RandomRotation(
            self.factor, fill_mode=self.fill_mode, interpolation=self.interpolation, name=name
        )


class RandomZoom(Augmentation):
    kind = "random_zoom"
    shorthand = "height_factor"
    height_factor: Factor  # zoom in or out by up to this fraction
    width_factor: Factor | None = None  # default: the same as height

    def keras(self, name):
        import keras

        return keras.layers.RandomZoom(
            self.height_factor, self.width_factor, fill_mode=self.fill_mode, interpolation=self.interpolation,
            name=name,
        )


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


class DenseStack(Macro):
    """Dense layers of the given widths, each optionally followed by batch norm and dropout."""

    kind = "dense_stack"
    shorthand = "units"
    units: Annotated[list[PositiveInt], Field(min_length=1)]
    activation: ActivationName | None = "relu"
    dropout: Fraction | list[Fraction] | None = None
    batch_norm: bool = False
    use_bias: bool = True
    kernel_initializer: InitializerSpec = "glorot_uniform"
    kernel_regularizer: Regularizer | None = None

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


class ConvPoolStack(Macro):
    """Blocks of conv2d (optional batch norm) then pooling, one block per entry of `filters`."""

    kind = "conv_pool_stack"
    shorthand = "filters"
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    kernel_size: Pair = [3, 3]
    padding: Padding = "same"
    activation: ActivationName | None = "relu"
    pool: Literal["max", "avg"] | None = "max"
    pool_size: Pair = [2, 2]
    batch_norm: bool = False
    dropout: Fraction | None = None
    kernel_initializer: InitializerSpec = "glorot_uniform"
    kernel_regularizer: Regularizer | None = None

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
    activation: ActivationName = "relu"
    pool: Literal["max", "avg"] = "max"
    padding: Padding = "valid"  # of the first conv: `same` fits 28x28 input like the paper's 32x32
    num_classes: PositiveInt | None = None  # default: the dataset's

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
                Rescaling, RandomTranslation, RandomRotation, RandomZoom)
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


def _entry_union(registry: dict[str, type], what: str):
    """A pydantic type for `- name: {args}` entries (also `- name` and `- name: scalar`)."""

    def normalize(value: Any) -> Any:
        return normalize_entry(value, registry, what)

    def tag(value: Any) -> str:
        return next(iter(value)) if isinstance(value, dict) else next(iter(type(value).model_fields))

    members = tuple(
        Annotated[create_model(f"{cls.__name__}Entry", __base__=StrictModel, **{name: (cls, ...)}), Tag(name)]
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


def plan_layers(entries: list[tuple[tuple, Any]], input_shape: Shape, num_classes: int) -> list[PlannedLayer]:
    """Expand `(spec path, entry)` pairs and infer every shape; ShapeError.path says where it broke."""
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
            try:
                out = layer.output_shape(shape)
                trainable, frozen = layer.weights(shape)
            except ShapeError as err:
                err.path = base + ((err.field,) if err.field and layer is content else origin)
                raise
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            label = f"{layer.kind}_{counts[layer.kind]}"
            planned.append(PlannedLayer(label, layer, base + origin, out, trainable, frozen))
            shape = out
    return planned
