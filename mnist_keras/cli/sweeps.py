"""`sweep`: a hyperparameter search through Optuna, from a sweep file or a spec with --grid."""

from __future__ import annotations

import click

from ..errors import TrainingFailed
from .options import flag_overrides, overrides_option, reporter


@click.command()
@click.argument("file", metavar="SPEC|SWEEP_FILE")
@click.option("--grid", "grids", multiple=True, metavar="PATH=V1,V2,...",
              help="With a SPEC: values to try for one spec path, e.g. --grid train.optimizer.learning_rate=0.1,0.01; "
                   "repeat for more paths: every combination is trained.")
@overrides_option
@click.option("--random", "sample", type=click.IntRange(min=1), metavar="N",
              help="With --grid: train N combinations drawn at random instead of all of them.")
@click.option("--seed", default=0, show_default=True, help="Seed of the --random draw.")
@click.option("--epochs", type=click.IntRange(min=1), help="Train each run for this many epochs.")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
@click.option("--runs", "runs_root", default="runs", show_default=True, help="The folder that holds run directories.")
@click.option("--storage", metavar="URL", help="With a SWEEP_FILE: the study's database (default: "
              "sqlite:///RUNS/sweeps.db; postgresql://... to share a study between machines).")
@click.option("--study", "study_name", metavar="NAME", help="With a SWEEP_FILE: the study (default: the file's stem).")
@click.option("--jobs", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="With a SWEEP_FILE: worker processes taking trials from the study (one GPU each when there are).")
@click.option("--show", is_flag=True, help="With a SWEEP_FILE: only show the study's ranked trials and best spec.")
@click.option("--plots", type=click.Path(file_okay=False), metavar="DIR",
              help="With a SWEEP_FILE: also write Optuna's figures (history, importances, parallel coordinates) as "
                   "PNG files into DIR.")
@click.option("--mlflow", is_flag=True, help="Log the sweep to MLflow (runtime.tracking: mlflow): a run for the "
              "study, a nested run per trial.")
@click.option("--worker", type=int, default=0, hidden=True)
def sweep(file, grids, overrides, sample, seed, epochs, data_dir, runs_root, storage, study_name, jobs, show, plots,
          mlflow, worker):
    """Search hyperparameters of a spec: a SWEEP_FILE (a YAML file with `space:`) runs an Optuna study (run again,
    it goes on); a SPEC with --grid trains every combination of values through Optuna's grid sampler, one run
    after another, in a study kept in memory (run again, the grid trains again).

    Every trial is a normal run directory; its values are logged as hyperparameters, so
    `tensorboard --logdir RUNS` compares them in the HParams dashboard.
    """
    from ..api import sweep as search
    from ..sweeps.results import grid_table, ranked_table

    result = search(file, grids, [*overrides, *flag_overrides(epochs, tracking="mlflow" if mlflow else None)],
                    sample=sample, seed=seed, runs=runs_root,
                    storage=storage, study=study_name, jobs=jobs, show=show, plots=plots, data_dir=data_dir,
                    worker=worker, reporter=reporter())
    if result is None:  # a worker of --jobs: the sweep command shows the results
        return
    click.echo(grid_table(result) if result.grid else ranked_table(result))
    for line in result.lines:
        click.echo(line, err=line.startswith("note:"))
    if result.grid:
        click.echo(f"compare them: tensorboard --logdir {runs_root}")
    if result.failed and not show:
        raise TrainingFailed(result.failed)
