"""The model zoo: every spec validates and builds as planned, parameter counts match the originals, the specs
that train something no other spec trains train on the bundled sample, and benchmarks/zoo.py builds its table
from real runs."""

import importlib.util
import json
import math

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT, SHIPPED
from mnist_keras.cli import main
from mnist_keras.spec.loader import load_spec
from test_builder import check_matches_keras

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


@pytest.mark.parametrize("file", SPECS, ids=lambda f: f.stem)
def test_spec_builds_as_planned(file):
    check_matches_keras(load_spec(file))


TRAINED = {  # the specs trained on the sample (the regression nets in their own test), and what only they train
    "best": "augmentation layers, batch norm, dropout, label smoothing, a cosine schedule with warmup",
    "caffe_lenet": "kernel and bias regularizers, an inverse_time schedule by step",
    "keras_mlp": "categorical_crossentropy",
    "mindspore_lenet5": "resize and normalize in preprocess, drop_remainder, sparse_categorical_crossentropy named",
    "paddle_cnn": "a polynomial schedule",
    "recipes": "random erasing, strided convolutions, a one-cycle schedule, an EMA of the weights, shuffle: all",
    "torch_mlp_bn": "batch norm with its own momentum and epsilon",
    "torch_simplecnn": "conv_pool_stack",
}
IGNORED = {"name", "description", "seed", "runtime", "data.dataset"}


def features(value, path: str = "") -> set[str]:
    """What a spec file asks for, as it trains: its key paths (list items merged), with the values that are words
    (a schedule's type, a loss); a layer's words (an activation, an initializer) count only where the spec is built."""
    if path in IGNORED:
        return set()
    if isinstance(value, dict):
        return set().union(*(features(v, f"{path}.{k}".lstrip(".")) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(features(v, path) for v in value))
    if path == "model.layers":  # a layer without arguments: `flatten`
        return {f"{path}.{value}"}
    if isinstance(value, (str, bool)) and not path.startswith("model.layers."):
        return {f"{path}={value}"}
    return {path}


def test_the_specs_left_untrained_train_nothing_the_trained_ones_do_not():
    """A new spec with something to train that no trained spec has (a loss, a schedule, a layer) fails here until it
    joins TRAINED."""
    asks = {f.stem: features(yaml.safe_load(f.read_text())) for f in SPECS}
    assert set(TRAINED) <= set(asks)
    trained = set().union(*(asks[name] for name in [*TRAINED, "paddle_regression_mlp", "paddle_regression_cnn"]))
    assert {name: sorted(wants - trained) for name, wants in asks.items() if wants - trained} == {}
    assert "train.lr_schedule.type=polynomial" in asks["paddle_cnn"] and "model.layers.flatten" in asks["keras_mlp"]


def smoke_fit(file, runs, epochs: int = 1):
    smoke = [*SMOKE, f"train.epochs={epochs}"]
    result = CliRunner().invoke(main, ["fit", str(file), "--runs", str(runs), *(f"--set={s}" for s in smoke)])
    assert result.exit_code == 0, result.output
    (run,) = (runs / file.stem).iterdir()
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("file", [ZOO / f"{name}.yaml" for name in TRAINED], ids=lambda f: f.stem)
def test_spec_trains_on_the_sample(file, tmp_path):
    epochs = 2 if load_spec(file).train.optimizer.ema else 1  # an average of the weights is refused over one epoch
    metrics = smoke_fit(file, tmp_path, epochs)
    assert metrics["epochs_done"] == epochs
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
