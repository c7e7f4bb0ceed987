"""Entries that expand to several layers: the dense and conv-pool stacks, and the lenet5 template."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .core_layers import Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from .fields import ActivationName, Fraction, InitializerSpec, Pair, PositiveInt, Regularizer, StrictModel
from .layer_base import Layer, Padding, ShapeError


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
