"""`runs` and `report`: what training left, as a table of run directories and as figures and an HTML page."""

from __future__ import annotations

import click

from .options import note


@click.command()
@click.argument("root", default="runs", required=False)
def runs(root):
    """A table of the runs under ROOT (default: runs): name, start, epochs, accuracies, time to target (of runs
    that stopped at train.stop_at), state, directory."""
    from ..api import list_runs
    from ..runs.table import columns_of, format_table

    rows = list_runs(root)
    click.echo(format_table([row.columns() for row in rows], columns_of(rows)))
    for row in rows:
        if row.reason:
            click.echo(f"unreadable: {row.reason}", err=True)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", type=click.Path(file_okay=False),
              help="The folder to write to (default: RUN_DIR/report for one run; required for several).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: each run's).")
def report(run_dirs, out, data_dir):
    """Learning curves, test confusion matrix, per-class accuracy and an HTML page for one or several runs."""
    from ..api import Reporter, report as write_report

    if out is None and len(run_dirs) > 1:
        raise click.UsageError("give --out DIR for a report on several runs")
    index = write_report(list(run_dirs), out, data_dir=data_dir, reporter=Reporter(echo=note))
    click.echo(f"wrote {index} and its figures ({len(run_dirs)} run{'s' if len(run_dirs) > 1 else ''})")
