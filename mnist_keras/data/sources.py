"""Where the images come from: IDX folders, .npz files, PaddlePaddle's mnist.json.gz, the Keras cache or download,
the bundled sample; and the check of what a source read against the spec.

`mnist` and `fashion_mnist` are looked for, in order, in the named folder (--data-dir or
data.data_dir), the Keras cache, then a keras.datasets download; `source: auto` falls back to the
bundled MNIST sample with a one-line notice. Everything here is numpy only: TensorFlow is imported
only to download. The files are read by dataset_files.py, within its limits.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError, first_line
from ..spec import Data
from ..spec.data_section import missing_dataset as missing_message
from ..spec.messages import did_you_mean
from .dataset_files import KEYS, SPLITS, idx_path, read_idx_folder, read_json, read_npz, regular_file

DATASETS = ("mnist", "fashion_mnist")
BUNDLED = Path(__file__).with_name("mnist_sample.npz")
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


@dataclass
class Arrays:
    """A dataset in memory: uint8 images (N, H, W[, C]), integer labels, and where they came from. A source with
    its own validation split (mnist.json.gz) gives x_val and y_val; the others hold out data.validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    provenance: dict  # dataset, source, path, counts, sha256 of each file read
    class_names: list[str] = field(default_factory=list)  # the name of each label
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def _silent(message: str) -> None:
    """Drop a note (the API prints nothing unless asked)."""


def array_dataset(data: Data, data_dir: str | None = None, notify: Callable[[str], None] = _silent) -> Arrays:
    """A dataset of arrays (MNIST, Fashion-MNIST, an IDX folder or an .npz file) from the first source that
    serves it; `data_dir` wins over data.data_dir. `notify` gets a note when the data came from a download
    or the bundled sample instead."""
    folder = data_dir or data.data_dir
    if data.dataset not in DATASETS:
        if data.source in ("keras", "bundled"):
            raise UserError(f"{data.dataset}: data.source '{data.source}' serves only {' and '.join(DATASETS)}"
                            f"{did_you_mean(data.dataset, DATASETS)}; use source: auto or files for a path")
        return _from_path(dataset_path(data, data_dir), data, notify)
    if data.source == "bundled":
        return _bundled(data)
    if data.source == "files" or (data.source == "auto" and folder):
        if not folder:
            raise UserError(f"{data.dataset}: data.source is 'files' but no folder is named; "
                            "set data.data_dir or pass --data-dir DIR")
        return _from_folder(Path(folder).expanduser(), data)
    cache = keras_cache()
    found = _from_keras_cache(data, "keras-cache")
    if found:
        return found
    try:
        return _download(data, notify)
    except UserError:
        raise
    except Exception as err:  # offline, a proxy, a failed checksum: any reason to use another source
        reason = first_line(err)
    if data.source == "keras" or data.dataset != "mnist":
        raise UserError(f"{data.dataset}: not in the Keras cache ({cache}) and the download failed ({reason}); "
                        "pass --data-dir DIR with the four IDX files, or download them into the cache")
    arrays = _bundled(data)
    counts = arrays.provenance["counts"]
    notify(f"note: MNIST is not on this machine and could not be downloaded; using the bundled sample "
           f"({counts['train']:,} training, {counts['test']:,} test images); for the full set pass --data-dir DIR "
           f"(a folder with the four MNIST IDX files, gzipped or raw, or mnist.npz) or put mnist.npz in {cache}")
    return arrays


def dataset_path(data: Data, data_dir: str | None = None) -> Path:
    """data.dataset as a path: a relative one inside `data_dir` (else data.data_dir) when one is named."""
    folder = data_dir or data.data_dir
    path = Path(data.dataset).expanduser()
    if folder and not path.is_absolute():
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
        path = folder / path
    return path


def missing_dataset(data: Data, path: Path) -> UserError:
    """The error for a data.dataset that names nothing: where the spec gives it, and every form it takes."""
    return UserError(f"{data.place('dataset')}: {missing_message(path)}")


def keras_cache() -> Path:
    """The folder keras.datasets downloads into: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "datasets"


# ------------------------------------------------------------------------------------ sources


def _from_path(path: Path, data: Data, notify: Callable[[str], None]) -> Arrays:
    if path.is_dir():
        return _from_folder(path, data, npz=False)
    if not path.exists():
        raise missing_dataset(data, path)
    regular_file(path)
    if path.name.endswith((".json", ".json.gz")):
        arrays, where, sha256, (low, high) = read_json(path)
        notify(f"note: {path}: pixels in [{low}, {high}] mapped to 0..255; its own splits are used: "
               f"{len(arrays['x_train']):,} training, {len(arrays['x_val']):,} validation, "
               f"{len(arrays['x_test']):,} test images (data.validation is ignored)")
        return _finish(data, "json", path, (arrays, where, sha256))
    if path.suffix != ".npz":
        raise UserError(f"{path}: expected a folder of IDX files, an .npz file or a .json.gz file")
    return _finish(data, "npz", path, read_npz(path))


def _from_folder(folder: Path, data: Data, npz: bool = True) -> Arrays:
    """The four IDX files in `folder`, or (for a named dataset) `<dataset>.npz` there."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    npz_path = folder / f"{data.dataset}.npz"
    if npz and os.path.lexists(npz_path) and not any(idx_path(folder, key) for key in KEYS):
        return _finish(data, "files", npz_path, read_npz(npz_path))
    return _finish(data, "files", folder, read_idx_folder(folder, extra=f", or {npz_path.name}" if npz else ""))


def _from_keras_cache(data: Data, source: str) -> Arrays | None:
    cache = keras_cache()
    if data.dataset == "mnist" and os.path.lexists(cache / "mnist.npz"):
        return _finish(data, source, cache / "mnist.npz", read_npz(cache / "mnist.npz"))
    if data.dataset == "fashion_mnist" and all(idx_path(cache / "fashion-mnist", k) for k in KEYS):
        return _finish(data, source, cache / "fashion-mnist", read_idx_folder(cache / "fashion-mnist"))
    return None


def _download(data: Data, notify: Callable[[str], None]) -> Arrays:
    """keras.datasets.<name>.load_data(), then the files it cached."""
    from ..backend import keras

    with contextlib.redirect_stdout(io.StringIO()):  # Keras' progress bar; one line below says it all
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, data.dataset).load_data()
    notify(f"note: downloaded {data.dataset} with keras.datasets into {keras_cache()}")
    arrays = dict(zip(KEYS, (x_train, y_train, x_test, y_test)))
    where = {key: f"keras.datasets.{data.dataset}: {key}" for key in KEYS}
    return _from_keras_cache(data, "keras-download") or _finish(data, "keras-download", None, (arrays, where, {}))


def _bundled(data: Data) -> Arrays:
    if data.dataset != "mnist":
        raise UserError(f"{data.dataset}: the bundled sample is MNIST only; use source: auto, keras or files")
    return _finish(data, "bundled", BUNDLED, read_npz(BUNDLED))


def _finish(data: Data, source: str, path: Path | None, read: tuple[dict, dict, dict]) -> Arrays:
    """Check what a reader returned against the spec and record where it came from."""
    arrays, where, sha256 = read
    splits = {split: keys for split, keys in SPLITS.items() if keys[0] in arrays}
    arrays = {key: check_array(key, arrays[key], where[key], data) for keys in splits.values() for key in keys}
    for split, (x_key, y_key) in splits.items():
        x, y = arrays[x_key], arrays[y_key]
        if not len(x):
            raise UserError(f"{where[x_key]}: no {split} images; a dataset needs images in each split "
                            f"({', '.join(splits)})")
        if len(x) != len(y):
            raise UserError(f"{where[x_key]}: {len(x):,} images, but {where[y_key]} has {len(y):,} labels")
    provenance = {
        "dataset": data.dataset,
        "source": source,
        "path": str(path.resolve()) if path else None,
        "counts": {split: len(arrays[x_key]) for split, (x_key, _) in splits.items()},
        "sha256": sha256,
    }
    names = FASHION_NAMES if data.dataset == "fashion_mnist" and data.num_classes == 10 else None
    return Arrays(**arrays, provenance=provenance, class_names=names or data.class_labels())


def check_array(key: str, array: np.ndarray, where: str, data: Data) -> np.ndarray:
    """`array` as an image or label array matching the spec (labels (N, 1) become (N,)); else UserError."""
    if key.startswith("y"):
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1 or array.dtype.kind not in "iu":  # not bool, timedelta64, float...
            raise UserError(f"{where}: labels are {array.dtype} with shape {array.shape}; "
                            "expected integers, shape (N,)")
        if array.size and (array.min() < 0 or array.max() >= data.num_classes):
            raise UserError(f"{where}: labels range over {array.min()}..{array.max()}, outside "
                            f"0..{data.num_classes - 1} (data.num_classes is {data.num_classes}); "
                            "set data.num_classes if that is right")
        return array
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise UserError(f"{where}: images are {array.dtype} with shape {array.shape}; "
                        "expected uint8 (0-255) with shape (N, height, width) or (N, height, width, channels)")
    if 0 in array.shape[1:]:
        raise UserError(f"{where}: images of shape {array.shape[1:]} hold no pixels")
    got, want = channels(array.shape[1:]), channels(data.image_shape)
    if got != want and not {got, want} <= {1, 3}:
        raise UserError(f"{where}: images have {got} channel{'s' * (got != 1)}, but data.image_shape {list(data.image_shape)} asks "
                        f"for {want}; images are converted between 1 (gray) and 3 (RGB) channels only; set "
                        f"data.image_shape: {[*data.image_shape[:2], got]}")
    return array


def channels(shape) -> int:
    """The channels of an image shape: (H, W) and (H, W, 1) are gray, 1."""
    return shape[2] if len(shape) == 3 else 1
