"""Image files -> uint8 images of data.image_shape, for pipelines that stream from disk.

Every data.cache choice decodes with the one decoder, images.image_array (Pillow, as `predict` does):
what `data check` and `cache: memory` accept streams, and an image over 40 megapixels is refused by its
header before it is decoded. tf.data calls it for each batch as it is drawn (tf.numpy_function, batches
in parallel: Pillow decodes and resizes without holding Python's lock). `file_images` gives what the
pipeline takes a split's images from: with `cache: memory`, one uint8 array decoded once; with
`none`, a Stream that decodes each image as it is drawn; with `disk`, a Stream that reads each image's
decoded copy from one file per image in the cache folder (random access, so each epoch's shuffle stays
exact), decoding and writing the copy first where it is missing or damaged: each copy ends with its
CRC-32, so a truncated or altered copy is named and rebuilt. An image that fails to decode at run
time stops the run with its file named (Pipelines.failure), or under `on_bad_file: skip` is left out
with a note.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from ..spec import Data, Spec

CHECKSUM = 4  # bytes of CRC-32 after the pixels of each cached image (five times as fast as BLAKE2b here)
CHUNK = 16  # images read per call into Python under skip (one call costs about a tenth of a JPEG's decoding)


def readers() -> int:
    """Calls into Python reading images at once: one per CPU this process may run on. tf.data's autotuning,
    which would choose it, halved the rate in about one run of three (docs/performance.md, Own images)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cache_mode(data: Data) -> str:
    """data.cache as memory, disk or none (older specs say true for memory, false for none)."""
    return {True: "memory", False: "none"}.get(data.cache, data.cache)


@dataclass
class Stream:
    """A split's images, read a few at a time: `read(indices)` is (those images, uint8 [k, H, W, C]; whether each
    decoded, bool [k]), so the work of a call into Python is shared by a batch of images (CHUNK under skip)."""

    read: Callable
    shape: tuple[int, int, int]
    skip: bool  # data.on_bad_file: skip (else a file that fails stops the iteration)
    failures: list[str] = field(default_factory=list)  # the messages of the files that stopped it

    def batch(self, indices):
        """The images of a batch of indices, in one call into Python; a file that fails to decode stops the
        iteration (an assertion; its message is in `failures`)."""
        from ..backend import tf
        images, ok = self.read(indices)
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(ok), ["an image file failed to decode",
                                                                              indices])]):
            return tf.identity(images)

    def images(self, order, refill: bool = False):
        """(image, index) for each index of `order` whose file decodes, read in parallel and kept in order; the
        others are left out (data.on_bad_file: skip), and with `refill` the order's first images are read again
        in their place, so an epoch keeps its batches."""
        from ..backend import tf
        kept = tf.data.Dataset.from_tensor_slices(order).batch(CHUNK).map(
            lambda i: (*self.read(i), i), num_parallel_calls=readers(), deterministic=True).unbatch()
        kept = kept.filter(lambda image, ok, i: ok).map(lambda image, ok, i: (image, i))
        return kept.repeat().take(tf.size(order, tf.int64)) if refill else kept


class _Decoder:
    """The Python side of a Stream: image i of `paths` decoded by images.image_array, read from and written to
    the disk cache `folder` where there is one; each failure noted once."""

    def __init__(self, spec: Spec, paths: list[str], folder: Path | None, notify: Callable[[str], None],
                 failures: list[str]):
        self.paths, self.folder, self.notify, self.failures = paths, folder, notify, failures
        self.image_shape, self.fit = spec.data.image_shape, spec.data.preprocess.fit
        self.shape = (*spec.data.image_shape, 1)[:3]
        self.size = int(np.prod(self.shape))
        self.skip = spec.data.on_bad_file == "skip"
        self.noted: set[str] = set()
        self.lock = threading.Lock()

    def many(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(images, whether each decoded) of `indices`, as __call__ reads each."""
        images, ok = np.empty((len(indices), *self.shape), np.uint8), np.empty(len(indices), np.bool_)
        for k, i in enumerate(indices):
            images[k], ok[k] = self(i)
        return images, ok

    def __call__(self, i) -> tuple[np.ndarray, bool]:
        try:
            return (self.cached(int(i)) if self.folder else self.decoded(int(i))), np.bool_(True)
        except UserError as err:
            message = err.messages[0]
            if self.skip:
                self.note(f"note: left out {message} (data.on_bad_file: skip)")
            else:
                with self.lock:
                    self.failures.append(message)
            return np.zeros(self.shape, np.uint8), np.bool_(False)

    def decoded(self, i: int) -> np.ndarray:
        from .images import image_array

        return image_array(self.paths[i], self.image_shape, self.fit).reshape(self.shape)

    def cached(self, i: int) -> np.ndarray:
        """Image i from its copy in the cache folder; decoded and written there when missing or damaged."""
        file = self.folder / f"{i}.u8"
        try:
            with open(file, "rb") as stored:
                raw = stored.read(self.size + CHECKSUM + 1)
        except FileNotFoundError:
            raw = None
        except OSError as err:
            raw = f"unreadable: {err.strerror}"
        if isinstance(raw, bytes) and len(raw) == self.size + CHECKSUM and _digest(raw[:self.size]) == raw[self.size:]:
            return np.frombuffer(raw, np.uint8, self.size).reshape(self.shape)
        if raw is not None:
            found = raw if isinstance(raw, str) else f"{len(raw):,} bytes, or a wrong checksum"
            self.note(f"note: {file}: a damaged copy in the disk cache ({found}; a copy is "
                      f"{self.size + CHECKSUM:,} bytes); rebuilt from {self.paths[i]}")
        image = self.decoded(i)
        self.write(file, image)
        return image

    def write(self, file: Path, image: np.ndarray) -> None:
        """The copy written whole or not at all (a temporary file, renamed); a write that fails is noted once."""
        pixels = image.tobytes()
        partial = file.with_name(f"{file.name}.{os.getpid()}-{threading.get_ident()}.partial")
        try:
            partial.write_bytes(pixels + _digest(pixels))
            os.replace(partial, file)
        except OSError as err:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            self.note(f"note: cannot write {file} in the disk cache: {err.strerror or err}; images not cached are "
                      "decoded each epoch", key=self.folder)

    def note(self, message: str, key=None) -> None:
        key = message if key is None else key
        with self.lock:
            if key in self.noted:
                return
            self.noted.add(key)
        self.notify(message)


def _digest(pixels: bytes) -> bytes:
    return zlib.crc32(pixels).to_bytes(CHECKSUM, "little")


def file_images(spec: Spec, split: str, paths: list[str], mode: str, cache_dir: str | None,
                notify: Callable[[str], None]):
    """What the pipeline takes a split's images from: a uint8 array (memory) or a Stream (none, disk)."""
    from ..backend import tf
    folder = None
    if mode == "disk":
        if not cache_dir:
            raise UserError("data.cache: disk needs a folder: set data.cache_dir")
        folder = _cache_folder(Path(cache_dir), f"{split}-{_key(spec, paths)}")
    failures: list[str] = []
    decode = _Decoder(spec, paths, folder, notify, failures)
    if mode == "memory":
        images = []
        for i in range(len(paths)):
            image, ok = decode(i)
            if not ok:
                raise UserError(failures[0])
            images.append(image)
        return np.stack(images) if images else np.zeros((0, *decode.shape), np.uint8)

    def read(indices):
        images, ok = tf.numpy_function(decode.many, [indices], [tf.uint8, tf.bool], stateful=True)
        return tf.ensure_shape(images, [None, *decode.shape]), tf.ensure_shape(ok, [None])

    return Stream(read, decode.shape, decode.skip, failures)


def _cache_folder(cache_dir: Path, name: str) -> Path:
    """cache_dir/name, created, once a file could be written in it; a UserError, before training, if not."""
    folder = cache_dir / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = "not a folder" if isinstance(err, (FileExistsError, NotADirectoryError)) else err.strerror or err
        raise UserError(f"{cache_dir}: cannot keep the disk cache (data.cache: disk) there: {reason}; set "
                        "data.cache_dir to a folder this process can write") from None
    return folder


def _key(spec: Spec, paths: list[str]) -> str:
    """A digest of what the decoded images depend on: the cache's format, the shape, the fit, and each file's
    path, size and time (a file gone since it was listed fails as it is read)."""
    def stat(path):
        try:
            found = os.stat(path)
        except OSError:
            return None
        return found.st_size, found.st_mtime_ns

    what = ["u8+crc32", spec.data.image_shape, spec.data.preprocess.fit, [(path, stat(path)) for path in paths]]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
