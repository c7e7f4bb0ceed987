"""The data layer: sources, corrupt inputs, the tf.data pipeline (values, splits, determinism, resume), commands."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_keras.cli.data import data_group as data_command
from mnist_keras.data import Arrays, dataset_files, load_arrays, make_pipelines, sources
from mnist_keras.errors import UserError
from mnist_keras.spec import Data, Runtime, Spec

MODEL = {"layers": ["flatten", {"dense": {"units": 10}}]}
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # of the official MNIST training set
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """An empty Keras cache and a download that fails, as on a machine without the dataset."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))

    def no_download(data, notify):
        raise RuntimeError("URL fetch failure (offline in tests)")

    monkeypatch.setattr(sources, "_download", no_download)


def make_spec(epochs=3, seed=42, loss="auto", **data) -> Spec:
    return Spec.model_validate({"seed": seed, "data": data, "model": MODEL, "train": {"epochs": epochs, "loss": loss}})


def small(n_train=50, n_test=20, shape=(28, 28)) -> dict:
    """Images whose first two pixels spell their index (i % 256, i // 256), and labels i % 10."""
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = np.random.default_rng(n).integers(0, 256, (n, *shape), dtype=np.uint8)
        x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, (np.arange(n) % 10).astype(np.uint8)
    return arrays


def as_arrays(arrays: dict) -> Arrays:
    return Arrays(**arrays, provenance={})


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    magic = magic or (2051 if array.ndim == 3 else 2049)
    raw = b"".join(d.to_bytes(4, "big") for d in (magic, *array.shape)) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_folder(folder: Path, arrays: dict, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in dataset_files.IDX_NAMES.items():
        write_idx(folder / (name + ".gz" * gz), arrays[key])
    return folder


def indices(x) -> np.ndarray:
    """The image indices spelled by the first two pixels (with scale 1, offset 0)."""
    x = np.asarray(x)
    return (x[:, 0, 0, 0] + 256 * x[:, 0, 1, 0]).astype(int)


def epochs_of(dataset, steps: int) -> list[list[np.ndarray]]:
    batches = [indices(x) for x, _ in dataset]
    return [batches[i:i + steps] for i in range(0, len(batches), steps)]


# -------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_round_trip(tmp_path, gz):
    written = small()
    folder = write_folder(tmp_path / "idx", written, gz)
    arrays = load_arrays(Data(dataset=str(folder)))
    for key in dataset_files.KEYS:
        np.testing.assert_array_equal(getattr(arrays, key), written[key])
    prov = json.loads(json.dumps(arrays.provenance))
    assert prov["source"] == "files" and prov["path"] == str(folder.resolve())
    assert prov["counts"] == {"train": 50, "test": 20}
    assert sorted(prov["sha256"]) == sorted(n + ".gz" * gz for n in dataset_files.IDX_NAMES.values())
    assert all(len(digest) == 64 for digest in prov["sha256"].values())


def test_data_dir_argument_wins_over_the_spec(tmp_path):
    folder = write_folder(tmp_path / "idx", small())
    arrays = load_arrays(Data(data_dir=str(tmp_path / "elsewhere")), data_dir=str(folder))
    assert arrays.provenance["source"] == "files"
    with pytest.raises(UserError, match="elsewhere: no such folder"):
        load_arrays(Data(data_dir=str(tmp_path / "elsewhere")))


def test_npz_file_and_npz_in_a_folder(tmp_path):
    written = small()
    np.savez_compressed(tmp_path / "set.npz", **{**written, "y_train": written["y_train"][:, None]})
    arrays = load_arrays(Data(dataset=str(tmp_path / "set.npz")))
    assert arrays.provenance["source"] == "npz" and list(arrays.provenance["sha256"]) == ["set.npz"]
    np.testing.assert_array_equal(arrays.y_train, written["y_train"])  # (N, 1) labels accepted
    (tmp_path / "dir").mkdir()
    np.savez(tmp_path / "dir" / "mnist.npz", **written)
    arrays = load_arrays(Data(), data_dir=str(tmp_path / "dir"))
    assert arrays.provenance["source"] == "files" and arrays.provenance["path"].endswith("mnist.npz")


def test_keras_cache(tmp_path):
    cache = tmp_path / "keras-home" / "datasets"
    cache.mkdir(parents=True)
    np.savez(cache / "mnist.npz", **small())
    assert load_arrays(Data()).provenance["source"] == "keras-cache"
    write_folder(cache / "fashion-mnist", small())
    arrays = load_arrays(Data(dataset="fashion_mnist"))
    assert arrays.provenance["source"] == "keras-cache" and arrays.provenance["path"].endswith("fashion-mnist")


def test_bundled_fallback_gives_one_notice():
    notice = []  # the API prints nothing itself: notes go to the notify callback (the CLI prints them)
    arrays = load_arrays(Data(), notify=notice.append)
    assert arrays.provenance["source"] == "bundled"
    assert arrays.provenance["counts"] == {"train": 10_000, "test": 2_000}
    assert arrays.x_train.shape == (10_000, 28, 28) and arrays.x_train.dtype == np.uint8
    assert arrays.y_train[:10].tolist() == FIRST_TRAIN_LABELS and arrays.y_test[:10].tolist() == FIRST_TEST_LABELS
    assert set(np.unique(arrays.y_train)) == set(range(10))
    assert len(notice) == 1 and "bundled sample" in notice[0] and "--data-dir" in notice[0]
    assert sources.BUNDLED.stat().st_size <= 2_500_000


def test_a_working_download_is_used(monkeypatch):
    downloaded = as_arrays(small())
    monkeypatch.setattr(sources, "_download", lambda data, notify: downloaded)
    assert load_arrays(Data()) is downloaded


@pytest.mark.parametrize("data, message", [
    (Data(source="files"), "mnist: data.source is 'files' but no folder is named"),
    (Data(source="keras"), "mnist: not in the Keras cache .* download failed \\(URL fetch failure"),
    (Data(dataset="fashion_mnist"), "fashion_mnist: not in the Keras cache"),
    (Data(dataset="fashion_mnist", source="bundled"), "the bundled sample is MNIST only"),
    (Data(dataset="some/folder", source="keras"), "data.source 'keras' serves only mnist and fashion_mnist"),
    (Data(dataset="mnst"), "mnst: no such file or folder.*did you mean 'mnist'"),
])
def test_pinned_sources_fail_clearly(data, message, capsys):
    with pytest.raises(UserError, match=message):
        load_arrays(data)
    assert capsys.readouterr().err == ""  # no fallback notice


def _rewrite(name, array=None, magic=None, raw=None):
    def change(folder):
        path = folder / (name + ".gz")
        if raw is not None:
            path.write_bytes(raw(path.read_bytes()))
        else:
            write_idx(path, array, magic)
        return path
    return change


ONES = np.ones((50, 28, 28), np.uint8)
CORRUPT_IDX = {
    "bad magic": (_rewrite("train-images-idx3-ubyte", ONES, magic=2049), "bad magic number 2049 \\(expected 2051"),
    "truncated": (_rewrite("train-images-idx3-ubyte", raw=lambda b: gzip.compress(gzip.decompress(b)[:-5])),
                  "truncated: the header gives shape \\(50, 28, 28\\), 39,200 bytes of data, "
                  "but the file holds 39,195"),
    "too long": (_rewrite("t10k-labels-idx1-ubyte", raw=lambda b: gzip.compress(gzip.decompress(b) + b"x")),
                 "too long"),
    "short header": (_rewrite("train-labels-idx1-ubyte", raw=lambda b: gzip.compress(gzip.decompress(b)[:6])),
                     "truncated: the IDX header needs 8 bytes, the file has 6"),
    "bad gzip": (_rewrite("train-images-idx3-ubyte", raw=lambda b: b[: len(b) // 2]), "corrupt or truncated gzip"),
    "not gzip": (_rewrite("train-images-idx3-ubyte", raw=lambda b: gzip.decompress(b)[::-1]), "corrupt or truncated"),
    "count mismatch": (_rewrite("train-labels-idx1-ubyte", np.zeros(49, np.uint8)),
                       "50 images, but .*train-labels-idx1-ubyte.gz has 49 labels"),
    "label range": (_rewrite("t10k-labels-idx1-ubyte", np.full(20, 10, np.uint8)),
                    "labels range over 10..10, outside 0..9 \\(data.num_classes is 10\\)"),
    "missing file": (lambda folder: (folder / "t10k-labels-idx1-ubyte.gz").unlink() or folder,
                     "missing t10k-labels-idx1-ubyte\\[.gz\\]; a dataset folder holds"),
}


@pytest.mark.parametrize("case", CORRUPT_IDX)
def test_corrupt_idx_names_the_file(tmp_path, case):
    change, message = CORRUPT_IDX[case]
    folder = write_folder(tmp_path / "idx", small())
    path = change(folder)
    with pytest.raises(UserError, match=message) as caught:
        load_arrays(Data(dataset=str(folder)))
    message, = caught.value.messages
    assert message.startswith(str(folder)) and str(path) in message


@pytest.mark.parametrize("arrays, message", [
    ({k: v for k, v in small().items() if k != "y_test"}, "set.npz: missing y_test; a dataset .npz holds"),
    ({**small(), "x_train": small()["x_train"].astype(np.float32)}, "set.npz: x_train: images are float32"),
    ({**small(), "y_test": np.zeros((20, 2), np.uint8)}, "set.npz: y_test: labels are uint8 with shape \\(20, 2\\)"),
    ({**small(), "y_train": np.zeros(7, np.uint8)}, "set.npz: x_train: 50 images, but .*y_train has 7 labels"),
])
def test_bad_npz(tmp_path, arrays, message):
    np.savez(tmp_path / "set.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_arrays(Data(dataset=str(tmp_path / "set.npz")))


def test_not_an_npz_and_missing_paths(tmp_path):
    (tmp_path / "set.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="set.npz: not an .npz file"):
        load_arrays(Data(dataset=str(tmp_path / "set.npz")))
    with pytest.raises(UserError, match="nowhere.npz: no such file or folder"):
        load_arrays(Data(dataset=str(tmp_path / "nowhere.npz")))
    with pytest.raises(UserError, match="nowhere: no such folder"):
        load_arrays(Data(source="files"), data_dir=str(tmp_path / "nowhere"))


def test_sources_do_not_import_tensorflow():
    code = ("import sys; from mnist_keras.data import load_arrays; from mnist_keras.spec import Data; "
            "load_arrays(Data(source='bundled')); assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------- pipeline


def first_test_batch(**data):
    pipes = make_pipelines(make_spec(**data), as_arrays(small()))
    x, y = next(iter(pipes.test))
    return pipes, x.numpy(), y.numpy()


def test_scale_offset_and_normalize():
    x = small()["x_test"][:16].astype(np.float32)
    pipes, got, _ = first_test_batch(batch_size=16, preprocess={"scale": 1 / 255, "offset": -0.5})
    assert got.shape == (16, 28, 28, 1) and got.dtype == np.float32 and pipes.input_shape == (28, 28, 1)
    np.testing.assert_allclose(got[..., 0], x / 255 - 0.5, atol=1e-6)
    _, got, _ = first_test_batch(batch_size=16, preprocess={"normalize": {"mean": 0.1307, "std": 0.3081}})
    np.testing.assert_allclose(got[..., 0], (x / 255 - 0.1307) / 0.3081, atol=1e-5)


def test_resize_and_channel_axis():
    from mnist_keras.backend import tf

    x = small()["x_test"][:8, :, :, None].astype(np.float32) / 255
    pipes, got, _ = first_test_batch(batch_size=8, preprocess={"resize": [32, 32], "resize_method": "nearest"})
    assert got.shape == (8, 32, 32, 1) and pipes.input_shape == (32, 32, 1)
    np.testing.assert_allclose(got, tf.image.resize(x, [32, 32], method="nearest").numpy(), atol=1e-6)
    pipes, got, _ = first_test_batch(batch_size=8, preprocess={"channel_axis": False})
    assert got.shape == (8, 28, 28) and pipes.input_shape == (28, 28)


def test_label_encodings():
    expected = np.arange(12) % 10
    _, _, y = first_test_batch(batch_size=12)
    assert y.dtype == np.float32 and y.shape == (12, 10)
    np.testing.assert_array_equal(y, np.eye(10, dtype=np.float32)[expected])
    _, _, y = first_test_batch(batch_size=12, preprocess={"one_hot": False})
    assert y.dtype == np.int32 and y.tolist() == expected.tolist()
    regression = {"data": {"batch_size": 12, "preprocess": {"one_hot": False}}, "train": {"loss": "mse"},
                  "model": {"layers": ["flatten", {"dense": 1}]}}  # a Spec must end in 1 value for mse
    pipes = make_pipelines(Spec.model_validate(regression), as_arrays(small()))
    y = next(iter(pipes.test))[1].numpy()
    assert y.dtype == np.float32 and y.shape == (12, 1) and y[:, 0].tolist() == expected.tolist()


@pytest.mark.parametrize("data, n_train, n_val", [
    ({"validation": 10}, 40, 10),
    ({"validation": 0.2, "max_train": 40}, 32, 8),
    ({"validation": 0}, 50, 0),
])
def test_validation_hold_out(data, n_train, n_val):
    spec = make_spec(batch_size=8, preprocess={"scale": 1.0}, **data)
    pipes = make_pipelines(spec, as_arrays(small()))
    assert (pipes.n_train, pipes.n_val, pipes.n_test) == (n_train, n_val, 20)
    assert pipes.steps_per_epoch == -(-n_train // 8)
    train_seen = np.concatenate(epochs_of(pipes.train, pipes.steps_per_epoch)[0])
    assert sorted(train_seen) == list(range(n_train))  # every training image once per epoch
    if n_val:
        held_out = np.concatenate([indices(x) for x, _ in pipes.validation])
        assert held_out.tolist() == list(range(n_train, n_train + n_val))  # the last images, in order
    else:
        assert pipes.validation is None


def test_bad_splits_and_shapes():
    with pytest.raises(UserError, match="data.validation: holding out 50 of 50 training images"):
        make_pipelines(make_spec(validation=50), as_arrays(small()))
    with pytest.raises(UserError, match="data.batch_size: 64 is more than the 45 training images"):
        make_pipelines(make_spec(validation=5, batch_size=64, drop_remainder=True), as_arrays(small()))
    spec = make_spec(validation=5, batch_size=10).model_copy(update={"runtime": Runtime(steps_per_execution=3)})
    with pytest.raises(UserError, match="runtime.steps_per_execution: 3 does not divide the 5 steps .* \\[1, 5\\]"):
        make_pipelines(spec, as_arrays(small()))
    spec = Spec.model_validate({"model": {**MODEL, "input_shape": [32, 32, 1]}})
    with pytest.raises(UserError, match="model.input_shape: the data gives images of shape \\[28, 28, 1\\]"):
        make_pipelines(spec, as_arrays(small()))


def test_drop_remainder():
    spec = make_spec(epochs=2, validation=0, batch_size=16, drop_remainder=True)
    pipes = make_pipelines(spec, as_arrays(small()))
    assert pipes.steps_per_epoch == 3 and [len(x) for x, _ in pipes.train] == [16] * 6
    pipes = make_pipelines(spec.model_copy(update={"data": spec.data.model_copy(update={"drop_remainder": False})}),
                           as_arrays(small()))
    assert pipes.steps_per_epoch == 4 and [len(x) for x, _ in pipes.train] == [16, 16, 16, 2] * 2
    assert [len(x) for x, _ in pipes.test] == [16, 4]  # evaluation sees every image


def test_shuffle_is_deterministic_per_seed_and_epoch():
    def orders(seed=42, **data):
        spec = make_spec(epochs=3, seed=seed, validation=0, batch_size=10, preprocess={"scale": 1.0}, **data)
        pipes = make_pipelines(spec, as_arrays(small()))
        return [np.concatenate(epoch).tolist() for epoch in epochs_of(pipes.train, pipes.steps_per_epoch)]

    first = orders()
    assert first == orders() and first != orders(seed=7)
    assert all(sorted(order) == list(range(50)) for order in first)
    assert first[0] != first[1] != first[2]  # a new order every epoch
    assert orders(shuffle=0) == orders(shuffle=1) == [list(range(50))] * 3
    window = orders(shuffle=5)
    assert window[0] != list(range(50)) and all(order.index(i) >= i - 4 for order in window for i in range(50))


def test_cache_off_gives_the_same_batches():
    def batches(cache):
        spec = make_spec(epochs=2, batch_size=16, cache=cache, prefetch=False,
                         preprocess={"resize": [20, 20], "normalize": {"mean": 0.5, "std": 0.25}})
        return [x.numpy() for x, _ in make_pipelines(spec, as_arrays(small())).train]

    for cached, fresh in zip(batches(True), batches(False), strict=True):
        np.testing.assert_allclose(cached, fresh, atol=1e-5)


def test_resumed_run_sees_the_batches_of_the_uninterrupted_run():
    """model.fit(epochs=E, initial_epoch=k, steps_per_epoch=S) reads the dataset on across epochs (it does
    not restart it), so a run resumed at epoch k trains on the batches the uninterrupted run saw from epoch k."""
    from mnist_keras.backend import keras, tf

    seen = []

    class Record(keras.layers.Layer):
        def call(self, x):
            if tf.executing_eagerly():
                seen.append(indices(x.numpy()[..., None]))
            return x

    spec = make_spec(epochs=3, validation=10, batch_size=16, preprocess={"scale": 1.0, "channel_axis": False})
    arrays = as_arrays(small())
    model = keras.Sequential([keras.Input((28, 28)), Record(), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True), run_eagerly=True)

    def fit(start: int) -> list[np.ndarray]:
        """The training batches of a run from epoch `start` to 3 (each epoch ends with one validation batch)."""
        pipes = make_pipelines(spec, arrays, start_epoch=start)
        seen.clear()
        model.fit(pipes.train, epochs=3, initial_epoch=start, steps_per_epoch=pipes.steps_per_epoch, verbose=0,
                  shuffle=False, validation_data=pipes.validation)
        assert len(seen) == (3 - start) * (pipes.steps_per_epoch + 1)
        return [b for i, b in enumerate(seen) if i % (pipes.steps_per_epoch + 1) < pipes.steps_per_epoch]

    uninterrupted = fit(0)
    steps = len(uninterrupted) // 3
    assert not np.array_equal(uninterrupted[0], uninterrupted[steps])  # epochs differ
    for k in (1, 2):
        resumed = fit(k)
        assert len(resumed) == (3 - k) * steps
        for a, b in zip(resumed, uninterrupted[k * steps:], strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------- commands


def test_info(tmp_path):
    folder = write_folder(tmp_path / "idx", small())
    result = CliRunner().invoke(data_command, ["info", "--dataset", str(folder), "--set", "data.validation=5"])
    assert result.exit_code == 0, result.output
    assert f"from files: {folder.resolve()}" in result.output
    assert "images uint8 (50, 28, 28), labels uint8 (50,)" in result.output
    assert "per class: 0: 5  1: 5" in result.output and "stored: min 0, max 255" in result.output
    assert "45 training, 5 validation" in result.output


def test_info_on_the_bundled_sample_and_bad_overrides():
    result = CliRunner().invoke(data_command, ["info"])
    assert result.exit_code == 0 and "from bundled" in result.output and "using the bundled sample" in result.stderr
    result = CliRunner().invoke(data_command, ["info", "--set", "data.validation=-1"])
    assert isinstance(result.exception, UserError) and "--set data.validation=-1: data.validation" in str(result.exception)


def test_preview_writes_a_png(tmp_path):
    folder = write_folder(tmp_path / "idx", small())
    out = tmp_path / "grid.png"
    args = ["preview", "--dataset", str(folder), "--out", str(out), "--count", "5", "--split", "test"]
    result = CliRunner().invoke(data_command, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in result.output


# ------------------------------------------------------------------------ full MNIST, opt-in

FULL = os.environ.get("MNIST_KERAS_MNIST_DIR")


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="set MNIST_KERAS_MNIST_DIR to the folder of the official MNIST files")
def test_full_mnist():
    arrays = load_arrays(Data(source="files"), data_dir=FULL)
    assert arrays.x_train.shape == (60_000, 28, 28) and arrays.x_test.shape == (10_000, 28, 28)
    assert arrays.y_train[:10].tolist() == FIRST_TRAIN_LABELS and arrays.y_test[:10].tolist() == FIRST_TEST_LABELS
    assert np.bincount(arrays.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    bundled = load_arrays(Data(source="bundled"))
    np.testing.assert_array_equal(bundled.x_train, arrays.x_train[:10_000])
    np.testing.assert_array_equal(bundled.x_test, arrays.x_test[:2_000])
