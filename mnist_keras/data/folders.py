"""Your own images: a folder of class folders, train/ test/ (validation/) folders of them, or a CSV of path,label.

Numpy and Pillow only. `load_files` lists each split's files, holds out test and validation images per class
(seeded) where the source has no folder for them, and refuses, before any training, what cannot work: files
that cannot be decoded (or skips them), empty classes, a class missing from a split. `to_arrays` decodes
small datasets into memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from ..spec import Data
from ..spec.layout import SPLITS, csv_entries, image_source, split_roots, subfolders
from ..spec.messages import did_you_mean
from .dataset_files import MAX_BYTES, read_file
from .sources import Arrays, _silent, dataset_path

SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")  # what images.FORMATS decodes
MAX_LISTED = 20  # problems listed in one message before "and N more"


@dataclass
class ImageList:
    """One split as files on disk."""

    paths: list[str]  # absolute paths, sorted
    labels: np.ndarray  # int64 indices into Files.class_names


@dataclass
class Files:
    """A dataset of image files: its splits, its classes and where they came from."""

    train: ImageList
    validation: ImageList | None  # None when data.validation is 0 and there is no validation/ folder
    test: ImageList
    class_names: list[str]  # sorted class folder names or CSV labels, frozen for the run
    provenance: dict  # dataset, source, path, class_names, counts per split and class, held_out, skipped, shared


def load_files(data: Data, data_dir: str | None = None, notify: Callable[[str], None] = _silent,
               seed: int = 42, decode: bool = False) -> Files:
    """The image files `data.dataset` names, split, checked and labelled; a UserError for what cannot work.
    `seed` (the spec's) draws the held-out test and validation images; `decode` checks each file by decoding it
    whole (`data check`), not only by its header and Pillow's verify."""
    path = dataset_path(data, data_dir)
    source = image_source(path)
    if source is None:
        raise UserError(f"{path}: not an image dataset (a folder of class folders or a .csv of path,label lines)")
    if data.image_shape[2:] not in ([], [1], [3]):
        raise UserError(f"data.image_shape: {data.image_shape} has {data.image_shape[2]} channels; image files "
                        "are decoded to 1 (gray) or 3 (RGB)")
    if source == "csv":
        splits = {"train": _csv_classes(path)}
    else:
        splits = {split: _class_folders(root) for split, root in split_roots(path, source).items()}
    class_names = sorted(set().union(*splits.values()))
    _check_classes(path, splits, class_names, data)
    skipped = _drop_bad_files(splits, data.on_bad_file, notify, decode)
    held_out = {}
    if "test" not in splits:
        total = sum(map(len, splits["train"].values()))
        splits["test"], held_out["test"] = _hold_out(splits["train"], round(total * data.test_split), [seed, 0])
    if "validation" not in splits and data.validation:
        total = sum(map(len, splits["train"].values()))
        count = data.validation if isinstance(data.validation, int) else round(total * data.validation)
        if count >= total:
            raise UserError(f"data.validation: holding out {count:,} of {total:,} training images leaves none to "
                            "train on")
        splits["validation"], held_out["validation"] = _hold_out(splits["train"], count, [seed, 1])
    _check_training_classes(path, splits, class_names)
    lists = {split: _image_list(classes, class_names) for split, classes in splits.items()}
    root = path.parent if source == "csv" else path
    provenance = {
        "dataset": data.dataset, "source": source, "path": str(path.resolve()), "class_names": class_names,
        "counts": {split: {name: len(splits[split][name]) for name in class_names} for split in SPLITS
                   if split in splits},
        "held_out": {split: [os.path.relpath(file, root) for file in files] for split, files in held_out.items()},
        "skipped": skipped,
    }
    files = Files(lists["train"], lists.get("validation"), lists["test"], class_names, provenance)
    provenance["shared"] = shared_images(files)
    for message in provenance["shared"]:
        notify(f"warning: {message}")
    return files


def _check_training_classes(path: Path, splits: dict, class_names: list[str]) -> None:
    """Refuse classes the test and validation draws left without a training image, with their counts."""
    def counts(name):
        return ", ".join(f"{len(splits[split][name])} {split}" for split in SPLITS if split in splits)

    _raise([f"{path}: class '{name}' has no training image left ({counts(name)})"
            for name in class_names if not splits["train"][name]],
           "every class needs a training image: add images to these classes, or lower data.test_split and "
           "data.validation")


def _hold_out(classes: dict[str, list[str]], total: int, seed: list[int]) -> tuple[dict, list[str]]:
    """Move `total` files out of `classes`, drawn per class in proportion to its size: (moved by class, moved)."""
    names = sorted(classes)
    sizes = np.array([len(classes[name]) for name in names])
    share = sizes * total / sizes.sum()
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share, kind="stable")[:total - counts.sum()]] += 1  # largest remainders
    rng, moved = np.random.default_rng(seed), {}
    for name, count in zip(names, counts):
        chosen = set(rng.permutation(len(classes[name]))[:count])
        moved[name] = [f for i, f in enumerate(classes[name]) if i in chosen]
        classes[name] = [f for i, f in enumerate(classes[name]) if i not in chosen]
    return moved, sorted(f for files in moved.values() for f in files)


def _image_list(classes: dict[str, list[str]], class_names: list[str]) -> ImageList:
    pairs = sorted((file, class_names.index(name)) for name, files in classes.items() for file in files)
    return ImageList([file for file, _ in pairs], np.array([label for _, label in pairs], np.int64))


def _class_folders(root: Path) -> dict[str, list[str]]:
    """{class name: sorted absolute paths of its images} of a folder of class folders."""
    classes = {}
    for folder in subfolders(root):
        classes[folder.name] = sorted(
            _resolved(Path(dirpath, name))
            for dirpath, dirnames, names in os.walk(folder.path)
            for name in names
            if name.lower().endswith(SUFFIXES) and not name.startswith(".")
        )
        if not classes[folder.name]:
            raise UserError(f"{folder.path}: class '{folder.name}' has no images ({', '.join(SUFFIXES)} files)")
    return classes


def _resolved(path: Path) -> str:
    """The absolute path with its links resolved; as it is for a link loop (which the file check then names)."""
    try:
        return str(path.resolve())
    except (RuntimeError, OSError):  # "Symlink loop" (Python < 3.13 raises RuntimeError)
        return os.path.abspath(path)


def _csv_classes(path: Path) -> dict[str, list[str]]:
    """{label: sorted absolute paths} of a CSV with a header line naming `path` and `label` columns."""
    raw, _ = read_file(path)
    classes, problems = {}, []
    try:
        for line, file, label in csv_entries(io.StringIO(raw.decode("utf-8-sig"), newline=""), path):
            if not file or not label:
                problems.append(f"{path}:{line}: a row needs both a path and a label")
            elif not (path.parent / file).is_file():
                problems.append(f"{path}:{line}: {file}: no such image file (paths are relative to the CSV's folder)")
            else:
                classes.setdefault(label, []).append(str((path.parent / file).resolve()))
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a CSV file of UTF-8 text ({err})") from None
    _raise(problems)
    if not classes:
        raise UserError(f"{path}: no images listed")
    return {label: sorted(files) for label, files in classes.items()}


def _raise(problems: list[str], summary: str = "") -> None:
    if problems:
        more = [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise UserError(*problems[:MAX_LISTED], *more, *([summary] if summary else []))


def _check_classes(path: Path, splits: dict, class_names: list[str], data: Data) -> None:
    _raise([f"{path / split}: no folder for class '{name}', which the other splits have"
            for split, classes in splits.items() for name in class_names if name not in classes])
    if len(class_names) != data.num_classes:
        raise UserError(f"{data.place('num_classes')}: {path} has {len(class_names)} classes "
                        f"({', '.join(class_names)}), but data.num_classes is {data.num_classes}; set "
                        f"data.num_classes: {len(class_names)}, or leave it out to take the data's")


def bad_files(paths: list[str], decode: bool = False) -> dict[str, list[str]]:
    """{file: its messages} of the files that are no image Pillow opens within images.MAX_PIXELS (by the header)
    and verifies, or, with `decode`, decodes whole as training does."""
    from .images import check_image, check_image_files

    problems = {}
    for file in paths:
        found = check_image_files([file])
        if not found:
            try:
                check_image(file, decode)
            except UserError as err:
                found = err.messages
        if found:
            problems[file] = found
    return problems


def _drop_bad_files(splits: dict, on_bad_file: str, notify: Callable[[str], None], decode: bool) -> list[str]:
    """Refuse (listing them) or drop the files that cannot be decoded; the dropped files."""
    every = [file for classes in splits.values() for files in classes.values() for file in files]
    bad = bad_files(every, decode)
    if on_bad_file == "refuse":
        _raise([m for messages in bad.values() for m in messages],
               f"{len(bad)} of {len(every)} image files cannot be decoded; fix or remove them, "
               "or set data.on_bad_file: skip")
    for split, classes in splits.items():
        for name, files in classes.items():
            classes[name] = [file for file in files if file not in bad]
            if not classes[name]:
                raise UserError(f"class '{name}' has no {split} images that can be decoded")
    if bad:
        notify(f"note: skipped {len(bad)} of {len(every)} image files that cannot be decoded (data.on_bad_file: skip)")
    return sorted(bad)


def shared_images(files: Files) -> list[str]:
    """One message per set of byte-identical files (sha256) found in more than one split."""
    where: dict[str, list[tuple[str, str]]] = {}
    for split, images in _splits(files):
        for file in images.paths:
            where.setdefault(hashlib.sha256(read_file(Path(file))[0]).hexdigest(), []).append((split, file))
    return [f"the same image is in {' and '.join(dict.fromkeys(s for s, _ in found))}: "
            + ", ".join(file for _, file in found)
            for found in where.values() if len({split for split, _ in found}) > 1]


def _splits(files: Files) -> list[tuple[str, ImageList]]:
    return [(split, images) for split, images in zip(SPLITS, (files.train, files.validation, files.test)) if images]


def to_arrays(files: Files, data: Data, notify: Callable[[str], None] = _silent) -> Arrays:
    """`files` decoded into memory as uint8 images of data.image_shape, the validation images last in x_train
    (where the tf.data pipeline holds out data.validation images)."""
    from .images import image_array

    n_train = len(files.train.paths) + len(files.validation.paths if files.validation else [])
    n_val = len(files.validation.paths) if files.validation else 0
    wanted = data.validation if isinstance(data.validation, int) else round(n_train * data.validation)
    if n_val != wanted:
        raise UserError(f"data.validation: the validation/ folder holds {n_val:,} images, but data.validation "
                        f"holds out {wanted:,}; set data.validation: {n_val}")
    total = (n_train + len(files.test.paths)) * int(np.prod(data.image_shape))
    if total > MAX_BYTES:
        raise UserError(f"{files.provenance['path']}: {total:,} bytes of images in memory, over {MAX_BYTES:,}; "
                        "use smaller data.image_shape")
    arrays, problems = {}, {}
    for key, lists in (("train", [files.train, files.validation]), ("test", [files.test])):
        paths = [p for images in lists if images for p in images.paths]
        labels = np.concatenate([images.labels for images in lists if images])
        decoded, failed = [], {}
        for file in paths:
            try:
                decoded.append(image_array(file, data.image_shape, data.preprocess.fit))
            except UserError as err:
                failed[file] = err.messages
        if failed and data.on_bad_file == "skip":
            notify(f"note: skipped {len(failed)} {key} image files that cannot be decoded")
        problems.update(failed)
        keep = np.array([file not in failed for file in paths], bool)
        arrays[f"x_{key}"] = np.array(decoded, np.uint8).reshape(-1, *data.image_shape)
        arrays[f"y_{key}"] = labels[keep]
    if problems and data.on_bad_file == "refuse":
        _raise([m for messages in problems.values() for m in messages],
               "set data.on_bad_file: skip to train without them")
    return Arrays(**arrays, provenance=files.provenance, class_names=files.class_names)


def class_weights(data: Data, class_names: list[str], labels: np.ndarray) -> dict[int, float] | None:
    """Keras' class_weight from data.class_weight: balanced (n / (classes * count)), or the named weights."""
    if data.class_weight is None:
        return None
    if data.class_weight == "balanced":
        counts = np.bincount(labels, minlength=len(class_names))
        return {i: len(labels) / (len(class_names) * n) if n else 1.0 for i, n in enumerate(counts)}
    unknown = [name for name in data.class_weight if name not in class_names]
    _raise([f"data.class_weight: no class '{name}'{did_you_mean(name, class_names)}; the classes are "
            f"{', '.join(class_names)}" for name in unknown])
    return {i: data.class_weight.get(name, 1.0) for i, name in enumerate(class_names)}
