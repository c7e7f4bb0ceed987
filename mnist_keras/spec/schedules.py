"""Learning-rate schedules of the `train` section (and of each stage), and what a callback watches."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .fields import MAX_COUNT, Count, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, StrictModel, type_tag, typed_union


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


class OneCycle(StrictModel):
    """Smith's one-cycle policy, as PyTorch's OneCycleLR computes it (with its defaults): over the run (or the
    stage), the learning rate rises along a cosine from max / div to max in the first `warmup` of the steps, then
    falls along a cosine to max / (div * final_div); the momentum moves the other way, from max_momentum down to
    base_momentum and back."""

    type: Literal["one_cycle"] = type_tag("one_cycle", "schedule")
    max: PositiveFloat | None = Field(None, description="the peak learning rate (PyTorch's max_lr) (default: None, "
                                      "train.optimizer.learning_rate)")
    warmup: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.3, description="the fraction of the steps spent rising to max (PyTorch's pct_start, 0.3)")
    div: Annotated[float, Field(ge=1)] = Field(25.0, description="the first rate is max / div (PyTorch's div_factor, "
                                               "25)")
    final_div: Annotated[float, Field(ge=1)] = Field(
        1e4, description="the last rate is max / (div * final_div) (PyTorch's final_div_factor, 1e4)")
    cycle_momentum: bool | None = Field(
        None, description="cycle the momentum, inversely to the rate: SGD's and RMSprop's momentum (when not 0), "
        "beta_1 of Adam, AdamW, Nadam, Adamax and Lamb (default: None, wherever the optimizer has one)")
    base_momentum: Fraction = Field(0.85, description="the momentum at the peak rate (PyTorch's base_momentum, 0.85)")
    max_momentum: Fraction = Field(0.95, description="the momentum at the start and at the end (PyTorch's "
                                   "max_momentum, 0.95)")

    @model_validator(mode="after")
    def _momentum_range(self):
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum {self.base_momentum:g} is above max_momentum {self.max_momentum:g}; "
                             "the momentum falls from max_momentum to base_momentum and back")
        return self

    def peak(self, optimizer) -> float:
        """The peak rate: `max`, else the optimizer's learning rate."""
        return self.max if self.max is not None else optimizer.resolved_learning_rate()

    def cycled(self, optimizer) -> str | None:
        """The argument of `optimizer` the momentum cycle moves (momentum or beta_1), None where it moves none."""
        return None if self.cycle_momentum is False else optimizer.momentum_argument()


LRSchedule = typed_union(
    Constant, Exponential, Step, MultiStep, Polynomial, Cosine, InverseTime, Plateau, OneCycle, default="constant"
)
