"""What the commands share: the --set option, notes on stderr, the Reporter of progress, flags as overrides."""

from __future__ import annotations

import json
import sys

import click


def overrides_option(func):
    return click.option(
        "--set", "overrides", multiple=True, metavar="PATH=VALUE",
        help="Override a spec value, e.g. --set train.epochs=3 --set data.batch_size=64.",
    )(func)


def note(message: str) -> None:
    click.echo(message, err=True)


def reporter():
    """Progress on stdout (notes on stderr), with Keras' bar on a terminal and a line per epoch otherwise."""
    from ..api import Reporter

    return Reporter(echo=lambda message: click.echo(message, err=message.startswith("note:")),
                    verbose=1 if sys.stdout.isatty() else 2)


def flag_overrides(epochs=None, device=None, distribute=None, name=None, tracking=None) -> list:
    """The --epochs/--device/--distribute/--name/--mlflow values as spec overrides that name their flag in
    messages."""
    from ..spec import Override

    return [Override(f"{key}={json.dumps(value)}", f"{flag} {value}") for key, flag, value in
            (("train.epochs", "--epochs", epochs), ("runtime.device", "--device", device),
             ("runtime.distribute", "--distribute", distribute), ("name", "--name", name),
             ("runtime.tracking", "--mlflow", tracking)) if value is not None]
