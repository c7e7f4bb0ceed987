"""Which source serves a spec's data: image files (class folders, split folders, CSV lists) as a Files list,
or arrays (MNIST, Fashion-MNIST, IDX folders, .npz files)."""

from __future__ import annotations

from typing import Callable

from ..spec import Data
from .folders import Files, load_files, to_arrays
from .layout import image_source
from .sources import DATASETS, Arrays, _silent, array_dataset, dataset_path, missing_dataset


def load_data(data: Data, data_dir: str | None = None, notify: Callable[[str], None] = _silent,
              seed: int = 42) -> Arrays | Files:
    """The dataset `data` names: Files for image files (folders, CSV), else Arrays. `seed` (the spec's) draws
    the test and validation images held out from image files; `notify` gets notes for the user."""
    if data.dataset not in DATASETS and data.source not in ("keras", "bundled"):
        path = dataset_path(data, data_dir)
        if not path.exists():
            raise missing_dataset(data, path)
        if image_source(path):
            return load_files(data, data_dir, notify, seed)
    return array_dataset(data, data_dir, notify)


def load_arrays(data: Data, data_dir: str | None = None, notify: Callable[[str], None] = _silent,
                seed: int = 42) -> Arrays:
    """The dataset in memory: arrays as they are, image files decoded (uint8, data.image_shape)."""
    found = load_data(data, data_dir, notify, seed)
    return to_arrays(found, data, notify) if isinstance(found, Files) else found
