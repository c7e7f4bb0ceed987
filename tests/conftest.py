import contextlib
import os
import shutil
import signal
import subprocess
import traceback
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One pytest-xdist worker per core, each one TensorFlow thread per op: the default (a thread per core in every
# worker, and in every process a test starts) only has the workers' threads wait for each other's cores.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "model_specs"


def in_process(*args, cwd: Path | None = None, within: int | None = None) -> subprocess.CompletedProcess:
    """`python -m mnist_keras ARGS` in `cwd`, run in this process (CliRunner): the exit code, stdout and stderr of
    the command, without a process start, which is most of the time of a command refused before TensorFlow loads.
    An exception that is no exit (a traceback in a real process) fails the test, and so does a command still
    running after `within` seconds (a `serve` that should have been refused, and would serve for ever)."""
    from click.testing import CliRunner

    from mnist_keras.cli import main

    def too_long(*_):
        raise TimeoutError(f"mnist-keras {' '.join(map(str, args))} still running after {within} s")

    previous = signal.signal(signal.SIGALRM, too_long) if within else None
    signal.alarm(within or 0)
    try:
        with contextlib.chdir(cwd or Path.cwd()):
            result = CliRunner().invoke(main, [str(arg) for arg in args])
    finally:
        if within:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium (test_page.py, test_tracking.py); skipped where Debian's chromium and
    chromium-driver or selenium are missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, chromedriver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
    if not (shutil.which(chromium) and chromedriver):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    yield driver
    driver.quit()


# The modules that take longest, first: pytest-xdist hands each worker one module at a time in this order, so the
# short ones fill the gaps at the end instead of one long module running alone while the other workers wait.
LONGEST_FIRST = ["test_hosts", "test_tracking", "test_hostile_streaming", "test_transfer", "test_faults", "test_sweeps",
                 "test_own_images", "test_run_records", "test_export", "test_api", "test_serve", "test_sweeps_input",
                 "test_distribute",
                 "test_recipes_train", "test_sweeps_postgres", "test_train", "test_hostile_specs", "test_sweeps_grid",
                 "test_streaming", "test_keras_workaround"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.fspath).stem, len(rank)))  # stable: test order kept
