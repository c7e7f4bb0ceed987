"""The model zoo: every spec validates, parameter counts match the originals, every spec trains on
the bundled sample, and benchmarks/zoo.py builds its table from real runs."""

import importlib.util
import json
import math

import pytest
from click.testing import CliRunner

from conftest import ROOT, SHIPPED
from mnist_keras.cli import main
from mnist_keras.spec.loader import load_spec

ZOO = SHIPPED / "zoo"
SPECS = sorted(ZOO.glob("*.yaml"))
SMOKE = ["train.epochs=1", "data.max_train=512", "data.validation=128", "train.tensorboard.enabled=false"]

spec_loader = importlib.util.spec_from_file_location("zoo_benchmark", ROOT / "benchmarks" / "zoo.py")
zoo = importlib.util.module_from_spec(spec_loader)
spec_loader.loader.exec_module(zoo)


def params(file, **overrides):
    """Parameters per layer that has any, as the plan computes them."""
    return [p.trainable + p.non_trainable for p in load_spec(file).plan() if p.trainable + p.non_trainable]


def test_the_zoo_has_every_reference_model():
    names = {f.stem for f in SPECS}
    assert {"keras_mlp", "mindspore_lenet5", "paddle_cnn", "paddle_cnn_l2", "paddle_regression_mlp",
            "paddle_regression_cnn", "torch_mlp_linear", "torch_mlp_relu", "torch_mlp_bn", "torch_simplecnn",
            "caffe_lenet", "keras_convnet", "best"} <= names
    assert {f.stem for f in SPECS} == {load_spec(f).name for f in SPECS}  # file name == run name


@pytest.mark.parametrize("file", SPECS, ids=lambda f: f.stem)
def test_spec_validates_and_states_what_was_reported(file):
    result = CliRunner().invoke(main, ["validate", str(file)])
    assert result.exit_code == 0, result.output
    assert "Reported:" in (load_spec(file).description or "")


@pytest.mark.parametrize("name,expected", [
    ("mindspore_lenet5", [156, 2416, 48120, 10164, 850]),
    ("keras_convnet", [320, 18496, 16010]),                 # the Keras example's summary: 34,826 in all
    ("caffe_lenet", [520, 25050, 400500, 5010]),            # Caffe's LeNet: 431,080 in all
    ("paddle_cnn", [520, 10020, 9810]),
    ("keras_mlp", [200960, 32896, 1290]),
    ("torch_mlp_relu", [235500, 30100, 1010]),
])
def test_parameters_per_layer_match_the_original(name, expected):
    assert params(ZOO / f"{name}.yaml") == expected


@pytest.mark.parametrize("name,total", [("paddle_regression_mlp", 7971), ("paddle_regression_cnn", 11521)])
def test_regression_nets_have_the_tutorials_parameter_count(name, total):
    assert sum(params(ZOO / f"{name}.yaml")) == total


def test_reported_accuracies_are_read_from_the_descriptions():
    assert zoo.reported_accuracy(load_spec(ZOO / "mindspore_lenet5.yaml")) == pytest.approx(0.9904)
    assert zoo.reported_accuracy(load_spec(ZOO / "keras_convnet.yaml")) == pytest.approx(0.992)
    assert zoo.reported_accuracy(load_spec(ZOO / "torch_simplecnn.yaml")) is None


def smoke_fit(file, runs):
    result = CliRunner().invoke(main, ["fit", str(file), "--runs", str(runs), *(f"--set={s}" for s in SMOKE)])
    assert result.exit_code == 0, result.output
    (run,) = (runs / file.stem).iterdir()
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("file", [f for f in SPECS if not f.stem.startswith("paddle_regression")],
                         ids=lambda f: f.stem)
def test_spec_trains_on_the_sample(file, tmp_path):
    metrics = smoke_fit(file, tmp_path)
    assert metrics["epochs_done"] == 1
    assert math.isfinite(metrics["history"][0]["loss"]) and math.isfinite(metrics["test"]["loss"])


def test_regression_nets_train_and_the_table_sets_them_beside_their_classifiers(tmp_path):
    files = sorted(ZOO.glob("paddle_regression_*.yaml"))
    rows = []
    for file in files:
        metrics = smoke_fit(file, tmp_path)
        assert math.isfinite(metrics["test"]["loss"])
        spec = load_spec(file, SMOKE)
        assert zoo.finished_run(spec, tmp_path, None) is not None
        rows.append(zoo.row(file, spec, metrics))
    text = zoo.table(rows)
    assert text.count("| [`paddle_regression_") == 4
    for name in ("paddle_regression_mlp", "paddle_regression_cnn"):
        assert f"- `{name}` regresses the digit's value" in text and f"(`{name}_fixed`," in text
    assert f"{rows[0]['accuracy']:.2%}" in text


def test_table_replaces_only_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{zoo.BEGIN}\nold table\n{zoo.END}\noutro\n")
    zoo.write_table(readme, "new table")
    assert readme.read_text() == f"intro\n{zoo.BEGIN}\nnew table\n{zoo.END}\noutro\n"
