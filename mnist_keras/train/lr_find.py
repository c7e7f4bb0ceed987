"""The learning-rate range test (Smith 2017, as fastai's lr_find runs it): a fresh model from the spec trained for a
bounded number of steps on the spec's training batches while the rate rises exponentially from a low to a high
bound, the loss smoothed, the test stopped once the smoothed loss diverges, and a rate suggested from the curve.
`mnist-keras lr-find` runs it alone; `learning_rate: auto` runs it inside `fit` before the first epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TrainingFailed, UserError

if TYPE_CHECKING:  # the command line reads this module's defaults before anything heavy is imported
    from ..spec import Spec

STEPS, MAX_STEPS = 100, 1000  # the steps of a test, by default and at most
MIN_LR, MAX_LR = 1e-7, 10.0  # the default range of rates
SMOOTHING = 0.98  # the weight of the past in the smoothed loss (an exponential average, bias-corrected)
DIVERGED = 4.0  # the test stops once the smoothed loss is more than this many times its lowest
RULE = "minimum / 10: a tenth of the rate at the lowest smoothed loss"


@dataclass
class LRFinding:
    """What a range test measured: each step's rate, loss and smoothed loss (up to the step it stopped at), the
    suggested rate (within the range) and the rule it came by, whether the loss diverged before the last step,
    notes on a curve that asks for another range, and the figure's path once written."""

    rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    diverged: bool
    notes: list[str] = field(default_factory=list)
    figure: Path | None = None


def check_range(steps: int, min_lr: float, max_lr: float) -> None:
    """UserError, one line, for steps or rates a range test cannot take."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 10 <= steps <= MAX_STEPS:
        raise UserError(f"--steps: a range test takes 10 to {MAX_STEPS:,} steps, got {steps}")
    for name, rate in (("--min-lr", min_lr), ("--max-lr", max_lr)):
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise UserError(f"{name}: a learning rate is a number above 0, got {rate}")
    if min_lr >= max_lr:
        raise UserError(f"--min-lr {min_lr:g} must be below --max-lr {max_lr:g}")


def rates_of(steps: int, min_lr: float, max_lr: float) -> list[float]:
    """The rate of each step: min_lr * (max_lr / min_lr) ** (step / (steps - 1)), from min_lr to max_lr."""
    return [min_lr * (max_lr / min_lr) ** (step / (steps - 1)) for step in range(steps)]


def smooth(losses: list[float]) -> list[float]:
    """The exponential average of the losses so far, bias-corrected (the first is the first loss itself)."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(losses):
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
    return smoothed


def suggest(rates: list[float], smoothed: list[float], diverged: bool, min_lr: float,
            max_lr: float) -> tuple[float, list[str]]:
    """(the suggested rate by RULE, kept within [min_lr, max_lr]; notes on a range that should move)."""
    finite = [step for step, loss in enumerate(smoothed) if math.isfinite(loss)]
    if not finite:
        raise TrainingFailed(f"the loss was not finite from the first step of the range test, at learning rate "
                             f"{min_lr:g}; check the data and the model, or lower --min-lr")
    lowest = min(finite, key=smoothed.__getitem__)
    notes = []
    if lowest == 0:
        notes.append(f"the loss was lowest at the first rate, {rates[0]:g}: the range starts too high; try a lower "
                     "--min-lr")
    elif lowest == len(rates) - 1 and not diverged:
        notes.append(f"the loss still fell at the last rate, {rates[-1]:g}: try a higher --max-lr")
    return min(max_lr, max(min_lr, rates[lowest] / 10)), notes


def range_test(spec: Spec, batches, class_weight: dict | None, steps: int = STEPS, min_lr: float = MIN_LR,
               max_lr: float = MAX_LR) -> LRFinding:
    """The test on a fresh model from `spec` (its optimizer, loss and class weights) over `steps` of `batches` (a
    tf.data dataset of (images, labels), repeated as needed), in the current device scope."""
    from ..backend import keras
    from ..model.build import build_model
    from .compile import make_loss_and_metrics

    check_range(steps, min_lr, max_lr)
    model = build_model(spec)
    schedule = keras.optimizers.schedules.ExponentialDecay(min_lr, steps - 1, max_lr / min_lr)  # rates_of, per step
    model.compile(optimizer=spec.train.optimizer.keras(schedule), loss=make_loss_and_metrics(spec)[0],
                  jit_compile=spec.runtime.jit_compile)
    rates, losses, diverged = rates_of(steps, min_lr, max_lr), [], False
    for images, labels in batches.repeat().take(steps):
        loss = float(model.train_on_batch(images, labels, class_weight=class_weight, return_dict=True)["loss"])
        losses.append(loss if math.isfinite(loss) else math.nan)
        smoothed = smooth(losses)  # at most MAX_STEPS of them
        if not math.isfinite(smoothed[-1]) or smoothed[-1] > DIVERGED * min(smoothed):
            diverged = len(losses) < steps
            break
    rates, smoothed = rates[:len(losses)], smooth(losses)
    suggestion, notes = suggest(rates, smoothed, diverged, min_lr, max_lr)
    return LRFinding(rates, losses, smoothed, suggestion, RULE, diverged, notes)


def write_figure(finding: LRFinding, path: Path) -> Path:
    """The loss against the rate, the suggestion marked, as a PNG at `path` (UserError when it cannot be written)."""
    from ..reports.plots import lr_find_figure, save_figure

    save_figure(lr_find_figure(finding.rates, finding.losses, finding.smoothed, finding.suggestion, finding.rule),
                path)
    finding.figure = path
    return path
