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
from mnist_keras.spec.loader import load_spec

COMMITTED = sorted((Path(__file__).parent / "bad_specs").glob("*.yaml"))
GENERATED = generated_specs()
NAMES = [p.stem for p in COMMITTED] + ["generated-" + Path(name).stem for name, _, _ in GENERATED]
MAX_SECONDS, MAX_RESIDENT_MIB = 2.0, 300


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
])
def test_hostile_overrides(override, expected, write_spec, nothing_runs):
    spec = write_spec("model: {layers: [flatten, {dense: 10}]}\n")
    result = CliRunner().invoke(main, ["validate", str(spec), "--set", override])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.output
