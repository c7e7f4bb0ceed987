"""The `mnist-keras` command line. TensorFlow is imported only inside the commands that need it."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import UserError


class Group(click.Group):
    """Turns bad input into its messages on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as err:
            for message in err.messages:
                click.echo(f"error: {message}", err=True)
            sys.exit(2)


def overrides_option(func):
    return click.option(
        "--set", "overrides", multiple=True, metavar="PATH=VALUE",
        help="Override a spec value, e.g. --set train.epochs=3 --set model.layers[0].conv2d.filters=8.",
    )(func)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mnist-keras")
def main():
    """Declarative Keras models: YAML specs in, trained models and TensorBoard runs out."""


@main.command()
@click.argument("specs", nargs=-1, required=True)
@overrides_option
def validate(specs, overrides):
    """Check spec files; print every problem with its file, line and spec path."""
    from .specfile import load_spec

    failed = []
    for file in specs:
        try:
            spec = load_spec(file, overrides)
        except UserError as err:
            failed += err.messages
            continue
        planned = spec.plan()
        params = sum(p.trainable + p.non_trainable for p in planned)
        click.echo(f"ok: {file} ({spec.name}: {len(planned)} layers, {params:,} parameters)")
    if failed:
        raise UserError(*failed)


@main.command()
@click.argument("spec")
@overrides_option
@click.option("--keras", "with_keras", is_flag=True, help="Also build the model in Keras and print its own summary.")
def summary(spec, overrides, with_keras):
    """Layers, output shapes and parameter counts, computed before any training."""
    from .specfile import dotted, load_spec

    loaded = load_spec(spec, overrides)
    planned = loaded.plan()
    rows = [("#", "layer", "output shape", "params", "from spec")]
    for i, p in enumerate(planned, 1):
        shape = "(None, " + ", ".join(str(d) for d in p.output_shape) + ")"
        rows.append((str(i), p.name, shape, f"{p.trainable + p.non_trainable:,}", dotted(p.origin)))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    click.echo(f"Model: {loaded.name}    input shape: {loaded.input_shape()}")
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if c in (0, 3) else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
    trainable = sum(p.trainable for p in planned)
    frozen = sum(p.non_trainable for p in planned)
    click.echo(f"Total params: {trainable + frozen:,} ({(trainable + frozen) * 4 / 1024:,.2f} KB as float32)")
    click.echo(f"Trainable params: {trainable:,}")
    click.echo(f"Non-trainable params: {frozen:,}")
    if with_keras:
        from .builder import build_model

        model = build_model(loaded)
        model.summary(print_fn=lambda line, **_: click.echo(line))
        if model.count_params() != trainable + frozen:
            raise UserError(f"{spec}: Keras counts {model.count_params():,} parameters, the plan {trainable + frozen:,}")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
def schema(out):
    """Print the JSON Schema of spec files (for editor completion and checking)."""
    from .specfile import json_schema

    text = json.dumps(json_schema(), indent=2)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        click.echo(text)
