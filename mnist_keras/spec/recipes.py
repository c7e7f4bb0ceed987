"""What a spec's training recipes add, one line each, as `summary` and `validate` show them."""

from __future__ import annotations

from .schema import Spec
from .targets import shown_target


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
    """A line for each recipe the spec uses: stop_at, learning_rate: auto."""
    return _target_notes(spec)
