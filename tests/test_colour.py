"""Gray data into a colour model and back (issue 23): data.image_shape's channels choose gray or RGB for every source
(MNIST, IDX, .npz, the bundled sample), as Keras' color_mode does, and arrays reach its height and width as image
files do (data.preprocess.fit, the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import in_process as cli  # the commands in this process: no TensorFlow import each
from mnist_keras.data import load_arrays, make_pipelines, sources
from mnist_keras.data import loading
from mnist_keras.data.images import image_array
from mnist_keras.errors import UserError
from mnist_keras.spec import Data, Spec

RED, GREEN, BLUE, GRAY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (90, 90, 90)


def test_a_colour_backbone_trains_on_the_bundled_mnist_without_a_circle(tmp_path):
    """validate names the image_shape to set (at the backbone's line); with it, fit trains 1 epoch on MNIST."""
    spec = tmp_path / "mobilenet.yaml"
    text = ("name: mobilenet\n"
            "data: {source: bundled, max_train: 64, validation: 16, batch_size: 32}\n"
            "model:\n"
            "  layers:\n"
            "    - backbone: {name: MobileNetV2, weights: none}\n"
            "    - dense: 10\n"
            "train: {epochs: 1, tensorboard: {enabled: false}}\n")
    spec.write_text(text)
    gray = cli("validate", str(spec), cwd=tmp_path)
    assert gray.returncode == 2
    assert gray.stderr == (f"error: {spec}:5:7: model.layers[0].backbone: MobileNetV2 takes RGB images (3 channels), "
                           "but the data gives 1; set data.image_shape to [32, 32, 3] (every source is read as that: "
                           "gray images replicated to RGB, resized by data.preprocess.fit)\n")
    spec.write_text(text.replace("source: bundled,", "source: bundled, image_shape: [32, 32, 3],"))
    done = cli("fit", str(spec), "--runs", "runs", cwd=tmp_path)  # validates first
    assert done.returncode == 0, done.stderr
    assert "note: the bundled MNIST sample: 28x28 gray images made 32x32 RGB for data.image_shape [32, 32, 3]: " \
           "gray replicated to RGB, resized by data.preprocess.fit (stretch)" in done.stderr
    assert "mnist_sample.npz" not in done.stdout + done.stderr
    assert "48 train / 16 validation / 2,000 test images" in done.stdout
    metrics = json.loads(next((tmp_path / "runs" / "mobilenet").glob("*/metrics.json")).read_text())
    assert metrics["data"]["converted"] == {"from": [28, 28, 1], "to": [32, 32, 3], "fit": "stretch"}


def test_a_channel_count_mnist_cannot_take_is_refused_at_the_spec_line(tmp_path):
    spec = tmp_path / "four.yaml"
    spec.write_text("name: four\ndata:\n  image_shape: [28, 28, 4]\nmodel: {layers: [flatten, {dense: 10}]}\n")
    done = cli("validate", str(spec), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == (
        f"error: {spec}:3:3: data.image_shape: mnist is read as gray (1 channel) or RGB (3), not 4 channels; "
        "set data.image_shape: [28, 28, 1] or [28, 28, 3]\n")


def colours(*pixels, side: int = 4) -> np.ndarray:
    """One side x side RGB image per colour."""
    return np.array([np.full((side, side, 3), p, np.uint8) for p in pixels])


def write_npz(path: Path, x_train: np.ndarray, x_test: np.ndarray) -> Path:
    np.savez(path, x_train=x_train, y_train=np.arange(len(x_train)) % 10, x_test=x_test,
             y_test=np.arange(len(x_test)) % 10)
    return path


def test_rgb_npz_into_a_gray_model_by_luma_as_pillow(tmp_path):
    x = colours(RED, GREEN, BLUE, GRAY, (10, 200, 60))
    path = write_npz(tmp_path / "rgb.npz", x, x[:2])
    notes = []
    arrays = load_arrays(Data(dataset=str(path), image_shape=[4, 4, 1]), notify=notes.append)
    assert arrays.x_train.shape == (5, 4, 4, 1) and arrays.x_test.shape == (2, 4, 4, 1)
    assert arrays.x_train[:, 0, 0, 0].tolist() == [76, 150, 29, 90, 127]  # ITU-R 601-2: .299 R + .587 G + .114 B
    pillow = [np.asarray(Image.fromarray(image).convert("L")) for image in x]
    assert (arrays.x_train[..., 0] == pillow).all()
    assert notes == [f"note: {path}: 4x4 RGB images made 4x4 gray for data.image_shape [4, 4, 1]: RGB made gray "
                     "(ITU-R 601-2 luma)"]
    spec = Spec.model_validate({"data": {"dataset": str(path), "image_shape": [4, 4, 1], "validation": 0},
                                "model": {"layers": ["flatten", {"dense": 10}]}})
    assert make_pipelines(spec, arrays).input_shape == (4, 4, 1)


def test_gray_replicated_to_rgb_exactly(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    for x in (gray, gray[..., np.newaxis]):  # (N, H, W) and (N, H, W, 1)
        arrays = load_arrays(Data(dataset=str(write_npz(tmp_path / "gray.npz", x, x)), image_shape=[28, 28, 3]))
        assert arrays.x_train.shape == (6, 28, 28, 3)
        assert all((arrays.x_train[..., c] == gray).all() for c in range(3))


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
def test_arrays_are_fitted_as_image_files_are(tmp_path, fit):
    """An array of another size reaches image_shape by data.preprocess.fit exactly as the same image as a file."""
    wide = np.random.default_rng(1).integers(0, 256, (3, 20, 36), dtype=np.uint8)
    path = write_npz(tmp_path / "wide.npz", wide, wide)
    for shape in ([28, 28], [28, 28, 1], [32, 32, 3]):
        arrays = load_arrays(Data(dataset=str(path), image_shape=shape, preprocess={"fit": fit}))
        for i, image in enumerate(wide):
            Image.fromarray(image).save(tmp_path / f"{i}.png")
            assert (arrays.x_test[i] == image_array(str(tmp_path / f"{i}.png"), shape, fit)).all(), (shape, i)


def test_image_files_are_made_gray_by_luma_as_the_streaming_decoder_does(tmp_path):
    Image.fromarray(colours(GREEN)[0]).save(tmp_path / "green.png")
    assert (image_array(str(tmp_path / "green.png"), [4, 4, 1], "stretch") == 150).all()  # was 85, the mean


def test_channels_that_cannot_be_converted_and_the_memory_cap(tmp_path, monkeypatch):
    two = np.zeros((4, 8, 8, 2), np.uint8)
    path = write_npz(tmp_path / "two.npz", two, two)
    with pytest.raises(UserError) as caught:
        load_arrays(Data(dataset=str(path), image_shape=[8, 8, 1]))
    assert caught.value.messages == [f"{path}: x_train: images have 2 channels, but data.image_shape [8, 8, 1] asks "
                                     "for 1; images are converted between 1 (gray) and 3 (RGB) channels only; set "
                                     "data.image_shape: [8, 8, 2]"]
    assert load_arrays(Data(dataset=str(path), image_shape=[8, 8, 2])).x_train.shape == (4, 8, 8, 2)  # as it is
    monkeypatch.setattr(loading, "MAX_BYTES", 10_000)
    with pytest.raises(UserError, match="data.image_shape: \\[32, 32, 3\\] makes 36,864,000 bytes of images from the "
                                        "bundled MNIST sample, over the 10,000-byte limit"):
        load_arrays(Data(source="bundled", image_shape=[32, 32, 3]))


def test_mnist_idx_files_into_a_colour_model(tmp_path):
    from test_data import small, write_folder

    folder = write_folder(tmp_path / "idx", small())
    arrays = load_arrays(Data(dataset=str(folder), image_shape=[32, 32, 3]))
    assert arrays.x_train.shape == (50, 32, 32, 3) and arrays.x_test.shape == (20, 32, 32, 3)
    assert sources.channels(arrays.x_train.shape[1:]) == 3
