"""Run directories: one per run, never overwritten, every file in them written atomically.

Layout of `runs/<name>/<YYYYmmdd-HHMMSS>/`:
  spec.yaml        the resolved spec (every default filled in)
  state.json       status (running, finished, interrupted, failed), epochs done, callback state
  metrics.json     history per epoch, test metrics, provenance, versions, device, speed
  checkpoints/     last.keras (every epoch, for --resume) and best.keras (by the monitored metric)
  model.keras      the final model
  logs/            TensorBoard event files;  history.csv  the CSV log
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

MIN_FREE_BYTES = 50 * 2**20


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as JSON ({err})") from None


def create_run_dir(root: str | Path, name: str) -> Path:
    """A new, empty `root/name/<timestamp>[-N]` directory; UserError if it cannot be written."""
    parent = Path(root) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{parent}: cannot create the runs folder ({err.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{parent}: the runs folder is not writable")
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"{parent}: only {free / 2**20:.0f} MiB free on this disk; a run needs at least "
                        f"{MIN_FREE_BYTES / 2**20:.0f} MiB")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        run = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run.mkdir()  # atomic: two runs started in the same second get different directories
            (run / "checkpoints").mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"{run}: cannot create the run directory ({err.strerror})") from None
        return run
    raise UserError(f"{parent}: too many runs started in the same second")


def remove_partial_files(run: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (never the files they were replacing)."""
    for partial in [*run.glob(".tmp-*"), *run.glob("checkpoints/.tmp-*")]:
        partial.unlink(missing_ok=True)


def open_run_dir(path: str | Path) -> Path:
    """An existing run directory (one with spec.yaml and state.json); UserError otherwise."""
    run = Path(path)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    missing = [f for f in ("spec.yaml", "state.json") if not (run / f).is_file()]
    if missing:
        raise UserError(f"{run}: not a run directory (no {' or '.join(missing)})")
    return run
