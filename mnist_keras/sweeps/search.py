"""The steps of a sweep (a sweep file's, or the one of --grid flags): check it and open its study, run trials in
this process or in N worker processes, and collect the results."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from ..errors import Interrupted, TrainingFailed, UserError
from ..reporter import Reporter
from ..spec.yamlfile import clip
from ..spec.schema import check_run_name
from .file import Sweep, check_points, read_sweep
from .grid import grid_sweep
from .results import SweepResult, collect
from .study import (default_storage, open_storage, open_study, quiet, retry_crashed, sampler, shown_url, work,
                    pruner)


@dataclass
class Search:
    """A checked sweep and its open study (`storage` None: in memory, for --grid flags)."""

    sweep: Sweep
    study: optuna.Study
    storage: str | None
    runs: Path
    overrides: list[str]


def open_search(file: str | Path, storage: str | None = None, study: str | None = None, runs: str | Path = "runs",
                overrides: list[str] | tuple = (), *, existing: bool = False) -> Search:
    """Read the sweep file and open its study (creating it, unless `existing`: then it is only read). Unless
    `existing`, every listed value and range end is first loaded as a spec: UserError for any bad input (a study
    name that is no plain name, a database of another program included), before anything is written."""
    sweep = read_sweep(file)
    if not existing:
        check_points(sweep, list(overrides))
    name = sweep.file.stem if study is None else study
    try:
        check_run_name(name)
    except ValueError as err:
        raise UserError(f"--study {clip(name)}: {err}" if study is not None else
                        f"{sweep.where}: the study is named after the file: {err}; give --study NAME") from None
    runs = Path(runs)
    if storage is None and existing and not (runs / "sweeps.db").is_file():
        raise UserError(f"{runs / 'sweeps.db'}: no such study storage; give --storage URL or --runs DIR")
    if storage is None:
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{runs}: cannot create the runs folder ({err.strerror})") from None
    url = storage or default_storage(runs)
    opened = open_storage(url, readonly=existing)
    if existing and name not in {s.study_name for s in opened.get_all_studies()}:
        raise UserError(f"{shown_url(url)}: no study '{name}' here; give --study NAME")
    return Search(sweep, open_study(sweep, opened, name, existing), url, runs, list(overrides))


def open_grid(spec_file: str | Path, grids: list[str] | tuple, overrides: list[str] | tuple = (), sample: int | None = None,
              seed: int = 0, runs: str | Path = "runs") -> Search:
    """The sweep of `--grid` flags, checked at every combination it trains, and its study: in memory, so running
    the same command again trains the grid again (a grid is no study to go on with), named after the spec (its
    runs are under RUNS/<spec name>, as `fit` puts them). A --random draw is enqueued in its order."""
    sweep = grid_sweep(spec_file, grids, list(overrides), sample, seed)
    name = sweep.load_point(sweep.points[0], list(overrides)).name
    with quiet():
        study = optuna.create_study(study_name=name, sampler=sampler(sweep), pruner=pruner(sweep),
                                    direction=sweep.config.objective.direction)
        for point in sweep.points if sweep.drawn else ():
            study.enqueue_trial(point)
    return Search(sweep, study, None, Path(runs), list(overrides))


def run_search(search: Search, jobs: int = 1, data_dir: str | None = None, echo: Callable[[str], None] = print,
               worker: int = 0, progress: Reporter | None = None) -> None:
    """Take trials from the study until it holds its planned number: here (jobs 1; `worker` numbers a worker
    process of a --jobs sweep) or in `jobs` worker processes. Each trial's line goes to `echo`; `progress`
    shows its training (silent by default). With runtime.tracking: mlflow, the study is a run in MLflow and
    each trial a run nested in it (tracking.py)."""
    tracking = _sweep_tracking(search, echo)
    try:
        _run_trials(search, jobs, data_dir, echo, worker, progress, tracking)
    except BaseException:
        if tracking and not worker:
            tracking.end("KILLED")
        raise
    if tracking and not worker:
        tracking.end("FINISHED")


def _sweep_tracking(search: Search, echo: Callable[[str], None]):
    """The sweep's MLflow tracking when its spec (with the --set values) says runtime.tracking: mlflow, else None;
    the parent run's id is kept in the study."""
    from ..spec import load_spec

    spec = load_spec(search.sweep.spec_file, search.overrides)
    if spec.runtime.tracking != "mlflow":
        return None
    from ..tracking import SweepTracking

    parent = search.study.user_attrs.get("mlflow_run_id")
    tracking = SweepTracking(spec, search.runs, search.study.study_name, search.sweep.space_record(), parent, echo)
    if parent is None:
        search.study.set_user_attr("mlflow_run_id", tracking.parent_id)
    return tracking


def _run_trials(search: Search, jobs: int, data_dir: str | None, echo: Callable[[str], None], worker: int,
                progress: Reporter | None, tracking) -> None:
    if jobs > 1:
        _run_workers(search, jobs, data_dir)
        return
    from .trial import TrialRunner  # TensorFlow loads here, with the first trial

    label = f"[worker {worker}] " if worker else ""
    runner = TrialRunner(search.sweep, search.runs, search.overrides, data_dir, label, progress or Reporter(),
                         tracking=tracking)
    try:
        work(search.sweep, search.study, runner, echo, worker)
    except (Interrupted, KeyboardInterrupt) as err:
        if runner.current is not None:  # Study.optimize failed it: queue its retry, which resumes its run
            retry_crashed(search.study, runner.current)
        if search.storage is None or not isinstance(err, Interrupted):
            raise
        raise Interrupted(f"{err.messages[0].partition('; resume with')[0]}; the study keeps its trials: run the "
                          "same command to go on (the interrupted trial resumes)") from None


def _gpus() -> list[str]:
    """The GPUs this process may use, without importing TensorFlow."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    found = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(found.iterdir())))] if found.is_dir() else []


def worker_command(search: Search, index: int, jobs: int, data_dir: str | None) -> tuple[list[str], dict]:
    """The command and environment of worker `index`: its own GPU when there are any, else its share of the
    CPU threads (unless --set gives or the space searches runtime.threads)."""
    env, sets = dict(os.environ), list(search.overrides)
    gpus = _gpus()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    elif not any(str(o).startswith("runtime.threads") for o in [*sets, *search.sweep.space]):
        sets.append(f"runtime.threads.intra_op={max(1, (os.cpu_count() or 1) // jobs)}")
    command = [sys.executable, "-m", "mnist_keras", "sweep", str(search.sweep.file), "--storage", search.storage,
               "--study", search.study.study_name, "--runs", str(search.runs), "--worker", str(index + 1)]
    for text in sets:
        command += ["--set", str(text)]
    return command + (["--data-dir", data_dir] if data_dir else []), env


def _die_with_parent() -> None:
    """In a worker before it starts: be killed when the sweep command dies (Linux), so none trains unwatched."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_workers(search: Search, jobs: int, data_dir: str | None) -> None:
    workers = []
    for index in range(jobs):
        command, env = worker_command(search, index, jobs, data_dir)
        workers.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
    try:
        codes = [worker.wait() for worker in workers]
    except KeyboardInterrupt:
        for worker in workers:
            worker.wait()
        raise Interrupted("interrupted; the study keeps its finished trials: run the same command to go on") from None
    failed = [(i + 1, code) for i, code in enumerate(codes) if code]
    if failed:
        raise TrainingFailed(*(f"worker {i} stopped with exit code {code}" for i, code in failed),
                             "run the same command to go on with the study")


def results(search: Search, plots: str | Path | None = None) -> SweepResult:
    """The trials best first; for a sweep file, the best trial's spec written to RUNS/<study>-best.yaml."""
    return collect(search.sweep, search.study, search.runs, search.storage is None,
                   None if plots is None else Path(plots))
