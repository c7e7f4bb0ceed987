"""A run directory as one object: its spec, its record, its metrics and its model files (model/objects.py
loads them), and the one lifecycle every run goes through: create, begin, record an epoch, then finish or stop
(interrupted, failed or pruned). Nothing outside runs/ reads or writes a run's record files."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ..errors import UserError
from ..spec import Spec, dump_spec, load_spec
from .files import create_run_dir, open_run_dir, run_file, training_holder, write_text
from .record import Best, Epoch, Provenance, RunMetrics, RunState, Status, Stop, read_metrics, read_state, \
    write_metrics, write_state


class RunObserver(Protocol):
    """Told of a run's lifecycle as it is recorded (an experiment tracker); it never raises into training."""

    def begun(self, run: "Run") -> None: ...

    def epoch_recorded(self, run: "Run") -> None: ...

    def finished(self, run: "Run") -> None: ...

    def stopped(self, run: "Run", status: Status) -> None: ...


@dataclass
class Run:
    """A training run. `path` is None only for a multi_worker worker other than the chief, which writes
    no run; `metrics` (metrics.json) is None until the run finishes; `observer` is told of its lifecycle."""

    path: Path | None
    spec: Spec
    state: RunState
    metrics: RunMetrics | None = None
    observer: RunObserver | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, runs: str | Path, name: str, spec: Spec, state: RunState) -> "Run":
        """A new, empty run directory `runs/name/<timestamp>` for `spec` (write_spec and save fill it)."""
        return cls(create_run_dir(runs, name), spec, state)

    @property
    def recorded(self) -> bool:
        """True once the run has a record (state.json) on disk."""
        return (self.path / "state.json").is_file()

    def write_spec(self) -> None:
        write_text(self.path / "spec.yaml", dump_spec(self.spec))

    def save(self) -> None:
        """Write the record (state.json), last of the files of an epoch, naming those it belongs to."""
        write_state(self.path, self.state)

    def begin(self, device: str, provenance: dict, class_names: list[str]) -> None:
        """Training begins (or resumes) on `device` with this data; UserError when its classes are not the run's."""
        state = self.state
        if state.classes and state.classes != class_names:
            raise UserError(f"{self.path}: the data's classes ({', '.join(class_names)[:200]}) are not the run's "
                            f"({', '.join(state.classes)[:200]}); resume with the data the run was trained on")
        state.status, state.device, state.data, state.classes = "running", device, Provenance(**provenance), \
            list(class_names)
        state.pid, state.host = os.getpid(), socket.gethostname()
        self.save()
        if self.observer:
            self.observer.begun(self)

    def record_epoch(self, logged: dict[str, Any], checkpoint: str | None, best: Best | None,
                     learning_rate: float, rng: dict[str, list], callbacks: dict[str, dict],
                     stopped_by: str | None = None) -> None:
        """An epoch ended: its logged values, the checkpoint holding it, the best so far, what resuming after
        it needs (the learning rate, the seed states, each stateful callback's state), and the rule that ended
        training with it (`stopped_by`: stop_at or early_stopping), if one did."""
        state = self.state
        state.history.append(Epoch(**logged))
        state.epochs_done, state.checkpoint, state.best = state.history[-1].epoch, checkpoint, best
        state.learning_rate, state.rng, state.callbacks = learning_rate, rng, callbacks
        if stopped_by:
            state.stopped = Stop(by=stopped_by, epoch=state.epochs_done,
                                 seconds=sum(h.epoch_seconds or 0.0 for h in state.history))
        self.save()
        if self.observer:
            self.observer.epoch_recorded(self)

    def finish(self, metrics: RunMetrics) -> None:
        """The run ended: its metrics written, then its record marked finished."""
        self.metrics = metrics
        write_metrics(self.path, metrics)
        self.state.status = "finished"
        self.save()
        if self.observer:
            self.observer.finished(self)

    def stop(self, status: Status) -> None:
        """Record why the run stopped (interrupted, failed or pruned), where the disk still allows; a run that
        never began keeps no record."""
        if not (self.state.epochs_done or self.recorded):
            return
        self.state.status = status
        try:
            if status == "pruned" and self.metrics is not None:
                self.metrics.status = status
                write_metrics(self.path, self.metrics)
            self.save()
        except OSError:
            pass
        if self.observer:
            self.observer.stopped(self, status)

    def discard_if_unrecorded(self) -> None:
        """Remove a new run's directory when training was refused before it began (nothing in it is a record)."""
        if not self.recorded:
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def class_names(self) -> list[str]:
        """The names of its classes, by output index: frozen from the data when it trained, else "0" to "N-1"."""
        return list(self.state.classes or self.spec.data.class_labels())

    @property
    def upload_fit(self) -> str | None:
        """How image files given to its model are decoded: as its data set's own images were (data/images.py)."""
        from ..data.images import decoding_fit

        return decoding_fit(self.spec.data, self.state.data.source if self.state.data else None)

    def model_file(self, which: Literal["final", "best", "last"] = "final") -> Path:
        """model.keras (falling back to the last checkpoint of an unfinished run), best.keras or the last."""
        if self.path is None:
            raise UserError("this worker wrote no run: the chief's run directory holds the models")
        if which == "final" and (self.path / "model.keras").is_file():
            return self.path / "model.keras"
        if which == "best":
            if not self.state.best:
                raise UserError(f"{self.path}: no best checkpoint was saved")
            return run_file(self.path, self.state.best.file)
        if not self.state.checkpoint:
            raise UserError(f"{self.path}: no model.keras or checkpoint in this run directory")
        return run_file(self.path, self.state.checkpoint)


def open_run(path: str | Path) -> Run:
    """An existing run directory as a Run; UserError naming the file that is missing or unreadable."""
    run = open_run_dir(path)
    state = read_state(run)
    with state.recorded_backbone():
        spec = load_spec(run / "spec.yaml")
    spec._overrides = dict(state.overrides)
    return Run(run, spec, state, read_metrics(run))


def model_target(target: str | Path, spec_file: str | None = None) -> tuple[Spec, Path, Run | None]:
    """(spec, model file, its run if it has one) for a run directory or a .keras file (inside a run, or
    with --spec)."""
    path = Path(target)
    if path.is_dir():
        run = open_run(path)
        return (load_spec(spec_file) if spec_file else run.spec), run.model_file(), run
    if not path.is_file():
        raise UserError(f"{path}: no such run directory or model file")
    home = next((p for p in (path.parent, path.parent.parent) if (p / "spec.yaml").is_file()), None)
    if home is None and not spec_file:
        raise UserError(f"{path}: no spec.yaml beside this model; pass --spec SPEC (the spec it was trained with)")
    run = open_run(home) if home else None
    return (load_spec(spec_file) if spec_file else run.spec), path, run


def unfinished_cluster_run(runs: str | Path, spec: Spec, cluster: list[str]) -> Path | None:
    """The newest run under `runs/NAME` that a multi_worker command with this spec and these workers' addresses
    began and did not finish (interrupted, failed, or killed), and that no process trains: the run the same
    command on every worker resumes."""
    text = dump_spec(spec)
    for run_dir in sorted((Path(runs) / spec.name).glob("*/state.json"), key=lambda p: p.parent.name, reverse=True):
        run_dir = run_dir.parent
        try:
            state = read_state(run_dir)
            same = (run_dir / "spec.yaml").read_text() == text
        except (UserError, OSError):
            continue
        if same and state.cluster == cluster and state.status in ("running", "interrupted", "failed") \
                and state.checkpoint and not training_holder(run_dir):
            return run_dir
    return None
