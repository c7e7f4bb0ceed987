"""Encoded image files decoded by TensorFlow ops as data/images.py decodes uploads with Pillow, for the
SavedModel's `serving_bytes` signature: the same four formats, the same size limit (read from the header,
before decoding), and the same pixels.

Pillow's arithmetic is reproduced: 16-bit gray PNGs scaled by 1/257, other 16-bit samples cut to their high
byte, transparency laid over white with Pillow's rounding, ITU-R 601-2 luma in 16-bit fixed point, and its
resampling (libImaging/Resample.c): coefficients in double precision, two passes in Pillow's order, each
rounded to 8 bits through 22-bit fixed-point weights for RGB and kept float32 for gray ("F"). JPEGs use the
accurate integer DCT, as Pillow's libjpeg does. tests/test_export_bytes.py checks the pixels are Pillow's to
the bit. What TensorFlow's decoders do not give: a GIF's transparency (its transparent pixels come out black,
Pillow lays them over white).
"""

from __future__ import annotations

import PIL

from ..backend import tf
from ..data.images import FORMATS, INVERT_ABOVE, MAX_PIXELS

PNG, JPEG, GIFS, BMP = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", (b"GIF87a", b"GIF89a"), b"BM"  # Pillow's checks
LUMA = (19595, 38470, 7471)  # Pillow's convert("L"): (R, G, B) weights summing to 2**16
PRECISION = 2.0**22  # Pillow's fixed point for 8-bit resampling (PRECISION_BITS)
PILLOW = tuple(int(part) for part in PIL.__version__.split(".")[:2])  # its resize's pass order changed in 12.2, 13


def decode_images(image_bytes, image_shape, fit: str | None):
    """uint8 images [N, H, W, C] of a string tensor [N] of encoded files, each as data.images.decode_image
    decodes an upload: fitted by `fit` (stretch, crop, pad), or MNIST-like without one."""
    shape = list(image_shape)
    return tf.map_fn(lambda data: _decode(data, shape, fit), image_bytes,
                     fn_output_signature=tf.TensorSpec(shape, tf.uint8))


def _decode(data, shape: list[int], fit: str | None):
    """One encoded file as uint8 pixels of `shape`, as decode_image makes them."""
    rgb, deep = _decoded(data)
    height, width, channels = shape
    if fit is None:  # images._mnist_like
        small = _resized(_gray(rgb, deep), height, width, _whole(rgb), BOX, eight_bit=False)
        pixels = tf.where(tf.reduce_mean(tf.cast(small, tf.float64)) > INVERT_ABOVE, 255 - small, small)
    else:  # images.fitted_pixels: RGB for three channels unless 16-bit gray, else gray, repeated to C
        def gray():
            return tf.repeat(_fitted(_gray(rgb, deep), height, width, fit, eight_bit=False), channels, axis=-1)

        pixels = tf.cond(deep, gray, lambda: _fitted(rgb, height, width, fit, eight_bit=True)) \
            if channels == 3 else gray()
    return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8), shape)


def _decoded(data):
    """(pixels, deep) of one file: float32 [h, w, 3] RGB laid over white, or for a 16-bit gray PNG (`deep`)
    its gray / 257; an InvalidArgumentError for another format, bad data or over MAX_PIXELS pixels."""
    def start(size):
        return tf.strings.substr(data, 0, size)

    def sides(offset, dtype, little_endian=True):  # the header's (width, height) at `offset`
        return tf.io.decode_raw(tf.strings.substr(data, offset, 2 * dtype.size), dtype, little_endian)

    def as_rgb(decode, size):  # a format decoded to 8-bit RGB, without transparency
        return lambda: (_within_limit(size(), decode), tf.constant(False))

    def gif_or_bmp():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    def jpeg():
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    def unknown():
        refused = tf.debugging.Assert(False, [f"image_bytes: cannot be read as an image "
                                              f"({', '.join(FORMATS[:-1])} or {FORMATS[-1]}): unknown format"])
        with tf.control_dependencies([refused]):
            return tf.zeros([0, 0, 3]), tf.constant(False)

    return tf.case([
        (start(8) == PNG, lambda: _png(data, sides(16, tf.int32, little_endian=False))),
        (start(3) == JPEG, as_rgb(jpeg, lambda: tf.image.extract_jpeg_shape(data)[:2])),
        ((start(6) == GIFS[0]) | (start(6) == GIFS[1]), as_rgb(gif_or_bmp, lambda: sides(6, tf.uint16))),
        (start(2) == BMP, as_rgb(gif_or_bmp, lambda: sides(18, tf.int32)))], default=unknown)


def _within_limit(size, decode):
    """`decode()` as float32, once the header's (width, height) `size` is within MAX_PIXELS."""
    pixels = tf.reduce_prod(tf.abs(tf.cast(size, tf.int64)))
    check = tf.debugging.assert_less_equal(pixels, tf.constant(MAX_PIXELS, tf.int64), message=(
        f"image_bytes: too large; an image may have at most {MAX_PIXELS:,} pixels (40 megapixels)"))
    with tf.control_dependencies([check]):
        return tf.cast(decode(), tf.float32)


def _png(data, size):
    """A PNG as Pillow reads it: 16-bit gray (colour type 0) as its value / 257 and opaque; anything else
    as the high byte of each 16-bit sample, its transparency (alpha or tRNS) laid over white."""
    header = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 24, 2), tf.uint8), tf.float32)
    depth, colour = header[0], header[1]
    samples = _within_limit(size, lambda: tf.io.decode_png(data, channels=4, dtype=tf.uint16))
    colours, alpha = samples[..., :3], samples[..., 3:]
    filler = (depth < 8) & (alpha == (2**depth - 1) * 257)  # TensorFlow's alpha of an opaque 1, 2 or 4-bit PNG
    rgba = tf.concat([colours, tf.where(filler, 65535.0, alpha)], axis=-1)
    deep = (depth == 16) & (colour == 0)
    return tf.cond(deep, lambda: tf.cast(tf.cast(colours, tf.float64) * (1 / 257), tf.float32),
                   lambda: _over_white(tf.floor(rgba / 256))), deep


def _over_white(rgba):
    """RGBA (0..255) laid over white as Pillow's paste with the alpha as mask: 255 (255 - a) + c a, divided
    by 255 with Pillow's rounding (DIV255)."""
    colour, alpha = rgba[..., :3], rgba[..., 3:]
    blend = 255 * (255 - alpha) + colour * alpha + 128
    return tf.floor((tf.floor(blend / 256) + blend) / 256)


def _gray(rgb, deep):
    """float32 [h, w, 1]: Pillow's convert("L") of RGB, or a deep image's gray as it is."""
    luma = tf.floor((tf.tensordot(tf.cast(rgb, tf.float64), tf.constant(LUMA, tf.float64), 1) + 2**15) / 2**16)
    return tf.where(deep, rgb[..., :1], tf.cast(luma, tf.float32)[..., tf.newaxis])


def _whole(pixels):
    """The box (x0, y0, x1, y1) of the whole image."""
    height, width = tf.unstack(tf.cast(tf.shape(pixels)[:2], tf.float64))
    return 0.0, 0.0, width, height


def _fitted(pixels, height: int, width: int, fit: str, eight_bit: bool):
    """images._fitted: stretched, cropped to the centre or padded with black to [height, width], bilinear."""
    _, _, image_width, image_height = box = _whole(pixels)
    if fit == "crop":
        scale = tf.maximum(width / image_width, height / image_height)
        w, h = tf.minimum(image_width, width / scale), tf.minimum(image_height, height / scale)
        box = ((image_width - w) / 2, (image_height - h) / 2, (image_width + w) / 2, (image_height + h) / 2)
    elif fit == "pad":
        scale = tf.minimum(width / image_width, height / image_height)
        w, h = (tf.cast(tf.maximum(tf.round(side * scale), 1), tf.int32) for side in (image_width, image_height))
        small = _resized(pixels, h, w, box, BILINEAR, eight_bit)
        top, left = (height - h) // 2, (width - w) // 2
        return tf.pad(small, [[top, height - h - top], [left, width - w - left], [0, 0]])
    return _resized(pixels, height, width, box, BILINEAR, eight_bit)


def _box(position):
    return tf.cast((position > -0.5) & (position <= 0.5), tf.float64)


def _triangle(position):
    return tf.maximum(1 - tf.abs(position), 0.0)


BOX, BILINEAR = (_box, 0.5), (_triangle, 1.0)  # Pillow's filters (kernel, support)


def _resized(pixels, height, width, box, resample, eight_bit: bool):
    """Pillow's resize of the `box` of float32 pixels [h, w, c] to [height, width], across then down or, where
    the Pillow installed does (_down_first), down then across."""
    size = tf.shape(pixels)
    across = _weights(size[1], width, box[0], box[2], resample)
    down = _weights(size[0], height, box[1], box[3], resample)

    def across_first():
        return _pass(down, _pass(across, pixels, "xw,hwc->hxc", eight_bit), "yh,hxc->yxc", eight_bit)

    def down_first():
        return _pass(across, _pass(down, pixels, "yh,hwc->ywc", eight_bit), "xw,hwc->hxc", eight_bit)

    return tf.cond(_down_first(size, height, width), down_first, across_first)


def _down_first(size, height, width):
    """Whether Pillow resizes [h, w] to [height, width] down first: from 13 on when the height shrinks by more
    pixels than twice the width does, in 12.2 and 12.3 when it shrinks an image over 100 times taller than wide."""
    shrink = size[0] - height
    if PILLOW >= (13, 0):
        return (shrink > 0) & (shrink > 2 * (size[1] - width))
    return (shrink > 0) & (size[0] > 100 * size[1]) if PILLOW >= (12, 2) else tf.constant(False)


def _pass(weights, pixels, equation: str, eight_bit: bool):
    """One pass in double precision: 8-bit through fixed-point weights, rounded and clipped; else float32."""
    pixels = tf.cast(pixels, tf.float64)
    if not eight_bit:
        return tf.cast(tf.einsum(equation, weights, pixels), tf.float32)
    total = tf.einsum(equation, tf.floor(0.5 + weights * PRECISION), pixels)
    return tf.cast(tf.clip_by_value(tf.floor((total + PRECISION / 2) / PRECISION), 0, 255), tf.float32)


def _weights(size, out, start, stop, resample):
    """Pillow's coefficients (precompute_coeffs) as a float64 [out, size] matrix: output i weighs the inputs j
    of its window by kernel((j - centre_i + 0.5) / filterscale), each row normalized; the box's ends are
    float32, as there."""
    kernel, support = resample
    start, stop = tf.cast(start, tf.float32), tf.cast(stop, tf.float32)
    # DivNoNan, not /: Grappler turns a division by a constant into a product with its rounded reciprocal
    scale = tf.math.divide_no_nan(tf.cast(stop - start, tf.float64), tf.cast(out, tf.float64))
    filterscale = tf.maximum(scale, 1.0)
    centre = (tf.cast(start, tf.float64) + (tf.range(tf.cast(out, tf.float64)) + 0.5) * scale)[:, tf.newaxis]
    inputs = tf.range(tf.cast(size, tf.float64))[tf.newaxis]
    window = (inputs >= tf.floor(centre - support * filterscale + 0.5)) & \
        (inputs < tf.floor(centre + support * filterscale + 0.5))
    weights = tf.where(window, kernel((inputs - centre + 0.5) * (1 / filterscale)), 0.0)
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=1, keepdims=True))
