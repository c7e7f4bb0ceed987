import contextlib
import os
import shutil
import subprocess
import traceback
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "model_specs"


def in_process(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m mnist_keras ARGS` in `cwd`, run in this process (CliRunner): the exit code, stdout and stderr of
    the command, without a process start, which is most of the time of a command refused before TensorFlow loads.
    An exception that is no exit (a traceback in a real process) fails the test."""
    from click.testing import CliRunner

    from mnist_keras.cli import main

    with contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(main, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail("".join(traceback.format_exception(result.exception)))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def write_spec(tmp_path):
    """Write YAML text to a spec file in tmp_path and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def op_determinism():
    """TensorFlow's op determinism turned on for one test, and turned back off after it (tests share a process)."""
    from tensorflow.python.framework import config

    from mnist_keras.backend import tf

    was = config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was:
        config.disable_op_determinism()


TINY_SERVED = """
name: tiny
seed: 7
data: {source: bundled, max_train: 1280, validation: 256, batch_size: 64}
model:
  layers: [flatten, {dense: {units: 32, activation: relu}}, {dense: 10}]
train:
  epochs: 1
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run of a tiny Dense model trained for one epoch on the bundled sample, once per test process; tests that
    change a run take `tiny_run_copy`."""
    import mnist_keras as mk

    folder = tmp_path_factory.mktemp("served")
    (folder / "tiny.yaml").write_text(TINY_SERVED)
    run = mk.fit(mk.load_spec(folder / "tiny.yaml"), runs=folder / "runs")
    assert run.state.status == "finished" and run.state.epochs_done == 1
    return Path(run.path)


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of tiny_run in tmp_path/runs/tiny/, with the file modes fit gave it."""
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "tiny" / tiny_run.name))


@pytest.fixture(scope="session")
def tiny_server(tiny_run):
    """`mnist-keras serve` of tiny_run, running for the whole session."""
    from serve_process import Server

    with Server(tiny_run) as server:
        yield server
