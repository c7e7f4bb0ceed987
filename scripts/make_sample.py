"""Build mnist_keras/data/mnist_sample.npz: the first 10,000 training and 2,000 test images of MNIST.

    python scripts/make_sample.py [MNIST_DIR]    # default: ../shared/data/mnist

MNIST_DIR holds the four official IDX files (gzipped or raw). The archive is byte-for-byte
reproducible (fixed member order and timestamps), so its sha256 in data/README.md can be checked.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from mnist_keras.data.dataset_files import read_idx_folder
from mnist_keras.data.sources import BUNDLED

N_TRAIN, N_TEST = 10_000, 2_000


def main(source: Path) -> None:
    arrays, _, sha256 = read_idx_folder(source)
    sample = {"x_train": arrays["x_train"][:N_TRAIN], "y_train": arrays["y_train"][:N_TRAIN],
              "x_test": arrays["x_test"][:N_TEST], "y_test": arrays["y_test"][:N_TEST]}
    with zipfile.ZipFile(BUNDLED, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key, array in sample.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(member, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    for name, digest in sha256.items():
        print(f"read  {name}  sha256 {digest}")
    for split in ("train", "test"):
        counts = np.bincount(sample[f"y_{split}"], minlength=10)
        print(f"{split}: {len(sample[f'y_{split}']):,} images, per class {counts.tolist()}")
    digest = hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    print(f"wrote {BUNDLED} ({BUNDLED.stat().st_size:,} bytes, sha256 {digest})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/mnist"))
