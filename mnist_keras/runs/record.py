"""The run record: `state.json` and `metrics.json` as typed models, read and written only through them.

`state.json` holds everything a continuation needs (the epoch counter, the history, every stateful
callback's state, the checkpoints it belongs to); it is written last at the end of each epoch.
`FORMAT` counts changes of its layout: a run written by a newer version is refused with its format
named, and a run of format 1 (mnist-keras 0.1) is read as it was.
"""

from __future__ import annotations

import os
import re
import socket
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError
from ..spec.fields import MAX_INT
from .files import first_problem, read_json, training_holder, write_json

FORMAT = 2
Status = Literal["running", "finished", "interrupted", "failed", "pruned"]  # pruned: stopped early by a sweep
Number = int | float | None  # a metric (or the epoch); None where it was not finite (a NaN loss)
_CHECKPOINT = re.compile(r"checkpoints/[A-Za-z0-9_.-]+")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _inside_checkpoints(value: str) -> str:
    if not _CHECKPOINT.fullmatch(value) or ".." in value:
        raise ValueError(f"{value[:80]!r} is not a file of the run's checkpoints/ folder")
    return value


CheckpointFile = Annotated[str, AfterValidator(_inside_checkpoints)]


class Best(_Record):
    """The best epoch by the checkpoint's monitored metric, and where its model is."""

    monitor: str
    value: float
    epoch: int = Field(ge=1, le=MAX_INT)
    file: CheckpointFile = "checkpoints/best.keras"


class BackboneLayer(_Record):
    name: str
    trainable: int = Field(ge=0)
    non_trainable: int = Field(ge=0)
    batch_norm: bool


class BackboneRun(_Record):
    """The earlier run a run's backbone came from, as it was when training began: its absolute path (for
    provenance) and what checking the run's spec needs of it, so nothing after training reads it again."""

    run: str
    output_shape: list[Annotated[int, Field(ge=1, le=MAX_INT)]]
    until: int = Field(ge=0, le=MAX_INT)
    layers: list[BackboneLayer]

    @classmethod
    def of(cls, spec) -> "BackboneRun | None":
        """The record of `spec`'s backbone run, None when it has none."""
        planned = next((p for p in spec.plan() if p.backbone and p.layer.run), None)
        if planned is None:
            return None
        described = planned.backbone
        return cls(run=planned.layer.run, output_shape=list(described.output_shape), until=described.until,
                   layers=[BackboneLayer(**asdict(layer)) for layer in described.layers])


class Stop(_Record):
    """Training ended before train.epochs by the run's own rule, after `epoch`: `stop_at` (every train.stop_at
    target reached) or `early_stopping`; `seconds`: the training seconds of the epochs up to and including it, summed
    across resumes as the history records them (the time to target)."""

    by: Literal["stop_at", "early_stopping"]
    epoch: int = Field(ge=1, le=MAX_INT)
    seconds: float = Field(ge=0)

    def reason(self) -> str:
        return "every train.stop_at target reached" if self.by == "stop_at" else "early stopping"


class RangeTest(_Record):
    """`learning_rate: auto`: the rate the range test chose before the first epoch, by `rule`, over `steps` steps."""

    rate: float = Field(gt=0)
    rule: str
    steps: int = Field(ge=1, le=MAX_INT)


class Timing(_Record):
    """One runtime measured by `runtime.autotune`: its training speed and its loss after the same steps."""

    choice: str
    images_per_second: float = Field(ge=0)
    loss: float | None
    agrees: bool  # its loss is float32's within autotune.TOLERANCE


class RuntimeChoice(_Record):
    """`runtime.autotune`: the fields the spec set (kept as they are), what the measurement chose for the others,
    and the timings it chose by; the choice holds for the whole run, resumes included."""

    pinned: list[str] = []
    mixed_precision: bool | str | None = None
    jit_compile: bool | None = None
    steps_per_execution: int | str | None = None
    timings: list[Timing] = []


class _Open(_Record):
    """A record whose other keys are kept as they were written (a newer Keras metric, a data source's own facts)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class Epoch(_Open):
    """One epoch of the history: its number, learning rate and timing, and every metric Keras logged for it (loss,
    accuracy, val_loss, ...: typed numbers, None where not finite)."""

    __pydantic_extra__: dict[str, Number] = Field(init=False)
    epoch: int = Field(ge=1, le=MAX_INT)
    learning_rate: Number = None
    epoch_seconds: Number = None
    images_per_second: Number = None

    def get(self, name: str) -> Number:
        """The value logged as `name` this epoch; None when it was not logged (validation_freq) or not finite."""
        if name in type(self).model_fields:
            return getattr(self, name)
        return (self.__pydantic_extra__ or {}).get(name)

    def logged(self) -> dict[str, Number]:
        """Every value of the epoch by name, `epoch` included."""
        return self.model_dump()


class TestMetrics(_Open):
    """The test set's loss and accuracy (and any further compiled metric), None where not finite."""

    __test__ = False  # pytest: not a test class
    __pydantic_extra__: dict[str, Number] = Field(init=False)
    loss: Number = None
    accuracy: Number = None


class Provenance(_Open):
    """Where a run's images came from: the dataset, its source kind, its path, the images per split (per class for
    image folders), and the source's own facts (sha256 of each file read, held-out files, skipped files...)."""

    dataset: str | None = None
    source: str | None = None
    path: str | None = None
    counts: dict[str, Any] = {}


class Tracking(_Record):
    """Where a run is tracked besides its folder: an MLflow tracking server (its URI, any password left out),
    the experiment and the run's id there; a resume logs to the same run."""

    uri: str
    experiment_id: str
    run_id: str


class RunState(_Record):
    """state.json: where a run stands."""

    format: int = FORMAT
    status: Status = "running"
    epochs_done: int = Field(0, ge=0, le=MAX_INT)
    history: list[Epoch] = []
    data_dir: str | None = None
    data: Provenance | None = None  # where the images came from
    classes: list[str] = []  # the class names in label order, frozen when training starts
    overrides: dict[str, Any] = {}  # spec path -> value, from --set (and sweep values)
    backbone: BackboneRun | None = None  # an earlier run as the backbone
    callbacks: dict[str, dict[str, Any]] = {}  # each stateful callback's own state
    best: Best | None = None
    checkpoint: CheckpointFile | None = None  # the last finished epoch's model and optimizer, inside the run
    learning_rate: float | None = None
    range_test: RangeTest | None = None  # the rate `learning_rate: auto` stands for, found before the first epoch
    stopped: Stop | None = None  # the run ended itself (stop_at, early stopping): a resume trains no further
    rng: dict[str, list] = {}  # dropout/augmentation seed states, which Keras keeps out of checkpoints
    device: str | None = None
    pid: int | None = Field(None, ge=1, le=MAX_INT)  # the process that trained it last, on `host`
    host: str | None = None
    tracking: Tracking | None = None  # the MLflow run it is logged to (runtime.tracking: mlflow)
    cluster: list[str] | None = None  # multi_worker: the workers' addresses, by which the same command resumes it
    autotune: RuntimeChoice | None = None  # runtime.autotune: the runtime measured before the first epoch

    def process_alive(self) -> bool:
        """True when the process that last wrote this record still runs on this machine."""
        if not self.pid or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def shown_status(self, run_dir: Path) -> str:
        """The status, with a `running` run that no process holds (files.training_lock) shown as
        `interrupted (stale)`."""
        if self.status == "running" and not training_holder(run_dir):
            return "interrupted (stale)"
        return self.status

    def recorded_backbone(self) -> AbstractContextManager:
        """Within this, the run's spec is checked against the record of its backbone run, which is not read."""
        from ..spec.applications import Described, LayerWeights
        from ..spec.schema import recorded_backbones

        backbone = self.backbone
        return recorded_backbones({backbone.run: Described(
            tuple(backbone.output_shape), tuple(LayerWeights(**layer.model_dump()) for layer in backbone.layers),
            backbone.until)} if backbone else {})

    def found_learning_rate(self) -> float | None:
        """The rate train.optimizer.learning_rate: auto stands for in this run; None before its range test."""
        return self.range_test.rate if self.range_test else None

    def time_to_target(self) -> Stop | None:
        """The epoch and training seconds at which every train.stop_at target was reached; None if none was."""
        return self.stopped if self.stopped and self.stopped.by == "stop_at" else None

    def best_validation_accuracy(self) -> float | None:
        values = [value for h in self.history if (value := h.get("val_accuracy")) is not None]
        return max(values) if values else None


class RunMetrics(_Record):
    """metrics.json: what a finished run measured."""

    format: int = FORMAT
    name: str
    run_dir: str
    status: Status = "finished"
    seed: int
    epochs_done: int = Field(ge=0, le=MAX_INT)
    device: str
    versions: dict[str, str]
    data: Provenance
    history: list[Epoch]
    test: TestMetrics
    seconds_per_epoch: list[float]
    wall_seconds_this_session: float
    images_per_second: float
    weights_sha256: str
    stopped: Stop | None = None  # as state.json records it: the time to target of a run stopped by train.stop_at


def _format_1(raw: dict) -> dict:
    """A state.json of mnist-keras 0.1 in today's layout."""
    from ..spec import dotted, parse_override

    raw = dict(raw)
    overrides = {}
    for text in raw.pop("overrides", None) or []:
        path, value = parse_override(text)
        overrides[dotted(path)] = value
    best, best_epoch = raw.pop("best", None), raw.pop("best_epoch", None)
    raw["data"] = raw.pop("provenance", None)
    return {**raw, "format": FORMAT, "overrides": overrides,
            "best": {"monitor": "val_accuracy", "value": best, "epoch": best_epoch} if best_epoch else None}


def _read(model: type[_Record], path: Path):
    raw = read_json(path)
    unreadable = "not a run record this version can read"
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(raw).__name__}; {unreadable}")
    found = raw.get("format", 1)
    if not isinstance(found, int) or isinstance(found, bool):
        raise UserError(f"{path}: format: {str(found)[:20]!r} is not a run format (an integer); {unreadable}")
    if found == 1:
        try:
            raw = _format_1(raw) if model is RunState else {**raw, "format": FORMAT}
        except (UserError, TypeError, ValueError, AttributeError):
            raise UserError(f"{path}: a run record of format 1 with malformed values; {unreadable}") from None
    elif found != FORMAT:
        newer = isinstance(found, int) and not isinstance(found, bool) and found > FORMAT
        raise UserError(f"{path}: run format {str(found)[:20]}; this mnist-keras reads run formats 1 and {FORMAT}"
                        + (" (the run was written by a newer version: upgrade to read it)" if newer else ""))
    missing = [key for key in ("status", "epochs_done") if key not in raw]
    if missing:
        raise UserError(f"{path}: no {' or '.join(missing)}; {unreadable}")
    try:
        return model.model_validate(raw, strict=True)  # "1" or true is no epoch count
    except ValidationError as err:
        raise UserError(f"{path}: {first_problem(err)}; {unreadable}") from None


def read_state(run_dir: Path) -> RunState:
    return _read(RunState, run_dir / "state.json")


def read_metrics(run_dir: Path) -> RunMetrics | None:
    """metrics.json, or None for a run that has not finished."""
    return _read(RunMetrics, run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else None


def write_state(run_dir: Path, state: RunState) -> None:
    write_json(run_dir / "state.json", state.model_dump(mode="json"))


def write_metrics(run_dir: Path, metrics: RunMetrics) -> None:
    write_json(run_dir / "metrics.json", metrics.model_dump(mode="json"))
