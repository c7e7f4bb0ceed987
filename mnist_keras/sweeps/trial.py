"""One trial of a search, in a worker: its run directory (a new one, or the crashed trial's, resumed from its last
checkpoint), training with the objective reported to Optuna each epoch, and the value Study.optimize records."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..backend import keras
from ..errors import TrainingFailed, UserError
from ..reporter import Reporter
from ..runs.record import Epoch, RunState
from ..runs.run import Run, open_run
from ..spec import dump_spec
from ..train.session import resume_run
from .file import Sweep
from .study import FailedTrial, is_done, planned_trials, retry_of, suggest


class ReportToTrial(keras.callbacks.Callback):
    """Reports the objective metric of every epoch to the trial (the epochs of a resumed run first) and stops
    training at the end of an epoch the pruner prunes."""

    def __init__(self, trial: optuna.Trial, metric: str, history: list[Epoch]):
        super().__init__()
        self.trial, self.metric, self.history, self.pruned = trial, metric, history, False

    def on_train_begin(self, logs=None):
        for epoch, entry in enumerate(self.history):
            if (value := entry.get(self.metric)) is not None:
                self.trial.report(value, epoch)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = self.model.stop_training = True


@dataclass
class TrialRunner:
    """Runs the trials a worker takes (its `objective` for Study.optimize): each one a run directory under
    `runs/<study>/`, trained with `progress` (silent by default); `summary` is the line each one ends with."""

    sweep: Sweep
    runs: Path
    overrides: list[str]
    data_dir: str | None = None
    label: str = ""
    progress: Reporter = field(default_factory=Reporter)
    current: int | None = None  # the trial training now
    started: dict[int, int] = field(default_factory=dict)  # trial -> the epochs its run had done when it began
    tracking: object = None  # the sweep's tracking.SweepTracking: each trial a nested MLflow run
    tracker: object = None  # the current trial's MLflow tracker

    def objective(self, trial: optuna.Trial) -> float:
        """Train the trial: its best objective value; optuna.TrialPruned when pruned, FailedTrial (its message in
        the user attribute `error`) when training failed."""
        if self._beyond_the_plan(trial):
            trial.set_user_attr("surplus", True)
            raise FailedTrial("beyond the sweep's planned trials")
        params = suggest(trial, self.sweep)
        self.current = trial.number
        trial.set_user_attr("process", {"trial": trial.number, "host": socket.gethostname(), "pid": os.getpid()})
        self.progress(f"{self.label}trial {trial.number}: {_shown(params)}")
        self.tracker = None
        try:
            run = self._run(trial, params)
            self.started[trial.number] = run.state.epochs_done
            state = self._train(trial, run)
        except (TrainingFailed, UserError) as err:
            return self._failed(trial, err.messages[0])
        metric = self.sweep.config.objective.metric
        values = [value for h in state.history if (value := h.get(metric)) is not None]
        trial.set_user_attr("epochs", state.epochs_done)
        if state.status == "pruned":
            self.current = None
            self._outcome("PRUNED")
            raise optuna.TrialPruned()
        if not values:
            return self._failed(trial, f"no {metric} was recorded")
        self.current = None
        value = max(values) if self.sweep.config.objective.direction == "maximize" else min(values)
        self._outcome("COMPLETE", value)
        return value

    def _beyond_the_plan(self, trial: optuna.Trial) -> bool:
        """Whether workers that drew at the same moment made this trial one more than the sweep plans: the trials
        ahead of it, done or in flight, fill the plan already. It is then failed untrained (`surplus`), so the study
        ends with exactly the planned trials and a dead machine's trial is still waited for and retried."""
        ahead = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and (
            is_done(t) or t.state in (TrialState.RUNNING, TrialState.WAITING))]
        return len(ahead) >= planned_trials(self.sweep)

    def _outcome(self, state: str, value: float | None = None) -> None:
        if self.tracker is not None:
            self.tracker.outcome(state, value)

    def _failed(self, trial: optuna.Trial, message: str):
        trial.set_user_attr("error", message)
        self.current = None
        if self.tracker is not None:
            self.tracker.close("FAILED")
        self._outcome("FAIL")
        raise FailedTrial(message)

    def summary(self, trial: FrozenTrial) -> str:
        """The line a trial ends with: its values and how it ended (and, for a retry, what it retried)."""
        shown, metric = _shown(trial.params), self.sweep.config.objective.metric
        if trial.user_attrs.get("surplus"):
            return f"{self.label}trial {trial.number}: not trained, another worker drew the sweep's last trial with it"
        if trial.state == TrialState.FAIL:
            return f"{self.label}trial {trial.number}: {shown} -> failed: {trial.user_attrs.get('error')}"
        epochs = trial.user_attrs.get("epochs", 0)
        outcome = f"pruned after epoch {epochs}" if trial.state == TrialState.PRUNED else \
            f"{metric} {trial.value:.4f} ({epochs} epoch{'s' * (epochs != 1)})"
        retried, start = retry_of(trial), self.started.get(trial.number, 0)
        again = "" if retried is None else \
            f" (retry of #{retried}, {f'resumed after epoch {start}' if start else 'rerun'})"
        return f"{self.label}trial {trial.number}{again}: {shown} -> {outcome} | {trial.user_attrs.get('run_dir')}"

    def _run(self, trial: optuna.Trial, params: dict) -> Run:
        """The trial's run: a crashed trial's (inherited in the retry's user attributes) when it was made on this
        machine and its directory is under RUNS/<study>, else a new one, recorded in the trial (with the machine)
        and its spec before anything trains in it."""
        recorded, folder = trial.user_attrs.get("run_dir"), self.runs / trial.study.study_name
        here = trial.user_attrs.get("run_host", socket.gethostname()) == socket.gethostname()
        inherited = here and isinstance(recorded, str) and Path(recorded).is_dir() and \
            Path(recorded).resolve().parent == folder.resolve()
        if inherited and (Path(recorded) / "state.json").is_file():
            return open_run(recorded)
        spec = self.sweep.load_point(params, self.overrides)
        state = RunState(data_dir=self.data_dir, overrides=spec.overrides)
        run = Run(Path(recorded), spec, state) if inherited else Run.create(self.runs, folder.name, spec, state)
        trial.set_user_attr("run_dir", str(run.path))
        trial.set_user_attr("run_host", socket.gethostname())  # another machine's path may name a run here
        run.write_spec()
        run.save()
        trial.set_user_attr("spec", dump_spec(spec))  # what the best spec is, read from any machine
        return run

    def _train(self, trial: optuna.Trial, run: Run) -> RunState:
        """Train the run to its end or to its pruning (a new run from epoch 1, a crashed one from its last
        checkpoint); the run's final record."""
        if run.state.status in ("finished", "pruned"):
            return run.state  # trained before its process died, but not yet told
        report = ReportToTrial(trial, self.sweep.config.objective.metric, run.state.history)
        if self.tracking is not None:
            self.tracker = self.tracking.open_trial(run.spec, run.state.tracking, trial.number)
        run = resume_run(run, data_dir=self.data_dir, reporter=self.progress, callbacks=[report],
                         observer=self.tracker)
        if report.pruned:
            run.stop("pruned")
        return run.state


def _shown(params: dict) -> str:
    return " ".join(f"{path}={f'{value:.4g}' if isinstance(value, float) else value}" for path, value in params.items())
