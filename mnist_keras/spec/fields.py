"""Shared building blocks of the spec schema: the strict base model and common field types."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema


class StrictModel(BaseModel):
    """A spec section: unknown keys rejected, no silent type coercion, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    def explicit(self) -> dict[str, Any]:
        """The arguments the user set (or that differ from the defaults), for Keras factories."""
        return self.model_dump(exclude_unset=True)


MAX_INT = 2**31 - 1  # TensorFlow's int32 limit; larger counts and sizes cannot work
PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_INT)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


def _int_to_pair(value: Any) -> Any:
    return [value, value] if isinstance(value, int) and not isinstance(value, bool) else value


# `kernel_size: 5` or `kernel_size: [5, 3]`; always stored as [height, width].
Pair = Annotated[
    list[PositiveInt],
    Field(min_length=2, max_length=2),
    BeforeValidator(_int_to_pair),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0}, "minItems": 2, "maxItems": 2},
            ]
        }
    ),
]

ActivationName = Literal[
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish",
    "tanh", "sigmoid", "hard_sigmoid", "softplus", "softsign", "exponential", "softmax", "log_softmax",
]

InitializerName = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "random_normal", "random_uniform", "truncated_normal", "orthogonal", "zeros", "ones", "constant",
]


class Initializer(StrictModel):
    """An initializer with arguments, e.g. `{type: random_normal, stddev: 0.02}`."""

    type: InitializerName
    mean: float | None = None
    stddev: PositiveFloat | None = None
    minval: float | None = None
    maxval: float | None = None
    gain: PositiveFloat | None = None
    value: float | None = None

    def keras(self):
        """The Keras initializer object."""
        import keras

        kwargs = self.model_dump(exclude={"type"}, exclude_none=True)
        return type(keras.initializers.get(self.type))(**kwargs)


class Regularizer(StrictModel):
    """Weight penalty added to the loss: `{l2: 0.0005}` or `{l1: 1e-5, l2: 1e-4}`."""

    l1: NonNegativeFloat = 0.0
    l2: NonNegativeFloat = 0.0

    def keras(self):
        """The Keras regularizer object."""
        import keras

        return keras.regularizers.L1L2(l1=self.l1, l2=self.l2)


InitializerSpec = Union[InitializerName, Initializer]


def keras_initializer(value: InitializerSpec):
    """A Keras initializer from a name or an `Initializer`."""
    return value if isinstance(value, str) else value.keras()
