"""MixUp and CutMix of training batches (data.augment): each image blended with, or given a box of, another image
of its batch, and its one-hot label mixed in the same shares.

Every random choice of a batch (whether it is mixed, MixUp or CutMix, the shares, the partners, the boxes) is a
stateless draw from (seed, epoch, batch index), as the epoch's order is from (seed, epoch): a run resumed at epoch
k mixes its batches exactly as an uninterrupted run did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..spec.data_section import Augment


@dataclass
class Draw:
    """One batch's mixing, as tensors."""

    mixed: Any  # bool: the batch is mixed at all (data.augment.prob)
    cut: Any  # bool: CutMix, else MixUp
    share: Any  # (batch,) float32: each image's own share of the mix, Beta(alpha, alpha)
    partner: Any  # (batch,) int32: the image of the batch mixed into each
    box: Any  # (batch, 4) int32: CutMix's pasted box, [top, bottom) x [left, right), clipped to the image


def draw(augment: Augment, key, batch, height: int, width: int) -> Draw:
    """The mixing of a batch of `batch` images of height x width, from the stateless seed `key` (shape [2])."""
    from ..backend import tf

    keys = tf.unstack(tf.random.experimental.stateless_split(key, 6))
    mixed = tf.random.stateless_uniform([], keys[0]) < augment.prob
    if augment.mixup and augment.cutmix:  # one of them per batch, as timm does
        cut = tf.random.stateless_uniform([], keys[1]) < 0.5
    else:
        cut = tf.constant(bool(augment.cutmix))
    alpha = tf.where(cut, tf.constant(augment.cutmix, tf.float64), tf.constant(augment.mixup, tf.float64))
    gammas = [tf.random.stateless_gamma([batch], k, alpha, dtype=tf.float64) for k in keys[2:4]]
    share = tf.cast(tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1]), tf.float32)  # Beta(alpha, alpha)
    partner = tf.argsort(tf.random.stateless_uniform([batch], keys[4]))
    # CutMix's box: sides sqrt(1 - share) of the image's, centred on a uniform pixel, clipped to the image
    sides = tf.constant([height, width], tf.float32)
    size = tf.cast(tf.sqrt(1 - share)[:, None] * sides, tf.int32)
    centre = tf.cast(tf.random.stateless_uniform([batch, 2], keys[5]) * sides, tf.int32)
    start = tf.clip_by_value(centre - size // 2, 0, [height, width])
    end = tf.clip_by_value(centre - size // 2 + size, 0, [height, width])
    box = tf.stack([start[:, 0], end[:, 0], start[:, 1], end[:, 1]], axis=1)
    return Draw(mixed, cut, share, partner, box)


def apply(x, y, mix: Draw):
    """Images `x` (batch, height, width[, channels]) and one-hot labels `y` mixed as `mix` says: MixUp blends each
    image with its partner in its share; CutMix pastes the partner's box, and the share is the area left."""
    from ..backend import tf

    height, width = x.shape[1], x.shape[2]
    other_x, other_y = tf.gather(x, mix.partner), tf.gather(y, mix.partner)
    top, bottom, left, right = (mix.box[:, i, None, None] for i in range(4))
    rows, cols = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (batch, height, width)
    kept = 1 - tf.cast((mix.box[:, 1] - mix.box[:, 0]) * (mix.box[:, 3] - mix.box[:, 2]), tf.float32) / (height * width)
    pixel_axes = [1] * (x.shape.rank - 1)
    blend = tf.reshape(mix.share, [-1, *pixel_axes])
    inside = inside if x.shape.rank == 3 else inside[..., None]
    mixed_x = tf.where(mix.cut, tf.where(inside, other_x, x), blend * x + (1 - blend) * other_x)
    share = tf.where(mix.cut, kept, mix.share)[:, None]
    mixed_y = share * y + (1 - share) * other_y
    return tf.where(mix.mixed, mixed_x, x), tf.where(mix.mixed, mixed_y, y)


def batch_key(seed: int, epoch, step):
    """The stateless seed of batch `step` of epoch `epoch`."""
    from ..backend import tf

    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(key, step)


def mixer(augment: Augment, seed: int, steps: int) -> Callable:
    """(global batch index, (x, y)) -> (x, y) mixed, for training batches of `steps` batches per epoch counted
    from epoch 0 (Dataset.enumerate(start=first_epoch * steps))."""
    from ..backend import tf

    def mix(index, batch):
        x, y = batch
        key = batch_key(seed, index // steps, index % steps)
        return apply(x, y, draw(augment, key, tf.shape(x)[0], x.shape[1], x.shape[2]))

    return mix
