"""What an image dataset path holds, from folder names and CSV labels alone (no image is opened): the layout
rules that loading (data/folders.py) and the spec's inferred `data.num_classes` share. Standard library only, so
that spec validation can count classes without numpy or TensorFlow.
"""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import UserError

SPLITS = ("train", "validation", "test")
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def subfolders(path: Path) -> list[os.DirEntry]:
    """The folders in `path` that are not hidden, sorted by name."""
    with os.scandir(path) as entries:
        return sorted((e for e in entries if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)


def idx_file(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `folder`, raw or gzipped, if there is one."""
    return next((folder / name for name in (stem, stem + ".gz") if os.path.lexists(folder / name)), None)


def image_source(path: Path) -> str | None:
    """"csv", "folders" or "split-folders" when `path` holds image files; None for IDX folders, .npz files and
    anything else."""
    if path.suffix.lower() == ".csv":
        return "csv"
    if not path.is_dir() or any(idx_file(path, stem) for stem in IDX_STEMS):
        return None
    folders = {entry.name for entry in subfolders(path)}
    if {"train", "test"} <= folders:
        return "split-folders"
    if not folders:
        raise UserError(f"{path}: no class subfolders (and no IDX files); an image dataset folder holds one "
                        "subfolder of images per class, or train/ and test/ (and validation/) folders of them")
    return "folders"


def split_roots(path: Path, source: str) -> dict[str, Path]:
    """{split: its folder of class folders} of a folder dataset."""
    return {"train": path} if source == "folders" else {s: path / s for s in SPLITS if (path / s).is_dir()}


def csv_entries(lines: Iterable[str], path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, image path, label) of each non-blank row of a CSV list whose header names its `path` and
    `label` columns (either may be "" in a bad row)."""
    rows = csv.reader(lines)
    header = [name.strip().lower() for name in next(rows, [])]
    missing = [name for name in ("path", "label") if name not in header]
    if missing:
        raise UserError(f"{path}:1: no {' or '.join(missing)} column (the header is {','.join(header) or 'empty'}); "
                        "a CSV dataset starts with a header line naming its path and label columns")
    at_path, at_label = header.index("path"), header.index("label")
    for line, row in enumerate(rows, start=2):
        if any(cell.strip() for cell in row):
            yield (line, *(row[i].strip() if i < len(row) else "" for i in (at_path, at_label)))


def class_names(path: Path) -> list[str] | None:
    """The sorted class names of the image dataset at `path` (class folders, split folders or a CSV list), as
    loading will find them; None when `path` is no image dataset (or is missing: loading says so)."""
    source = image_source(path) if path.exists() else None
    if source is None:
        return None
    if source != "csv":
        return sorted({entry.name for root in split_roots(path, source).values() for entry in subfolders(root)})
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None  # loading says what it is
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            return sorted({label for _, name, label in csv_entries(file, path) if name and label})
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a CSV file of UTF-8 text ({err})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
