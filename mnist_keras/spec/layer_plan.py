"""The plan of a model: entries expanded to Keras layers, with every shape and weight count known in advance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .applications import Described
from .backbone_layer import Backbone
from .layer_base import Layer, Shape, ShapeError
from .layer_registry import entry_content
from .preprocessing_layers import ImageAugmentation, RangedAugmentation, Rescaling, Resizing


@dataclass(frozen=True)
class PlannedLayer:
    """One Keras layer of the model, with its place in the spec and its shapes known in advance."""

    name: str
    layer: Layer
    origin: tuple
    output_shape: Shape
    trainable: int
    non_trainable: int
    backbone: Described | None = None  # a backbone's own layers


def frozen_counts(layers, trainable, keep_batch_norm_frozen: bool) -> tuple[int, int]:
    """(trainable, non-trainable) weights of a backbone's `layers` under a `trainable` setting."""
    count = len(layers) if trainable is True else 0 if trainable is False else trainable.last
    on = [i >= len(layers) - count and not (keep_batch_norm_frozen and layer.batch_norm)
          for i, layer in enumerate(layers)]
    total = sum(layer.trainable for layer, o in zip(layers, on) if o)
    return total, sum(layer.trainable + layer.non_trainable for layer in layers) - total


def _check_first(planned: list[PlannedLayer], path: tuple) -> None:
    """ShapeError unless everything before the backbone is augmentation."""
    before = [p.name for p in planned if not isinstance(p.layer, ImageAugmentation)]
    if before:
        raise ShapeError(f"a backbone must be the first layer (only augmentation layers may come before it), "
                         f"but {', '.join(before)} come{'s' * (len(before) == 1)} before it")


def with_value_ranges(layers: list, pixels: tuple[float, float]) -> list:
    """`model.layers` with each augmentation that leaves value_range out given the range of the pixels it sees:
    `pixels` (data.preprocess's) through the rescaling (and resizing) before it. After another kind of layer the
    range is unknown, and value_range stays None (planning refuses it)."""
    resolved, low, high = [], *pixels
    for entry in layers:
        name, layer = entry_content(entry)
        if low is not None and isinstance(layer, RangedAugmentation) and layer.value_range is None:
            entry = entry.model_copy(update={name: layer.model_copy(update={"value_range": [low, high]})})
        elif isinstance(layer, Rescaling) and low is not None:
            low, high = sorted(value * layer.scale + layer.offset for value in (low, high))
        elif not isinstance(layer, (ImageAugmentation, Resizing)):
            low = high = None
        resolved.append(entry)
    return resolved


def plan_layers(entries: list[tuple[tuple, Any]], input_shape: Shape, num_classes: int,
                describe_run=None) -> list[PlannedLayer]:
    """Expand `(spec path, entry)` pairs and infer every shape; ShapeError.path says where it broke.
    `describe_run(backbone, shape)` describes a backbone taken from an earlier run."""
    planned, counts, shape = [], {}, tuple(input_shape)
    for path, entry in entries:
        name, content = entry_content(entry)
        base = path + (name,)
        try:
            expanded = content.expand(num_classes)
        except ShapeError as err:
            err.path = base + ((err.field,) if err.field else ())
            raise
        for layer, origin in expanded:
            described = None
            try:
                if isinstance(layer, Backbone):
                    _check_first(planned, path)
                    described = describe_run(layer, shape) if layer.run else layer.describe(shape)
                    out = described.output_shape
                    trainable, frozen = frozen_counts(described.layers, layer.trainable, layer.trainable is not True)
                else:
                    out = layer.output_shape(shape)
                    trainable, frozen = layer.weight_counts(shape)
            except ShapeError as err:
                err.path = base + ((err.field,) if err.field and layer is content else origin)
                raise
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            label = "backbone" if described else f"{layer.kind}_{counts[layer.kind]}"
            planned.append(PlannedLayer(label, layer, base + origin, out, trainable, frozen, described))
            shape = out
    return planned
