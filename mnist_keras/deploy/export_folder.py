"""The export folder OUT/NAME kept crash-safe: one export at a time (`.lock`), nothing replaced that export.json
does not record with its present sha256, nothing written through a symbolic link, and each artifact made in
a scratch folder named in export.json (`pending`) before it exists, then renamed into place.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..runs.exports import LABELS_FILE, RECORD_FILE, ExportRecord, FormatEntry, Pending, \
    artifact_name, read_export_record, read_labels, write_export_record, write_labels


def sha256_file(path: Path | str, flags: int = 0) -> str:
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | flags), "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(path: Path) -> str | None:
    """The sha256 of a regular file, or of a folder's tree (every name, and every file's sha256); None for a
    symbolic link or anything else anywhere in it, or what cannot be read. No link is followed."""
    try:
        return _tree_digest(path)
    except OSError:
        return None


def _tree_digest(path: Path) -> str | None:
    flags = os.O_NOFOLLOW | os.O_NONBLOCK  # lstat said a regular file: never a link or a pipe when opened
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        return sha256_file(path, flags)
    if not stat.S_ISDIR(mode):
        return None
    tree, folders = hashlib.sha256(), [""]
    while folders:  # depth first, in name order, without recursion (a hostile tree may be deep)
        relative = folders.pop()
        for name in sorted(os.listdir(path / relative), reverse=True):
            inside = os.path.join(relative, name)
            mode = os.lstat(path / inside).st_mode
            if stat.S_ISDIR(mode):
                folders.append(inside)
                tree.update(os.fsencode(inside) + b"/\0")
            elif stat.S_ISREG(mode):
                tree.update(os.fsencode(inside) + b"\0" + sha256_file(path / inside, flags).encode() + b"\0")
            else:
                return None
    return tree.hexdigest()


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_link(path: Path) -> bool:
    info = _lstat(path)
    return bool(info and stat.S_ISLNK(info.st_mode))


def _link_error(path: Path) -> UserError:
    return UserError(f"{path}: a symbolic link; an export writes only files it made, never through a link, so "
                     "remove it or choose another --out")


def open_folder(folder: Path) -> bool:
    """OUT/NAME, created if need be (True then), when it is a folder that holds nothing or an export (export.json);
    UserError otherwise, before anything is written."""
    info = _lstat(folder)
    if info and stat.S_ISLNK(info.st_mode):
        raise _link_error(folder)
    try:
        foreign = info and (not stat.S_ISDIR(info.st_mode) or not (
            _lstat(folder / RECORD_FILE) or all(p.name == ".lock" for p in folder.iterdir())))
    except OSError as err:
        raise UserError(f"{folder}: cannot read the export folder ({err.strerror or err})") from None
    if foreign:
        raise UserError(f"{folder}: exists and is not an mnist-keras export (no export.json); choose another --out "
                        "or remove it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the export folder ({err.strerror or err})") from None
    return info is None


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold OUT/NAME/.lock, an empty file, while one export writes into the folder (export.json is read,
    changed, rewritten), and remove it afterwards; never through a link, never truncating a file."""
    lock = folder / ".lock"
    for _ in range(100):  # another export may remove the file between our open and our flock: open it again
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _link_error(lock) from None
            raise UserError(f"{lock}: cannot open the export's lock file ({err.strerror or err})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size:
                raise UserError(f"{lock}: not the empty lock file an export makes; remove it or choose another --out")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{folder}: another export is writing into this folder; run this one when it is "
                                "done") from None
            now = _lstat(lock)
            if now and (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
                try:
                    yield
                finally:
                    lock.unlink(missing_ok=True)  # while it is held: a waiting export then opens a new one
                return
        finally:
            os.close(fd)
    raise UserError(f"{folder}: another export is writing into this folder; run this one when it is done")


def read_previous(folder: Path, identity: ExportRecord) -> ExportRecord | None:
    """OUT/NAME/export.json, or None when there is none, with what a crashed export left recovered (_recover);
    UserError when it is no export record of mnist-keras or belongs to another model than `identity`'s."""
    if _lstat(folder / RECORD_FILE) is None:
        return None
    if _is_link(folder / RECORD_FILE):
        raise _link_error(folder / RECORD_FILE)
    record = read_export_record(folder)
    if not record.same_model(identity):
        raise UserError(f"{folder}: holds the export of another model ({record.model}); exports of one "
                        "model share labels.txt and export.json, so choose another --out or remove this folder")
    return _recover(folder, record)


def _recover(folder: Path, record: ExportRecord) -> ExportRecord:
    """The record of an export that crashed (its `pending` part left in it): its scratch folder removed, and its
    entry adopted when its artifact was renamed into place."""
    pending = record.pending
    if pending is None:
        return record
    scratch = folder / pending.scratch
    if stat.S_ISDIR(getattr(_lstat(scratch), "st_mode", 0)):
        shutil.rmtree(scratch, ignore_errors=True)
    formats, entry = dict(record.formats), pending.entry
    if entry and entry.sha256 and _lstat(folder / entry.path) and digest(folder / entry.path) == entry.sha256:
        formats[entry.key] = entry
    return record.model_copy(update={"pending": None, "formats": formats})


def check_owned(folder: Path, record: ExportRecord | None, class_names: list[str], targets: tuple[Path, ...]) -> None:
    """UserError naming the first of `targets` (the paths this export replaces) that export.json does not record
    with its present content, or a labels.txt of other class names: what an export cannot prove it made, it
    never replaces."""
    claims: dict[str, set] = {}
    for entry in record.formats.values() if record else ():
        claims.setdefault(entry.path, set()).add(entry.sha256)
    for path in targets:
        if _is_link(path):
            raise _link_error(path)
        if _lstat(path) and digest(path) not in claims.get(path.name, set()) - {None}:
            raise UserError(f"{path}: not an artifact this export made (export.json records no {path.name} with "
                            "this content); an export replaces only its own, so move it away or choose another --out")
    labels = folder / LABELS_FILE
    if _is_link(labels):
        raise _link_error(labels)
    try:
        ours = read_labels(folder) in (None, class_names)
    except UserError:
        ours = False
    if not ours:
        raise UserError(f"{labels}: not the class names of this model, one per line; an export replaces only its "
                        "own files, so move it away or choose another --out")


class Staging:
    """One export's scratch folder inside OUT/NAME (`scratch`), named in export.json before it exists and removed
    when the export ends. Until `put_in_place`, a failure puts export.json back as it was (`previous`; none
    if there was none); after it, export.json records the artifact however the export ends."""

    def __init__(self, folder: Path, record: ExportRecord, previous: ExportRecord | None):
        self.folder, self.record, self.previous = folder, record, previous
        self.scratch = folder / f".partial-{secrets.token_hex(8)}"
        self.placed = False

    def __enter__(self) -> "Staging":
        write_export_record(self.folder, self.record.model_copy(update={"pending": Pending(scratch=self.scratch.name)}))
        try:
            self.scratch.mkdir(mode=0o700)
        except OSError as err:
            self._put_back()
            raise UserError(f"{self.folder}: cannot write here ({err.strerror or err})") from None
        return self

    def put_in_place(self, artifact: Path, entry: FormatEntry) -> None:
        """Rename `artifact` (inside the scratch folder) to entry.path, replacing the artifact and failed one of
        its format (proven ours by check_owned), and record it; labels.txt is written if there is none."""
        pending = Pending(scratch=self.scratch.name, entry=entry)
        write_export_record(self.folder, self.record.model_copy(update={"pending": pending}))
        self.placed = True
        name = artifact_name(entry.format, entry.quantize)
        for old in (self.folder / name, self.folder / f"{name}.failed"):  # deleted with the scratch folder
            if _lstat(old):
                old.rename(self.scratch / f"replaced-{old.name}")
        artifact.rename(self.folder / entry.path)
        if not _lstat(self.folder / LABELS_FILE):
            write_labels(self.folder, self.record.class_names)
        write_export_record(self.folder, self.record.model_copy(
            update={"formats": {**self.record.formats, entry.key: entry}}))

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is not None and not self.placed:
                self._put_back()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _put_back(self) -> None:
        """export.json as it was before this export (none, if there was none)."""
        if self.previous is None:
            (self.folder / RECORD_FILE).unlink(missing_ok=True)
        else:
            write_export_record(self.folder, self.previous)
