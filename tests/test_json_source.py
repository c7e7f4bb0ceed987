"""PaddlePaddle's mnist.json.gz as a data source (issue 23): its three splits, its pixel range mapped back to 0..255,
and hostile versions of it, each refused (exit 2) with one message naming the file. Files are written here, small."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_keras.cli import main
from mnist_keras.data import dataset_files, load_arrays, make_pipelines
from mnist_keras.spec import Data, Spec

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"train": 50, "validation": 20, "test": 20}
RANGES = {"[0, 1]": lambda u: u / 255, "[-1, 1]": lambda u: u / 127.5 - 1, "0..255": lambda u: u.astype(float)}


def pixels(n: int, seed: int) -> np.ndarray:
    """n uint8 images 28x28, every value 0..255 present in each split."""
    u = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    u.reshape(-1)[:256] = np.arange(256)
    return u


def paddle_layout(scale=RANGES["[-1, 1]"]) -> tuple[list, dict]:
    """The document of mnist.json.gz: [[images, labels]] * 3, each image a flat list of 784 floats; and its uint8s."""
    truth = {split: (pixels(n, i), np.arange(n) % 10) for i, (split, n) in enumerate(SIZES.items())}
    return [[scale(u).reshape(len(u), -1).tolist(), y.tolist()] for u, y in truth.values()], truth


def write(path: Path, document=None, raw: bytes | None = None) -> Path:
    text = raw if raw is not None else json.dumps(document if document is not None else paddle_layout()[0]).encode()
    path.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)
    return path


@pytest.mark.parametrize("scale", RANGES)
def test_three_splits_and_the_pixel_range_mapped_back_to_bytes(tmp_path, scale):
    document, truth = paddle_layout(RANGES[scale])
    notes = []
    arrays = load_arrays(Data(dataset=str(write(tmp_path / "mnist.json.gz", document))), notify=notes.append)
    for split, (x, y) in zip(SIZES, ((arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val),
                                     (arrays.x_test, arrays.y_test))):
        assert x.dtype == np.uint8 and (x == truth[split][0]).all() and (y == truth[split][1]).all(), split
    assert arrays.provenance["source"] == "json"
    assert arrays.provenance["counts"] == {"train": 50, "validation": 20, "test": 20}
    assert notes == [f"note: {tmp_path / 'mnist.json.gz'}: pixels in [{'-1' if '-' in scale else 0}, "
                     f"{255 if scale == '0..255' else 1}] mapped to 0..255; its own splits are used: 50 training, "
                     "20 validation, 20 test images (data.validation is ignored)"]


def test_its_validation_split_is_the_validation_set_whatever_data_validation_says(tmp_path):
    path = str(write(tmp_path / "mnist.json.gz"))
    for validation in (0.1, 0):
        spec = Spec.model_validate({"data": {"dataset": path, "validation": validation, "max_train": 30,
                                             "preprocess": {"scale": 1, "one_hot": False}, "shuffle": 0},
                                    "model": {"layers": ["flatten", {"dense": 10}]}})
        arrays = load_arrays(spec.data)
        pipes = make_pipelines(spec, arrays)
        assert (pipes.n_train, pipes.n_val, pipes.n_test) == (30, 20, 20)
        seen = np.concatenate([x for x, _ in pipes.validation])[..., 0]
        assert (seen == arrays.x_val).all()


def test_fit_and_data_info_through_the_command_line(tmp_path):
    write(tmp_path / "mnist.json.gz")
    spec = tmp_path / "paddle.yaml"
    spec.write_text("name: paddle\ndata: {dataset: mnist.json.gz, batch_size: 25}\n"
                    "model: {layers: [flatten, {dense: 10}]}\ntrain: {epochs: 1, tensorboard: {enabled: false}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "mnist_keras", "fit", str(spec), "--runs", str(tmp_path / "runs")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "its own splits are used: 50 training, 20 validation, 20 test images" in done.stderr
    assert "50 train / 20 validation / 20 test images" in done.stdout
    metrics = json.loads(next((tmp_path / "runs" / "paddle").glob("*/metrics.json")).read_text())
    assert metrics["data"]["counts"] == {"train": 50, "validation": 20, "test": 20}
    info = CliRunner().invoke(main, ["data", "info", "--dataset", str(tmp_path / "mnist.json.gz")])
    assert info.exit_code == 0, info.output
    assert "validation images uint8 (20, 28, 28)" in info.output
    assert "50 training, 20 validation (the file's own split), 20 test" in info.output


def _document(change) -> list:
    document = paddle_layout()[0]
    change(document)
    return document


def _set(split: int, part: int, index, value):
    def change(document):
        if index is None:
            document[split][part] = value
        else:
            document[split][part][index] = value
    return change


def _pixel(split: int, image: int, value):
    return lambda document: document[split][0][image].__setitem__(7, value)


GOOD = json.dumps(paddle_layout()[0]).encode()
HOSTILE = {  # name: (the file's bytes, JSON text to gzip, or a change of a good document; the message)
    "not gzip": (lambda: b"not gzip at all", "not a gzip file"),
    "truncated gzip": (lambda: gzip.compress(GOOD)[:1000], "corrupt or truncated gzip data"),
    "not JSON": (b"[[[0.5, 0.5", "not a JSON file"),
    "nested too deep": (b"[" * 100_000, "not a JSON file"),
    "an object": (b'{"train": []}', "holds an object; expected a list of three splits"),
    "two splits": (lambda document: document.pop(), "holds a list of 2 items; expected a list of three splits"),
    "a split not a pair": (lambda document: document[1].pop(), "the validation split is a list of 1 item; "
                           "expected \\[images, labels\\]"),
    "images not a list": (_set(0, 0, None, 3), "train images: a number; expected a list of images"),
    "an empty split": (_set(2, 0, None, []), "test images: a list of 0 items; expected a list of images"),
    "images nested 28x28": (_set(0, 0, 4, [[0.0] * 28] * 28), "train images: image 4 is a list of 28 items, but "
                            "image 0 has 784 numbers"),
    "ragged images": (_set(1, 0, 3, [0.0] * 783), "validation images: image 3 is a list of 783 items, but image 0 "
                      "has 784 numbers"),
    "a string in an image": (_pixel(0, 2, "0.5"), "train images: image 2 holds a string"),
    "a list in an image": (_pixel(2, 5, [1, 2]), "test images: image 5 holds a list of 2 items"),
    "NaN": (lambda document: document[0][0][9].__setitem__(3, float("nan")), "train images: image 9 holds NaN"),
    "infinity": (_pixel(1, 0, float("inf")), "validation images: image 0 holds NaN or infinity"),
    "pixels out of every range": (_pixel(0, 0, 300.0), "pixel values range over -1..300; expected \\[0, 1\\], "
                                  "\\[-1, 1\\] or 0..255"),
    "images not square": (lambda document: [image.pop() for split in document for image in split[0]],
                          "train images: images of 783 numbers are not square"),
    "labels out of range": (_set(2, 1, 0, 10), "test labels: labels range over 0..10, outside 0..9"),
    "negative label": (_set(0, 1, 1, -1), "train labels: labels range over -1..9, outside 0..9"),
    "labels not integers": (_set(1, 1, 0, 1.5), "validation labels: labels are float64 with shape \\(20,\\); "
                            "expected integers"),
    "labels one-hot": (_set(0, 1, None, [[1, 0]] * 50), "train labels: labels are int64 with shape \\(50, 2\\)"),
    "labels ragged": (_set(0, 1, None, [[1, 0], [1]]), "train labels: a list of 2 items; expected a list of "
                      "integer labels"),
    "labels missing": (lambda document: document[0][1].pop(), "train images: 50 images, but .* train labels has 49"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_json_files_exit_2_naming_the_file(tmp_path, case):
    body, message = HOSTILE[case]
    path = tmp_path / "mnist.json.gz"
    if callable(body) and not body.__code__.co_argcount:
        path.write_bytes(body())
    else:
        write(path, raw=body if isinstance(body, bytes) else json.dumps(_document(body)).encode())
    result = CliRunner().invoke(main, ["data", "info", "--dataset", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.output
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output


def test_a_gzip_bomb_and_too_many_numbers_are_refused_by_the_caps(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_files, "MAX_JSON_NUMBERS", 10_000)
    many = write(tmp_path / "many.json.gz")
    result = CliRunner().invoke(main, ["data", "info", "--dataset", str(many)])
    assert result.exit_code == 2 and f"error: {many}: over 10,000 numbers, the limit" in result.output
    bomb = write(tmp_path / "bomb.json.gz", raw=b" " * 5_000_000)  # 5 MB of spaces in 5 KB
    monkeypatch.setattr(dataset_files, "MAX_BYTES", 1_000_000)
    result = CliRunner().invoke(main, ["data", "info", "--dataset", str(bomb)])
    assert result.exit_code == 2 and f"error: {bomb}: decompresses to over 1,000,000 bytes" in result.output


def test_a_hostile_file_exits_2_from_a_real_process(tmp_path):
    path = write(tmp_path / "mnist.json.gz", _document(lambda document: document[2][0][0].__setitem__(0, None)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mnist_keras", "data", "check", "--dataset", str(path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == f"error: {path}: test images: image 0 holds null; each image is " \
                                                   "a flat list of numbers\n"
