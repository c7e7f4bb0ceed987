"""TensorBoard dashboards, reports, the runs table and sweeps, on two real runs of a 2x1 sweep."""

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_keras.cli import main
from mnist_keras.sweeps.grid import combinations, split_values

SPEC = """
name: tiny
seed: 7
data: {source: bundled, max_train: 1280, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers:
    - flatten
    - dense: {units: 32, activation: relu}
    - dense: 10
train:
  epochs: 2
  optimizer: {type: adam, learning_rate: 0.003}
runtime: {deterministic: true}
"""
GRID = ["train.optimizer.learning_rate=0.003,0.01", "data.batch_size=32"]


def bundled_test_count() -> int:
    from mnist_keras.data.sources import BUNDLED

    with np.load(BUNDLED) as sample:
        return len(sample["y_test"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2x1 sweep of the tiny spec: (runs root, run directories by learning rate, sweep output)."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "tiny.yaml").write_text(SPEC)
    args = ["sweep", str(folder / "tiny.yaml"), "--runs", str(folder / "runs")]
    for grid in GRID:
        args += ["--grid", grid]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = {}
    for run in (folder / "runs" / "tiny").iterdir():
        state = json.loads((run / "state.json").read_text())
        runs[str(state["overrides"]["train.optimizer.learning_rate"])] = run  # the run record: path -> value
    return folder / "runs", runs, result.stdout


def accumulate(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(path), size_guidance={"tensors": 0}).Reload()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_sweep_trains_every_combination_and_ranks_them(sweep):
    root, runs, output = sweep
    assert set(runs) == {"0.003", "0.01"}
    rows = [line.split() for line in output.splitlines() if re.match(r"\d+ ", line)]
    assert [row[0] for row in rows] == ["1", "2"] and all(row[2] == "32" for row in rows)
    accuracies = [float(row[3].rstrip("%")) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    for lr, run in runs.items():
        state = json.loads((run / "state.json").read_text())
        assert state["pid"] == os.getpid() and state["host"] == socket.gethostname()  # CliRunner: this process
        assert state["status"] == "finished" and state["overrides"] == {"train.optimizer.learning_rate": float(lr),
                                                                          "data.batch_size": 32}
        best = max(h["val_accuracy"] for h in state["history"])
        assert any(row[1] == lr and row[3] == f"{best:.2%}" and row[-1] == str(run) for row in rows)
        assert "batch_size: 32" in (run / "spec.yaml").read_text()


def test_validation_images_predict_through_one_traced_function(tmp_path):
    import keras
    import tensorflow as tf

    from mnist_keras.reports.dashboards import ValidationImages

    rng = np.random.default_rng(0)
    x, y = rng.random((70, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 70)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    validation = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # 32 + 32 + 6: a short last batch
    images = ValidationImages(tmp_path, validation, (x * 255).astype(np.uint8), y, [str(i) for i in range(10)])
    images.set_model(model)
    images.on_train_begin()
    for epoch in range(2):
        np.testing.assert_array_equal(images.predictions(), model.predict(x, verbose=0).argmax(axis=-1))
        images.on_epoch_end(epoch)
    images.on_train_end()
    assert images.classify.experimental_get_tracing_count() == 1
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_validation_images_every_n_epochs_and_after_the_last(tmp_path):
    import keras
    import tensorflow as tf

    from mnist_keras.reports.dashboards import ValidationImages

    x, y = np.zeros((8, 28, 28, 1), np.float32), np.arange(8) % 2
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    images = ValidationImages(tmp_path, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), x.astype(np.uint8), y,
                              ["0", "1"], every=3)
    images.set_model(model)
    images.set_params({"epochs": 7})
    images.on_train_begin()
    for epoch in range(7):
        images.on_epoch_end(epoch)
    images.on_train_end()
    assert [e.step for e in accumulate(tmp_path).Tensors("confusion_matrix")] == [2, 5, 6]  # epochs 3, 6, 7 (last)


def test_event_files_hold_every_tag(sweep):
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata

    _, runs, _ = sweep
    for lr, run in runs.items():
        logs = run / "logs"
        train, validation, top = accumulate(logs / "train"), accumulate(logs / "validation"), accumulate(logs)
        assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_seconds",
                "epoch_images_per_second"} <= set(train.Tags()["tensors"])
        assert "epoch_epoch_seconds" not in train.Tags()["tensors"]  # issue 14: one `epoch_` only
        assert train.Tags()["graph"]
        assert [e.step for e in train.Tensors("epoch_learning_rate")] == [0, 1]
        assert tf.make_ndarray(train.Tensors("epoch_learning_rate")[0].tensor_proto) == pytest.approx(float(lr))
        assert {"epoch_loss", "epoch_accuracy", "confusion_matrix", "misclassified"} <= set(validation.Tags()["tensors"])
        for tag, smallest in (("confusion_matrix", (500, 400)), ("misclassified", (800, 300))):
            events = validation.Tensors(tag)
            assert [e.step for e in events] == [0, 1]
            width, height, png = tf.make_ndarray(events[-1].tensor_proto)
            assert png_size(png) == (int(width), int(height)) and png_size(png) >= smallest
        assert {"spec", "Test/accuracy", "Test/loss", metadata.SESSION_START_INFO_TAG} <= set(top.Tags()["tensors"])
        spec_text = tf.make_ndarray(top.Tensors("spec")[0].tensor_proto).item().decode()
        assert "name: tiny" in spec_text and f"learning_rate: {lr}" in spec_text
        metrics = json.loads((run / "metrics.json").read_text())
        test_accuracy = tf.make_ndarray(top.Tensors("Test/accuracy")[0].tensor_proto)
        assert test_accuracy == pytest.approx(metrics["test"]["accuracy"])
        content = top.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        start = metadata.parse_session_start_info_plugin_data(content)
        hparams = start.hparams
        assert start.group_name == f"{run.name} tiny"  # issue 23: the part that tells runs apart first
        assert hparams["Train.optimizer.learning_rate"].number_value == pytest.approx(float(lr))
        assert hparams["Data.batch_size"].string_value == "32"  # --grid data.batch_size=32: the same column
        assert hparams["Train.optimizer.type"].string_value == "adam"
        assert hparams["Train.lr_schedule.type"].string_value == "constant"
        assert hparams["Model.layers"].string_value == "dense32 dense10"
        assert hparams["model.params"].string_value == str(784 * 32 + 32 + 33 * 10)  # issue 23: not 25450.0
        assert hparams["seed"].string_value == "7" and hparams["train.epochs"].string_value == "2"
        assert "data.batch_size" not in hparams and "train.optimizer.learning_rate" not in hparams


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.server
def test_tensorboard_server_serves_scalars_images_and_hparams(sweep):
    root, runs, _ = sweep
    base = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host", "127.0.0.1",
         "--port", base.rsplit(":", 1)[1], "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )

    def ask(path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 90
        names = {f"tiny/{run.name}/logs{sub}" for run in runs.values() for sub in ("", "/train", "/validation")}
        while True:  # the server answers first, then loads the event files in the background
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "tensorboard did not serve the runs within 90 s"
            try:
                if set(ask("/data/runs")) >= names:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        scalars = ask("/data/plugin/scalars/tags")
        images = ask("/data/plugin/images/tags")
        for run in runs.values():
            prefix = f"tiny/{run.name}/logs"
            assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_images_per_second"} <= set(scalars[prefix + "/train"])
            assert {"Test/accuracy", "Test/loss"} <= set(scalars[prefix])
            assert {"confusion_matrix", "misclassified"} <= set(images[prefix + "/validation"])
        series = ask(f"/data/plugin/scalars/scalars?run={prefix}/validation&tag=epoch_accuracy")
        assert [point[1] for point in series] == [0, 1]
        experiment = ask("/data/plugin/hparams/experiment", {"experimentName": ""})
        infos = {info["name"]: info for info in experiment["hparamInfos"]}
        assert [m["name"]["tag"] for m in experiment["metricInfos"][:2]] == ["Test/accuracy", "Test/loss"]  # first
        assert infos["Train.optimizer.learning_rate"]["domainInterval"] == {"minValue": 0.003, "maxValue": 0.01}
        assert infos["Train.optimizer.learning_rate"]["differs"] and not infos["Data.batch_size"]["differs"]
        batch = infos["Data.batch_size"]
        assert batch["type"] == "DATA_TYPE_STRING" and batch["domainDiscrete"] == ["32"]  # shown as 32, not 32.000
        # The HParams tab checks the first 5 of this order (a stable sort, differing ones first): issue 23
        shown = sorted(experiment["hparamInfos"], key=lambda info: not info.get("differs", False))[:5]
        assert [info["name"] for info in shown] == ["Train.optimizer.learning_rate", "Data.batch_size", "Model.layers",
                                                    "Train.lr_schedule.type", "Train.optimizer.type"]
        groups = ask("/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        assert len(groups["sessionGroups"]) == 2
        for group in groups["sessionGroups"]:
            (session,) = group["sessions"]
            run = runs[f"{group['hparams']['Train.optimizer.learning_rate']:g}"]
            assert session["name"] == f"tiny/{run.name}/logs"
            assert group["name"] == f"{run.name} tiny"  # issues 14, 23: a row per run, its folder's name first
            values = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
            metrics = json.loads((run / "metrics.json").read_text())
            assert values[("", "Test/accuracy")] == pytest.approx(metrics["test"]["accuracy"])
            assert values[("validation", "epoch_accuracy")] == pytest.approx(metrics["history"][-1]["val_accuracy"])
    finally:
        server.kill()
        server.wait(timeout=30)


def test_report_compares_runs_with_figures_and_numbers(sweep, tmp_path):
    from matplotlib.image import imread

    _, runs, _ = sweep
    ordered = [runs["0.003"], runs["0.01"]]
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", *map(str, ordered), "--out", str(out)])
    assert result.exit_code == 0, result.output
    shapes = {png.name: imread(png).shape for png in out.glob("*.png")}
    assert set(shapes) == {"curves.png"} | {f"{i}-tiny-{kind}.png" for i in (1, 2)
                                            for kind in ("confusion", "per-class", "misclassified")}
    assert all(height >= 300 and width >= 500 for height, width, _ in shapes.values()), shapes
    numbers = json.loads((out / "report.json").read_text())["runs"]
    page = (out / "index.html").read_text()
    for run, summary in zip(ordered, numbers):
        counts = np.array(summary["confusion"])
        assert counts.shape == (10, 10) and counts.sum() == summary["test_images"] == bundled_test_count()
        metrics = json.loads((run / "metrics.json").read_text())
        assert summary["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=2e-3)
        assert summary["per_class_accuracy"] == pytest.approx(list(np.diag(counts) / counts.sum(axis=1)))
        assert f"tiny/{run.name}" in page
    assert page.count("<img ") == 7 and "learning_rate: 0.01" in page


def test_report_of_several_runs_needs_out_and_real_runs(sweep, tmp_path):
    _, runs, _ = sweep
    result = CliRunner().invoke(main, ["report", *map(str, runs.values())])
    assert result.exit_code == 2 and "--out" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not a run directory" in result.stderr and not (tmp_path / "r").exists()


def finished_process_id() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_runs_table_shows_each_state(sweep, tmp_path):
    _, runs, _ = sweep
    source = runs["0.01"]
    root = tmp_path / "runs"
    shutil.copytree(source, root / "tiny" / source.name)
    base = json.loads((source / "state.json").read_text())
    states = {
        "20260101-000001": {"status": "running", "pid": finished_process_id(), "host": socket.gethostname()},
        "20260101-000002": {"status": "running", "pid": os.getpid(), "host": socket.gethostname()},
        "20260101-000003": {"status": "failed"},
        "20260101-000004": {"status": "interrupted", "epochs_done": 1, "history": base["history"][:1]},
    }
    for stamp, changes in states.items():
        run = root / "other" / stamp
        run.mkdir(parents=True)
        shutil.copy(source / "spec.yaml", run)
        (run / "state.json").write_text(json.dumps({**base, **changes}))
    broken = root / "other" / "20260101-000005"
    broken.mkdir()
    shutil.copy(source / "spec.yaml", broken)
    (broken / "state.json").write_text("{not json")
    with open(root / "other" / "20260101-000002" / ".lock", "w") as lock:  # as the training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = CliRunner().invoke(main, ["runs", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # the table; why a run is unreadable goes to stderr
    assert lines[0].split() == ["name", "started", "epochs", "best", "val", "acc", "test", "acc", "state", "directory"]
    assert "cannot be read as JSON" in result.stderr
    shown = {line.split()[-1]: line for line in lines[1:]}
    assert len(shown) == 6
    metrics = json.loads((source / "metrics.json").read_text())
    best = max(h["val_accuracy"] for h in metrics["history"])
    copied = shown[str(root / "tiny" / source.name)]
    assert " 2/2 " in copied and f"{best:.2%}" in copied and f"{metrics['test']['accuracy']:.2%}" in copied
    assert " finished " in copied
    expected = {"20260101-000001": "interrupted (stale)", "20260101-000002": "running",
                "20260101-000003": "failed", "20260101-000004": "interrupted", "20260101-000005": "unreadable"}
    for stamp, state in expected.items():
        line = shown[str(root / "other" / stamp)]
        assert f" {state} " in line and "2026-01-01 00:00:0" in line, line
    assert f"{base['history'][0]['val_accuracy']:.2%}" in shown[str(root / "other" / "20260101-000004")]
    result = CliRunner().invoke(main, ["runs", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no such runs folder" in result.stderr


@pytest.mark.parametrize("change", ["validation: 256", "loss"])
def test_runs_without_validation_images_still_log_the_rest(change, write_spec, tmp_path):
    spec = SPEC.replace("epochs: 2", "epochs: 1")
    if change == "loss":  # a regression on the digit value: no classes to draw
        spec = spec.replace("shuffle: 1000}", "shuffle: 1000, preprocess: {one_hot: false}}")
        spec = spec.replace("- dense: 10", "- dense: 1").replace("train:\n", "train:\n  loss: mse\n")
    else:
        spec = spec.replace("validation: 256", "validation: 0")
    result = CliRunner().invoke(main, ["fit", str(write_spec(spec)), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert {"spec", "Test/accuracy"} <= set(accumulate(run / "logs").Tags()["tensors"])
    validation = run / "logs" / "validation"
    if validation.exists():
        tags = set(accumulate(validation).Tags()["tensors"])
        assert "epoch_loss" in tags and not tags & {"confusion_matrix", "misclassified"}


def test_sweep_checks_every_combination_before_training(write_spec, tmp_path):
    spec = str(write_spec(SPEC))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["sweep", spec, "--grid", "train.optimizer.learning_rate=0.1,fast",
                                       "--runs", str(runs)])
    assert result.exit_code == 2 and "--grid train.optimizer.learning_rate=fast" in result.stderr  # the flag typed (issue 13)
    result = CliRunner().invoke(main, ["sweep", spec, "--grid", "train.epochs", "--runs", str(runs)])
    assert result.exit_code == 2 and "expected PATH=V1,V2" in result.stderr
    result = CliRunner().invoke(main, ["sweep", spec, "--grid", "seed=1", "--grid", "seed=2", "--runs", str(runs)])
    assert result.exit_code == 2 and "more than once" in result.stderr
    assert not runs.exists()


def test_grid_values_and_random_sample():
    assert split_values("[32, 64],[128],7") == ["[32, 64]", "[128]", "7"]
    grid = ["a=1,2,3", "b=x,y"]
    everything = combinations(grid)
    assert everything[:2] == [["a=1", "b=x"], ["a=1", "b=y"]] and len(everything) == 6
    sample = combinations(grid, sample=4, seed=3)
    assert len(sample) == 4 and len({tuple(c) for c in sample}) == 4 and sample == combinations(grid, 4, 3)
    assert all(c in everything for c in sample) and combinations(grid, sample=10) == everything
