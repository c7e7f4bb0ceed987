"""Image files (PNG, JPEG, GIF, BMP) as arrays the model takes."""

from __future__ import annotations

import numpy as np

from ..errors import UserError


def read_images(files: list[str], height: int, width: int) -> np.ndarray:
    """Image files as MNIST-like uint8 arrays (N, height, width): gray, light digit on a dark background.

    Colour is converted to gray, transparency is laid over white, the whole image is resized to
    height x width, and an image whose mean is above mid-gray (dark ink on light paper) is inverted.
    """
    from ..backend import tf
    out = []
    for file in files:
        try:
            image = tf.io.decode_image(tf.io.read_file(file), expand_animations=False).numpy().astype("float32")
        except (tf.errors.OpError, ValueError) as err:
            message = getattr(err, "message", str(err)).splitlines()[0]
            raise UserError(f"{file}: cannot be read as an image (PNG, JPEG, GIF or BMP): {message}") from None
        if image.shape[-1] in (2, 4):  # alpha: lay over white
            alpha = image[..., -1:] / 255
            image = image[..., :-1] * alpha + 255 * (1 - alpha)
        gray = image.mean(axis=-1, keepdims=True)
        small = tf.image.resize(gray, (height, width), method="area", antialias=True).numpy()[..., 0]
        if small.mean() > 127.5:
            small = 255 - small
        out.append(np.clip(small.round(), 0, 255).astype("uint8"))
    return np.stack(out)
