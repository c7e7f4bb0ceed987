"""Shared building blocks of the spec schema: the strict base model, Keras-backed classes, field types,
initializers and regularizers."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, WithJsonSchema, create_model


class StrictModel(BaseModel):
    """A spec section: unknown keys rejected, no silent type coercion, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _keras_value(value: Any) -> Any:
    return value.keras_config() if isinstance(value, KerasObject) else value


class KerasObject(StrictModel):
    """A schema class standing for one Keras class (`keras_module`.`keras_class`), built through Keras' own
    registry. Its fields are that class's arguments under the same names; None leaves the argument to Keras."""

    keras_module: ClassVar[str]
    keras_class: ClassVar[str]

    def keras_arguments(self) -> dict[str, Any]:
        """The Keras constructor arguments: every field but `type`, None ones left out."""
        return {name: _keras_value(getattr(self, name)) for name in type(self).model_fields
                if name != "type" and getattr(self, name) is not None}

    def keras_config(self) -> dict[str, Any]:
        """`{module, class_name, config}`, the form Keras' `get` and `deserialize` take; a class of our own
        (mnist_keras.model.objects) is found by its registered name, `mnist_keras>NAME`."""
        config = {"module": self.keras_module, "class_name": self.keras_class, "config": self.keras_arguments()}
        if self.keras_module.startswith("mnist_keras."):
            config["registered_name"] = f"mnist_keras>{self.keras_class}"
        return config


MAX_INT = 2**31 - 1  # TensorFlow's int32 limit; larger counts and sizes cannot work
MAX_SIDE = 8192  # the largest image side, kernel, window or stride: beyond any MNIST-sized model
MAX_COUNT = 1e9  # the largest schedule count (epochs or steps): larger ones overflow later
PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_INT)]
Side = Annotated[int, Field(gt=0, le=MAX_SIDE)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Count = Annotated[float, Field(gt=0, le=MAX_COUNT)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


def _int_to_pair(value: Any) -> Any:
    return [value, value] if isinstance(value, int) and not isinstance(value, bool) else value


# `kernel_size: 5` or `kernel_size: [5, 3]`; always stored as [height, width].
Pair = Annotated[
    list[Side],
    Field(min_length=2, max_length=2),
    BeforeValidator(_int_to_pair),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_SIDE},
                {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_SIDE},
                 "minItems": 2, "maxItems": 2},
            ]
        }
    ),
]

ActivationName = Literal[
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish",
    "tanh", "sigmoid", "hard_sigmoid", "softplus", "softsign", "exponential", "softmax", "log_softmax",
]


def type_tag(name: str, what: str):
    """The `type` field of one member of a typed union: `type: Literal["sgd"] = type_tag("sgd", "optimizer")`."""
    return Field(name, description=f"the {what}: `{name}` (alone, `{name}` is short for `{{type: {name}}}`)")


def typed_union(*classes, default: str | None = None):
    """A union told apart by its `type` key (`sgd`), also written as a bare name (`optimizer: sgd`)."""

    def tag(value: Any) -> str | None:
        return value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)

    def bare_name(value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    members = tuple(Annotated[cls, Tag(cls.model_fields["type"].default)] for cls in classes)
    return Annotated[Union[members], Discriminator(tag), BeforeValidator(bare_name)]


# ---------------------------------------------------------------------------------- initializers


class _Initializer(KerasObject):
    """A Keras initializer; `keras_class` is derived from the class name (HeNormalInit -> HeNormal)."""

    keras_module = "keras.initializers"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.keras_class = cls.__name__.removesuffix("Init")


class _Seeded(_Initializer):
    seed: Seed | None = Field(None, description="random seed of the initial values (default: None, from the spec's "
                                   "seed)")


def _initializer(name: str, base: type[_Initializer] = _Seeded) -> type[_Initializer]:
    """An initializer with no arguments beyond its base's: `he_normal` -> HeNormalInit."""
    class_name = "".join(part.title() for part in name.split("_")) + "Init"
    return create_model(class_name, __base__=base, __module__=__name__,
                        type=(Literal[name], type_tag(name, "initializer")))


GlorotUniformInit, GlorotNormalInit, HeUniformInit, HeNormalInit, LecunUniformInit, LecunNormalInit = (
    _initializer(name) for name in ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
                                    "lecun_normal"))
ZerosInit, OnesInit = (_initializer(name, _Initializer) for name in ("zeros", "ones"))


class RandomNormalInit(_Seeded):
    type: Literal["random_normal"] = type_tag("random_normal", "initializer")
    mean: float = Field(0.0, description="mean of the normal distribution")
    stddev: PositiveFloat = Field(0.05, description="standard deviation of the normal distribution")


class TruncatedNormalInit(RandomNormalInit):
    type: Literal["truncated_normal"] = type_tag("truncated_normal", "initializer")


class RandomUniformInit(_Seeded):
    type: Literal["random_uniform"] = type_tag("random_uniform", "initializer")
    minval: float = Field(-0.05, description="lower bound of the uniform distribution")
    maxval: float = Field(0.05, description="upper bound of the uniform distribution")


class OrthogonalInit(_Seeded):
    type: Literal["orthogonal"] = type_tag("orthogonal", "initializer")
    gain: PositiveFloat = Field(1.0, description="multiplies the orthogonal matrix")


class ConstantInit(_Initializer):
    type: Literal["constant"] = type_tag("constant", "initializer")
    value: float = Field(0.0, description="the value of every weight")


INITIALIZERS = (GlorotUniformInit, GlorotNormalInit, HeUniformInit, HeNormalInit, LecunUniformInit, LecunNormalInit,
                RandomNormalInit, TruncatedNormalInit, RandomUniformInit, OrthogonalInit, ZerosInit, OnesInit,
                ConstantInit)
InitializerName = Literal[tuple(cls.model_fields["type"].default for cls in INITIALIZERS)]

Initializer = typed_union(*INITIALIZERS)

# `he_normal` or `{type: random_normal, stddev: 0.02}`: each type takes exactly its Keras arguments.
InitializerSpec = Annotated[
    Union[Annotated[InitializerName, Tag("name")], Annotated[Initializer, Tag("arguments")]],
    Discriminator(lambda value: "name" if isinstance(value, str) else "arguments"),
]


class Regularizer(KerasObject):
    """Weight penalty added to the loss: `{l2: 0.0005}` or `{l1: 1e-5, l2: 1e-4}`."""

    keras_module = "keras.regularizers"
    keras_class = "L1L2"
    l1: NonNegativeFloat = Field(0.0, description="L1 penalty factor (sum of absolute weights)")
    l2: NonNegativeFloat = Field(0.0, description="L2 penalty factor (sum of squared weights)")
