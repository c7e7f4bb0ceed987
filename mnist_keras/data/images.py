"""Image files (PNG, JPEG, GIF, BMP) as arrays the model takes, decoded with Pillow (no TensorFlow).

Only regular files are opened, and an image is refused by its header, before decoding, when it
declares more than MAX_PIXELS pixels. One bad file does not stop the others: each gets a message.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager

import numpy as np

from ..errors import UserError, first_line
from .dataset_files import regular_file

MAX_PIXELS = 40_000_000  # 40 megapixels: a photo from a phone; a 50 KB PNG can declare 20000x20000
FORMATS = ("PNG", "JPEG", "GIF", "BMP")
INVERT_ABOVE = 127.5  # MNIST-like: an image whose mean gray is above this is dark ink on light paper, inverted


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


def read_images(files: list[str], image_shape: list[int], fit: str | None = None
                ) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 images of the files read, those files, one message per other file).

    With a `fit` (stretch, crop, pad), as image_array decodes images of a folder or CSV data set. Without,
    MNIST-like: gray (ITU-R 601-2 luma, as Pillow's convert("L")), transparency laid over white, the whole image
    resized by area averaging, and inverted when its mean is above mid-gray (dark ink on light paper),
    since MNIST digits are light on a dark background.
    """
    images, good, problems = [], [], []
    for file in files:
        found = check_image_files([file])
        if not found:
            try:
                images.append(decode_image(file, image_shape, fit))
                good.append(file)
            except UserError as err:
                found = err.messages
        problems.extend(found)
    shape = image_shape if fit else image_shape[:2]
    return np.array(images, np.uint8).reshape(-1, *shape), good, problems


def decoding_fit(data, source: str | None) -> str | None:
    """How to decode image files for a model trained on `data` read from `source` (the run record's): fitted by
    the spec's `fit` for image-file data sets and colour images, MNIST-like (None) for gray digit arrays."""
    colour = data.image_shape[2:] not in ([], [1])
    return data.preprocess.fit if colour or source in ("folders", "split-folders", "csv") else None


def decode_image(file, image_shape: list[int], fit: str | None = None) -> np.ndarray:
    """One image (a path, or a binary file object whose `name` messages quote) as read_images decodes it:
    fitted to `image_shape` by `fit`, or MNIST-like ([H, W]) without one."""
    return image_array(file, image_shape, fit) if fit else _mnist_like(file, *image_shape[:2])


def _mnist_like(file, height: int, width: int) -> np.ndarray:
    """One image file, decoded and made MNIST-like; a UserError when it is not an image or too large."""
    from PIL import Image

    small = np.asarray(_gray(load_image(file)).resize((width, height), Image.Resampling.BOX), np.float32)
    if small.mean() > INVERT_ABOVE:
        small = 255 - small
    return np.clip(small.round(), 0, 255).astype(np.uint8)


def load_image(file):
    """One image file (a path or a binary file object) decoded by Pillow (a GIF's first frame); a UserError when
    it is not an image or too large."""
    with _opened(file) as image:
        image.load()
        return image.copy()


def check_image(file, decode: bool = False) -> None:
    """A UserError, worded as load_image's, when `file` is not an image within MAX_PIXELS: by its header and
    Pillow's verify (cheap: no pixels decoded), or by decoding it whole."""
    with _opened(file) as image:
        image.load() if decode else image.verify()


@contextmanager
def _opened(file):
    """Pillow's image of `file`, its header read and its size checked against MAX_PIXELS before any pixel is
    decoded; what fails in the block (decoding) becomes the same UserError naming the file."""
    from PIL import Image, UnidentifiedImageError

    name = _name(file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file, formats=FORMATS) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{image.width}x{image.height} = {image.width * image.height:,}")
                yield image
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        pillows = re.search(r"\((\d+) pixels\)", str(err))  # Pillow's own check, at open: "Image size (N pixels)"
        declared = f"{int(pillows[1]):,}" if pillows else str(err) if str(err)[:1].isdigit() else \
            f"over {Image.MAX_IMAGE_PIXELS:,}"
        raise UserError(f"{name}: too large: {declared} pixels; an image may have at most {MAX_PIXELS:,} "
                        "(40 megapixels)") from None
    except UnidentifiedImageError:
        raise UserError(f"{name}: cannot be read as an image (PNG, JPEG, GIF or BMP): unknown format") from None
    except Exception as err:  # Pillow's decoders raise many kinds (OSError, SyntaxError, ValueError...) on bad data
        raise _unreadable(file, err) from None


def _name(file) -> str:
    """How messages name `file`: its path, or a file object's name."""
    return file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "the image")


def _unreadable(file, err: Exception) -> UserError:
    return UserError(f"{_name(file)}: cannot be read as an image (PNG, JPEG, GIF or BMP): {first_line(err)}")


def image_array(file, image_shape: list[int], fit: str) -> np.ndarray:
    """One image file as uint8 pixels of `image_shape`, as fitted_pixels makes its decoded image."""
    image = load_image(file)
    try:
        return fitted_pixels(image, image_shape, fit)
    except Exception as err:  # a mode Pillow decodes but cannot convert
        raise _unreadable(file, err) from None


def fitted_pixels(image, image_shape: list[int], fit: str) -> np.ndarray:
    """A Pillow image as uint8 pixels of `image_shape` ([H, W], [H, W, 1]: gray; [H, W, 3]: RGB), transparency
    laid over white, fitted to the size by `fit`: stretch, crop (the centre) or pad (with black)."""
    height, width = image_shape[:2]
    rgb = image_shape[2:] == [3] and not image.mode.startswith(("I", "F"))
    image = _over_white(image).convert("RGB") if rgb else _gray(image)
    pixels = np.asarray(_fitted(image, height, width, fit))
    if pixels.dtype != np.uint8:  # gray ("F"): rounded to bytes
        pixels = np.clip(pixels.round(), 0, 255).astype(np.uint8)
    if len(image_shape) == 3 and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., np.newaxis], image_shape[2], axis=-1)
    return pixels


def fitted_arrays(x: np.ndarray, image_shape: list[int], fit: str) -> np.ndarray:
    """uint8 images (N, H, W[, 1 or 3]) made `image_shape` as image files are (fitted_pixels): the channels
    choose gray or RGB (gray replicated, RGB to luma), and `fit` reaches the height and width."""
    from PIL import Image

    out = np.empty((len(x), *image_shape), np.uint8)
    for i, image in enumerate(x):
        out[i] = fitted_pixels(Image.fromarray(image[..., 0] if image.shape[2:] == (1,) else image), image_shape, fit)
    return out


def _fitted(image, height: int, width: int, fit: str):
    from PIL import Image

    resample = Image.Resampling.BILINEAR
    if fit == "crop":
        scale = max(width / image.width, height / image.height)
        w, h = min(image.width, width / scale), min(image.height, height / scale)  # no rounding below 0
        box = ((image.width - w) / 2, (image.height - h) / 2, (image.width + w) / 2, (image.height + h) / 2)
        return image.resize((width, height), resample, box=box)
    if fit == "pad":
        scale = min(width / image.width, height / image.height)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        canvas = Image.new(image.mode, (width, height))
        canvas.paste(image.resize((w, h), resample), ((width - w) // 2, (height - h) // 2))
        return canvas
    return image.resize((width, height), resample)


def _over_white(image):
    """A decoded Pillow image with its transparency, if any, laid over white."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        paper = Image.new("RGB", image.size, "white")
        paper.paste(image, mask=image.getchannel("A"))
        return paper
    return image


def _gray(image):
    """A decoded Pillow image as a float ("F") image of gray values in 0..255, transparency laid over white."""
    if image.mode.startswith("I"):  # 16-bit gray
        return image.convert("F").point(lambda v: v / 257)
    image = _over_white(image)
    if image.mode != "L":
        image = image.convert("RGB").convert("L")  # ITU-R 601-2 luma, as Keras' color_mode and streaming.py
    return image.convert("F")
