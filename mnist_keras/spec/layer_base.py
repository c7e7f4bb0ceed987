"""What every layer entry shares: the `Layer` base with its shape and weight rules, `ShapeError`, and the
helpers that compute a sliding window's output.

Every layer knows, without TensorFlow, the shape it outputs and the weights it owns, so a spec is
checked and summarised before Keras is imported.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from .fields import ActivationName, InitializerSpec, KerasObject, Regularizer

Shape = tuple[int, ...]
Padding = Literal["valid", "same"]


class ShapeError(Exception):
    """A layer cannot accept its input; `field` names the argument to blame, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def shape_text(shape: Shape) -> str:
    """A shape as messages write it: (28, 28, 1)."""
    return str(tuple(shape))


def need_image(kind: str, shape: Shape) -> None:
    """ShapeError unless `shape` is an image, (height, width, channels)."""
    if len(shape) != 3:
        raise ShapeError(
            f"{kind} needs an image input of shape (height, width, channels), got {shape_text(shape)}; "
            "check data.preprocess.channel_axis, or add a reshape before it"
        )


def window_out(shape: Shape, window: list[int], strides: list[int], dilation: list[int], padding: str,
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


def required(text: str):
    """A field without a default, described by `text`."""
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
