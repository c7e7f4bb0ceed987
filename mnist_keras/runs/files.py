"""Run directories on disk: one per run, never overwritten, every file in them written atomically.

Layout of `runs/<name>/<YYYYmmdd-HHMMSS>/`:
  spec.yaml        the resolved spec (every default filled in)
  state.json       the run record (runs/record.py): status, epochs, history, callback state, checkpoints
  metrics.json     history per epoch, test metrics, provenance, versions, device, speed
  checkpoints/     epoch-N.keras (the last finished epoch, for --resume) and best.keras
  model.keras      the final model
  logs/            TensorBoard event files;  history.csv  the CSV log
  .lock            held (flock) by the process training the run, for as long as it trains

A command working on a run reads and writes only inside it: a run holding a symbolic link is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import UserError

MIN_FREE_BYTES = 50 * 2**20
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give: atomic files follow the umask like the rest of the run


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.fchmod(fd, FILE_MODE)
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


MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64  # the tool's own records nest a few levels; deeper is no record it wrote


def read_json(path: Path, limit: int = MAX_JSON_BYTES, depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file the tool reads (a run's record, an export's): UserError naming the file if it is missing,
    not a regular file, over `limit` bytes, nested deeper than `depth` or not JSON."""
    path = Path(path)
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise UserError(f"{path}: {info.st_size:,} bytes is too large for this file (limit {limit:,})")
        data = json.loads(path.read_bytes())
        if _nested_deeper(data, depth):
            raise RecursionError
    except RecursionError:  # json gives up past Python's recursion limit; below it, the walk counts
        raise UserError(f"{path}: JSON nested deeper than {depth} levels; not a file this tool wrote") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as JSON ({getattr(err, 'strerror', None) or err})") from None
    return data


def first_problem(err) -> str:
    """A pydantic ValidationError's first problem as `field.path: message`, for a record file's message."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p != "[key]") or "(top level)"
    return f"{where[:100]}: {first['msg'].removeprefix('Value error, ')[:200]}"


def _nested_deeper(data: Any, depth: int) -> bool:
    """True when lists and objects in `data` nest more than `depth` levels (counted without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            if level > depth:
                return True
            stack.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


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
        run_dir = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()  # atomic: two runs started in the same second get different directories
            (run_dir / "checkpoints").mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"{run_dir}: cannot create the run directory ({err.strerror})") from None
        return run_dir
    raise UserError(f"{parent}: too many runs started in the same second")


def open_run_dir(path: str | Path) -> Path:
    """An existing run directory (one with spec.yaml and state.json); UserError otherwise."""
    run = Path(path)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    missing = [f for f in ("spec.yaml", "state.json") if not (run / f).is_file()]
    if missing:
        raise UserError(f"{run}: not a run directory (no {' or '.join(missing)})")
    return run


LOCK = ".lock"


@contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run`'s lock while training it; UserError naming the holder if another process has it. The OS
    drops the lock when the process ends, however it ends, so the run of a crashed process is free again."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
    except OSError as err:
        raise UserError(f"{run_dir / LOCK}: cannot open the run's lock file ({err.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{run_dir / LOCK}: not a regular file")
        for _ in range(20):  # `runs` may be holding it shared for an instant (training_holder)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            raise _busy(run_dir, _holder(fd))
        with suppress(OSError):  # who holds it, for the message of a second process; a full disk may refuse
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)


def training_holder(run_dir: Path) -> str | None:
    """Who holds `run`'s lock ("process 123 on this machine"), or None when no process trains the run."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)


def check_not_training(run_dir: Path) -> None:
    """UserError naming the process that holds `run`'s lock, if one does."""
    holder = training_holder(run_dir)
    if holder:
        raise _busy(run_dir, holder)


def _busy(run_dir: Path, holder: str) -> UserError:
    return UserError(f"{run_dir}: {holder} is still training this run; stop it first (Ctrl-C keeps its last epoch), "
                     "or wait for it to finish")


def _holder(fd: int) -> str:
    """The lock file's "PID HOST" as words."""
    pid, _, host = os.pread(fd, 300, 0).decode(errors="replace").strip().partition(" ")
    where = "this machine" if host == socket.gethostname() else \
        host[:100] if host.isprintable() and host else "another machine"
    return f"process {pid[:20]} on {where}" if pid.isascii() and pid.isdigit() else "another process"


def check_no_links(run_dir: Path) -> None:
    """Refuse a run holding a symbolic link anywhere inside: writing through it would reach outside the run."""
    for folder, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            if os.path.islink(os.path.join(folder, name)):
                raise UserError(f"{os.path.join(folder, name)}: a symbolic link inside the run directory; "
                                "a run holds its own files only, so this command will not write through it")


def run_file(run_dir: Path, relative: str) -> Path:
    """`relative` (as a run record names it) inside `run`; UserError if it would lead outside."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise UserError(f"{run_dir / 'state.json'}: names {relative!r}, which is not a file inside the run")
    return run_dir / relative


def remove_partial_files(run_dir: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (never the files they were replacing)."""
    check_no_links(run_dir)
    for partial in [*run_dir.glob(".tmp-*"), *run_dir.glob("checkpoints/.tmp-*")]:
        partial.unlink(missing_ok=True)
