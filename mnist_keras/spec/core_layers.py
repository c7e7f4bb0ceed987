"""The layers that compute: dense, convolution, pooling, flatten, dropout, batch norm, activation, reshape."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

from .fields import MAX_INT, ActivationName, Fraction, Pair, PositiveFloat, PositiveInt
from .layer_base import Layer, Padding, ShapeError, WeightedLayer, need_image, required, shape_text, window_out


class Dense(WeightedLayer):
    """A fully connected layer: units outputs, each a weighted sum of all inputs."""

    kind = "dense"
    keras_class = "Dense"
    shorthand = "units"
    units: PositiveInt = required("output width (number of neurons)")

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
    filters: PositiveInt = required("number of output channels")
    kernel_size: Pair = required("[height, width] of the kernel (or one number), dilated at most the input size")
    strides: Pair = Field([1, 1], description="step of the kernel, [height, width] or one number")
    padding: Padding = Field("valid", description="valid: no padding; same: pad so that output = input / strides")
    dilation_rate: Pair = Field([1, 1], description="spacing of the kernel taps; with strides > 1 not allowed")

    def output_shape(self, shape):
        need_image(self.kind, shape)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ShapeError("strides > 1 cannot be combined with dilation_rate > 1", "strides")
        field = "dilation_rate" if max(self.dilation_rate) > 1 else "kernel_size"
        out = window_out(shape, self.kernel_size, self.strides, self.dilation_rate, self.padding, "kernel", field)
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
        need_image(self.kind, shape)
        out = window_out(shape, self.pool_size, self.strides or self.pool_size, [1, 1], self.padding,
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
    rate: Fraction = required("fraction of the inputs set to 0 while training")


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
    activation: ActivationName = required("the function applied to every value")


class Reshape(Layer):
    """The same values in a new shape."""

    kind = "reshape"
    keras_class = "Reshape"
    shorthand = "target_shape"
    target_shape: Annotated[list[Annotated[int, Field(ge=-1, le=MAX_INT)]], Field(min_length=1)] = required(
        "the new shape without the batch axis, with the same number of values; one -1 is inferred")

    def output_shape(self, shape):
        size, target = math.prod(shape), self.target_shape
        if 0 in target or target.count(-1) > 1:
            raise ShapeError("target_shape takes positive sizes and at most one -1", "target_shape")
        known = math.prod(d for d in target if d != -1)
        if -1 in target and size % known == 0:
            return tuple(size // known if d == -1 else d for d in target)
        if known != size:
            raise ShapeError(f"cannot reshape {shape_text(shape)} ({size} values) to {target}", "target_shape")
        return tuple(target)
