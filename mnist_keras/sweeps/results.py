"""What a search shows: its trials as typed rows, best first, the ranked tables (a sweep file's, and the runs of a
--grid sweep as `runs` shows them), the best trial's spec and Optuna's figures."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..runs.table import RunRow, format_table, summarize
from ..spec.yamlfile import clip
from .file import Sweep
from .study import FINISHED, quiet, retry_of


@dataclass
class TrialRow:
    """One trial: its number, values, objective value, epochs trained, state (finished, pruned, failed: WHY,
    crashed, retried as #N, running, waiting), run directory, and that run at a glance (None when not here)."""

    number: int
    params: dict[str, Any]
    value: float | None
    epochs: int | None
    state: str
    run_dir: str | None
    run: RunRow | None = None


@dataclass
class SweepResult:
    """A search's outcome: the study, its objective metric, the searched paths, every trial best first, whether
    it came from --grid flags, the best trial's spec file, the lines to show after the table (the best spec,
    notes, figures written), and `failed`: the first failure's message when every trial failed."""

    study: str
    metric: str
    paths: list[str]
    trials: list[TrialRow]
    grid: bool = False
    best_spec: Path | None = None
    lines: list[str] = field(default_factory=list)
    failed: str | None = None


def _state(trial: FrozenTrial, retried_as: dict[int, int]) -> str:
    if trial.number in retried_as:
        return f"crashed, retried as #{retried_as[trial.number]}"
    if trial.user_attrs.get("surplus"):
        return "not trained: beyond the plan"
    if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
        return "failed: " + clip(trial.user_attrs["error"], 40)
    return {TrialState.COMPLETE: "finished"}.get(trial.state, trial.state.name.lower())


def trial_rows(sweep: Sweep, study: optuna.Study) -> list[TrialRow]:
    """Every trial, best first (by the objective; then pruned by their last value, then the rest)."""
    trials = study.get_trials(deepcopy=False)
    retried_as = {retry_of(t): t.number for t in trials if retry_of(t) is not None}
    sign = -1 if sweep.config.objective.direction == "maximize" else 1
    ranked = sorted(trials, key=lambda t: (t.state not in FINISHED, t.value is None, sign * (t.value or 0), t.number))
    rows = []
    for t in ranked:
        run_dir, host = t.user_attrs.get("run_dir"), t.user_attrs.get("run_host", socket.gethostname())
        here = isinstance(run_dir, str) and host == socket.gethostname()
        run = summarize(Path(run_dir)) if here and Path(run_dir).is_dir() else None
        shown = None if not isinstance(run_dir, str) else run_dir if here else f"{host}:{run_dir}"
        rows.append(TrialRow(t.number, dict(t.params), t.value, t.user_attrs.get("epochs"), _state(t, retried_as),
                             shown, run))
    return rows


def first_failure(study: optuna.Study) -> str | None:
    """When no trial of the study finished and some failed: the first failure's message."""
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed or any(t.state in FINISHED for t in trials):
        return None
    first = min(failed, key=lambda t: t.number)
    return f"every trial failed; the first, trial {first.number}: {first.user_attrs.get('error', 'its process died')}"


def ranked_table(result: SweepResult) -> str:
    """A sweep file's trials: rank, trial, objective, epochs, each searched path, state, run directory."""
    metric = result.metric
    rows = [{"#": rank, "trial": t.number, metric: t.value if "acc" in metric else _short(t.value),
             "epochs": "-" if t.epochs is None else t.epochs, **{path: _short(t.params.get(path)) for path in result.paths},
             "state": t.state, "directory": t.run_dir or "-"} for rank, t in enumerate(result.trials, 1)]
    return format_table(rows, ["#", "trial", metric, "epochs", *result.paths, "state", "directory"])


def grid_table(result: SweepResult) -> str:
    """A --grid sweep's runs, best first: rank, each path's value as typed, best validation and test accuracy,
    the run's state, its directory."""
    rows = [{"#": rank, **(t.run.columns() if t.run else {"state": t.state, "directory": t.run_dir}),
             **t.params} for rank, t in enumerate(result.trials, 1)]
    return format_table(rows, ["#", *result.paths, "best val acc", "test acc", "state", "directory"])


def _short(value) -> str | None:
    return f"{value:.4g}" if isinstance(value, float) else None if value is None else str(value)


def _write_best_spec(sweep: Sweep, study: optuna.Study, out: Path) -> str | None:
    """Write the spec the best finished trial trained (its recorded spec.yaml, `--set` values included) to `out`,
    for `mnist-keras fit`; the line that says so, a note when the trial recorded none, None before one finished."""
    from ..runs.files import write_text
    from ..spec import load_spec, validate_spec
    from ..spec.yamlfile import parse_yaml

    try:
        best = study.best_trial
    except ValueError:
        return None
    where = f"study '{clip(study.study_name)}', trial #{best.number}: its recorded spec"
    text, run_dir = best.user_attrs.get("spec"), best.user_attrs.get("run_dir")
    if isinstance(text, str):
        data, locations = parse_yaml(text, where)
        validate_spec(data, where, locations)  # a tampered record is refused, not written
    elif isinstance(run_dir, str) and (Path(run_dir) / "spec.yaml").is_file():  # a trial recorded before the spec was
        load_spec(Path(run_dir) / "spec.yaml")
        text = (Path(run_dir) / "spec.yaml").read_text()
    else:
        return f"note: no best spec: trial #{best.number} recorded no spec (its run directory is not here)"
    header = (f"the spec the best trial trained (#{best.number}, {sweep.config.objective.metric} {best.value:.4g}; "
              f"study '{study.study_name}', sweep file {sweep.file}, run {run_dir})")
    write_text(out, f"# {' '.join(header.splitlines())}\n{text}")
    return f"best spec: {out} (train it: mnist-keras fit {out})"


def write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Optuna's optimization history, parameter importances and parallel coordinates as PNG files in `folder`;
    returns a line per figure written or skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, draw in (("history", plots.plot_optimization_history), ("importances", plots.plot_param_importances),
                       ("parallel", plots.plot_parallel_coordinate)):
        try:
            with quiet():
                axes = draw(study)
        except (ValueError, RuntimeError) as err:  # too few finished trials for importances, say
            lines.append(f"note: {name}: skipped ({clip(str(err), 100)})")
            continue
        figure = axes.figure
        figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        lines.append(f"wrote {folder / f'{name}.png'}")
    return lines


def collect(sweep: Sweep, study: optuna.Study, runs: Path, grid: bool = False, plots: Path | None = None) -> SweepResult:
    """The search's result; for a sweep file, the best trial's spec written to RUNS/<study>-best.yaml, and
    Optuna's figures into `plots` when given."""
    result = SweepResult(study.study_name, sweep.config.objective.metric, list(sweep.space), trial_rows(sweep, study),
                         grid, failed=first_failure(study))
    if not grid:
        out = runs / f"{study.study_name}-best.yaml"
        line = _write_best_spec(sweep, study, out)
        result.lines += [line] if line else []
        result.best_spec = out if line and not line.startswith("note:") else None
    if plots is not None:
        result.lines += write_plots(study, plots)
    return result
