"""What a spec's training recipes add, one line each, as `summary` and `validate` show them."""

from __future__ import annotations

from .schema import Spec


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
            peak = sched.peak(optimizer)
            start, cycled = peak / sched.div, sched.cycled(optimizer)
            note = f"{where}one-cycle: lr {start:.3g} -> {peak:.3g} at {sched.warmup:.0%} -> {start / sched.final_div:.3g}"
            if cycled:
                high = sched.max_momentum
                note += f", {cycled} {high:g} -> {sched.base_momentum:g} -> {high:g}"
            notes.append(note)
    return notes


def recipe_notes(spec: Spec) -> list[str]:
    """A line for each recipe the spec uses: EMA, one-cycle."""
    return _optimizer_notes(spec)
