"""What a spec's training recipes add, one line each, as `summary` and `validate` show them."""

from __future__ import annotations

from .preprocessing_layers import AugMix, RandAugment, RandomErasing
from .schema import Spec
from .targets import shown_target


def _range(value_range: list[float]) -> str:
    return f"[{value_range[0]:.3g}, {value_range[1]:.3g}]"


def _layer_note(name: str, layer) -> str | None:
    if isinstance(layer, RandAugment):
        what = f"RandAugment, {layer.num_ops} of 11 operations per batch at strength up to {layer.factor:g}"
    elif isinstance(layer, AugMix):
        what = (f"AugMix, {layer.num_chains} chains of up to {layer.chain_depth} operations mixed in (drawn per "
                f"batch) at strength up to {layer.factor:g}")
    elif isinstance(layer, RandomErasing):
        fill = "noise" if layer.fill_value is None else f"{layer.fill_value:g}"
        what = (f"RandomErasing of a box of about {layer.scale[0]:.0%}-{layer.scale[1]:.0%} of an image's area, "
                f"filled with {fill}")
    else:
        return None
    return f"{name}: {what}, pixels in {_range(layer.value_range)}, training only"


def _mixing_note(spec: Spec) -> str | None:
    augment = spec.data.augment
    if not augment.on():
        return None
    mixes = [f"{name} alpha {alpha}" for name, alpha in (("MixUp", augment.mixup), ("CutMix", augment.cutmix))
             if alpha]
    text = " and ".join(mixes) + (" (one per batch)" if len(mixes) == 2 else "") + " in the training pipeline"
    return text + (f", on {augment.prob:.0%} of the batches" if augment.prob < 1 else "")


def _optimizer_notes(spec: Spec) -> list[str]:
    """The average of the weights and the one-cycle schedule of each stage (of the run, without stages)."""
    notes, planned = [], spec.plan()
    for stage in spec.stages():
        optimizer, sched = stage.spec.train.optimizer, stage.spec.train.lr_schedule
        where = f"stage {stage.number}: " if spec.train.stages else ""
        if optimizer.ema is not None:
            weights = sum(trainable for trainable, _ in spec.stage_weights(planned, stage))
            notes.append(f"{where}EMA of {weights:,} weights (momentum {optimizer.ema:g}): validation, test, "
                         "checkpoints and the saved model use the average")
        if sched.type == "one_cycle":
            cycled = sched.cycled(optimizer)
            if sched.max is None and optimizer.learning_rate == "auto":  # the peak is found when training starts
                note = (f"{where}one-cycle: lr peak / {sched.div:g} -> peak at {sched.warmup:.0%} -> peak / "
                        f"{sched.div * sched.final_div:g}, the peak found by a range test")
            else:
                peak = sched.peak(optimizer)
                start = peak / sched.div
                note = (f"{where}one-cycle: lr {start:.3g} -> {peak:.3g} at {sched.warmup:.0%} -> "
                        f"{start / sched.final_div:.3g}")
            if cycled:
                high = sched.max_momentum
                note += f", {cycled} {high:g} -> {sched.base_momentum:g} -> {high:g}"
            notes.append(note)
    return notes


def _target_notes(spec: Spec) -> list[str]:
    """The stop at train.stop_at's targets, and the learning rate a range test finds."""
    notes = []
    if spec.train.stop_at:
        notes.append("stop at " + " and ".join(shown_target(metric, target)
                                               for metric, target in spec.train.stop_at.items()))
    if spec.train.optimizer.learning_rate == "auto":
        notes.append("learning rate: found by a range test before training")
    return notes


def recipe_notes(spec: Spec) -> list[str]:
    """A line for each recipe the spec uses: EMA, one-cycle, MixUp and CutMix, RandAugment, AugMix, RandomErasing,
    stop_at, learning_rate: auto."""
    notes = [*_optimizer_notes(spec), _mixing_note(spec), *(_layer_note(p.name, p.layer) for p in spec.plan()),
             *_target_notes(spec)]
    return [note for note in notes if note]
