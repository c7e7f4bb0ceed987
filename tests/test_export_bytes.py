"""The SavedModel's second signature, serving_bytes (issue 27): encoded PNG, JPEG, GIF and BMP files decoded
inside the graph (deploy/decoding.py) to the very pixels data/images.py decodes uploads to with Pillow, so a
stock TensorFlow gives the probabilities of the Python path; bad files raise a TensorFlow error."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_keras.data.images import MAX_PIXELS, decode_image
from mnist_keras.data.sources import BUNDLED

# A stock TensorFlow, without this project or Keras: serving_bytes of each file in argv, then the errors.
STOCK = """
import json, sys
import tensorflow as tf

signature = tf.saved_model.load(sys.argv[1]).signatures["serving_bytes"]
(spec,) = signature.structured_input_signature[1].values()
files = [open(path, "rb").read() for path in sys.argv[2:]]
answer = {"input": [spec.name, spec.dtype.name, spec.shape.as_list()], "outputs": list(signature.structured_outputs),
          "probabilities": signature(image_bytes=tf.constant(files))["probabilities"].numpy().tolist(), "errors": []}
huge = bytearray(files[0])
huge[16:24] = (50_000).to_bytes(4, "big") * 2  # a PNG header declaring 50000 x 50000 pixels
for bad in (b"not an image", files[0][:80], bytes(huge)):
    try:
        signature(image_bytes=tf.constant([files[0], bad]))
        answer["errors"].append(None)
    except tf.errors.InvalidArgumentError as err:
        answer["errors"].append(err.message.splitlines()[0])
answer["after"] = signature(image_bytes=tf.constant(files[:1]))["probabilities"].numpy().tolist()
answer["project"] = sorted(name for name in sys.modules if name.startswith("mnist_keras"))
print(json.dumps(answer))
"""


def encoded(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def digit_files():
    """{name: file bytes}: test digits of the bundled sample as real PNG and JPEG files, light on dark and dark on
    light, gray, RGB and RGBA (ink as alpha over transparency), 28x28 and other sizes."""
    with np.load(BUNDLED) as sample:
        digits = sample["x_test"][:24]
    files = {}
    for i, digit in enumerate(digits):
        side = (28, 20, 56, 90)[i % 4]
        image = Image.fromarray(digit).resize((side, side + 10 * (i % 3)), Image.Resampling.BICUBIC)
        dark_ink = Image.fromarray(255 - np.asarray(image))
        ink = np.zeros((*np.asarray(image).shape, 4), np.uint8)
        ink[..., 3] = np.asarray(image)  # black ink, opaque where the digit is, transparent elsewhere
        files[f"{i}-gray.png"] = encoded(image if i % 2 else dark_ink, "PNG")
        files[f"{i}-rgba.png"] = encoded(Image.fromarray(ink, "RGBA"), "PNG")
        files[f"{i}-gray.jpg"] = encoded(dark_ink if i % 2 else image, "JPEG", quality=75 + i)
        files[f"{i}-rgb.jpg"] = encoded(dark_ink.convert("RGB"), "JPEG", quality=90)
    return files


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    from mnist_keras.deploy.export import export_run

    return export_run(tiny_run, "savedmodel", out=tmp_path_factory.mktemp("bytes"))


@pytest.fixture(scope="module")
def stock(exported, tmp_path_factory):
    """The digit files, and what the stock TensorFlow process answered for them."""
    folder = tmp_path_factory.mktemp("files")
    files = digit_files()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-c", STOCK, str(exported.path), *(folder / name for name in files)],
                          capture_output=True, text=True, cwd=folder, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return files, json.loads(done.stdout.splitlines()[-1])


def test_serving_bytes_gives_the_python_paths_probabilities(tiny_run, stock):
    from mnist_keras.deploy.serving import run_deployable
    from mnist_keras.runs.run import open_run

    files, answer = stock
    assert answer["project"] == []  # the stock process never imported this project
    fit = open_run(tiny_run).upload_fit
    assert fit is None  # a gray digit model: uploads are decoded MNIST-like
    images = np.stack([decode_image(io.BytesIO(data), [28, 28, 1], fit) for data in files.values()])
    python = run_deployable(tiny_run).model.predict(images[..., np.newaxis], verbose=0)
    served = np.array(answer["probabilities"])
    for kind in (".png", ".jpg"):  # measured: the same top-1 and the same probabilities to the bit (0.0 apart)
        rows = [i for i, name in enumerate(files) if name.endswith(kind)]
        assert (served[rows].argmax(axis=1) == python[rows].argmax(axis=1)).all(), kind
        assert np.abs(served[rows] - python[rows]).max() < 1e-6, kind
    assert np.allclose(answer["after"], served[:1], atol=1e-6)  # still serving after the errors


def test_a_bad_file_is_a_tensorflow_error(stock):
    _, answer = stock
    unknown, truncated, huge = answer["errors"]
    assert "image_bytes: cannot be read as an image (PNG, JPEG, GIF or BMP): unknown format" in unknown
    assert truncated is not None
    assert f"image_bytes: too large; an image may have at most {MAX_PIXELS:,} pixels" in huge


def test_the_signature_and_the_record_name_the_bytes_input(exported, stock):
    from mnist_keras.runs.exports import Tensor, read_export_record

    _, answer = stock
    assert answer["input"] == ["image_bytes", "string", [None]] and answer["outputs"] == ["probabilities"]
    record = read_export_record(exported.folder)
    assert record.bytes_input == Tensor(name="image_bytes", dtype="string", shape=[None])
    assert record.input == Tensor(name="images", dtype="uint8", shape=[None, 28, 28, 1])


def pillow_files():
    """(kind, file bytes): random pixels in every mode decode_image handles, of sizes wider and taller than any
    target, small and large."""
    rng = np.random.default_rng(27)
    sizes = [(11, 37), (83, 29), (28, 28), (5, 120), (150, 61), (1, 1), (64, 64), (303, 3)]
    for i, (height, width) in enumerate(sizes):
        pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        pixels[..., 3] = np.where(rng.random((height, width)) < 0.3, 0, pixels[..., 3])
        rgb = Image.fromarray(pixels[..., :3])
        palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=(2, 16, 200)[i % 3])
        yield "rgba", encoded(Image.fromarray(pixels, "RGBA"), "PNG")
        yield "la", encoded(Image.fromarray(pixels[..., 2:], "LA"), "PNG")
        yield "gray", encoded(Image.fromarray(pixels[..., 0]), "PNG", transparency=int(pixels[0, 0, 0]))
        yield "1-bit", encoded(Image.fromarray(pixels[..., 1] > 127), "PNG")
        yield "16-bit", encoded(Image.fromarray(pixels[..., 0].astype(np.uint16) * 257 - pixels[..., 1]), "PNG")
        yield "palette", encoded(palette, "PNG", bits=(1, 4, 8)[i % 3], transparency=1)
        yield "jpeg", encoded(rgb, "JPEG", quality=80, subsampling=i % 3)
        yield "gray jpeg", encoded(rgb.convert("L"), "JPEG")
        yield "bmp", encoded(rgb, "BMP")
        yield "gif", encoded(palette, "GIF")  # opaque: TensorFlow decodes a GIF's transparency as black


@pytest.mark.parametrize("shape, fit", [([28, 28, 1], None), ([32, 24, 3], "stretch"), ([24, 32, 3], "crop"),
                                        ([32, 24, 3], "pad"), ([20, 30, 1], "crop"), ([30, 20, 1], "pad")])
def test_the_graph_decodes_to_pillows_pixels(shape, fit):
    """decode_images in a graph, as the SavedModel runs it, against decode_image, pixel for pixel: colour and
    gray models, every fit, images shrunk and enlarged in either direction."""
    from mnist_keras.backend import tf
    from mnist_keras.deploy.decoding import decode_images

    kinds, files = zip(*pillow_files())
    decoded = tf.function(lambda data: decode_images(data, shape, fit))(tf.constant(files)).numpy()
    for kind, data, pixels in zip(kinds, files, decoded):
        np.testing.assert_array_equal(pixels, decode_image(io.BytesIO(data), shape, fit).reshape(shape), kind)
