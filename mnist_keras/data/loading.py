"""Which source serves a spec's data: image files (class folders, split folders, CSV lists) as a Files list,
or arrays (MNIST, Fashion-MNIST, IDX folders, .npz and .json.gz files) made data.image_shape."""

from __future__ import annotations

import math
from typing import Callable

from ..errors import UserError
from ..spec import Data
from .folders import Files, load_files, to_arrays
from .images import fitted_arrays
from ..spec.layout import image_source
from .dataset_files import MAX_BYTES, SPLITS
from .sources import DATASETS, Arrays, _silent, array_dataset, channels, dataset_path, missing_dataset


def load_data(data: Data, data_dir: str | None = None, notify: Callable[[str], None] = _silent,
              seed: int = 42, decode: bool = False) -> Arrays | Files:
    """The dataset `data` names: Files for image files (folders, CSV), else Arrays. `seed` (the spec's) draws
    the test and validation images held out from image files; `notify` gets notes for the user; `decode`
    checks image files by decoding each whole (load_files)."""
    if data.dataset not in DATASETS and data.source not in ("keras", "bundled"):
        path = dataset_path(data, data_dir)
        if not path.exists():
            raise missing_dataset(data, path)
        if image_source(path):
            return load_files(data, data_dir, notify, seed, decode)
    return shaped(array_dataset(data, data_dir, notify), data, notify)


def load_arrays(data: Data, data_dir: str | None = None, notify: Callable[[str], None] = _silent,
                seed: int = 42) -> Arrays:
    """The dataset in memory: arrays as they are, image files decoded (uint8, data.image_shape)."""
    found = load_data(data, data_dir, notify, seed)
    return to_arrays(found, data, notify) if isinstance(found, Files) else found


def shaped(arrays: Arrays, data: Data, notify: Callable[[str], None] = _silent) -> Arrays:
    """`arrays` as data.image_shape, as Keras' color_mode does: its channels choose gray or RGB for every source,
    and data.preprocess.fit reaches its height and width, as for image files; a note says what changed."""
    want = list(data.image_shape)
    keys = [key for key, _ in SPLITS.values() if getattr(arrays, key) is not None
            and _hwc(getattr(arrays, key).shape[1:]) != _hwc(want)]
    if not keys:
        return arrays
    size = sum(len(getattr(arrays, key)) for key in keys) * math.prod(want)
    bundled = arrays.provenance.get("source") == "bundled"
    name = "the bundled MNIST sample" if bundled else arrays.provenance.get("path") or data.dataset
    if size > MAX_BYTES:
        raise UserError(f"data.image_shape: {want} makes {size:,} bytes of images from {name}, over the "
                        f"{MAX_BYTES:,}-byte limit; use a smaller data.image_shape")
    got = _hwc(getattr(arrays, keys[0]).shape[1:])
    changes = [] if got[2] == channels(want) else \
        ["gray replicated to RGB" if got[2] == 1 else "RGB made gray (ITU-R 601-2 luma)"]
    if got[:2] != want[:2]:
        changes.append(f"resized by data.preprocess.fit ({data.preprocess.fit})")
    notify(f"note: {name}: {_described(got)} images made {_described(want)} for data.image_shape {want}: "
           f"{', '.join(changes)}")
    for key in keys:
        setattr(arrays, key, fitted_arrays(getattr(arrays, key), want, data.preprocess.fit))
    arrays.provenance["converted"] = {"from": got, "to": want, "fit": data.preprocess.fit}
    return arrays


def _hwc(shape) -> list[int]:
    """An image shape as [height, width, channels]."""
    return [*shape[:2], channels(shape)]


def _described(shape) -> str:
    return f"{shape[0]}x{shape[1]} {'gray' if channels(shape) == 1 else 'RGB'}"
