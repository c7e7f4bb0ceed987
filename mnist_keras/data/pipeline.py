"""Arrays or image files -> tf.data pipelines: preprocessing, validation hold-out, per-epoch shuffle, batching.

Arrays: each split is preprocessed once, vectorised, into a float32 tensor in memory (`data.cache`;
without it, each batch is preprocessed as it is drawn, which holds only the uint8 images). Training
draws batches of indices and gathers them: one gather per batch, run in parallel and prefetched.
Files (streaming.py): `cache: memory` decodes each split once into uint8 arrays and goes on as
above; `none` and `disk` read each batch of an epoch's order as it is drawn, in one call into Python,
batches in parallel and in order, so only the indices are held in memory (a file that fails to decode
then: `Pipelines.failure`; under `on_bad_file: skip`, images are read a few at a time and batched after).
The order of epoch e is a stateless shuffle seeded by (seed, e) alone, and the MixUp and CutMix of its
training batches (data.augment, mixing.py) stateless draws from (seed, e, batch index), so a run resumed at
epoch k sees the very batches an uninterrupted run saw in epoch k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserError
from ..spec import Data, Preprocess, Spec
from .mixing import mixer
from .sources import Arrays, _silent
from .streaming import Stream, cache_mode, file_images, readers


@dataclass
class Pipelines:
    """The datasets for model.fit / evaluate, and their sizes."""

    train: Any  # tf.data.Dataset of (x, y) batches, epochs start_epoch..epochs-1 back to back
    train_from: Any  # epoch -> the same from that epoch on (a new fit call, as a stage starts)
    validation: Any | None  # None when data.validation is 0
    test: Any
    steps_per_epoch: int
    n_train: int
    n_val: int
    n_test: int
    input_shape: tuple[int, ...]
    failure: Callable[[], str | None]  # the message of the first streamed file that failed to decode, if any


def split_sizes(data: Data, n: int) -> tuple[int, int]:
    """(training, validation) image counts: first max_train, then the last N (or a fraction) held out."""
    n = min(n, data.max_train or n)
    n_val = data.validation if isinstance(data.validation, int) else round(n * data.validation)
    if n_val >= n:
        raise UserError(f"data.validation: holding out {n_val:,} of {n:,} training images leaves none to train on")
    return n - n_val, n_val


def pixels(x, prep: Preprocess):
    """x * scale + offset, then (x - mean) / std, as one multiply and one add at most; for float numpy arrays and
    tensors alike (per-channel mean and std as lists of floats, which take the array's dtype)."""
    if not prep.normalize:  # no pass over a batch's float32 pixels where it would change nothing
        x = x if prep.scale == 1 else x * prep.scale
        return x if prep.offset == 0 else x + prep.offset
    mean, std = prep.normalize.mean, prep.normalize.std  # `imagenet` is its mean and std once the spec is validated
    if isinstance(mean, list):
        return x * [prep.scale / s for s in std] + [(prep.offset - m) / s for m, s in zip(mean, std)]
    return x * (prep.scale / std) + (prep.offset - mean) / std


def preprocess_images(spec: Spec, x):
    """Raw images (N, H, W[, C]) in 0..255 as the spec's model takes them."""
    return apply_preprocess(spec.data.preprocess, x)


def apply_preprocess(prep: Preprocess, x):
    """Raw images (N, H, W[, C]) in 0..255 -> float32: pixels, resize, channel axis."""
    from ..backend import tf
    x = pixels(tf.cast(x, tf.float32), prep)
    x = x[..., tf.newaxis] if x.shape.rank == 3 else x
    if prep.resize:
        x = tf.image.resize(x, prep.resize, method=prep.resize_method)
    return x if prep.channel_axis or x.shape[-1] != 1 else x[..., 0]


def data_splits(data: Data, source) -> tuple[tuple, tuple | None, tuple]:
    """(images, labels) of the train, validation (None when there is none) and test splits; images are
    uint8 arrays or lists of file paths. A source without a validation split holds out data.validation images."""
    if isinstance(source, Arrays):
        train, test = (source.x_train, source.y_train), (source.x_test, source.y_test)
        validation = None if source.x_val is None else (source.x_val, source.y_val)
    else:
        train, test = (source.train.paths, source.train.labels), (source.test.paths, source.test.labels)
        validation = source.validation and (source.validation.paths, source.validation.labels)
    if validation:
        n_train, n_val = min(len(train[1]), data.max_train or len(train[1])), 0
    else:
        n_train, n_val = split_sizes(data, len(train[1]))
        validation = tuple(part[n_train:n_train + n_val] for part in train) if n_val else None
    return tuple(part[:n_train] for part in train), validation, test


def make_pipelines(spec: Spec, data, start_epoch: int = 0, cache_dir: str | None = None,
                   notify: Callable[[str], None] = _silent) -> Pipelines:
    """The train (from `start_epoch` on), validation and test datasets the spec's data section describes, from
    `data`: an Arrays, or a Files whose images stream from disk (`data.cache: disk` keeps their decoded copies in
    data.cache_dir, else in `cache_dir`; `notify` gets the notes of files skipped and copies rebuilt)."""
    from ..backend import tf
    d, prep = spec.data, spec.data.preprocess
    splits = data_splits(d, data)
    n_train = len(splits[0][1])
    steps = n_train // d.batch_size if d.drop_remainder else math.ceil(n_train / d.batch_size)
    if steps == 0:
        raise UserError(f"data.batch_size: {d.batch_size} is more than the {n_train:,} training images and "
                        "data.drop_remainder is true, so an epoch has no batch")
    group = spec.runtime.steps_per_execution
    if group != "epoch" and steps % group:  # Keras would carry a last partial group into the next epoch
        divisors = [k for k in range(1, steps + 1) if steps % k == 0]
        raise UserError(f"runtime.steps_per_execution: {group} does not divide the {steps} steps of an epoch "
                        f"({n_train:,} images in batches of {d.batch_size}); use one of {divisors} "
                        "or change data.batch_size")
    mode = cache_mode(d)
    # The functions below hold no Python control flow on tensors: tracing them without AutoGraph's source
    # transformation saves about a second per run.
    plain = tf.autograph.experimental.do_not_convert
    if not isinstance(data, Arrays):
        folder = d.cache_dir or cache_dir
        splits = [split and (file_images(spec, name, split[0], mode, folder, notify), split[1])
                  for name, split in zip(("train", "validation", "test"), splits)]
    streams = [split[0] for split in splits if split and isinstance(split[0], Stream)]

    def images(x):
        return preprocess_images(spec, x)

    def labels(y):
        y = tf.cast(y, tf.int32)
        if spec.loss() == "mse":
            return tf.cast(y, tf.float32)[:, tf.newaxis]
        return tf.one_hot(y, d.num_classes) if prep.one_hot else y

    def index_batches(order, drop_remainder):
        """`order` cut into batches of indices, one dataset element per batch: a batch beyond the data is all of it."""
        n = int(order.shape[0])
        batch = max(1, min(d.batch_size, n))
        full, rest = divmod(n, batch)
        out = tf.data.Dataset.from_tensor_slices(tf.reshape(order[: full * batch], [full, batch]))
        if rest and not drop_remainder:
            out = out.concatenate(tf.data.Dataset.from_tensors(order[full * batch:]))
        return out

    mix = d.augment.on() and mixer(d.augment, spec.seed, steps)

    def batches(split, orders, drop_remainder=False, refill=False, mixed_from=None):
        """(images, labels) batches of each index vector of `orders`, one vector after the other. Streamed images
        skipped as they are read (Stream.images) are replaced with `refill`, else leave their batch smaller.
        `mixed_from`: the global index of the first batch, whose batches are mixed (data.augment; training only)."""
        x, y = split
        with tf.device("/CPU:0"):
            y = tf.constant(y)
        if isinstance(x, Stream) and x.skip:  # images left out as they are read: one per index, batched after
            def read(order):
                if refill:
                    return x.images(order, refill).batch(d.batch_size, drop_remainder)
                nothing = tf.data.Dataset.from_tensors((tf.zeros([0, *x.shape], tf.uint8), tf.zeros([0], order.dtype)))
                return index_batches(order, drop_remainder).flat_map(  # one batch per batch of indices, always
                    lambda batch: x.images(batch).batch(d.batch_size).concatenate(nothing).take(1))

            out = orders.flat_map(plain(read))
            out = out.map(plain(lambda x, i: (images(x), labels(tf.gather(y, i)))), num_parallel_calls=readers())
        else:  # one element per batch of indices, its images gathered (arrays) or read in one call (a Stream)
            streamed, cached = isinstance(x, Stream), mode == "memory"
            if not streamed:
                with tf.device("/CPU:0"):
                    x = images(x) if cached else tf.constant(x)

            def take(i):
                if streamed:
                    return images(x.batch(i)), labels(tf.gather(y, i))
                return (tf.gather(x, i) if cached else images(tf.gather(x, i))), labels(tf.gather(y, i))

            out = orders.flat_map(plain(lambda order: index_batches(order, drop_remainder)))
            out = out.map(plain(take), num_parallel_calls=readers() if streamed else 2)
        if mixed_from is not None:
            out = out.enumerate(mixed_from).map(plain(mix), num_parallel_calls=2)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        # Off: tf.data's autotuning thread held the iterator's deletion, so model.fit's return, for 1.5-12 s at
        # random, and halved the rate of streamed images in about one run of three (docs/performance.md).
        options.autotune.enabled = False
        out = out.with_options(options)
        return out.prefetch(2) if d.prefetch else out

    seed = tf.constant(spec.seed, tf.int64)

    def order(e):
        """The image order of epoch e. Sorting i / shuffle + U(0, 1) moves each image by fewer than
        `shuffle` places, like a shuffle buffer of that size; `all` (or shuffle >= n) is a uniform permutation."""
        order = tf.range(n_train)
        window = n_train if d.shuffle == "all" else d.shuffle
        if window > 1:
            noise = tf.random.stateless_uniform([n_train], seed=tf.stack([seed, e]), dtype=tf.float64)
            order = tf.argsort(noise if window >= n_train else noise + tf.cast(order, tf.float64) / window)
        return order

    def finite(split):
        """Every image of `split` once, in order, with a known number of batches (for Keras' progress), and a
        batch axis of unknown size, so that one traced test step serves the validation and the test images."""
        n = len(split[1])
        out = batches(split, tf.data.Dataset.from_tensors(tf.range(n)))
        nothing = tuple(tf.zeros([0, *part.shape[1:]], part.dtype) for part in out.element_spec)
        out = out.concatenate(tf.data.Dataset.from_tensors(nothing).take(0))
        return out.apply(tf.data.experimental.assert_cardinality(math.ceil(n / d.batch_size)))

    def train_from(epoch: int):
        return batches(splits[0], tf.data.Dataset.range(epoch, spec.train.epochs).map(plain(order)), d.drop_remainder,
                       refill=True, mixed_from=epoch * steps if mix else None)

    train = train_from(start_epoch)
    shape = tuple(train.element_spec[0].shape[1:])
    if shape != spec.input_shape():
        raise UserError(f"model.input_shape: the data gives images of shape {list(shape)}, but the model takes "
                        f"{list(spec.input_shape())}; match model.input_shape to data.image_shape and data.preprocess")
    validation, test = splits[1] and finite(splits[1]), finite(splits[2])
    return Pipelines(train, train_from, validation, test, steps, n_train, len(splits[1][1]) if splits[1] else 0,
                     len(splits[2][1]), shape,
                     lambda: next((message for stream in streams for message in stream.failures), None))
