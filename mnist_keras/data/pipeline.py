"""Arrays -> tf.data pipelines: preprocessing, validation hold-out, per-epoch shuffle, batching.

Each split is preprocessed once, vectorised, into a float32 tensor in memory (`data.cache`; without
it, each batch is preprocessed as it is drawn, which holds only the uint8 images). Training draws
batches of indices and gathers them: one gather per batch, run in parallel and prefetched. The
order of epoch e is a stateless shuffle seeded by (seed, e) alone, so a run resumed at epoch k sees
the very batches an uninterrupted run saw in epoch k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..spec import Data, Preprocess, Spec
from .sources import Arrays


@dataclass
class Pipelines:
    """The datasets for model.fit / evaluate, and their sizes."""

    train: Any  # tf.data.Dataset of (x, y) batches, epochs start_epoch..epochs-1 back to back
    validation: Any | None  # None when data.validation is 0
    test: Any
    steps_per_epoch: int
    n_train: int
    n_val: int
    n_test: int
    input_shape: tuple[int, ...]


def split_sizes(data: Data, n: int) -> tuple[int, int]:
    """(training, validation) image counts: first max_train, then the last N (or a fraction) held out."""
    n = min(n, data.max_train or n)
    n_val = data.validation if isinstance(data.validation, int) else round(n * data.validation)
    if n_val >= n:
        raise UserError(f"data.validation: holding out {n_val:,} of {n:,} training images leaves none to train on")
    return n - n_val, n_val


def pixels(x, prep: Preprocess):
    """x * scale + offset, then (x - mean) / std; for float numpy arrays and tensors alike."""
    x = x * prep.scale + prep.offset
    if prep.normalize:
        x = (x - prep.normalize.mean) / prep.normalize.std
    return x


def preprocess_images(spec: Spec, x):
    """Raw images (N, H, W[, C]) in 0..255 as the model takes them: pixels, resize, channel axis."""
    from ..backend import tf
    prep = spec.data.preprocess
    x = pixels(tf.cast(x, tf.float32), prep)
    x = x[..., tf.newaxis] if x.shape.rank == 3 else x
    if prep.resize:
        x = tf.image.resize(x, prep.resize, method=prep.resize_method)
    return x if prep.channel_axis or x.shape[-1] != 1 else x[..., 0]


def make_pipelines(spec: Spec, arrays: Arrays, start_epoch: int = 0) -> Pipelines:
    """The train (from `start_epoch` on), validation and test datasets the spec's data section describes."""
    from ..backend import tf
    data, prep = spec.data, spec.data.preprocess
    n_train, n_val = split_sizes(data, len(arrays.x_train))
    steps = n_train // data.batch_size if data.drop_remainder else math.ceil(n_train / data.batch_size)
    if steps == 0:
        raise UserError(f"data.batch_size: {data.batch_size} is more than the {n_train:,} training images and "
                        "data.drop_remainder is true, so an epoch has no batch")
    group = spec.runtime.steps_per_execution
    if group != "epoch" and steps % group:  # Keras would carry a last partial group into the next epoch
        divisors = [d for d in range(1, steps + 1) if steps % d == 0]
        raise UserError(f"runtime.steps_per_execution: {group} does not divide the {steps} steps of an epoch "
                        f"({n_train:,} images in batches of {data.batch_size}); use one of {divisors} "
                        "or change data.batch_size")

    def images(x):
        return preprocess_images(spec, x)

    def labels(y):
        y = tf.cast(y, tf.int32)
        if spec.loss() == "mse":
            return tf.cast(y, tf.float32)[:, tf.newaxis]
        return tf.one_hot(y, data.num_classes) if prep.one_hot else y

    def batches(x, y, indices):
        """(images, labels) batches for a dataset of index batches."""
        with tf.device("/CPU:0"):
            x, y = tf.constant(x), labels(tf.constant(y))
            x = images(x) if data.cache else x

        def take(i):
            return (tf.gather(x, i) if data.cache else images(tf.gather(x, i))), tf.gather(y, i)

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        out = indices.map(take, num_parallel_calls=tf.data.AUTOTUNE).with_options(options)
        return out.prefetch(tf.data.AUTOTUNE) if data.prefetch else out

    def index_batches(order, drop_remainder=False):
        """`order` cut into batches of indices, one dataset element per batch: a batch beyond the data is all of it."""
        n = int(order.shape[0])
        batch = max(1, min(data.batch_size, n))
        full, rest = divmod(n, batch)
        out = tf.data.Dataset.from_tensor_slices(tf.reshape(order[: full * batch], [full, batch]))
        if rest and not drop_remainder:
            out = out.concatenate(tf.data.Dataset.from_tensors(order[full * batch:]))
        return out

    seed = tf.constant(spec.seed, tf.int64)

    def epoch(e):
        """Index batches of epoch e. Sorting i / shuffle + U(0, 1) moves each image by fewer than
        `shuffle` places, like a shuffle buffer of that size; `all` (or shuffle >= n) is a uniform permutation."""
        order = tf.range(n_train)
        window = n_train if data.shuffle == "all" else data.shuffle
        if window > 1:
            noise = tf.random.stateless_uniform([n_train], seed=tf.stack([seed, e]), dtype=tf.float64)
            order = tf.argsort(noise if window >= n_train else noise + tf.cast(order, tf.float64) / window)
        return index_batches(order, data.drop_remainder)

    def finite(x, y):
        return batches(x, y, index_batches(tf.range(len(x))))

    train_x, train_y = arrays.x_train[:n_train], arrays.y_train[:n_train]
    train = batches(train_x, train_y, tf.data.Dataset.range(start_epoch, spec.train.epochs).flat_map(epoch))
    held_out = slice(n_train, n_train + n_val)
    validation = finite(arrays.x_train[held_out], arrays.y_train[held_out]) if n_val else None
    shape = tuple(train.element_spec[0].shape[1:])
    if shape != spec.input_shape():
        raise UserError(f"model.input_shape: the data gives images of shape {list(shape)}, but the model takes "
                        f"{list(spec.input_shape())}; match model.input_shape to data.image_shape and data.preprocess")
    return Pipelines(train, validation, finite(arrays.x_test, arrays.y_test), steps,
                     n_train, n_val, len(arrays.x_test), shape)
