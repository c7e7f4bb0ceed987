"""Image files -> uint8 images of data.image_shape, for pipelines that stream from disk.

Each file is decoded by TensorFlow (PNG, JPEG, GIF, BMP, WebP; the first frame of an animation),
transparency laid over white, made gray or RGB as data.image_shape's channels ask, and fit to its
height x width (`data.preprocess.fit`: stretch, crop to the aspect ratio, or pad). `file_images`
gives what the pipeline takes a split's images from: with `data.cache: memory`, one uint8 array
decoded once; with `none`, a Stream that decodes each image as it is drawn; with `disk`, a Stream
over decoded copies written, once, to one file per image in the cache folder (random access, so
each epoch's shuffle stays exact). An image that fails to decode stops the run with its file named.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..spec import Data, Spec


def cache_mode(data: Data) -> str:
    """data.cache as memory, disk or none (older specs say true for memory, false for none)."""
    return {True: "memory", False: "none"}.get(data.cache, data.cache)


@dataclass
class Stream:
    """A split's images, read one by one: `read(i)` is image i (uint8, H x W x C), `names[i]` the file it comes from."""

    read: Callable
    names: Any  # a string tensor

    def images(self, order):
        """(image, index) for each index of `order`, read in parallel and kept in order. An image that fails
        to read is an error naming its file: failures are dropped, and the first gap in the indices is reported."""
        from ..backend import tf
        expected = tf.data.Dataset.from_tensor_slices(order)
        read = expected.map(lambda i: (self.read(i), i), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        blank = tf.zeros(read.element_spec[0].shape, tf.uint8)
        end = tf.data.Dataset.from_tensors((blank, tf.constant(-1, order.dtype)))
        pairs = tf.data.Dataset.zip(read.ignore_errors().concatenate(end), expected)

        def check(image_index, want):
            image, i = image_index
            failed = ["cannot read or decode image file", self.names[want], "(changed since the data was checked?)"]
            with tf.control_dependencies([tf.debugging.Assert(tf.equal(i, want), failed)]):
                return tf.identity(image), i

        return pairs.take(tf.size(order, tf.int64)).map(check)


def decoder(spec: Spec) -> Callable:
    """A graph function: file path -> uint8 image of data.image_shape, as the module's docstring says."""
    from ..backend import tf
    height, width, channels = (*spec.data.image_shape, 1)[:3]
    fit = spec.data.preprocess.fit

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)  # 1 to 4 channels
        n = tf.shape(image)[-1]
        alpha = tf.equal(n % 2, 0)  # gray + alpha, or RGBA
        colour = tf.cast(image[..., : n - tf.cast(alpha, tf.int32)], tf.float32)
        opacity = tf.where(alpha, tf.cast(image[..., -1:], tf.float32) / 255, 1.0)
        colour = 255 - (255 - colour) * opacity  # laid over white
        rgb = tf.ensure_shape(tf.tile(colour, [1, 1, 3 // tf.shape(colour)[-1]]), [None, None, 3])
        image = tf.image.rgb_to_grayscale(rgb) if channels == 1 else rgb
        if fit == "crop":  # the largest central box of the target's aspect ratio
            h, w = tf.shape(image)[0], tf.shape(image)[1]
            crop_h = tf.clip_by_value(w * height // width, 1, h)
            crop_w = tf.clip_by_value(h * width // height, 1, w)
            image = tf.image.crop_to_bounding_box(image, (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w)
        if fit == "pad":
            image = tf.image.resize_with_pad(image, height, width, antialias=True)
        else:
            image = tf.image.resize(image, [height, width], antialias=True)
        return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), [height, width, channels])

    return decode


def file_images(spec: Spec, split: str, paths: list[str], mode: str, cache_dir: str | None):
    """What the pipeline takes a split's images from: a uint8 array (memory) or a Stream (none, disk)."""
    from ..backend import tf
    names = tf.constant(paths, tf.string)
    decode = decoder(spec)
    stream = Stream(lambda i: decode(names[i]), names)
    if mode == "none":
        return stream
    every = stream.images(tf.range(len(paths), dtype=tf.int64))
    if mode == "memory":
        return every.batch(len(paths)).map(lambda x, i: x).get_single_element()
    if not cache_dir:
        raise UserError("data.cache: disk needs a folder: set data.cache_dir")
    folder = Path(cache_dir) / f"{split}-{_key(spec, paths)}"
    files = _numbered(folder, len(paths))
    if not folder.is_dir():
        _write_cache(every, folder, len(paths))
    shape = [*spec.data.image_shape, 1][:3]
    return Stream(lambda i: tf.ensure_shape(tf.io.parse_tensor(tf.io.read_file(files[i]), tf.uint8), shape), files)


def _key(spec: Spec, paths: list[str]) -> str:
    """A digest of what the decoded images depend on: the shape, the fit, and each file's path, size and time."""
    stats = [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in paths]
    what = [spec.data.image_shape, spec.data.preprocess.fit, stats]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def _numbered(folder: Path, n: int):
    """The string tensor of the files <folder>/0.tensor ... <folder>/<n-1>.tensor."""
    from ..backend import tf
    return tf.strings.join([str(folder) + os.sep, tf.strings.as_string(tf.range(n)), ".tensor"])


def _write_cache(images, folder: Path, n: int) -> None:
    """Each image to its file under a temporary folder, then the folder renamed: a cache is whole or absent."""
    from ..backend import tf
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    staged = _numbered(partial, n)
    def write(x, i):
        with tf.control_dependencies([tf.io.write_file(staged[i], tf.io.serialize_tensor(x))]):
            return tf.identity(i)

    images.map(write, num_parallel_calls=tf.data.AUTOTUNE).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
    try:
        partial.rename(folder)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(partial, ignore_errors=True)
