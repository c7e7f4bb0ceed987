"""Run directories at a glance: one summary per run, and the text tables of `runs` and `sweep`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..spec.yamlfile import read_yaml_file
from .record import Stop, read_metrics, read_state

COLUMNS = ("name", "started", "epochs", "best val acc", "test acc", "state", "directory")
TO_TARGET = "to target"  # a column of its own once a run has stopped at its train.stop_at targets


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory (spec.yaml and state.json) under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such runs folder")
    runs = {p.parent for p in root.rglob("state.json") if (p.parent / "spec.yaml").is_file()}
    return sorted(runs, key=lambda run: (started(run), str(run)))


def started(run_dir: Path) -> str:
    """When the run started, from its directory name (YYYYmmdd-HHMMSS[-N]), else the folder's time."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run_dir.lstat().st_mtime))


def planned_epochs(run_dir: Path) -> int:
    """train.epochs of the run's spec.yaml as written (without validating the whole spec)."""
    data, _, where = read_yaml_file(run_dir / "spec.yaml")
    try:
        epochs = data["train"]["epochs"]
    except (KeyError, TypeError):
        epochs = None
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        raise UserError(f"{where}: train.epochs cannot be read")
    return epochs


@dataclass
class RunRow:
    """One run at a glance; `reason` says why a run whose files cannot be read is `unreadable`."""

    name: str
    started: str
    directory: str
    state: str
    epochs: str = "?"
    best_validation_accuracy: float | None = None
    test_accuracy: float | None = None
    to_target: Stop | None = None  # the epoch and training seconds at which every train.stop_at target was reached
    reason: str | None = None

    def columns(self) -> dict:
        """The row under the table's column names (COLUMNS, and TO_TARGET)."""
        reached = self.to_target
        return {"name": self.name, "started": self.started, "epochs": self.epochs,
                "best val acc": self.best_validation_accuracy, "test acc": self.test_accuracy, "state": self.state,
                "directory": self.directory,
                TO_TARGET: reached and f"{reached.seconds:.1f} s (epoch {reached.epoch})"}


def columns_of(rows: list[RunRow]) -> tuple[str, ...]:
    """The columns of a table of these runs: COLUMNS, with TO_TARGET after the accuracies once a run has one."""
    if not any(row.to_target for row in rows):
        return COLUMNS
    at = COLUMNS.index("test acc") + 1
    return (*COLUMNS[:at], TO_TARGET, *COLUMNS[at:])


def summarize(run_dir: Path) -> RunRow:
    """name, started, epochs (done/planned), best validation and test accuracy, time to target, state, directory;
    a run whose files cannot be read is `unreadable`, with the first reason."""
    found = {"name": run_dir.parent.name, "started": started(run_dir), "directory": str(run_dir)}
    try:
        state, metrics, planned = read_state(run_dir), read_metrics(run_dir), planned_epochs(run_dir)
    except UserError as err:
        return RunRow(**found, state="unreadable", reason=err.messages[0])
    return RunRow(**found, state=state.shown_status(run_dir), epochs=f"{state.epochs_done}/{planned}",
                  best_validation_accuracy=state.best_validation_accuracy(),
                  test_accuracy=metrics.test.accuracy if metrics else None, to_target=state.time_to_target())


def format_table(rows: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    """Aligned text columns; fractions in 0..1 under an 'acc' column are shown as percentages."""

    def cell(column: str, value) -> str:
        if value is None:
            return "-"
        if "acc" in column and isinstance(value, float):
            return f"{value:.2%}"
        return str(value)

    cells = [list(columns)] + [[cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    numeric = ["acc" in c or c in ("#", "epochs", TO_TARGET) for c in columns]
    return "\n".join(
        "  ".join(text.rjust(w) if right else text.ljust(w) for text, w, right in zip(line, widths, numeric)).rstrip()
        for line in cells
    )
