"""Where the images come from: IDX folders, .npz files, the Keras cache or download, the bundled sample.

`mnist` and `fashion_mnist` are looked for, in order, in the named folder (--data-dir or
data.data_dir), the Keras cache, then a keras.datasets download; `source: auto` falls back to the
bundled MNIST sample with a one-line notice. Everything here is numpy only: TensorFlow is imported
only to download. Every problem is a UserError naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..spec.layers import did_you_mean
from ..spec import Data

DATASETS = ("mnist", "fashion_mnist")
KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_NAMES = dict(zip(KEYS, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")))
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 and 1 dimensions
BUNDLED = Path(__file__).with_name("mnist_sample.npz")


@dataclass
class Arrays:
    """A dataset in memory: uint8 images (N, H, W[, C]), integer labels, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    provenance: dict  # dataset, source, path, counts, sha256 of each file read


def load_arrays(data: Data, data_dir: str | None = None) -> Arrays:
    """The dataset `data` names, from the first source that serves it; `data_dir` wins over data.data_dir."""
    folder = data_dir or data.data_dir
    if data.dataset not in DATASETS:
        if data.source in ("keras", "bundled"):
            raise UserError(f"{data.dataset}: data.source '{data.source}' serves only {' and '.join(DATASETS)}"
                            f"{did_you_mean(data.dataset, DATASETS)}; use source: auto or files for a path")
        return _from_path(Path(data.dataset).expanduser(), data)
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
        return _download(data)
    except UserError:
        raise
    except Exception as err:  # offline, a proxy, a failed checksum: any reason to use another source
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if data.source == "keras" or data.dataset != "mnist":
        raise UserError(f"{data.dataset}: not in the Keras cache ({cache}) and the download failed ({reason}); "
                        "pass --data-dir DIR with the four IDX files, or download them into the cache")
    arrays = _bundled(data)
    counts = arrays.provenance["counts"]
    print(f"note: MNIST is not on this machine and could not be downloaded; using the bundled sample "
          f"({counts['train']:,} training, {counts['test']:,} test images); for the full set pass --data-dir DIR "
          f"(a folder with the four MNIST IDX files, gzipped or raw, or mnist.npz) or put mnist.npz in {cache}",
          file=sys.stderr)
    return arrays


def keras_cache() -> Path:
    """The folder keras.datasets downloads into: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "datasets"


# ------------------------------------------------------------------------------------ sources


def _from_path(path: Path, data: Data) -> Arrays:
    if path.is_dir():
        return _from_folder(path, data, npz=False)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; data.dataset is {' or '.join(DATASETS)}"
                        f"{did_you_mean(data.dataset, DATASETS)}, a folder of IDX files or an .npz file")
    if path.suffix != ".npz":
        raise UserError(f"{path}: expected a folder of IDX files or an .npz file")
    return _finish(data, "npz", path, read_npz(path))


def _from_folder(folder: Path, data: Data, npz: bool = True) -> Arrays:
    """The four IDX files in `folder`, or (for a named dataset) `<dataset>.npz` there."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    npz_path = folder / f"{data.dataset}.npz"
    if npz and npz_path.is_file() and not any(_idx_path(folder, key) for key in KEYS):
        return _finish(data, "files", npz_path, read_npz(npz_path))
    return _finish(data, "files", folder, read_idx_folder(folder, extra=f", or {npz_path.name}" if npz else ""))


def _from_keras_cache(data: Data, source: str) -> Arrays | None:
    cache = keras_cache()
    if data.dataset == "mnist" and (cache / "mnist.npz").is_file():
        return _finish(data, source, cache / "mnist.npz", read_npz(cache / "mnist.npz"))
    if data.dataset == "fashion_mnist" and all(_idx_path(cache / "fashion-mnist", k) for k in KEYS):
        return _finish(data, source, cache / "fashion-mnist", read_idx_folder(cache / "fashion-mnist"))
    return None


def _download(data: Data) -> Arrays:
    """keras.datasets.<name>.load_data(), then the files it cached."""
    from ..backend import keras

    with contextlib.redirect_stdout(io.StringIO()):  # Keras' progress bar; one line below says it all
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, data.dataset).load_data()
    print(f"note: downloaded {data.dataset} with keras.datasets into {keras_cache()}", file=sys.stderr)
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
    arrays = {key: check_array(key, arrays[key], where[key], data) for key in KEYS}
    if not len(arrays["x_train"]):
        raise UserError(f"{where['x_train']}: no training images")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise UserError(f"{where[f'x_{split}']}: {len(x):,} images, "
                            f"but {where[f'y_{split}']} has {len(y):,} labels")
    provenance = {
        "dataset": data.dataset,
        "source": source,
        "path": str(path.resolve()) if path else None,
        "counts": {"train": len(arrays["x_train"]), "test": len(arrays["x_test"])},
        "sha256": sha256,
    }
    return Arrays(**arrays, provenance=provenance)


def check_array(key: str, array: np.ndarray, where: str, data: Data) -> np.ndarray:
    """`array` as an image or label array matching the spec (labels (N, 1) become (N,)); else UserError."""
    if key.startswith("y"):
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
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
    got, want = list(array.shape[1:]), list(data.image_shape)
    if got + [1] * (3 - len(got)) != want + [1] * (3 - len(want)):
        raise UserError(f"{where}: images are {'x'.join(map(str, got))}, but data.image_shape is {want}; "
                        f"set data.image_shape: {got + [1] * (3 - len(got))}")
    return array


# ------------------------------------------------------------------------------- file formats


def _read_bytes(path: Path) -> tuple[bytes, str]:
    """The file's contents, gunzipped when it is gzip data (or named .gz), and the sha256 of the file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw), digest
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(f"{path}: corrupt or truncated gzip data ({err})") from None
    return raw, digest


def read_idx(path: Path, magic: int) -> tuple[np.ndarray, str]:
    """An IDX file of unsigned bytes (images: magic 2051, labels: 2049) and the sha256 of the file."""
    raw, digest = _read_bytes(path)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        what = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
        raise UserError(f"{path}: bad magic number {found} (expected {magic}, IDX {what[magic]}); "
                        "not an IDX file or a corrupt one")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated: the IDX header needs {header} bytes, the file has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    size, body = int(np.prod(shape)), len(raw) - header
    if body != size:
        raise UserError(f"{path}: {'truncated' if body < size else 'too long'}: the header gives shape {shape}, "
                        f"{size:,} bytes of data, but the file holds {body:,}")
    return np.frombuffer(raw, np.uint8, size, header).reshape(shape), digest


def _idx_path(folder: Path, key: str) -> Path | None:
    """The IDX file for `key` in `folder`, raw or gzipped, if there is one."""
    for name in (IDX_NAMES[key], IDX_NAMES[key] + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_folder(folder: Path, extra: str = "") -> tuple[dict, dict, dict]:
    """The four standard IDX files of `folder`: (arrays, file of each array, sha256 of each file)."""
    paths = {key: _idx_path(folder, key) for key in KEYS}
    missing = [IDX_NAMES[key] + "[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise UserError(f"{folder}: missing {', '.join(missing)}; a dataset folder holds the four MNIST-format "
                        f"IDX files {', '.join(IDX_NAMES.values())} (raw or .gz){extra}")
    arrays, sha256 = {}, {}
    for key, path in paths.items():
        arrays[key], sha256[path.name] = read_idx(path, IMAGES_MAGIC if key.startswith("x") else LABELS_MAGIC)
    return arrays, {key: str(path) for key, path in paths.items()}, sha256


def read_npz(path: Path) -> tuple[dict, dict, dict]:
    """A Keras-style .npz (x_train, y_train, x_test, y_test): (arrays, where, sha256)."""
    raw, digest = _read_bytes(path)
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise UserError(f"{path}: not an .npz file (a zip archive of .npy arrays)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            missing = [key for key in KEYS if key not in npz.files]
            if missing:
                raise UserError(f"{path}: missing {', '.join(missing)}; a dataset .npz holds {', '.join(KEYS)} "
                                f"(it has {', '.join(npz.files) or 'nothing'})")
            arrays = {key: npz[key] for key in KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise UserError(f"{path}: corrupt .npz file ({err})") from None
    return arrays, {key: f"{path}: {key}" for key in KEYS}, {path.name: digest}
