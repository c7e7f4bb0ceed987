"""Streamed images (issue 24): odd files, oversized headers, files and disk caches damaged during or before a run,
cache folders that cannot hold a cache, classes the hold-out leaves without training images, and symbolic-link
loops, through the command line (`mnist-keras fit | data check`) on small class folders of real files.

Every data.cache choice decodes with the one Pillow decoder: what `data check` and `cache: memory` accept
streams, a file that fails as it is read is named (exit 1) or left out under `on_bad_file: skip`, never a
bare TensorFlow error.

The commands run in this process (click's runner); one of each outcome (trains, fails while training, refused
before training, resumed) also runs as `python -m mnist_keras`, the real entry point in a process of its own."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import mnist_keras as mk
from conftest import ROOT
from mnist_keras.data.streaming import CHECKSUM
from mnist_keras.errors import Error

CLASSES = ("a", "b", "c")
SPEC = """\
name: streamed
seed: 3
data:
  image_shape: {shape}
  num_classes: 3
  batch_size: 4
  validation: 2
  test_split: 0.25
model: {{layers: [flatten, {{dense: 3}}]}}
train: {{epochs: 1, tensorboard: {{enabled: false}}}}
"""
TRACEBACKS = ("Traceback", "Graph execution error", "function_node", "tensorflow.python", "RuntimeError")


def classes(root: Path, per_class: int = 8) -> Path:
    """3 class folders of `per_class` 28x28 gray PNGs, each class its own brightness plus noise."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(60 + 70 * k + rng.normal(0, 20, (28, 28)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def spec(tmp_path: Path, shape=(28, 28, 1)) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(shape=list(shape)))
    return path


def cli(*args, process: bool = False) -> tuple[int, str]:
    """`mnist-keras ARGS`: (exit code, stdout and stderr; bytes that are not UTF-8 replaced). In this process, an
    exception that escapes the command is added as its traceback, as a real process prints it; `process`:
    `python -m mnist_keras ARGS` in a process of its own."""
    if process:
        done = subprocess.run([sys.executable, "-m", "mnist_keras", *map(str, args)], capture_output=True, cwd=ROOT,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
        return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")
    from mnist_keras.cli import main

    result = CliRunner().invoke(main, list(map(str, args)), prog_name="mnist-keras")
    escaped = result.exception if not isinstance(result.exception, (SystemExit, type(None))) else None
    return result.exit_code, result.output + "".join(traceback.format_exception(escaped) if escaped else [])


def fit(tmp_path: Path, dataset: Path, *sets: str, shape=(28, 28, 1), process: bool = False) -> tuple[int, str]:
    overrides = [arg for value in (f"data.dataset={dataset}", *sets) for arg in ("--set", value)]
    return cli("fit", spec(tmp_path, shape), "--runs", tmp_path / "runs", *overrides, process=process)


def check(tmp_path: Path, dataset: Path, *sets: str) -> tuple[int, str]:
    overrides = [arg for value in (f"data.dataset={dataset}", *sets) for arg in ("--set", value)]
    return cli("data", "check", spec(tmp_path), *overrides)


def clean(out: str) -> None:
    assert not any(word in out for word in TRACEBACKS), out


def counts(out: str) -> tuple[int, int, int]:
    """(train, validation, test) images of a run, from its `training ...` line."""
    return tuple(map(int, re.search(r"(\d+) train / (\d+) validation / (\d+) test images", out).groups()))


def runs_left(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("*/*"))


def run_dir(out: str) -> Path:
    return Path(re.search(r"\| run (\S+) \|", out).group(1))


def chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk with its checksum."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of(width: int, height: int, idat: bytes, colour: int = 0) -> bytes:
    """A PNG declaring width x height (colour type 0 gray, 2 RGB) around the compressed rows `idat`."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- odd files that every mode decodes


def bmp_rle(pixels: np.ndarray, bits: int) -> bytes:
    """A BMP compressed with RLE8 (bits 8) or RLE4 (bits 4): each pixel a run of one, rows bottom up."""
    height, width = pixels.shape
    rows = []
    for row in pixels[::-1]:
        if bits == 8:
            rows.append(b"".join(bytes([1, int(v)]) for v in row))
        else:
            rows.append(b"".join(bytes([1, int(v) << 4]) for v in row))
        rows.append(b"\x00\x00")  # end of line
    body = b"".join(rows) + b"\x00\x01"  # end of bitmap
    colours = 2 ** bits
    palette = b"".join(bytes([v * 255 // (colours - 1)] * 3) + b"\x00" for v in range(colours))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 1 if bits == 8 else 2, len(body), 2835, 2835,
                       colours, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


def odd_files(root: Path) -> int:
    """Files every cache mode must decode alike, spread over the classes; how many."""
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(gray > 127).save(root / "a" / "one_bit.bmp")
    (root / "a" / "rle8.bmp").write_bytes(bmp_rle(gray, 8))
    (root / "b" / "rle4.bmp").write_bytes(bmp_rle(gray // 16, 4))
    Image.fromarray(rng.integers(0, 256, (1, 30000), dtype=np.uint8)).save(root / "b" / "strip_1x30000.png")
    Image.fromarray(rng.integers(0, 256, (30000, 1), dtype=np.uint8)).save(root / "c" / "strip_30000x1.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(root / "c" / "gray16.png")
    Image.fromarray(np.dstack([gray, gray])).save(root / "a" / "gray_alpha.png")  # LA
    palette = Image.fromarray(colour).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "b" / "palette_transparent.png", transparency=0)
    Image.fromarray(colour).convert("CMYK").save(root / "c" / "cmyk.jpg")
    Image.fromarray(colour).save(root / "a" / "progressive.jpg", progressive=True)
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    frames[0].save(root / "b" / "animated.gif", save_all=True, append_images=frames[1:])
    with open(os.fsencode(root / "c") + b"/not_utf8_\xff\xfe.png", "wb") as file:
        Image.fromarray(gray).save(file, "PNG")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "a" / "no_end_marker.jpg").write_bytes(jpeg.getvalue()[:-2])  # one that Pillow decodes all the same
    return 13


@pytest.mark.parametrize("cache, fit_mode, shape, process", [
    ("none", "pad", (28, 28, 1), True), ("disk", "crop", (28, 28, 1), False), ("memory", "pad", (28, 28, 1), False),
    ("none", "stretch", (16, 24, 3), False)])
def test_odd_files_train_in_every_cache_mode(tmp_path, cache, fit_mode, shape, process):
    """1-bit, RLE8 and RLE4 BMPs, 1x30000 and 30000x1 strips, 16-bit, gray+alpha, transparent palette, CMYK and
    progressive JPEGs, one without its end marker, an animated GIF and a file name that is not UTF-8: all train,
    in every mode."""
    dataset = classes(tmp_path / "d")
    extra = odd_files(dataset)
    code, out = fit(tmp_path, dataset, f"data.cache={cache}", f"data.preprocess.fit={fit_mode}",
                    f"data.cache_dir={tmp_path / 'cache'}", shape=shape, process=process)
    clean(out)
    assert code == 0 and "test accuracy" in out, out
    assert sum(counts(out)) == 24 + extra and "skipped" not in out and "left out" not in out
    if cache == "disk":
        copies = list((tmp_path / "cache").glob("*/*.u8"))
        assert len(copies) == 24 + extra and {p.stat().st_size for p in copies} == {28 * 28 + CHECKSUM}


def test_data_check_decodes_the_odd_files(tmp_path):
    dataset = classes(tmp_path / "d")
    extra = odd_files(dataset)
    code, out = check(tmp_path, dataset)
    assert code == 0 and f"checked {24 + extra} images: all decode" in out, out


# ------------------------------------------------------------- files that fail only when they are decoded whole


def failing_files(root: Path) -> list[Path]:
    """Files whose header and Pillow's verify pass but whose pixels do not decode: a JPEG cut mid-scan, one cut
    short of its end marker, a PNG whose compressed data is garbage under valid checksums, a GIF cut in its
    image data."""
    rng = np.random.default_rng(7)

    def encoded(fmt, shape):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, fmt)
        return buffer.getvalue()

    jpeg = encoded("JPEG", (28, 28))
    files = {root / "a" / "cut_short_of_the_end.jpg": encoded("JPEG", (64, 64, 3))[:-150],
             root / "b" / "cut_mid_scan.jpg": jpeg[:len(jpeg) * 2 // 3],
             root / "c" / "bad_zlib.png": png_of(28, 28, b"\x78\x9c" + rng.integers(0, 256, 300, np.uint8).tobytes()),
             root / "a" / "cut.gif": encoded("GIF", (28, 28))[:-40]}
    for path, data in files.items():
        path.write_bytes(data)
    return list(files)


def named(out: str, files: list[Path], prefix: str = "") -> list[Path]:
    return [path for path in files if f"{prefix}{path}: cannot be read as an image" in out]


@pytest.mark.parametrize("cache, process", [("none", True), ("disk", False)])
def test_a_file_that_fails_as_it_is_streamed_is_named(tmp_path, cache, process):
    dataset = classes(tmp_path / "d")
    bad = failing_files(dataset)
    code, out = fit(tmp_path, dataset, f"data.cache={cache}", f"data.cache_dir={tmp_path / 'cache'}", process=process)
    clean(out)
    assert code == 1 and len(named(out, bad, "error: ")) == 1, out
    assert "training stopped after epoch 0, no epoch finished" in out and "fit --resume" in out, out


@pytest.mark.parametrize("cache", ["none", "disk"])
def test_a_file_that_fails_as_it_is_streamed_is_left_out_under_skip(tmp_path, cache):
    dataset = classes(tmp_path / "d")
    bad = failing_files(dataset)
    code, out = fit(tmp_path, dataset, f"data.cache={cache}", "data.on_bad_file=skip",
                    f"data.cache_dir={tmp_path / 'cache'}")
    clean(out)
    assert code == 0 and "test accuracy" in out and sum(counts(out)) == 24 + len(bad), out  # listed, left out as read
    assert named(out, bad, "note: left out ") == bad, out  # each split is read whole: each file is met


def test_memory_and_data_check_refuse_the_same_files_before_training(tmp_path):
    dataset = classes(tmp_path / "d")
    bad = failing_files(dataset)
    for code, out in (check(tmp_path, dataset), fit(tmp_path, dataset, "data.cache=memory")):
        clean(out)
        assert code == 2 and named(out, bad) == bad, out
    assert not runs_left(tmp_path)


# --------------------------------------------------------------------------------- the 40-megapixel limit


def oversized(root: Path) -> dict[Path, str]:
    """Images over 40 megapixels: a whole 60-megapixel black PNG, and headers alone of a 150-megapixel RGB PNG,
    a 41-megapixel BMP and a 65535x65535 GIF; the pixel count each message gives."""
    rows = zlib.compressobj(9)
    black = root / "a" / "black_60mp.png"
    black.write_bytes(png_of(8000, 7500, b"".join(rows.compress(bytes(8001)) for _ in range(7500)) + rows.flush()))
    rgb = root / "b" / "rgb_150mp.png"
    rgb.write_bytes(png_of(15000, 10000, zlib.compress(bytes(64)), colour=2))
    bmp = root / "c" / "header_41mp.bmp"
    info = struct.pack("<IiiHHIIiiII", 40, 8200, 5000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    bmp.write_bytes(b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + bytes(64))
    gif = root / "c" / "screen_65535.gif"
    gif.write_bytes(b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
                    + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x08\x02\x4c\x01\x00\x3b")
    return {black: "8000x7500 = 60,000,000", rgb: "150,000,000", bmp: "8200x5000 = 41,000,000",
            gif: "4,294,836,225"}


def test_images_over_40_megapixels_are_refused_by_their_header_everywhere(tmp_path):
    dataset = classes(tmp_path / "d")
    big = oversized(dataset)
    for code, out in (check(tmp_path, dataset), fit(tmp_path, dataset, "data.cache=none", process=True),
                      fit(tmp_path, dataset, "data.cache=disk")):
        clean(out)
        assert code == 2, out
        for path, pixels in big.items():
            assert re.search(f"{re.escape(str(path))}: too large: .*{pixels}", out), (path, out)
    assert not runs_left(tmp_path)
    code, out = fit(tmp_path, dataset, "data.cache=none", "data.on_bad_file=skip")
    clean(out)
    assert code == 0 and sum(counts(out)) == 24 and f"skipped {len(big)} of {24 + len(big)}" in out, out


# ------------------------------------------------------------------ damage during training and before a resume


def damage(copies: list[Path]) -> dict[Path, str]:
    """Each cached copy damaged another way: truncated, a byte changed, grown, emptied, made a folder, deleted."""
    shapes = {}
    for copy, how in zip(copies, ("truncated", "flipped", "grown", "emptied", "folder", "deleted")):
        raw = copy.read_bytes()
        if how == "truncated":
            copy.write_bytes(raw[:100])
        elif how == "flipped":
            copy.write_bytes(raw[:50] + bytes([raw[50] ^ 1]) + raw[51:])
        elif how == "grown":
            copy.write_bytes(raw + b"x")
        elif how == "emptied":
            copy.write_bytes(b"")
        elif how == "folder":
            copy.unlink()
            copy.mkdir()
        else:
            copy.unlink()
        shapes[copy] = how
    return shapes


def test_a_damaged_disk_cache_is_named_and_rebuilt_on_resume(tmp_path):
    dataset, cache = classes(tmp_path / "d"), tmp_path / "cache"
    code, out = fit(tmp_path, dataset, "data.cache=disk", f"data.cache_dir={cache}")
    assert code == 0, out
    run = run_dir(out)
    copies = sorted(cache.glob("train-*/*.u8"), key=lambda p: int(p.stem))
    good = [copy.read_bytes() for copy in copies]
    shapes = damage(copies[:6])
    code, out = cli("fit", "--resume", run, "--epochs", "2", process=True)
    clean(out)
    assert code == 0 and "test accuracy" in out, out
    for i, (copy, how) in enumerate(shapes.items()):
        if how != "deleted":  # a missing copy is written again without a note
            assert re.search(f"note: {re.escape(str(copy))}: a damaged copy in the disk cache .*; rebuilt from "
                             f"{re.escape(str(dataset))}", out), (how, out)
        if how != "folder":  # a folder in the way is read around, never removed
            assert copy.read_bytes() == good[i], how
    code, out = cli("fit", "--resume", run, "--epochs", "3")
    assert code == 0 and re.findall(r"note: (\S+): a damaged copy", out) == [f"{copies[4]}:"[:-1]], out


def corrupt_when_training_ends(tmp_path: Path, cache: str, target) -> tuple[Path, int, str]:
    """A 1-epoch run, then a resume to 2 epochs (mk.resume) whose callback overwrites a file with garbage when
    training ends, before the test images are read: (the file, the exit code and output of the resume).
    `target(run)` names the file, from the run's directory."""
    code, out = fit(tmp_path, classes(tmp_path / "d"), f"data.cache={cache}", f"data.cache_dir={tmp_path / 'c'}")
    assert code == 0, out
    run = run_dir(out)
    victim = target(run)
    from mnist_keras.backend import keras

    class Corrupt(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            victim.write_bytes(b"garbage" * 20)

    printed, code = io.StringIO(), 0
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            mk.resume(run, epochs=2, callbacks=[Corrupt()], reporter=mk.Reporter(print))
        except Error as err:
            print("error:", err)
            code = err.exit_code
    return victim, code, printed.getvalue()


def test_an_image_changed_during_training_is_named(tmp_path):
    def a_test_image(run):
        held_out = json.loads((run / "state.json").read_text())["data"]["held_out"]["test"]
        return tmp_path / "d" / held_out[0]

    victim, code, out = corrupt_when_training_ends(tmp_path, "none", a_test_image)
    clean(out)
    assert code == 1 and f"error: {victim}: cannot be read as an image" in out, out
    assert "training stopped after epoch 2, the checkpoint of epoch 2 is kept" in out, out


def test_a_cached_copy_damaged_during_training_is_rebuilt(tmp_path):
    def a_cached_test_image(run):
        return next((tmp_path / "c").glob("test-*/0.u8"))

    victim, code, out = corrupt_when_training_ends(tmp_path, "disk", a_cached_test_image)
    clean(out)
    assert code == 0 and f"note: {victim}: a damaged copy in the disk cache" in out, out
    assert victim.stat().st_size == 28 * 28 + CHECKSUM


def test_an_image_changed_before_a_resume_is_refused_or_decoded_again(tmp_path):
    dataset, cache = classes(tmp_path / "d"), tmp_path / "cache"
    code, out = fit(tmp_path, dataset, "data.cache=disk", f"data.cache_dir={cache}")
    assert code == 0 and len(list(cache.iterdir())) == 3, out  # train, validation, test
    run = run_dir(out)
    (dataset / "a" / "2.png").write_bytes(b"not an image any more")
    code, out = cli("fit", "--resume", run, "--epochs", "2")
    clean(out)
    assert code == 2 and f"{dataset / 'a' / '2.png'}: cannot be read as an image" in out, out
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(dataset / "a" / "2.png")  # a new, valid image
    code, out = cli("fit", "--resume", run, "--epochs", "2")
    clean(out)
    assert code == 0 and len(list(cache.iterdir())) == 4, out  # its split decoded again, under a new key


# -------------------------------------------------------------------------------- cache folders that cannot be


def unusable_cache_folders(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    shapes = {"a file": a_file, "under a file": a_file / "cache", "under /proc": Path("/proc/mnist-keras-cache")}
    if not os.path.isdir("/sys/mnist-keras-cache"):
        try:
            os.mkdir("/sys/mnist-keras-cache")
            os.rmdir("/sys/mnist-keras-cache")
        except OSError:
            shapes["under /sys"] = Path("/sys/mnist-keras-cache")
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        shapes["read-only"] = read_only
    return shapes


def test_a_cache_folder_that_cannot_hold_the_cache_is_refused_before_training(tmp_path):
    dataset = classes(tmp_path / "d")
    for how, folder in unusable_cache_folders(tmp_path).items():
        code, out = fit(tmp_path, dataset, "data.cache=disk", f"data.cache_dir={folder}")
        clean(out)
        assert code == 2 and f"{folder}: cannot keep the disk cache (data.cache: disk) there" in out, (how, out)
        assert "epoch" not in out and not runs_left(tmp_path), (how, out)
    assert not Path("/proc/mnist-keras-cache").exists()


# ------------------------------------------------------------------------ classes the hold-out leaves empty


def test_a_class_left_without_training_images_is_refused(tmp_path):
    """One or two images per class: the test and validation draws take some classes' all. Class folders, split
    folders (validation drawn from train/), a CSV list."""
    split = tmp_path / "split"
    classes(split / "train", per_class=1)
    classes(split / "test", per_class=2)
    listed = classes(tmp_path / "listed", per_class=2)
    (listed / "list.csv").write_text("path,label\n" + "".join(f"{p.relative_to(listed)},{p.parent.name}\n"
                                                             for p in sorted(listed.glob("*/*.png"))))
    cases = [(classes(tmp_path / "one", per_class=1), "data.validation=1", {"a": "0 validation, 1 test",
                                                                             "b": "1 validation, 0 test"}),
             (classes(tmp_path / "two", per_class=2), "data.validation=2", {"a": "1 validation, 1 test"}),
             (split, "data.validation=2", {"a": "1 validation, 2 test", "b": "1 validation, 2 test"}),
             (listed / "list.csv", "data.validation=2", {"a": "1 validation, 1 test"})]
    for dataset, validation, starved in cases:
        code, out = check(tmp_path, dataset, validation)
        clean(out)
        assert code == 2 and "every class needs a training image" in out, (dataset, out)
        found = dict(re.findall(r"class '(\w)' has no training image left \(0 train, (\d+ validation, \d+ test)\)",
                                out))
        assert found == starved, (dataset, out)
    code, out = fit(tmp_path, tmp_path / "two")
    assert code == 2 and "class 'a' has no training image left (0 train, " in out and not runs_left(tmp_path), out


# ------------------------------------------------------------------------------------- symbolic-link loops


def loops(root: Path) -> list[Path]:
    """A link to itself, two links to each other, a link loop named like a folder, and a CSV row naming a loop."""
    (root / "a" / "self.png").symlink_to("self.png")
    (root / "b" / "ping.png").symlink_to("pong.png")
    (root / "b" / "pong.png").symlink_to("ping.png")
    (root / "c" / "cycle").symlink_to("..")  # a folder link back up: not followed
    (root / "c" / "loop.jpg").symlink_to("loop.jpg")
    return [root / "a" / "self.png", root / "b" / "ping.png", root / "b" / "pong.png", root / "c" / "loop.jpg"]


def test_symbolic_link_loops_are_named_or_skipped(tmp_path):
    dataset = classes(tmp_path / "d")
    looped = loops(dataset)
    code, out = check(tmp_path, dataset)
    clean(out)
    assert code == 2 and f"{len(looped)} of {24 + len(looped)} image files cannot be decoded" in out, out
    for link in looped:
        assert f"{link}: cannot read: Too many levels of symbolic links" in out, (link, out)
    code, out = check(tmp_path, dataset, "data.on_bad_file=skip")
    assert code == 0 and f"checked 24 images: all decode ({len(looped)} skipped)" in out, out
    code, out = fit(tmp_path, dataset, "data.cache=none")
    clean(out)
    assert code == 2 and all(str(link) in out for link in looped) and not runs_left(tmp_path), out
    rows = "".join(f"{p.relative_to(dataset)},{p.parent.name}\n" for p in sorted(dataset.glob("*/[0-9].png")))
    (dataset / "list.csv").write_text("path,label\n" + rows + "a/self.png,a\n")
    code, out = check(tmp_path, dataset / "list.csv")
    clean(out)
    assert code == 2 and "list.csv:26: a/self.png: no such image file" in out, out
