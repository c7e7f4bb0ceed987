"""Opt-in: the shipped specs on the full official MNIST (pytest -m slow, with MNIST_KERAS_MNIST_DIR set)."""

import json
import os

import pytest
from click.testing import CliRunner

from conftest import SHIPPED
from mnist_keras.cli import main

MNIST_DIR = os.environ.get("MNIST_KERAS_MNIST_DIR")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not MNIST_DIR, reason="set MNIST_KERAS_MNIST_DIR to the MNIST files")]


@pytest.mark.parametrize("name,target", [("lenet5", 0.990), ("dense", 0.980), ("fast", 0.990)])
def test_shipped_spec_reaches_its_accuracy(name, target, tmp_path):
    result = CliRunner().invoke(main, ["fit", str(SHIPPED / f"{name}.yaml"), "--data-dir", MNIST_DIR,
                                       "--runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / name).iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["counts"] == {"train": 60000, "test": 10000}
    assert metrics["test"]["accuracy"] >= target
