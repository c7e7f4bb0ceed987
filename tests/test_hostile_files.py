"""Hostile and odd data files and images (issue 13): each gets one UserError naming the file, never a
traceback, a hang or huge memory use. Property tests at the end mutate IDX, .npz and image files at random."""

from __future__ import annotations

import gzip
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mnist_keras.data import dataset_files, load_arrays, make_pipelines
from mnist_keras.data.images import check_image_files, read_images
from mnist_keras.errors import UserError
from mnist_keras.spec import Data
from test_data import as_arrays, make_spec, offline, small, write_folder  # noqa: F401 (offline: autouse)


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks (reading a FIFO, /dev/zero) fails after 20 s instead of hanging the suite."""
    def stop(*_):
        raise TimeoutError("blocked for 20 s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def refused(message: str, load, *args) -> UserError:
    with pytest.raises(UserError, match=message) as caught:
        load(*args)
    return caught.value


def load(path: Path):
    return load_arrays(Data(dataset=str(path)))


# ------------------------------------------------------------------- not a regular file


def make_special(path: Path, kind: str) -> Path:
    """A FIFO, socket, folder, link to /dev/zero or link to a FIFO at `path`."""
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "folder":
        path.mkdir()
    elif kind == "character device":
        path.symlink_to("/dev/zero")
    else:  # a link to a FIFO: the target is what counts
        os.mkfifo(path.with_name("target"))
        path.symlink_to(path.with_name("target"))
        kind = "FIFO"
    return path, kind


SPECIAL = ["FIFO", "socket", "folder", "character device", "link to a FIFO"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_idx_file_that_is_not_a_regular_file(tmp_path, kind):
    folder = write_folder(tmp_path / "idx", small())
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    path, kind = make_special(folder / "train-labels-idx1-ubyte.gz", kind)
    error = refused(f"{path}: not a regular file \\(a {kind}\\)", load, folder)
    assert len(error.messages) == 1


@pytest.mark.parametrize("kind", [k for k in SPECIAL if k != "folder"])  # a folder is read as an IDX folder
def test_dataset_path_that_is_not_a_regular_file(tmp_path, kind):
    path, kind = make_special(tmp_path / "set.npz", kind)
    refused(f"{path}: not a regular file \\(a {kind}\\)", load, path)


def test_dev_zero_and_a_fifo_in_the_keras_cache(tmp_path):
    refused("/dev/zero: not a regular file \\(a character device\\)", load, Path("/dev/zero"))
    cache = tmp_path / "keras-home" / "datasets"
    cache.mkdir(parents=True)
    os.mkfifo(cache / "mnist.npz")
    refused("mnist.npz: not a regular file \\(a FIFO\\)", load_arrays, Data())


def test_a_data_file_over_the_absolute_cap_is_not_read(tmp_path):
    path = tmp_path / "set.npz"
    with open(path, "wb") as file:
        file.truncate(dataset_files.MAX_BYTES + 1)  # sparse: no disk used
    refused(f"set.npz: {dataset_files.MAX_BYTES + 1:,} bytes; a data file may hold at most", load, path)


# ------------------------------------------------------------------------------ IDX headers


def idx_bytes(magic: int, shape: tuple[int, ...], body: bytes = b"") -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape) + body


HOSTILE_IDX = {
    "int64 overflow": (idx_bytes(2051, (2**32 - 1,) * 3),
                       "the IDX header declares shape \\(4294967295, 4294967295, 4294967295\\), "
                       "over the 2,147,483,648-byte limit for a data file"),
    "terabyte": (idx_bytes(2051, (10**6, 1000, 1000), bytes(100)), "declares shape \\(1000000, 1000, 1000\\)"),
    "huge shape, small file": (idx_bytes(2051, (60000, 28, 28), bytes(1000)),  # no 47 MB allocated
                               "truncated: the header gives shape \\(60000, 28, 28\\), 47,040,000 bytes of data, "
                               "but the file holds 1,000"),
    "floats": (b"\0\0\x0d\x03" + idx_bytes(50, (28, 28)), "an IDX file of 32-bit floats; only unsigned bytes"),
    "int32 labels": (b"\0\0\x0c\x03" + idx_bytes(50, (28, 28)), "an IDX file of 32-bit integers"),
    "four dimensions": (b"\0\0\x08\x04" + idx_bytes(50, (28, 28, 1)), "bad magic number 2052 \\(expected 2051"),
    "empty file": (b"", "bad magic number None"),
    "zero images": (idx_bytes(2051, (0, 28, 28)), "train-images-idx3-ubyte: no train images"),
    "0x0 pixels": (idx_bytes(2051, (50, 0, 0)), "images of shape \\(0, 0\\) hold no pixels"),
}


@pytest.mark.parametrize("case", HOSTILE_IDX)
def test_hostile_idx_headers(tmp_path, case):
    raw, message = HOSTILE_IDX[case]
    folder = write_folder(tmp_path / "idx", small(), gz=False)
    (folder / "train-images-idx3-ubyte").write_bytes(raw)
    error = refused(message, load, folder)
    assert error.messages[0].startswith(str(folder / "train-images-idx3-ubyte"))


def test_gzip_bomb_is_decompressed_only_to_the_declared_size(tmp_path):
    folder = write_folder(tmp_path / "idx", small())
    packer, chunk = zlib.compressobj(9, wbits=31), bytes(1 << 20)
    bomb = packer.compress(idx_bytes(2049, (50,))) + b"".join(packer.compress(chunk) for _ in range(200))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(bomb + packer.flush())  # 200 MB of zeros in 200 KB
    tracemalloc.start()
    try:
        refused("train-labels-idx1-ubyte.gz: too long: the header gives shape \\(50,\\)", load, folder)
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()


# -------------------------------------------------------------------------------- .npz members


def npy(descr: str, shape: tuple, body: bytes = b"", version: int = 1) -> bytes:
    """A hand-written .npy file: any header, any body."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    size = 4 if version > 1 else 2
    header += b" " * (-(len(header) + 7 + size) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(size, "little") + header + body


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return path


def good_members() -> dict[str, bytes]:
    out = {}
    for key, array in small().items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        out[key] = buffer.getvalue()
    return out


def saved(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


HOSTILE_NPZ = {
    "terabyte": ("x_train", npy("|u1", (10**6, 1000, 1000)),
                 "x_train: the .npy header declares shape \\(1000000, 1000, 1000\\), over the"),
    "overflowing shape": ("x_test", npy("<i8", (2**62, 2**62)), "x_test: the .npy header declares shape"),
    "zero hiding a huge dimension": ("x_train", npy("|u1", (0, 2**63)), "declares shape \\(0, 9223372036854775808\\)"),
    "negative shape": ("x_test", npy("|u1", (-1, 28, 28)), "x_test: the .npy header declares a negative shape"),
    "lying header": ("x_train", npy("|u1", (50, 28, 28), bytes(100)),
                     "x_train: truncated: the .npy header declares shape \\(50, 28, 28\\) of uint8, 39,200 bytes, "
                     "but the member holds 100"),
    "objects": ("y_train", saved(np.array([1, "a", None] * 17, dtype=object)[:50]),
                "y_train: an array of Python objects"),
    "object images": ("x_train", npy("|O", (50, 28, 28)), "x_train: an array of Python objects"),
    "timedelta labels": ("y_train", saved(np.arange(50).astype("m8[s]")), "y_train: labels are timedelta64\\[s\\]"),
    "datetime labels": ("y_test", saved(np.arange(20).astype("M8[D]")), "y_test: labels are datetime64\\[D\\]"),
    "float labels": ("y_test", saved(np.zeros(20)), "y_test: labels are float64"),
    "bool labels": ("y_test", saved(np.zeros(20, bool)), "y_test: labels are bool"),
    "complex labels": ("y_train", saved(np.zeros(50, complex)), "y_train: labels are complex128"),
    "structured labels": ("y_train", saved(np.zeros(50, [("a", "u1")])), "y_train: labels are"),
    "zero-byte items": ("y_train", npy("|S0", (50,)), "y_train: labels are \\|S0"),
    "many zero-byte items": ("y_train", npy("|S0", (10**15,)), "y_train: the .npy header declares shape"),
    "version 3": ("x_train", npy("|u1", (50, 28, 28), bytes(39200), version=3),
                  "x_train: .npy format version \\(3, 0\\)"),
    "not npy": ("x_train", b"PK garbage", "corrupt .npz file"),
    "zero test images": ("x_test", saved(np.zeros((0, 28, 28), np.uint8)), "x_test: no test images"),
    "zero train images": ("x_train", saved(np.zeros((0, 28, 28), np.uint8)), "x_train: no train images"),
    "0x0 pixels": ("x_test", saved(np.zeros((20, 0, 0), np.uint8)),
                   "x_test: images of shape \\(0, 0\\) hold no pixels"),
    "count mismatch": ("y_test", saved(np.zeros(19, np.uint8)), "x_test: 20 images, but .*y_test has 19 labels"),
}


@pytest.mark.parametrize("case", HOSTILE_NPZ)
def test_hostile_npz_members(tmp_path, case):
    key, data, message = HOSTILE_NPZ[case]
    path = write_npz(tmp_path / "set.npz", {**good_members(), key: data})
    error = refused(message, load, path)
    assert len(error.messages) == 1 and error.messages[0].startswith(str(path))


def test_npz_members_add_up_to_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_files, "MAX_BYTES", 50_000)
    path = write_npz(tmp_path / "set.npz", {key: saved(np.zeros_like(array)) for key, array in small().items()})
    refused("set.npz: the arrays up to x_test hold 54,930 bytes, over the 50,000-byte limit", load, path)


# ------------------------------------------------------------------------ splits and batches


def test_batch_larger_than_the_data_is_one_batch_of_it_all():
    pipes = make_pipelines(make_spec(epochs=2, validation=5, batch_size=2**31 - 1), as_arrays(small()))
    assert pipes.steps_per_epoch == 1
    assert [len(x) for x, _ in pipes.train] == [45, 45]
    assert [len(x) for x, _ in pipes.validation] == [5] and [len(x) for x, _ in pipes.test] == [20]
    assert pipes.train.element_spec[0].shape[0] in (None, 45)


# -------------------------------------------------------------------------------------- images


def png(width: int, height: int, body: bytes = b"", mode: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def image_bytes(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


DIGIT = np.zeros((56, 40), np.uint8)
DIGIT[8:48, 16:24] = 255  # a light stroke on black


HOSTILE_IMAGES = {
    "20000x20000 in 50 KB": (png(20000, 20000, bytes(20001 * 8)), "too large: 400,000,000 pixels"),
    "just over the limit": (png(8000, 5001), "too large: 8000x5001 = 40,008,000 pixels; an image may have at most "
                            "40,000,000 \\(40 megapixels\\)"),
    "truncated png": (image_bytes(DIGIT, "PNG")[:60], "cannot be read as an image \\(PNG, JPEG, GIF or BMP\\)"),
    "truncated jpeg": (image_bytes(DIGIT, "JPEG")[:200], "cannot be read as an image"),
    "empty": (b"", "an empty file \\(0 bytes\\), not an image"),
    "text": (b"hello, world\n", "cannot be read as an image \\(PNG, JPEG, GIF or BMP\\): unknown format"),
    "fake png": (b"\x89PNG not really", "cannot be read as an image"),
    "bad crc": (png(28, 28, bytes(29 * 28))[:-5] + b"xxxxx", None),  # IEND's CRC only: Pillow reads it
    "short idat": (png(28, 28, bytes(10)), "cannot be read as an image"),
    "tiff": (image_bytes(DIGIT, "TIFF"), "unknown format"),  # Pillow reads it, but only the four formats are opened
    "0x0 png": (png(0, 0), "cannot be read as an image"),
}


@pytest.mark.parametrize("case", HOSTILE_IMAGES)
def test_hostile_images_do_not_stop_the_others(tmp_path, case):
    data, message = HOSTILE_IMAGES[case]
    good = tmp_path / "good.png"
    good.write_bytes(image_bytes(DIGIT, "PNG"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(data)
    pixels, read, problems = read_images([str(good), str(bad), str(good)], [28, 28])
    if message is None:
        assert not problems and len(read) == 3
        return
    assert pixels.shape == (2, 28, 28) and pixels.dtype == np.uint8 and read == [str(good)] * 2
    assert len(problems) == 1 and problems[0].startswith(f"{bad}: ")
    assert re.search(message, problems[0]) and "function_node" not in problems[0]


@pytest.mark.parametrize("kind", SPECIAL)
def test_image_that_is_not_a_regular_file(tmp_path, kind):
    path, kind = make_special(tmp_path / "digit.png", kind)
    expected = [f"{path}: not a regular file (a {kind})"]
    assert check_image_files([str(path)]) == expected
    assert read_images([str(path)], [28, 28])[1:] == ([], expected)


def test_check_image_files_needs_only_stat(tmp_path):
    (tmp_path / "empty.png").touch()
    (tmp_path / "good.png").write_bytes(b"anything: stat does not read")
    files = [str(tmp_path / n) for n in ("missing.png", "empty.png", "good.png")] + ["/dev/zero"]
    assert check_image_files(files) == [f"{files[0]}: cannot read: No such file or directory",
                                        f"{files[1]}: an empty file (0 bytes), not an image",
                                        "/dev/zero: not a regular file (a character device)"]
    pixels, read, problems = read_images([], [28, 28])
    assert pixels.shape == (0, 28, 28) and read == problems == []


def test_mnist_like_conversion(tmp_path):
    """Gray, alpha over white, the whole image area-resized, dark ink on light paper inverted; 16-bit scaled."""
    rgba = np.zeros((56, 40, 4), np.uint8)
    rgba[..., 3] = DIGIT  # a black stroke, opaque only where the digit is, on a transparent (so white) page
    ink = np.stack([DIGIT // 2] * 3, -1)  # a gray-127 stroke in colour
    sixteen = DIGIT.astype(np.uint16) * 257
    files = []
    for name, array, fmt in [("light.png", DIGIT, "PNG"), ("paper.png", rgba, "PNG"), ("ink.bmp", ink, "BMP"),
                             ("paper.gif", 255 - DIGIT, "GIF"), ("sixteen.png", sixteen, "PNG")]:
        files.append(str(tmp_path / name))
        Path(files[-1]).write_bytes(image_bytes(array, fmt))
    pixels, read, problems = read_images(files, [28, 20])
    assert read == files and not problems
    want = DIGIT.reshape(28, 2, 20, 2).mean(axis=(1, 3))
    for i in (0, 1, 3, 4):
        np.testing.assert_allclose(pixels[i], want, atol=1, err_msg=files[i])
    np.testing.assert_allclose(pixels[2], np.round(want * 127 / 255), atol=1)


# ------------------------------------------------------------------------------ property tests

FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def outcome(load_it):
    """Either a loaded result or a UserError, within a few megabytes; anything else fails the test."""
    tracemalloc.start()
    try:
        result = load_it()
    except UserError as err:
        assert err.messages and all(isinstance(m, str) and m for m in err.messages)
        result = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 64 << 20
    return result


@FAST
@given(magic=st.sampled_from([2051, 2049, 0x0D03, 0x0803, 0, 2**32 - 1]) | st.integers(0, 2**32 - 1),
       shape=st.lists(st.integers(0, 40) | st.sampled_from([2**31, 2**32 - 1, 60000]), min_size=0, max_size=4),
       extra=st.integers(-50, 50), gz=st.booleans(), flip=st.integers(0, 200))
def test_property_mutated_idx(tmp_path_factory, magic, shape, extra, gz, flip):
    folder = write_folder(tmp_path_factory.mktemp("idx"), small(n_train=3, n_test=2), gz=False)
    size = min(int(np.prod(shape, dtype=object)) if shape else 0, 5000)
    raw = idx_bytes(magic, tuple(shape), bytes(max(0, size + extra)))
    if flip < len(raw):
        raw = raw[:flip] + bytes([raw[flip] ^ 0xFF]) + raw[flip + 1:]
    path = folder / ("train-images-idx3-ubyte" + ".gz" * gz)
    (folder / "train-images-idx3-ubyte").unlink()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    result = outcome(lambda: load(folder))
    if isinstance(result, UserError):
        assert str(path) in result.messages[0]


DTYPES = ["|u1", "<i4", "<u8", "|b1", "<f4", "<c16", "<m8[s]", "<M8[D]", "|O", "|S0", "|V3", "<U2", ">i2"]


@FAST
@given(key=st.sampled_from(dataset_files.KEYS), descr=st.sampled_from(DTYPES),
       shape=st.lists(st.integers(0, 60) | st.sampled_from([2**40, 2**63, -3]), max_size=4).map(tuple),
       body=st.integers(0, 4000), version=st.sampled_from([1, 2, 3]))
def test_property_npz_members(tmp_path_factory, key, descr, shape, body, version):
    path = write_npz(tmp_path_factory.mktemp("npz") / "set.npz",
                     {**good_members(), key: npy(descr, shape, bytes(body), version)})
    result = outcome(lambda: load(path))
    if isinstance(result, UserError):
        assert result.messages[0].startswith(str(path))


@FAST
@given(data=st.binary(max_size=300) | st.builds(png, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),
                                                st.binary(max_size=200), st.sampled_from([0, 2, 3, 4, 6, 7])),
       cut=st.integers(0, 400))
def test_property_random_images(tmp_path_factory, data, cut):
    path = tmp_path_factory.mktemp("img") / "digit.png"
    path.write_bytes(data[:cut])
    pixels, read, problems = outcome(lambda: read_images([str(path)], [28, 28]))
    assert len(read) + len(problems) == 1 and pixels.shape == (len(read), 28, 28)
    assert all(p.startswith(f"{path}: ") for p in problems)


def test_images_are_read_without_tensorflow(tmp_path):
    (tmp_path / "digit.png").write_bytes(image_bytes(DIGIT, "PNG"))
    code = ("import sys; from mnist_keras.data.images import read_images; "
            f"assert read_images([{str(tmp_path / 'digit.png')!r}], [28, 28])[0].shape == (1, 28, 28); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
