"""A run directory as one object: its spec, its record, its metrics and its model files (model/objects.py
loads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from ..spec import Spec, load_spec
from .files import open_run_dir, run_file
from .record import RunState, read_metrics, read_state


@dataclass
class Run:
    """A training run. `path` is None only for a multi_worker worker other than the chief, which writes
    no run; `metrics` is metrics.json as a mapping, empty until the run finishes."""

    path: Path | None
    spec: Spec
    state: RunState
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """The names of its classes, by output index: frozen from the data when it trained, else "0" to "N-1"."""
        return list(self.state.classes or self.spec.data.class_labels())

    @property
    def upload_fit(self) -> str | None:
        """How image files given to its model are decoded: as its data set's own images were (data/images.py)."""
        from ..data.images import decoding_fit

        return decoding_fit(self.spec.data, (self.state.data or {}).get("source"))

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
    metrics = read_metrics(run)
    return Run(run, spec, state, metrics.model_dump(mode="json") if metrics else {})


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
