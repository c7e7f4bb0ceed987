"""One trial of a search, in a worker: its run directory (a new one, or the crashed trial's, resumed from its last
checkpoint), training with the objective reported to Optuna each epoch, and what the study is told."""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from ..backend import keras
from ..errors import TrainingFailed, UserError
from ..reporter import Reporter
from ..runs.files import create_run_dir, write_text
from ..runs.record import RunState, read_metrics, read_state, write_metrics, write_state
from ..spec import dump_spec
from ..train.session import resume_run
from .file import Sweep
from .study import HEARTBEAT_S, retry_of


class ReportToTrial(keras.callbacks.Callback):
    """Reports the objective metric of every epoch to the trial (the epochs of a resumed run first) and stops
    training at the end of an epoch the pruner prunes."""

    def __init__(self, trial: optuna.Trial, metric: str, history: list[dict]):
        super().__init__()
        self.trial, self.metric, self.history, self.pruned = trial, metric, history, False

    def on_train_begin(self, logs=None):
        for epoch, entry in enumerate(self.history):
            if entry.get(self.metric) is not None:
                self.trial.report(entry[self.metric], epoch)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = self.model.stop_training = True


@contextmanager
def heartbeat(storage, trial_id: int):
    """Record the trial's heartbeat now and every HEARTBEAT_S seconds until the block ends."""
    stop = threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except SQLAlchemyError:
                pass  # a busy database: the next beat is in time
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, daemon=True, name="optuna-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass
class TrialRunner:
    """Runs the trials a worker takes: each one a run directory under `runs/<study>/`."""

    sweep: Sweep
    study: optuna.Study
    runs: Path
    overrides: list[str]
    data_dir: str | None = None
    label: str = ""

    def __call__(self, trial: optuna.Trial) -> str:
        """Train the trial, tell the study how it ended, and return its one-line summary."""
        trial.set_user_attr("process", {"trial": trial.number, "host": socket.gethostname(), "pid": os.getpid()})
        shown = " ".join(f"{path}={_short(value)}" for path, value in trial.params.items())
        with heartbeat(self.study._storage, trial._trial_id):
            try:
                run = self._run_dir(trial)
                start = read_state(run).epochs_done
                state = self._train(trial, run)
            except (TrainingFailed, UserError) as err:
                trial.set_user_attr("error", err.messages[0])
                self.study.tell(trial, state=TrialState.FAIL)
                return f"{self.label}trial {trial.number}: {shown} -> failed: {err.messages[0]}"
            metric = self.sweep.config.objective.metric
            values = [h[metric] for h in state.history if h.get(metric) is not None]
            trial.set_user_attr("epochs", state.epochs_done)
            if state.status == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED)
                outcome = f"pruned after epoch {state.epochs_done}"
            elif values:
                best = max(values) if self.sweep.config.objective.direction == "maximize" else min(values)
                self.study.tell(trial, best)
                outcome = f"{metric} {best:.4f} ({state.epochs_done} epoch{'s' * (state.epochs_done != 1)})"
            else:
                trial.set_user_attr("error", f"no {metric} was recorded")
                self.study.tell(trial, state=TrialState.FAIL)
                outcome = f"failed: no {metric} was recorded"
        retried = retry_of(self.study._storage.get_trial(trial._trial_id))
        again = "" if retried is None else \
            f" (retry of #{retried}, {f'resumed after epoch {start}' if start else 'rerun'})"
        return f"{self.label}trial {trial.number}{again}: {shown} -> {outcome} | {run}"

    def _run_dir(self, trial: optuna.Trial) -> Path:
        """The trial's run directory: a crashed trial's (inherited in the retry's user attributes) when it is on
        this machine under RUNS/<study>, else a new one, recorded in the trial with its spec before anything
        trains in it."""
        recorded, folder = trial.user_attrs.get("run_dir"), self.runs / self.study.study_name
        if isinstance(recorded, str) and Path(recorded).is_dir() and \
                Path(recorded).resolve().parent == folder.resolve():
            run = Path(recorded)
        else:
            run = create_run_dir(self.runs, self.study.study_name)
            trial.set_user_attr("run_dir", str(run))
        if not (run / "state.json").is_file():
            spec = self.sweep.load_point(trial.params, self.overrides)
            text = dump_spec(spec)
            write_text(run / "spec.yaml", text)
            write_state(run, RunState(data_dir=self.data_dir, overrides=spec.overrides))
            trial.set_user_attr("spec", text)  # what the best spec is, read from any machine
        return run

    def _train(self, trial: optuna.Trial, run: Path) -> RunState:
        """Train the run to its end or to its pruning (a new run from epoch 1, a crashed one from its last
        checkpoint); the run's final record."""
        state = read_state(run)
        if state.status in ("finished", "pruned"):
            return state  # trained before its process died, but not yet told
        report = ReportToTrial(trial, self.sweep.config.objective.metric, state.history)
        resume_run(run, data_dir=self.data_dir, reporter=Reporter(), callbacks=[report])
        state = read_state(run)
        if report.pruned:
            _mark_pruned(run, state)
        return state


def _mark_pruned(run: Path, state: RunState) -> None:
    metrics = read_metrics(run)
    if metrics:
        metrics.status = "pruned"
        write_metrics(run, metrics)
    state.status = "pruned"
    write_state(run, state)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
