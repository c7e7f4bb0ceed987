"""A model's layers, output shapes and parameter counts from its spec alone (no TensorFlow): what `summary` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from .recipes import recipe_notes
from .schema import Spec, StagePlan
from .yamlfile import dotted


@dataclass
class LayerRow:
    """One planned Keras layer: its output shape (batch left out), parameters, (trainable, frozen) weights in
    each stage, and the spec path it comes from."""

    name: str
    output_shape: tuple[int, ...]
    params: int
    stage_weights: list[tuple[int, int]]
    origin: str


@dataclass
class ModelSummary:
    """The whole plan: layers, stages (one without train.stages) and totals, as trained in the first stage."""

    name: str
    input_shape: tuple[int, ...]
    layers: list[LayerRow]
    stages: list[StagePlan]
    staged: bool  # several stages, or a backbone whose frozen weights are worth a column
    trainable: int
    frozen: int
    keras: list[str] = field(default_factory=list)  # Keras' own summary lines, when asked for
    recipes: list[str] = field(default_factory=list)  # what the training recipes add (recipes.recipe_notes)

    def stage_totals(self, index: int) -> tuple[int, int]:
        """(trainable, frozen) weights of the whole model in stage number index + 1."""
        return (sum(row.stage_weights[index][0] for row in self.layers),
                sum(row.stage_weights[index][1] for row in self.layers))


def summarize_model(spec: Spec) -> ModelSummary:
    """The spec's plan with its parameter counts per stage; raises ShapeError like Spec.plan."""
    planned, stages = spec.plan(), spec.stages()
    counts = [spec.stage_weights(planned, stage) for stage in stages]
    layers = [LayerRow(p.name, tuple(p.output_shape), p.trainable + p.non_trainable, [c[i] for c in counts],
                       dotted(p.origin)) for i, p in enumerate(planned)]
    summary = ModelSummary(spec.name, spec.input_shape(), layers, stages,
                           len(stages) > 1 or spec.backbone() is not None, 0, 0)
    summary.trainable, summary.frozen = summary.stage_totals(0)
    summary.recipes = recipe_notes(spec)
    return summary
