"""Pipelines that stream image files from disk: decoding, fit, cache choices, errors, exact resume, training, memory."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from mnist_keras.data import make_pipelines
from mnist_keras.spec import Spec
from test_data import MODEL, as_arrays, indices, small

sys.path.insert(0, str(ROOT / "benchmarks"))
from image_pipeline import spec_of  # noqa: E402


@dataclass
class ImageList:  # as mnist_keras.data.folders.ImageList: one split as files on disk
    paths: list[str]
    labels: np.ndarray


@dataclass
class Files:  # as mnist_keras.data.folders.Files
    train: ImageList
    validation: ImageList | None
    test: ImageList
    class_names: list[str]
    provenance: dict


def write_images(folder: Path, images: np.ndarray, suffix: str = ".png") -> list[str]:
    """Each image (N, H, W[, C]) as a file in `folder`; their absolute paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"{i:05d}{suffix}") for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path, quality=95) if suffix == ".jpg" else Image.fromarray(image).save(path)
    return paths


def as_files(folder: Path, arrays: dict, validation: dict | None = None) -> Files:
    """`arrays` (as test_data.small gives) written as PNG files: the same data set, streamed."""
    splits = {split: ImageList(write_images(folder / split, arrays[f"x_{split}"]), arrays[f"y_{split}"])
              for split in ("train", "test")}
    return Files(splits["train"], validation, splits["test"], [str(c) for c in range(10)], {})


def make_spec(epochs=3, **data) -> Spec:
    return spec_of({"data": data, "model": MODEL, "train": {"epochs": epochs}})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    return as_files(tmp_path_factory.mktemp("png"), small())


def test_every_cache_choice_gives_the_batches_of_the_arrays(files, tmp_path):
    data = dict(batch_size=16, validation=10, preprocess={"normalize": {"mean": 0.5, "std": 0.25}})
    expected = make_pipelines(make_spec(**data), as_arrays(small()))
    for cache in ("memory", "disk", "none", "disk", True, False):  # the second disk run reads the cache
        pipes = make_pipelines(make_spec(**data, cache=cache), files, cache_dir=str(tmp_path / "cache"))
        assert (pipes.n_train, pipes.n_val, pipes.n_test, pipes.steps_per_epoch) == (40, 10, 20, 3)
        for name in ("train", "validation", "test"):
            got, want = getattr(pipes, name), getattr(expected, name)
            for (x, y), (x0, y0) in zip(got, want, strict=True):
                np.testing.assert_array_equal(x.numpy(), x0.numpy())
                np.testing.assert_array_equal(y.numpy(), y0.numpy())
    cached, = (tmp_path / "cache").glob("train-*")
    assert len(list(cached.glob("*.u8"))) == 40 and not list(cached.glob("*.partial"))


def test_disk_cache_needs_a_folder(files):
    from mnist_keras.errors import UserError

    with pytest.raises(UserError, match="data.cache: disk needs a folder"):
        make_pipelines(make_spec(cache="disk"), files)


def test_a_given_validation_list_is_used_whole(files):
    spec = make_spec(batch_size=16, max_train=30, preprocess={"scale": 1.0})
    pipes = make_pipelines(spec, Files(files.train, files.test, files.test, [], {}))
    assert (pipes.n_train, pipes.n_val) == (30, 20)
    assert np.concatenate([indices(x) for x, _ in pipes.validation]).tolist() == list(range(20))


def test_a_file_that_fails_to_decode_is_named(files, tmp_path):
    from mnist_keras.backend import tf
    from mnist_keras.errors import UserError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    broken = Files(ImageList(files.train.paths[:20] + [str(bad)] + files.train.paths[21:], files.train.labels),
                   None, files.test, [], {})
    with pytest.raises(UserError, match=f"{bad}: cannot be read as an image"):  # decoded in make_pipelines
        make_pipelines(make_spec(cache="memory", validation=0), broken)
    last = Files(ImageList(files.train.paths[:-1] + [str(bad)], files.train.labels), None, files.test, [], {})
    for data, shuffle in ((broken, "all"), (last, 0)):  # decoded as the batches are drawn, the very last too
        pipes = make_pipelines(make_spec(validation=0, shuffle=shuffle, cache="none"), data)
        with pytest.raises(tf.errors.InvalidArgumentError, match="an image file failed to decode"):
            list(pipes.train)
        assert pipes.failure().startswith(f"{bad}: cannot be read as an image (PNG, JPEG, GIF or BMP)")


def decoded(tmp_path, image: np.ndarray, shape, fit="stretch", suffix=".png") -> np.ndarray:
    """`image` written as a file and read back as a streamed pipeline reads it."""
    from mnist_keras.backend import tf
    from mnist_keras.data.streaming import file_images

    path, = write_images(tmp_path, image[None], suffix)
    spec = make_spec(image_shape=list(shape), preprocess={"fit": fit} if fit != "stretch" else {})
    stream = file_images(spec, "train", [path], "none", None, print)
    return stream.batch(tf.constant([0])).numpy()[0]


@pytest.mark.parametrize("fit", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("shape", [(4, 4, 1), (4, 4, 3), (6, 3, 3)])
def test_streamed_images_are_decoded_as_in_memory(tmp_path, fit, shape):
    """One decoder for every cache choice: images.image_array, on gray, RGB, RGBA and JPEG files."""
    from mnist_keras.data.images import image_array

    rng = np.random.default_rng(5)
    for i, (size, suffix) in enumerate([((8, 4), ".png"), ((5, 9, 3), ".png"), ((7, 7, 4), ".png"),
                                        ((16, 12, 3), ".jpg")]):
        image = rng.integers(0, 256, size, dtype=np.uint8)
        got = decoded(tmp_path / str(i), image, shape, fit, suffix)
        want = image_array(str(next((tmp_path / str(i)).iterdir())), list(shape), fit)
        np.testing.assert_array_equal(got, want)


def test_a_run_resumed_on_a_streamed_folder_ends_like_an_uninterrupted_one(files, op_determinism):
    """3 epochs in one go vs 1, then 2 more on a fresh pipeline from start_epoch=1: the same batches and weights."""
    from mnist_keras.backend import keras
    from mnist_keras.model.build import build_model
    from mnist_keras.train.compile import compile_model

    spec = spec_of({"seed": 3, "data": {"batch_size": 8, "validation": 10, "cache": "none",
                                                    "preprocess": {"scale": 1 / 255}},
                                "model": {"layers": ["flatten", {"dense": {"units": 10}}]},
                                "train": {"epochs": 3, "optimizer": {"type": "sgd", "learning_rate": 0.1}},
                                "runtime": {"deterministic": True}})

    def fit(model, start, stop):
        """Train epochs start..stop on a fresh pipeline; the image indices of every batch seen."""
        pipes = make_pipelines(spec, files, start_epoch=start)
        steps = (stop - start) * pipes.steps_per_epoch
        seen = [indices(np.round(x.numpy() * 255)) for x, _ in pipes.train.take(steps)]
        model.fit(pipes.train, epochs=stop, initial_epoch=start, steps_per_epoch=pipes.steps_per_epoch, verbose=0,
                  validation_data=pipes.validation, shuffle=False)
        return seen

    def new_model():
        keras.utils.set_random_seed(spec.seed)
        model = build_model(spec)
        compile_model(model, spec, 5)
        return model

    whole, parts = new_model(), new_model()
    in_one_go = fit(whole, 0, 3)
    resumed = fit(parts, 0, 1) + fit(parts, 1, 3)
    assert len(in_one_go) == 15 and not np.array_equal(in_one_go[0], in_one_go[5])
    for a, b in zip(in_one_go, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole.get_weights(), parts.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def colour_patches(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Noisy patches of four colours (red, green, blue, yellow), of random sizes; label = colour."""
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    labels = rng.integers(0, 4, n)
    images = [np.clip(colours[c] + rng.normal(0, 40, (*rng.integers(20, 60, 2), 3)), 0, 255).astype(np.uint8)
              for c in labels]
    return images, labels


def test_a_colour_folder_trains_above_chance(tmp_path):
    from mnist_keras.backend import keras
    from mnist_keras.model.build import build_model
    from mnist_keras.train.compile import compile_model

    def split(name, n, seed):
        images, labels = colour_patches(n, seed)
        paths = [write_images(tmp_path / name / f"{i}", image[None], ".jpg" if i % 2 else ".png")[0]
                 for i, image in enumerate(images)]
        return ImageList(paths, labels)

    files = Files(split("train", 400, 1), None, split("test", 100, 2), ["red", "green", "blue", "yellow"], {})
    spec = spec_of({
        "data": {"image_shape": [24, 24, 3], "num_classes": 4, "batch_size": 32, "validation": 0, "cache": "none"},
        "model": {"layers": [{"conv2d": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
                             {"max_pool2d": {"pool_size": 4}}, "flatten", {"dense": {"units": 4}}]},
        "train": {"epochs": 5, "optimizer": {"type": "adam", "learning_rate": 0.01}}})
    pipes = make_pipelines(spec, files)
    keras.utils.set_random_seed(0)
    model = build_model(spec)
    compile_model(model, spec, pipes.steps_per_epoch)
    model.fit(pipes.train, epochs=5, steps_per_epoch=pipes.steps_per_epoch, verbose=0, shuffle=False)
    assert model.evaluate(pipes.test, verbose=0, return_dict=True)["accuracy"] > 0.8  # chance: 0.25


def test_streaming_memory_stays_flat():
    """Peak RSS of one epoch over 3,000 vs 250 images (96x96 RGB PNG, cache: none) differs by far less than the
    76 MB that 2,750 more decoded images take as uint8 (304 MB as float32; benchmarks/image_pipeline.py rss, run
    side by side). Between runs it moves by up to 25 MB."""
    runs = [subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "image_pipeline.py"), "rss", str(n)],
                             stdout=subprocess.PIPE, text=True) for n in (250, 3000)]
    small_set, large_set = (int(run.communicate()[0].split("peak RSS ")[1].split(" MB")[0]) for run in runs)
    assert large_set - small_set < 40, (small_set, large_set)
