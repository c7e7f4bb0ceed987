"""Hostile and broken specs: each is refused with its message at file:line:col, exit code 2, within
2 seconds and bounded memory (a real CLI process under a 1 GiB address-space limit, its peak resident
memory checked), and nothing in it is executed or written."""

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from hostile import generated_specs
from mnist_keras.cli import main
from mnist_keras.errors import UserError
from mnist_keras.spec import Override
from mnist_keras.spec.loader import load_spec

COMMITTED = sorted((Path(__file__).parent / "bad_specs").glob("*.yaml"))
GENERATED = generated_specs()
NAMES = [p.stem for p in COMMITTED] + ["generated-" + Path(name).stem for name, _, _ in GENERATED]
MAX_SECONDS, MAX_RESIDENT_MIB, MAX_MESSAGE = 2.0, 300, 1000


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every bad spec by test id: (file, expected message)."""
    folder = tmp_path_factory.mktemp("hostile")
    found = {p.stem: (p, p.read_text().splitlines()[0].removeprefix("# expect: ")) for p in COMMITTED}
    for name, data, expected in GENERATED:
        (folder / name).write_bytes(data)
        found["generated-" + Path(name).stem] = (folder / name, expected)
    return found


@pytest.fixture
def nothing_runs(tmp_path, monkeypatch):
    """Work in an empty folder where starting a process fails the test; check it stays empty."""
    calls = []
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda self, *a, **k: calls.append(a))
    yield
    assert not calls and not list(work.iterdir())


def test_corpus_has_over_60_hostile_specs():
    assert len(NAMES) >= 60 and len(set(NAMES)) == len(NAMES)
    assert all(p.read_text().startswith("# expect: ") for p in COMMITTED)


@pytest.mark.parametrize("name", NAMES)
def test_refused_with_its_message_quickly(name, cases, nothing_runs):
    path, expected = cases[name]
    started = time.perf_counter()
    with pytest.raises(UserError) as caught:
        load_spec(path)
    seconds = time.perf_counter() - started
    messages = caught.value.messages
    assert any(expected in m for m in messages), messages
    assert all(len(m) <= MAX_MESSAGE for m in messages), [m[:MAX_MESSAGE] for m in messages]
    assert all(re.match(rf"{re.escape(str(path))}:\d+:\d+: (\(top level\)|[^ ]+): \S", m) for m in messages), messages
    assert seconds < MAX_SECONDS
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and expected in result.stderr
    assert "Traceback" not in result.output and not result.stdout


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))


def test_real_cli_refuses_them_all_under_a_memory_limit(cases, tmp_path):
    files = [str(path) for path, _ in cases.values()]
    validate_and_report_peak = (  # VmHWM: this process's peak resident memory (ru_maxrss counts the parent's)
        "import sys\nfrom mnist_keras.cli import main\ntry: main(sys.argv[1:])\nfinally: print('peak', next(int("
        "line.split()[1]) // 1024 for line in open('/proc/self/status') if line.startswith('VmHWM')), 'MiB', "
        "file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", validate_and_report_peak, "validate", *files], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not result.stdout
    assert int(re.search(r"peak (\d+) MiB", result.stderr).group(1)) < MAX_RESIDENT_MIB
    for path, expected in cases.values():
        assert f"error: {path}:" in result.stderr and expected in result.stderr, path
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("override,expected", [
    ("train.epochs=!!python/object/apply:os.system [touch pwned-by-spec]",
     "--set train.epochs=!!python/object/apply:os.system [touch pwned-by-spec]:1:1: (top level): the YAML tag"),
    ("train=!!python/name:os.system", "the YAML tag '!!python/name:os.system' is not allowed"),
    ("train.epochs=" + "9" * 5000, "a number of 5,000 characters is out of range"),
    ("train.epochs=.nan", "train.epochs: expected an integer, got nan"),
    ("train.optimizer.learning_rate=-.inf", "expected a finite number (not NaN or infinity), got -inf"),
    ("model.layers=" + "[" * 100 + "]" * 100, "nested more than 32 levels deep"),
    ("data.batch_size=4294967296", "data.batch_size: expected a value less than or equal to 2147483647"),
    ("runtime.max_params=1000", "the model has 7,850 parameters, over runtime.max_params = 1,000"),
    ("train.epochs=1e1", "--set train.epochs=1e1: train.epochs: expected an integer, got 10.0"),
    ("train.optimizer.learning_rate=1e999", "expected a finite number (not NaN or infinity), got inf"),
    ("train.optimizer.learning_rate=-1E-3", "learning_rate: expected a value greater than 0, got -0.001"),
    ("data.batch_size=1.28e2", "data.batch_size: expected an integer, got 128.0"),
    ("train={1: x}", "--set train={1: x}:1:2: 1: a key is a name (text), not a number"),
    ("train={epochs: 2, null: 3}", ":1:13: null: a key is a name (text), not null"),
    ("train={[a]: 1}", ":1:2: [a]: a key is a name (text), not a list"),
    ("model.layers[0]={{a: 1}: x}", ":1:2: {a:1}: a key is a name (text), not a mapping"),
    ("train={true: 1}", ":1:2: true: a key is a name (text), not true or false"),
    ("model.layers[1].dense.activation=ReLU", "(did you mean 'relu'?), got 'ReLU'"),
    ("train.optimizer=Adam", "unknown type 'Adam' (did you mean 'adam'?)"),
    ("train.Epochs=3", "unknown key 'Epochs' (did you mean 'epochs'?)"),
    ("name=" + "x" * 500_000, "--set name=xxxxxxxxxx"),
    ("runtime.device=" + "g" * 500_000, "got 'ggggggggggggggggggggggggggg...gggggggggggggggggggggggggggg'"),
    ("train." + "k" * 500_000 + "=1", f"unknown key '{'k' * 28}...{'k' * 29}'"),
    ("model.layers[0]=" + "z" * 500_000, "unknown layer 'zzzzzzzzzzzzzzzzzzzzzzzzzzz...zzzzzzzzzzzzzzzzzzzzzzzzzzzz'"),
    ("name=*" + "a" * 500_000, f"the alias *{'a' * 28}...{'a' * 29} names no anchor"),
    ("model.layers.x=1", "--set model.layers.x=1: model.layers is [{'flatten': {}}, {'dense': {'units': 10}}], not a"),
    ("description.x=1", "description is '" + "d" * 27 + "..."),
    ("model.layers[99]=flatten", "model.layers has 2 items, so [99] does not exist"),
    ("model[0]=1", "--set model[0]=1: model is not a list"),
    ("train epochs=3", "expected PATH=VALUE"),
])
def test_hostile_overrides(override, expected, write_spec, nothing_runs):
    spec = write_spec("model: {layers: [flatten, {dense: 10}]}\ndescription: " + "d" * 100_000 + "\n")
    result = CliRunner().invoke(main, ["validate", str(spec), "--set", override])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.output
    assert all(len(line) <= MAX_MESSAGE for line in result.stderr.splitlines())


@pytest.mark.parametrize("override,expected", [
    (Override("train.epochs=0", "--epochs 0"), ": --epochs 0: train.epochs: expected a value greater than 0, got 0"),
    (Override('runtime.device="gpu:x"', "--device gpu:x"), ": --device gpu:x: runtime.device: expected auto, cpu"),
    (Override('runtime.distribute="ring"', "--distribute ring"), ": --distribute ring: runtime.distribute: expected one"),
    (Override('name="no spaces"', "--name no spaces"), ": --name no spaces: name: a name is 1-64 letters"),
    (Override("name=" + "n" * 500_000, "--name " + "n" * 500_000), ": --name nnnnnnnnnn"),
    (Override("train.optimizer.learning_rate=abc", "--grid train.optimizer.learning_rate=abc"),
     ": --grid train.optimizer.learning_rate=abc: train.optimizer.learning_rate: expected a number"),
    (Override("train.epochs=!!python/name:os.system", "--epochs x"), "--epochs x:1:1: (top level): the YAML tag"),
    (Override("train.epochs.x=1", "--epochs 1"), "--epochs 1: train.epochs is 2, not a mapping"),
    (Override("train epochs=1", "--epochs 1"), "--epochs 1: expected PATH=VALUE"),
])
def test_overrides_name_the_flag_they_came_from(override, expected, write_spec, nothing_runs):
    spec = write_spec("model: {layers: [flatten, {dense: 10}]}\ntrain: {epochs: 2}\n")
    with pytest.raises(UserError) as caught:
        load_spec(spec, ["seed=1", override])
    assert any(expected in m for m in caught.value.messages), caught.value.messages
    assert not any("--set" in m for m in caught.value.messages)
    assert all(len(m) <= MAX_MESSAGE for m in caught.value.messages)


def test_grid_values_name_the_grid(write_spec, tmp_path):
    spec = write_spec("model: {layers: [flatten, {dense: 10}]}\n")
    result = CliRunner().invoke(main, ["sweep", str(spec), "--grid", "train.optimizer.learning_rate=0.1,abc",
                                       "--grid", "seed=1,2", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (f"{spec}: --grid train.optimizer.learning_rate=abc: train.optimizer.learning_rate: expected a number"
            in result.stderr) and "--set" not in result.stderr
    result = CliRunner().invoke(main, ["sweep", str(spec), "--grid", "train.epochs=1,!!python/name:os.system"])
    assert result.exit_code == 2 and "--grid train.epochs=!!python/name:os.system:1:1:" in result.stderr


def _special_files(folder: Path) -> dict[str, tuple[str, str]]:
    """Paths that are not readable regular files: (path, expected message) by name."""
    os.mkfifo(folder / "fifo.yaml")
    (folder / "folder.yaml").mkdir()
    (folder / "broken.yaml").symlink_to("gone.yaml")
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    (folder / "to_fifo.yaml").symlink_to(folder / "fifo.yaml")
    long_name = str(folder / ("d" * 200)) * 30 + ".yaml"
    return {
        "fifo": (str(folder / "fifo.yaml"), "fifo.yaml: a named pipe (FIFO), not a spec file"),
        "link to a fifo": (str(folder / "to_fifo.yaml"), "to_fifo.yaml: a named pipe (FIFO), not a spec file"),
        "device": ("/dev/zero", "/dev/zero: a character device, not a spec file"),
        "directory": (str(folder / "folder.yaml"), "folder.yaml: a directory, not a spec file"),
        "broken link": (str(folder / "broken.yaml"), "broken.yaml: no such file (a broken symbolic link to gone.yaml)"),
        "link loop": (str(folder / "loop.yaml"), "loop.yaml: cannot read it: Too many levels of symbolic links"),
        "long name": (long_name, "...dddd"),
        "missing": (str(folder / "missing.yaml"), "missing.yaml: no such file"),
    }


def test_special_files_are_refused_before_reading(tmp_path):
    """A FIFO or /dev/zero would hang or never end: the real CLI refuses each at once, by name."""
    cases = _special_files(tmp_path)
    result = subprocess.run([sys.executable, "-m", "mnist_keras", "validate", *(p for p, _ in cases.values())],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "Traceback" not in result.stderr and not result.stdout
    for name, (_, expected) in cases.items():
        assert expected in result.stderr, name
    assert all(len(line) <= MAX_MESSAGE for line in result.stderr.splitlines())


def test_unreadable_file_is_a_message(write_spec, monkeypatch):
    spec = write_spec("model: {layers: [flatten, {dense: 10}]}\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2 and f"error: {spec}: cannot read it: Permission denied" in result.stderr
