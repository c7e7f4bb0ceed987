"""`validate`, `summary` and `schema`: spec files checked, planned and described, before any training."""

from __future__ import annotations

import click

from ..errors import UserError
from .options import overrides_option


@click.command()
@click.argument("specs", nargs=-1, required=True)
@overrides_option
def validate(specs, overrides):
    """Check spec files and sweep files (a sweep file's spec at every listed value and range end, as `sweep`
    does before training); print every problem with its file, line and spec path."""
    from ..api import validate as check
    from ..spec.recipes import recipe_notes

    checked, problems = check(specs, overrides)
    for found in checked:
        searched = f"; a sweep of {len(found.searched)} spec paths" if found.searched else ""
        click.echo(f"ok: {found.file} ({found.spec.name}: {found.layers} layers, {found.params:,} parameters{searched})")
        for note in recipe_notes(found.spec):
            click.echo(f"  {note}")
    if problems:
        raise UserError(*problems)


@click.command()
@click.argument("spec")
@overrides_option
@click.option("--keras", "with_keras", is_flag=True, help="Also build the model in Keras and print its own summary.")
def summary(spec, overrides, with_keras):
    """Layers, output shapes and parameter counts, computed before any training."""
    from ..api import summary as summarize

    plan = summarize(spec, overrides, keras=with_keras)
    heads = [f"stage {s.number} trainable / frozen" for s in plan.stages] if plan.staged else []
    rows = [("#", "layer", "output shape", "params", *heads, "from spec")]
    for i, layer in enumerate(plan.layers, 1):
        cells = [f"{t:,} / {f:,}" for t, f in layer.stage_weights] if plan.staged else []
        shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
        rows.append((str(i), layer.name, shape, f"{layer.params:,}", *cells, layer.origin))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {0, 3, *range(4, 4 + len(heads))}
    click.echo(f"Model: {plan.name}    input shape: {plan.input_shape}")
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                             for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
    total = plan.trainable + plan.frozen
    click.echo(f"Total params: {total:,} ({total * 4 / 1024:,.2f} KB as float32)")
    click.echo(f"Trainable params: {plan.trainable:,}")
    click.echo(f"Non-trainable params: {plan.frozen:,}")
    for index, stage in enumerate(plan.stages if plan.staged else ()):
        if stage.trainable is None:  # no backbone
            backbone = ""
        else:
            kept = stage.trainable if isinstance(stage.trainable, bool) else f"last {stage.trainable.last} layers"
            backbone = f"backbone trainable: {str(kept).lower()}, "
        trainable, frozen = plan.stage_totals(index)
        click.echo(f"Stage {stage.number}: epochs {stage.first + 1}-{stage.end}, {backbone}"
                   f"{stage.spec.train.optimizer.type} at learning rate "
                   f"{_rate(stage.spec.train.optimizer)}: {trainable:,} trainable, {frozen:,} frozen")
    for note in plan.recipes:
        click.echo(note)
    for line in plan.keras:
        click.echo(line)


def _rate(optimizer) -> str:
    """An optimizer's learning rate as written, or `auto` (found when training starts)."""
    return "auto" if optimizer.learning_rate == "auto" else f"{optimizer.resolved_learning_rate():g}"


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
def schema(out):
    """Print the JSON Schema of spec files (for editor completion and checking)."""
    from ..api import schema as json_schema

    text = json_schema(out or None)
    if not out:
        click.echo(text)
