"""What a spec's training recipes add, one line each, as `summary` and `validate` show them."""

from __future__ import annotations

from .preprocessing_layers import AugMix, RandAugment, RandomErasing
from .schema import Spec


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


def recipe_notes(spec: Spec) -> list[str]:
    """A line for each recipe the spec uses: MixUp and CutMix, RandAugment, AugMix, RandomErasing."""
    notes = [_mixing_note(spec), *(_layer_note(p.name, p.layer) for p in spec.plan())]
    return [note for note in notes if note]
