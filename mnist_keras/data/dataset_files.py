"""Reading the files that hold a dataset as arrays: IDX folders, .npz files, PaddlePaddle's mnist.json.gz.

Everything here is numpy only, and every problem is a UserError naming the file. Only regular files are opened
(`regular_file`, `read_file`, also for image files), each header is checked with Python ints before numpy sees it,
and no file is read, declared or decompressed beyond MAX_BYTES.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError, first_line
from ..spec.layout import IDX_STEMS, idx_file

KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_NAMES = dict(zip(KEYS, IDX_STEMS))
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 and 1 dimensions
OTHER_IDX_TYPES = {0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",  # MNIST's is 0x08
                   0x0D: "32-bit floats", 0x0E: "64-bit floats"}
MAX_BYTES = 2**31  # the most a data file may hold, or declare, or decompress to: 2 GiB (full MNIST: 55 MB)
MAX_JSON_NUMBERS = 64_000_000  # numbers in a JSON data file, ~32 bytes each once parsed (mnist.json.gz: 55 million)
JSON_RANGES = ((0, 1), (-1, 1), (0, 255))  # pixel ranges a JSON data file may use, tried in this order
SPLITS = {"train": ("x_train", "y_train"), "validation": ("x_val", "y_val"), "test": ("x_test", "y_test")}


def regular_file(path: Path | str) -> os.stat_result:
    """os.stat of `path` (following links) if it is a regular file; else a UserError saying what it is."""
    try:
        status = os.stat(path)
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        kinds = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
                 stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
        raise UserError(f"{path}: not a regular file ({kinds.get(stat.S_IFMT(status.st_mode), 'unknown kind')})")
    return status


def read_file(path: Path) -> tuple[bytes, str]:
    """The bytes of a regular file of at most MAX_BYTES, and their sha256."""
    size = regular_file(path).st_size
    if size > MAX_BYTES:
        raise UserError(f"{path}: {size:,} bytes; a data file may hold at most {MAX_BYTES:,}")
    try:
        with open(path, "rb") as file:
            raw = file.read(size + 1)
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    if len(raw) != size:
        raise UserError(f"{path}: the file changed while it was read ({size:,} bytes, then {len(raw):,})")
    return raw, hashlib.sha256(raw).hexdigest()


def _too_big(path: Path, what: str, shape: tuple[int, ...]) -> UserError:
    return UserError(f"{path}: {what}declares shape {shape}, over the {MAX_BYTES:,}-byte limit for a data file")


def _read_at_most(stream, limit: int) -> bytearray:
    """Up to `limit` bytes of `stream`, in chunks: memory follows what is there, not what a header claims."""
    out = bytearray()
    while len(out) < limit and (chunk := stream.read(min(1 << 20, limit - len(out)))):
        out += chunk
    return out


def read_idx(path: Path, magic: int) -> tuple[np.ndarray, str]:
    """An IDX file of unsigned bytes (images: magic 2051, labels: 2049), raw or gzipped, and the sha256 of the file.

    The header is checked before the body is read, and at most the declared size (+1) is decompressed.
    """
    raw, digest = read_file(path)
    gz = path.suffix == ".gz" or raw[:2] == b"\x1f\x8b"
    try:
        with (gzip.GzipFile(fileobj=io.BytesIO(raw)) if gz else io.BytesIO(raw)) as stream:
            head = stream.read(4)
            if len(head) == 4 and head[:2] == b"\0\0" and head[3] == magic & 0xFF and head[2] in OTHER_IDX_TYPES:
                raise UserError(f"{path}: an IDX file of {OTHER_IDX_TYPES[head[2]]}; only unsigned bytes "
                                "(IDX type 0x08, as in MNIST) are supported")
            found = int.from_bytes(head, "big") if len(head) == 4 else None
            if found != magic:
                what = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
                raise UserError(f"{path}: bad magic number {found} (expected {magic}, IDX {what[magic]}); "
                                "not an IDX file or a corrupt one")
            ndim = magic & 0xFF
            dims = stream.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise UserError(f"{path}: truncated: the IDX header needs {4 + 4 * ndim} bytes, "
                                f"the file has {4 + len(dims)}")
            shape = tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
            size = math.prod(shape)
            if size > MAX_BYTES:
                raise _too_big(path, "the IDX header ", shape)
            body = _read_at_most(stream, size + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path}: corrupt or truncated gzip data ({err})") from None
    if len(body) != size:
        held = f"{len(body):,}" if len(body) < size else "more"
        raise UserError(f"{path}: {'truncated' if len(body) < size else 'too long'}: the header gives shape {shape}, "
                        f"{size:,} bytes of data, but the file holds {held}")
    return np.frombuffer(body, np.uint8, size).reshape(shape), digest


def idx_path(folder: Path, key: str) -> Path | None:
    """The IDX file for `key` in `folder`, raw or gzipped, if there is one."""
    return idx_file(folder, IDX_NAMES[key])


def read_idx_folder(folder: Path, extra: str = "") -> tuple[dict, dict, dict]:
    """The four standard IDX files of `folder`: (arrays, file of each array, sha256 of each file)."""
    paths = {key: idx_path(folder, key) for key in KEYS}
    missing = [IDX_NAMES[key] + "[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise UserError(f"{folder}: missing {', '.join(missing)}; a dataset folder holds the four MNIST-format "
                        f"IDX files {', '.join(IDX_NAMES.values())} (raw or .gz){extra}")
    arrays, sha256 = {}, {}
    for key, path in paths.items():
        arrays[key], sha256[path.name] = read_idx(path, IMAGES_MAGIC if key.startswith("x") else LABELS_MAGIC)
    return arrays, {key: str(path) for key, path in paths.items()}, sha256


def read_npz(path: Path) -> tuple[dict, dict, dict]:
    """A Keras-style .npz (x_train, y_train, x_test, y_test): (arrays, where, sha256).

    Each member's .npy header is checked (no objects, a declared size within the member and MAX_BYTES) before loading.
    """
    raw, digest = read_file(path)
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise UserError(f"{path}: not an .npz file (a zip archive of .npy arrays)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in KEYS if key not in members]
            if missing:
                raise UserError(f"{path}: missing {', '.join(missing)}; a dataset .npz holds {', '.join(KEYS)} "
                                f"(it has {', '.join(members) or 'nothing'})")
            arrays, total = {}, 0
            for key in KEYS:
                with archive.open(members[key]) as member:
                    total += _check_npy_header(path, key, member, archive.getinfo(members[key]).file_size)
                    if total > MAX_BYTES:
                        raise UserError(f"{path}: the arrays up to {key} hold {total:,} bytes, "
                                        f"over the {MAX_BYTES:,}-byte limit for a data file")
                with archive.open(members[key]) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        raise UserError(f"{path}: corrupt .npz file ({first_line(err)})") from None
    return arrays, {key: f"{path}: {key}" for key in KEYS}, {path.name: digest}


def _check_npy_header(path: Path, key: str, member, member_size: int) -> int:
    """The data size a zip member's .npy header declares, once it is a plain array that fits the member."""
    version = np.lib.format.read_magic(member)
    if version not in ((1, 0), (2, 0)):
        raise UserError(f"{path}: {key}: .npy format version {version} is not supported (1.0 and 2.0 are)")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(member)
    if min(shape, default=0) < 0:
        raise UserError(f"{path}: {key}: the .npy header declares a negative shape {shape}")
    if dtype.hasobject:
        raise UserError(f"{path}: {key}: an array of Python objects ({dtype}); expected numbers")
    nbytes = math.prod(shape) * dtype.itemsize
    if math.prod(max(d, 1) for d in shape) * max(dtype.itemsize, 1) > MAX_BYTES:  # a 0 must not hide a huge dimension
        raise _too_big(path, f"{key}: the .npy header ", shape)
    if nbytes > member_size - member.tell():
        raise UserError(f"{path}: {key}: truncated: the .npy header declares shape {shape} of {dtype}, "
                        f"{nbytes:,} bytes, but the member holds {member_size - member.tell():,}")
    return nbytes


def read_json(path: Path) -> tuple[dict, dict, dict, tuple[int, int]]:
    """PaddlePaddle's mnist.json.gz (gzipped or plain JSON): a list of three splits, train, validation and test,
    each [images, labels], every image a flat list of height x width numbers in [0, 1], [-1, 1] or 0..255:
    (uint8 arrays x_train ... y_test, where, sha256, the pixel range found). At most MAX_BYTES are decompressed,
    and the numbers are counted (MAX_JSON_NUMBERS) before the text is parsed."""
    raw, digest = read_file(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
                raw = _read_at_most(stream, MAX_BYTES + 1)
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(f"{path}: corrupt or truncated gzip data ({err})") from None
    elif path.suffix == ".gz":
        raise UserError(f"{path}: not a gzip file (a .json.gz dataset is gzipped JSON)")
    if len(raw) > MAX_BYTES:
        raise UserError(f"{path}: decompresses to over {MAX_BYTES:,} bytes, the limit for a data file")
    if raw.count(b",") >= MAX_JSON_NUMBERS:
        raise UserError(f"{path}: over {MAX_JSON_NUMBERS:,} numbers, the limit for a JSON data file "
                        "(mnist.json.gz holds 55 million)")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError; nesting too deep
        raise UserError(f"{path}: not a JSON file ({first_line(err)})") from None
    if not isinstance(document, list) or len(document) != 3:
        raise UserError(f"{path}: holds {_json_kind(document)}; expected a list of three splits (train, "
                        "validation, test), each [images, labels], as PaddlePaddle's mnist.json.gz")
    arrays, where = {}, {}
    for (split, (x_key, y_key)), pair in zip(SPLITS.items(), document):
        if not isinstance(pair, list) or len(pair) != 2:
            raise UserError(f"{path}: the {split} split is {_json_kind(pair)}; expected [images, labels]")
        images, labels = pair
        where[x_key], where[y_key] = f"{path}: {split} images", f"{path}: {split} labels"
        arrays[x_key], arrays[y_key] = _json_images(where[x_key], images), _json_labels(where[y_key], labels)
    pixels = [arrays[x_key] for x_key, _ in SPLITS.values()]
    low, high = next(((low, high) for low, high in JSON_RANGES
                      if all(low <= x.min() and x.max() <= high for x in pixels)), (None, None))
    if low is None:
        raise UserError(f"{path}: pixel values range over {min(x.min() for x in pixels):g}.."
                        f"{max(x.max() for x in pixels):g}; expected [0, 1], [-1, 1] or 0..255")
    for x_key, _ in SPLITS.values():
        arrays[x_key] = np.rint((arrays[x_key] - low) * (255 / (high - low))).astype(np.uint8)
    return arrays, where, {path.name: digest}, (low, high)


def _json_images(where: str, images) -> np.ndarray:
    """A split's images, each a flat list of the same square number of finite numbers, as float64 (N, H, W)."""
    if not isinstance(images, list) or not images or not isinstance(images[0], list):
        raise UserError(f"{where}: {_json_kind(images)}; expected a list of images, each a list of numbers")
    size = len(images[0])
    odd = next((i for i, image in enumerate(images) if not isinstance(image, list) or len(image) != size), None)
    if odd is not None:
        raise UserError(f"{where}: image {odd} is {_json_kind(images[odd])}, but image 0 has {size} numbers")
    try:
        x = np.array(images)
    except ValueError:  # lists of different lengths inside an image
        x = None
    if x is None or x.dtype.kind not in "iuf" or x.ndim != 2:
        found = next(((i, v) for i, image in enumerate(images) for v in image if type(v) not in (int, float)), None)
        what = f"image {found[0]} holds {_json_kind(found[1])}" if found else "an integer is beyond 64 bits"
        raise UserError(f"{where}: {what}; each image is a flat list of numbers")
    side = math.isqrt(size)
    if side * side != size or not size:
        raise UserError(f"{where}: images of {size} numbers are not square; each image is a flat list of "
                        "height x width numbers (784 for 28x28)")
    if not np.isfinite(x).all():
        raise UserError(f"{where}: image {int(np.argmin(np.isfinite(x).all(axis=1)))} holds NaN or infinity")
    return x.astype(np.float64).reshape(len(x), side, side)


def _json_labels(where: str, labels) -> np.ndarray:
    """A split's labels as an array (check_array checks their kind, shape and range)."""
    if isinstance(labels, list):
        with contextlib.suppress(ValueError):  # nested lists of different lengths
            return np.array(labels)
    raise UserError(f"{where}: {_json_kind(labels)}; expected a list of integer labels, one per image")


def _json_kind(value) -> str:
    """What a parsed JSON value is, for messages: `a list of 2 items`, `an object`, `a string`."""
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
