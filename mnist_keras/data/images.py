"""Image files (PNG, JPEG, GIF, BMP) as arrays the model takes, decoded with Pillow (no TensorFlow).

Only regular files are opened, and an image is refused by its header, before decoding, when it
declares more than MAX_PIXELS pixels. One bad file does not stop the others: each gets a message.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import UserError
from .sources import regular_file

MAX_PIXELS = 40_000_000  # 40 megapixels: a photo from a phone; a 50 KB PNG can declare 20000x20000
FORMATS = ("PNG", "JPEG", "GIF", "BMP")


def check_image_files(files: list[str]) -> list[str]:
    """One message per file that is missing, unreadable, empty or not a regular file, found with os.stat alone."""
    problems = []
    for file in files:
        try:
            if not regular_file(file).st_size:
                problems.append(f"{file}: an empty file (0 bytes), not an image")
            elif not os.access(file, os.R_OK):
                problems.append(f"{file}: cannot read: permission denied")
        except UserError as err:
            problems.extend(err.messages)
    return problems


def read_images(files: list[str], height: int, width: int) -> tuple[np.ndarray, list[str], list[str]]:
    """(MNIST-like uint8 images (N, height, width) of the files read, those files, one message per other file).

    MNIST-like: gray (the mean of the colour channels), transparency laid over white, the whole image
    resized to height x width by area averaging, and inverted when its mean is above mid-gray (dark ink
    on light paper), since MNIST digits are light on a dark background.
    """
    images, good, problems = [], [], []
    for file in files:
        found = check_image_files([file])
        if not found:
            try:
                images.append(_mnist_like(file, height, width))
                good.append(file)
            except UserError as err:
                found = err.messages
        problems.extend(found)
    return np.array(images, np.uint8).reshape(-1, height, width), good, problems


def _mnist_like(file: str, height: int, width: int) -> np.ndarray:
    """One image file, decoded and made MNIST-like; a UserError when it is not an image or too large."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file, formats=FORMATS) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{image.width}x{image.height} = {image.width * image.height:,}")
                image.load()
                gray = _gray(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        declared = str(err) if str(err)[0].isdigit() else f"over {Image.MAX_IMAGE_PIXELS:,}"  # Pillow's own check
        raise UserError(f"{file}: too large: {declared} pixels; an image may have at most {MAX_PIXELS:,} "
                        "(40 megapixels)") from None
    except UnidentifiedImageError:
        raise UserError(f"{file}: cannot be read as an image (PNG, JPEG, GIF or BMP): unknown format") from None
    except Exception as err:  # Pillow's decoders raise many kinds (OSError, SyntaxError, ValueError...) on bad data
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{file}: cannot be read as an image (PNG, JPEG, GIF or BMP): {detail}") from None
    small = np.asarray(gray.resize((width, height), Image.Resampling.BOX), np.float32)
    if small.mean() > 127.5:
        small = 255 - small
    return np.clip(small.round(), 0, 255).astype(np.uint8)


def _gray(image):
    """A decoded Pillow image as a float ("F") image of gray values in 0..255, transparency laid over white."""
    from PIL import Image

    if image.mode.startswith("I"):  # 16-bit gray
        return image.convert("F").point(lambda v: v / 257)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        paper = Image.new("RGB", image.size, "white")
        paper.paste(image, mask=image.getchannel("A"))
        image = paper
    if image.mode != "L":
        image = image.convert("RGB").convert("L", (1 / 3, 1 / 3, 1 / 3, 0))
    return image.convert("F")
