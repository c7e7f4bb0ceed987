"""Your own images: class folders, split folders and CSV lists of real images (MNIST digits written as PNG,
patches of scikit-learn's two sample photos), decoded gray or RGB, fitted, held out, checked and refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_keras.data import Arrays, Files, class_weights, load_arrays, load_data, load_files, make_pipelines, sources
from mnist_keras.cli.data import data_group as data_command
from mnist_keras.data.images import image_array
from mnist_keras.errors import UserError
from mnist_keras.spec import Data, Spec


def digits(root: Path, per_class: int = 8) -> Path:
    """`per_class` MNIST digits of each class from the bundled sample, as gray PNG files in class folders."""
    with np.load(sources.BUNDLED) as sample:
        x, y = sample["x_train"], sample["y_train"]
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
        for i in np.flatnonzero(y == label)[:per_class]:
            Image.fromarray(x[i]).save(root / str(label) / f"{i}.png")
    return root


def photos(root: Path, per_class: int = 12) -> Path:
    """Patches of china.jpg (class china) and flower.jpg (class flower), of odd sizes, as JPEG and PNG, one RGBA."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(per_class)
    for name, photo in zip(("china", "flower"), load_sample_images().images):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(20, 60, 2)
            top, left = rng.integers(0, 400, 2)
            patch = Image.fromarray(photo[top:top + h, left:left + w])
            if i == 0:
                patch.putalpha(128)
                patch.save(root / name / "rgba.png")
            else:
                patch.save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def data(dataset, **fields) -> Data:
    return Data.model_validate({"dataset": str(dataset), "num_classes": 10, "image_shape": [28, 28, 1], **fields})


def rgb(dataset, **fields) -> Data:
    return data(dataset, num_classes=2, image_shape=[16, 16, 3], **fields)


# ------------------------------------------------------------------------------------------ layouts


def test_class_folders_hold_out_test_and_validation_per_class(tmp_path):
    files = load_files(data(digits(tmp_path / "d"), test_split=0.25, validation=10), seed=1)
    assert files.class_names == [str(i) for i in range(10)]
    counts = files.provenance["counts"]
    assert list(counts) == ["train", "validation", "test"]
    assert all(n == 2 for n in counts["test"].values())  # 8 per class, a quarter of each held out
    assert sum(counts["validation"].values()) == 10 and sum(counts["train"].values()) == 50
    assert files.provenance["source"] == "folders"
    assert sorted(files.provenance["held_out"]["test"]) == sorted(
        str(Path(p).relative_to(tmp_path / "d")) for p in files.test.paths)
    assert files.train.paths == sorted(files.train.paths) and files.train.labels.dtype == np.int64
    for images in (files.train, files.validation, files.test):
        assert [Path(p).parent.name for p in images.paths] == [files.class_names[i] for i in images.labels]
    assert not set(files.train.paths) & set(files.test.paths)


def test_hold_out_is_reproducible_by_seed(tmp_path):
    spec = data(digits(tmp_path / "d"))
    first, again, other = (load_files(spec, seed=s).provenance["held_out"] for s in (7, 7, 8))
    assert first == again and first != other


def test_split_folders_and_the_validation_folder(tmp_path):
    root = tmp_path / "split"
    for split in ("train", "validation", "test"):
        photos(root / split, per_class=4 if split != "train" else 12)
    files = load_data(rgb(root, validation=0.1))
    assert isinstance(files, Files) and files.provenance["source"] == "split-folders"
    assert files.provenance["counts"]["validation"] == {"china": 4, "flower": 4}
    assert files.provenance["held_out"] == {}
    with pytest.raises(UserError, match="validation/ folder holds 8 images.*set data.validation: 8"):
        load_arrays(rgb(root, validation=0.1))
    arrays = load_arrays(rgb(root, validation=8))
    assert arrays.x_train.shape == (32, 16, 16, 3) and arrays.x_test.shape == (8, 16, 16, 3)
    assert arrays.class_names == ["china", "flower"] and list(arrays.y_train[-8:]) == [0] * 4 + [1] * 4


def test_csv_lists_paths_relative_to_it(tmp_path):
    photos(tmp_path / "p")
    lines = ["label,path,comment"] + [f"{p.parent.name},p/{p.parent.name}/{p.name},x"
                                     for p in sorted((tmp_path / "p").rglob("*.*"))]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n\n")
    files = load_files(rgb(tmp_path / "list.csv", validation=0))
    assert files.provenance["source"] == "csv" and files.validation is None
    assert files.class_names == ["china", "flower"] and len(files.train.paths) + len(files.test.paths) == 24
    assert all(Path(p).is_absolute() for p in files.train.paths)


def test_relative_dataset_paths_are_read_inside_data_dir(tmp_path):
    digits(tmp_path / "d")
    assert load_files(data("d"), str(tmp_path)).class_names[0] == "0"


def test_array_sources_are_unchanged_and_name_their_classes(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    arrays = load_data(Data(source="bundled"))
    assert isinstance(arrays, Arrays) and arrays.class_names == [str(i) for i in range(10)]
    assert sources.FASHION_NAMES[9] == "Ankle boot"


# ------------------------------------------------------------------------------- decoding


def test_colour_modes_and_transparency(tmp_path):
    photos(tmp_path / "p")
    assert load_arrays(rgb(tmp_path / "p", validation=0)).x_train.shape[1:] == (16, 16, 3)
    assert load_arrays(data(tmp_path / "p", num_classes=2, image_shape=[12, 10])).x_train.shape[1:] == (12, 10)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (5, 5), (0, 0, 0, 0)).save(clear)
    assert (image_array(str(clear), [4, 4, 3], "stretch") == 255).all()  # transparency laid over white
    gif = tmp_path / "two.gif"
    frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert (image_array(str(gif), [8, 8, 1], "stretch") == 0).all()  # the first frame
    gray = image_array(str(tmp_path / "p" / "china" / "1.jpg"), [8, 8, 1], "stretch")
    assert gray.shape == (8, 8, 1) and gray.std() > 0


@pytest.mark.parametrize("fit, columns", [("stretch", [255] * 4), ("crop", [255] * 4), ("pad", [0, 255, 255, 0])])
def test_fit_modes(tmp_path, fit, columns):
    """A white image twice as tall as wide, into a square: pad leaves black sides, stretch and crop fill it."""
    tall = tmp_path / "tall.png"
    Image.new("L", (10, 20), 255).save(tall)
    assert list(image_array(str(tall), [4, 4], fit)[2]) == columns


def test_crop_keeps_the_centre(tmp_path):
    wide = np.zeros((10, 30), np.uint8)
    wide[:, 10:20] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert image_array(str(tmp_path / "wide.png"), [4, 4], "crop").min() > 200  # the white centre (edges blend)
    assert image_array(str(tmp_path / "wide.png"), [4, 4], "stretch")[:, 0].max() < 10


def test_files_train_through_the_pipeline_with_imagenet_normalize(tmp_path):
    photos(tmp_path / "p")
    spec = Spec.model_validate({"data": {"dataset": str(tmp_path / "p"), "num_classes": 2, "image_shape": [16, 16, 3],
                                         "validation": 0.25, "preprocess": {"normalize": "imagenet"}},
                                "model": {"layers": [{"random_flip": "horizontal"}, {"random_crop": {"height": 12, "width": 12}},
                                                     {"random_brightness": 0.1}, {"random_contrast": 0.1},
                                                     "flatten", {"dense": 2}]}})
    pipes = make_pipelines(spec, load_arrays(spec.data, seed=spec.seed))
    x, _ = next(iter(pipes.train))
    assert pipes.n_val == 5 and x.shape[1:] == (16, 16, 3)
    mean = np.asarray(x).reshape(-1, 3).mean(0)
    assert np.all(np.abs(mean) < 3)
    model = __import__("mnist_keras.model.build", fromlist=["build_model"]).build_model(spec)
    assert model.output_shape == (None, 2)


# ------------------------------------------------------------------------------- checks


def test_undecodable_files_are_refused_by_path_or_skipped(tmp_path):
    root = digits(tmp_path / "d")
    (root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "4" / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_files(data(root))
    assert any("broken.png: cannot be read as an image" in m for m in err.value.messages)
    assert any("empty.jpg: an empty file" in m for m in err.value.messages)
    assert "2 of 82 image files cannot be decoded" in err.value.messages[-1]
    notes = []
    files = load_files(data(root, on_bad_file="skip"), notify=notes.append)
    assert len(files.provenance["skipped"]) == 2 and "skipped 2 of 82" in notes[0]


def test_data_check_prints_the_balance_and_shared_images(tmp_path):
    root = tmp_path / "split"
    photos(root / "train")
    photos(root / "test", per_class=3)
    shutil.copy(root / "train" / "china" / "5.jpg", root / "test" / "china" / "copy.jpg")
    result = CliRunner().invoke(data_command, ["check", "--dataset", str(root), "--set", "data.num_classes=2",
                                               "--set", "data.image_shape=[16,16,3]"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["class", "train", "validation", "test"]
    assert lines[2].split() == ["china", "11", "1", "4"] and lines[4].split() == ["total", "22", "2", "7"]
    assert "warning: the same image is in train and test:" in result.output and "copy.jpg" in result.output
    assert "1 shared between splits" in lines[-1]


def test_data_info_and_preview_on_folders(tmp_path):
    photos(tmp_path / "p")
    options = ["--dataset", str(tmp_path / "p"), "--set", "data.num_classes=2", "--set", "data.image_shape=[16,16,3]"]
    info = CliRunner().invoke(data_command, ["info", *options])
    assert info.exit_code == 0, info.output
    assert "per class: china: " in info.output and "from folders" in info.output
    out = tmp_path / "preview.png"
    preview = CliRunner().invoke(data_command, ["preview", *options, "--out", str(out), "--count", "4"])
    assert preview.exit_code == 0 and out.stat().st_size > 0


def test_class_weights(tmp_path):
    files = load_files(data(digits(tmp_path / "d"), validation=0))
    labels = np.array([0, 0, 0, 1])
    assert class_weights(data(tmp_path / "d"), files.class_names, labels) is None
    balanced = class_weights(data(tmp_path / "d", class_weight="balanced"), ["a", "b"], labels)
    assert balanced == pytest.approx({0: 4 / 6, 1: 2.0})
    named = class_weights(data(tmp_path / "d", class_weight={3: 2.5}), files.class_names, labels)
    assert named[3] == 2.5 and named[0] == 1.0
    with pytest.raises(UserError, match="no class 'cat'"):
        class_weights(data(tmp_path / "d", class_weight={"cat": 2}), files.class_names, labels)


# ------------------------------------------------------------------------------- bad input


def bad_csv(tmp_path, text):
    photos(tmp_path / "p", per_class=2)
    (tmp_path / "l.csv").write_text(text)
    return tmp_path / "l.csv"


@pytest.mark.parametrize("layout, message", [
    ("no_classes", "no class subfolders"),
    ("empty_class", "class '7' has no images"),
    ("missing_class", "no folder for class 'flower'"),
    ("csv_column", "l.csv:1: no label column"),
    ("csv_path", "l.csv:3: p/china/nope.png: no such image file"),
    ("csv_row", "l.csv:2: a row needs both a path and a label"),
    ("num_classes", "data.num_classes: .* has 2 classes \\(china, flower\\)"),
    ("channels", "decoded to 1 \\(gray\\) or 3 \\(RGB\\)"),
])
def test_bad_layouts_are_refused_with_one_message(tmp_path, layout, message):
    spec = rgb(tmp_path / "d")
    if layout == "no_classes":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "a.png").write_bytes(b"")
    elif layout == "empty_class":
        digits(tmp_path / "d")
        shutil.rmtree(tmp_path / "d" / "7")
        (tmp_path / "d" / "7").mkdir()
        spec = data(tmp_path / "d")
    elif layout == "missing_class":
        photos(tmp_path / "d" / "train")
        photos(tmp_path / "d" / "test", per_class=2)
        shutil.rmtree(tmp_path / "d" / "test" / "flower")
    elif layout.startswith("csv"):
        text = {"csv_column": "path,class\np/china/1.jpg,china\n",
                "csv_path": "path,label\np/china/1.jpg,china\np/china/nope.png,china\n",
                "csv_row": "path,label\np/china/1.jpg,\n"}[layout]
        spec = rgb(bad_csv(tmp_path, text))
    else:
        photos(tmp_path / "d")
        spec = data(tmp_path / "d") if layout == "num_classes" else data(tmp_path / "d", num_classes=2, image_shape=[8, 8, 4])
    with pytest.raises(UserError, match=message) as err:
        load_arrays(spec)
    assert len(err.value.messages) == 1


def test_data_dir_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(data_command, ["check", "--dataset", "d", "--data-dir", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output
    with pytest.raises(UserError, match="file: not a folder"):
        load_files(data("d"), str(tmp_path / "file"))


def test_files_are_listed_without_tensorflow(tmp_path):
    import subprocess
    import sys

    digits(tmp_path / "d")
    code = ("import sys; from mnist_keras.data import load_files; from mnist_keras.spec import Data; "
            f"load_files(Data(dataset={str(tmp_path / 'd')!r})); assert 'tensorflow' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
