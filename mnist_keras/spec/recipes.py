"""What each training recipe of a spec adds, a line each, as `summary` and `validate` show them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .targets import shown_target

if TYPE_CHECKING:
    from .schema import Spec


def recipe_notes(spec: Spec) -> list[str]:
    """A line per recipe the spec turns on, e.g. 'stop at val_accuracy >= 0.99'."""
    notes = []
    if spec.train.stop_at:
        notes.append("stop at " + " and ".join(shown_target(metric, target)
                                               for metric, target in spec.train.stop_at.items()))
    if spec.train.optimizer.learning_rate == "auto":
        notes.append("learning rate: found by a range test before training")
    return notes
