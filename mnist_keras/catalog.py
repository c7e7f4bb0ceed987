"""Run directories at a glance: one summary per run, and the text tables of `runs` and `sweep`."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import yaml

from .errors import UserError
from .runs import read_json

COLUMNS = ("name", "started", "epochs", "best val acc", "test acc", "state", "directory")


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory (spec.yaml and state.json) under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such runs folder")
    runs = {p.parent for p in root.rglob("state.json") if (p.parent / "spec.yaml").is_file()}
    return sorted(runs, key=lambda run: (started(run), str(run)))


def started(run: Path) -> str:
    """When the run started, from its directory name (YYYYmmdd-HHMMSS[-N]), else the folder's time."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(run.name[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.stat().st_mtime))


def process_gone(pid: int | None, host: str | None) -> bool:
    """True when the process that wrote a 'running' state.json no longer exists on this machine."""
    if not pid or host != socket.gethostname():
        return False  # an older run without a pid, or another machine's: cannot tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_status(state: dict) -> str:
    status = state.get("status", "unknown")
    if status == "running" and process_gone(state.get("pid"), state.get("host")):
        return "interrupted (stale)"
    return status


def best_validation_accuracy(history: list[dict]) -> float | None:
    values = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    return max(values) if values else None


def summarize(run: Path) -> dict:
    """name, started, epochs (done/planned), best validation and test accuracy, state, directory."""
    summary = {"name": run.parent.name, "started": started(run), "directory": str(run),
               "epochs": "?", "best val acc": None, "test acc": None}
    try:
        state = read_json(run / "state.json")
        planned = yaml.safe_load((run / "spec.yaml").read_text())["train"]["epochs"]
        metrics = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
    except (UserError, OSError, yaml.YAMLError, KeyError, TypeError):
        return {**summary, "state": "unreadable"}
    history = state.get("history", [])
    return {**summary, "epochs": f"{state.get('epochs_done', len(history))}/{planned}",
            "best val acc": best_validation_accuracy(history), "test acc": metrics.get("test", {}).get("accuracy"),
            "state": run_status(state)}


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
    numeric = ["acc" in c or c in ("#", "epochs") for c in columns]
    return "\n".join(
        "  ".join(text.rjust(w) if right else text.ljust(w) for text, w, right in zip(line, widths, numeric)).rstrip()
        for line in cells
    )
