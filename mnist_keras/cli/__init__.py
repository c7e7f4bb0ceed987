"""The `mnist-keras` command line: parse, call the API, print, and map its errors to exit codes in one place
(UserError 2, TrainingFailed and ExportFailed 1, Interrupted and Ctrl-C 130). Each command calls one API function
and formats what it returns; TensorFlow loads only inside the commands that train or predict."""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..errors import Error, Interrupted
from .data import data_group
from .deployment import export_command, serve
from .results import report, runs
from .specs import schema, summary, validate
from .sweeps import sweep
from .training import devices, evaluate, fit, lr_find, predict, tune_runtime


class Group(click.Group):
    """Turns the API's errors into their messages on stderr and their exit codes, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Error as err:
            prefix = "\n" if isinstance(err, Interrupted) else "error: "
            for message in err.messages:
                click.echo(f"{prefix}{message}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


def run() -> None:
    """The `mnist-keras` console script: main(), then, once TensorFlow was loaded, exit at once. Python's own
    teardown of TensorFlow (its atexit handlers, threads and modules) adds 2 s or more to every training command,
    and by then every file has been written and closed."""
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


FIRST_STEP = "Try first: mnist-keras fit model_specs/lenet5.yaml  (LeNet-5 on MNIST)"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=FIRST_STEP)
@click.version_option(__version__, prog_name="mnist-keras")
def main():
    """Declarative Keras models: YAML specs in, trained models and TensorBoard runs out."""


for command in (data_group, validate, summary, schema, fit, lr_find, tune_runtime, sweep, runs, report, devices, evaluate, serve,
                predict, export_command):
    main.add_command(command)
