"""Hostile run records, runs trained twice at once, and fine-tuned runs that stand on their own (issue 24).

Bad input ends with exit 2 and one message naming the file (or the run), never a traceback or a hang; nothing the
user had is changed. Races, serving, the FIFO lock and a fine-tuned run whose earlier run is gone go through
`python -m mnist_keras` processes; the two runs the tests share are trained, and the refusals made before TensorFlow
loads are run, in this process (`in_process`), and one refusal of each kind also as a real process, which must end
the same."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, in_process

PRE = """
name: pre
seed: 7
data: {source: bundled, max_train: 256, validation: 64, batch_size: 64}
model:
  layers:
    - flatten
    - dense: {units: 16, activation: relu}
    - dense: 10
train: {epochs: 1, tensorboard: {enabled: false}}
"""

FINETUNE = """
name: ft
seed: 7
data: {source: bundled, max_train: 256, validation: 64, batch_size: 64}
model:
  layers:
    - backbone: {run: RUN, until: dense_1}
    - dense: 10
train: {epochs: 1, tensorboard: {enabled: false}}
"""

DEEP = 100_000


def mk(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m mnist_keras ARGS`, its output as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "mnist_keras", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def fresh_process(commands: list[list], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Each of `commands` (`mnist-keras ARGS`) one after the other in one new process, which loads TensorFlow
    once: the exit code, stdout and stderr of each."""
    code = ("import json, sys; from click.testing import CliRunner; from mnist_keras.cli import main; "
            "print(json.dumps([(r.exit_code, r.stdout, r.stderr) for r in "
            "(CliRunner().invoke(main, args) for args in json.loads(sys.argv[1]))]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([list(map(str, c)) for c in commands])],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [subprocess.CompletedProcess(c, *result) for c, result in zip(commands, json.loads(done.stdout))]


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "mnist_keras", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 with a short message holding every fragment, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "RecursionError" not in output, output
    assert len(result.stderr.splitlines()) <= 3, output
    for fragment in fragments:
        assert fragment in output, output
    return output


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def only_run(folder: Path) -> Path:
    (run,) = folder.iterdir()
    return run


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(an earlier run, a run fine-tuned from it), each one epoch; the fine-tuning spec names the earlier run by
    a path relative to the folder it was trained in. Tests work on copies, or put back what they move."""
    folder = tmp_path_factory.mktemp("records")
    (folder / "pre.yaml").write_text(PRE)
    ok(in_process("fit", "pre.yaml", "--runs", "runs", cwd=folder))
    pre = only_run(folder / "runs/pre")
    (folder / "ft.yaml").write_text(FINETUNE.replace("RUN", str(pre.relative_to(folder))))
    ok(in_process("fit", "ft.yaml", "--runs", "runs", cwd=folder))
    return pre, only_run(folder / "runs/ft")


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the earlier run, interrupted after its epoch (so `fit --resume` would continue it)."""
    copy = tmp_path / "runs/pre/20260101-000000"
    shutil.copytree(trained[0], copy)
    edit(copy / "state.json", status="interrupted")
    return copy


def edit(file: Path, **changes) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def nested(depth: int, shape: str) -> str:
    return "[" * depth + "]" * depth if shape == "list" else '{"a": ' * depth + "1" + "}" * depth


def lock_held(run: Path) -> bool:
    try:
        with open(run / ".lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        pass
    return False


# ------------------------------------------------------------------------------------ JSON nested too deep


@pytest.mark.parametrize("file", ["state.json", "metrics.json"])
@pytest.mark.parametrize("shape", ["list", "object", "inside a record", "just over the limit"])
def test_json_nested_too_deep_is_named_by_every_command(run, tmp_path, file, shape):
    if shape == "inside a record":  # a record like the tool's, with one value nested 100,000 deep
        text = json.dumps({**json.loads((run / file).read_text()), "data": None})
        text = text.replace('"data": null', '"data": ' + nested(DEEP, "object"))
    elif shape == "just over the limit":  # within Python's recursion limit, beyond what any record nests
        text = nested(65, "list")
    else:
        text = nested(DEEP, shape)
    (run / file).write_text(text)
    where = f"{run / file}: JSON nested deeper than 64 levels"
    for args in (["fit", "--resume", run, "--epochs", 2], ["evaluate", run],
                 ["export", run, "--out", tmp_path / "out"]):
        refused(in_process(*args), where)
    if (file, shape) == ("state.json", "list"):  # one real process, the others in this one
        refused(mk("serve", run, "--port", 0, timeout=60), where)
    else:
        refused(in_process("serve", run, "--port", 0, within=60), where)
    listed = in_process("runs", run.parent.parent)
    assert listed.returncode == 0 and "unreadable" in listed.stdout and where in listed.stderr, listed
    assert (run / file).read_text() == text and not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape", ["list", "object"])
def test_an_export_record_nested_too_deep_is_named(run, tmp_path, shape):
    folder = tmp_path / "out" / "pre"
    folder.mkdir(parents=True)
    (folder / "export.json").write_text(nested(DEEP, shape))
    refused(in_process("export", run, "--out", tmp_path / "out"), f"{folder / 'export.json'}: JSON nested deeper than")
    assert sorted(p.name for p in folder.iterdir()) == ["export.json"]


def test_an_earlier_runs_record_nested_too_deep_is_named(run, tmp_path):
    (run / "state.json").write_text(nested(DEEP, "list"))
    (tmp_path / "ft.yaml").write_text(FINETUNE.replace("RUN", str(run)))
    refused(in_process("fit", tmp_path / "ft.yaml", "--runs", tmp_path / "new"),
            f"{run / 'state.json'}: JSON nested deeper")
    assert not list((tmp_path / "new").rglob("state.json"))


# ------------------------------------------------------------------------------------ backbone cycles


def point_at(run: Path, backbone: Path) -> None:
    """Make `run`'s spec take its backbone from `backbone` (as a tampered or hand-made run would)."""
    (run / "spec.yaml").write_text(FINETUNE.replace("name: ft", "name: pre").replace("RUN", str(backbone)))


def test_a_run_naming_itself_as_its_backbone_is_refused(run, tmp_path):
    from PIL import Image

    point_at(run, run)
    cycle = f"backbone runs form a cycle: {run} -> {run}"
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    for args in (["fit", "--resume", run, "--epochs", 2], ["evaluate", run], ["predict", run, image],
                 ["export", run, "--out", tmp_path / "out"], ["report", run, "--out", tmp_path / "report"]):
        refused(in_process(*args), cycle)
    (tmp_path / "ft.yaml").write_text(FINETUNE.replace("RUN", str(run)))
    refused(in_process("validate", tmp_path / "ft.yaml"), cycle)
    refused(in_process("fit", tmp_path / "ft.yaml", "--runs", tmp_path / "new"), cycle)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("length", [2, 3])
def test_runs_naming_each_other_as_backbones_are_refused(run, tmp_path, length):
    chain = [run] + [run.parent / f"20260101-00000{i}" for i in range(1, length)]
    for other in chain[1:]:
        shutil.copytree(run, other)
    for here, there in zip(chain, chain[1:] + chain[:1]):
        point_at(here, there)
    (tmp_path / "ft.yaml").write_text(FINETUNE.replace("RUN", str(chain[0])))
    through = " -> ".join(str(r) for r in chain + chain[:1])
    refused(in_process("validate", tmp_path / "ft.yaml"), f"backbone runs form a cycle: {through}")
    refused(in_process("fit", tmp_path / "ft.yaml", "--runs", tmp_path / "new"),
            f"backbone runs form a cycle: {through}")
    from_second = " -> ".join(str(r) for r in chain[1:] + chain[:2])
    refused(in_process("evaluate", chain[0]), f"backbone runs form a cycle: {from_second}")
    refused(in_process("fit", "--resume", chain[0], "--epochs", 2), f"backbone runs form a cycle: {from_second}")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------ wrong types in a record

STATE_CASES = [
    ("epochs_done", "1"), ("epochs_done", True), ("epochs_done", 1.0), ("epochs_done", -1), ("epochs_done", None),
    ("epochs_done", 2**70), ("epochs_done", [1]),
    ("pid", 2**70), ("pid", 2**31), ("pid", -5), ("pid", 0), ("pid", "123"), ("pid", True), ("pid", 1.5),
    ("format", True), ("format", 2.5), ("format", "2"),
    ("learning_rate", "0.001"), ("learning_rate", True),
    ("status", 1), ("classes", "0123456789"), ("history", [{"loss": "2.3"}]), ("history", [{"loss": True}]),
]


@pytest.mark.parametrize("field, value", STATE_CASES, ids=[f"{f}={v!r}"[:40] for f, v in STATE_CASES])
def test_a_state_json_field_of_the_wrong_type_is_named(run, field, value):
    record = json.loads((run / "state.json").read_text())
    record[field] = value
    if field == "pid":  # a run that says it is training: the liveness check reads the pid
        record["status"] = "running"
    (run / "state.json").write_text(json.dumps(record))
    refused(in_process("fit", "--resume", run, "--epochs", 2), f"{run / 'state.json'}: {field}")
    listed = in_process("runs", run.parent.parent)
    assert listed.returncode == 0 and "unreadable" in listed.stdout, listed
    assert f"{run / 'state.json'}: {field}" in listed.stderr and "Traceback" not in listed.stderr, listed.stderr


NESTED_CASES = [("best", "epoch", "1"), ("best", "epoch", 0), ("best", "epoch", 2**40), ("best", "epoch", True),
                ("best", "value", "0.9"), ("best", "value", None)]


@pytest.mark.parametrize("field, key, value", NESTED_CASES, ids=[f"{f}.{k}={v!r}" for f, k, v in NESTED_CASES])
def test_a_nested_field_of_the_wrong_type_is_named(run, field, key, value):
    record = json.loads((run / "state.json").read_text())
    record[field] = {**(record[field] or {"monitor": "val_accuracy", "value": 0.5, "epoch": 1}), key: value}
    (run / "state.json").write_text(json.dumps(record))
    refused(in_process("fit", "--resume", run, "--epochs", 2), f"{run / 'state.json'}: {field}.{key}")


METRICS_CASES = [("seed", "7"), ("seed", True), ("epochs_done", 1.0), ("epochs_done", -1), ("test", {"accuracy": "1"}),
                 ("images_per_second", "fast"), ("seconds_per_epoch", [None])]


@pytest.mark.parametrize("field, value", METRICS_CASES, ids=[f"{f}={v!r}" for f, v in METRICS_CASES])
def test_a_metrics_json_field_of_the_wrong_type_is_named(run, tmp_path, field, value):
    edit(run / "metrics.json", **{field: value})
    refused(in_process("evaluate", run), f"{run / 'metrics.json'}: {field}")
    refused(in_process("report", run, "--out", tmp_path / "report"), f"{run / 'metrics.json'}: {field}")
    listed = in_process("runs", run.parent.parent)
    assert listed.returncode == 0 and f"{run / 'metrics.json'}: {field}" in listed.stderr, listed


def ends_the_same_in_a_real_process(*args) -> None:
    real, here = mk(*args), in_process(*args)
    assert (real.returncode, real.stdout, real.stderr) == (here.returncode, here.stdout, here.stderr), args


def test_a_real_process_ends_each_kind_of_refusal_as_this_process_does(run, tmp_path):
    """The refusals here run in this process; `python -m mnist_keras` gives one of each kind (a record nested too
    deep, the runs table naming an unreadable run, a field of the wrong type, a backbone cycle) the same exit code
    and output."""
    state = (run / "state.json").read_text()
    (run / "state.json").write_text(nested(DEEP, "list"))
    ends_the_same_in_a_real_process("fit", "--resume", run, "--epochs", 2)
    ends_the_same_in_a_real_process("runs", run.parent.parent)
    (run / "state.json").write_text(state)
    edit(run / "metrics.json", seed="7")
    ends_the_same_in_a_real_process("report", run, "--out", tmp_path / "report")
    point_at(run, run)
    ends_the_same_in_a_real_process("evaluate", run)
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------------------------------ one process trains a run


def test_two_resumes_started_together_train_the_run_once(run):
    procs = [start("fit", "--resume", run, "--epochs", 3) for _ in range(2)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    codes = sorted(proc.returncode for proc in procs)
    assert codes == [0, 2], outputs
    second = outputs[[proc.returncode for proc in procs].index(2)]
    # refused while the other trains, or, when the other has already trained it by the time this one holds the
    # lock, refused for that (it read the run's record before)
    assert ("is still training this run" in second or "another process trained this run while this command was "
            "starting (it is now finished after epoch 3)" in second) and "Traceback" not in second, second
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "finished" and state["epochs_done"] == 3 and len(state["history"]) == 3


def test_a_resume_that_read_the_record_before_another_trained_the_run_is_refused(run):
    """The race of two resumes, one step at a time: this one reads the run's record, another trains the run and
    lets go of its lock, then this one takes the lock: refused, the other's epoch kept, not trained again."""
    import mnist_keras as mk
    from mnist_keras.errors import UserError
    from mnist_keras.runs.run import open_run

    stale = open_run(run)
    mk.resume(run, epochs=2)
    with pytest.raises(UserError, match="another process trained this run while this command was starting "
                                        r"\(it is now finished after epoch 2\)"):
        mk.resume(stale, epochs=3)
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "finished" and state["epochs_done"] == 2 and len(state["history"]) == 2


def test_a_run_in_training_is_refused_and_free_again_after_a_crash(run):
    trainer = start("fit", "--resume", run, "--epochs", 3)
    try:
        deadline = time.monotonic() + 240
        while not (lock_held(run) and json.loads((run / "state.json").read_text())["status"] == "running"):
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.stdout.read()
            time.sleep(0.2)
        os.kill(trainer.pid, signal.SIGSTOP)  # holding the lock, for as long as the checks below take
        refused(mk("fit", "--resume", run, "--epochs", 3),
                f"{run}: process {trainer.pid} on this machine is still training this run")
        listed = ok(mk("runs", run.parent.parent))
        assert " running " in listed and "stale" not in listed, listed
        os.kill(trainer.pid, signal.SIGKILL)  # a crash: no chance to mark the run or let go of anything
        trainer.wait(timeout=30)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert json.loads((run / "state.json").read_text())["status"] == "running"
    assert "interrupted (stale)" in ok(mk("runs", run.parent.parent))
    ok(in_process("fit", "--resume", run, "--epochs", 3))  # here: no second TensorFlow to load
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "finished" and state["epochs_done"] == 3


def test_the_lock_is_let_go_on_every_way_out(tmp_path):
    from mnist_keras.errors import UserError
    from mnist_keras.runs.files import training_holder, training_lock

    for stop in (UserError("refused"), KeyboardInterrupt(), OSError("disk full"), None):
        try:
            with training_lock(tmp_path):
                assert training_holder(tmp_path) == f"process {os.getpid()} on this machine"
                if stop:
                    raise stop
        except (UserError, KeyboardInterrupt, OSError):
            pass
        assert training_holder(tmp_path) is None


def test_a_lock_file_that_is_no_file_is_refused(run, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's")
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(precious)
    refused(in_process("fit", "--resume", run, "--epochs", 2), ".lock: a symbolic link inside the run directory")
    assert precious.read_text() == "the user's"
    (run / ".lock").unlink()
    os.mkfifo(run / ".lock")  # opening it to read would wait for a writer: real processes, with a timeout
    assert "interrupted" in ok(mk("runs", run.parent.parent, timeout=60))
    refused(mk("fit", "--resume", run, "--epochs", 2, timeout=120), f"{run / '.lock'}: not a regular file")
    (run / ".lock").unlink()
    (run / ".lock").mkdir()
    refused(in_process("fit", "--resume", run, "--epochs", 2), f"{run / '.lock'}: cannot open the run's lock")


# ------------------------------------------------------------------------------------ a fine-tuned run alone


def test_a_fine_tuned_run_stands_on_its_own(trained, tmp_path):
    from PIL import Image

    pre, ft = trained
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    spec = (ft / "spec.yaml").read_text()
    assert f"run: {pre}," in spec  # the earlier run by its absolute path, for provenance
    assert json.loads((ft / "state.json").read_text())["backbone"]["run"] == str(pre)
    ok(in_process("predict", ft, tmp_path / "digit.png", cwd=tmp_path))  # from another folder than it was trained in
    copy = tmp_path / "ft-copy"
    shutil.copytree(ft, copy)
    moved = pre.parent.parent / "pre-moved"
    pre.parent.rename(moved)  # the earlier run is gone: a new process, which holds nothing of it
    try:
        predicted, evaluated, exported, resumed = fresh_process(
            [["predict", ft, tmp_path / "digit.png"], ["evaluate", ft], ["export", ft, "--out", tmp_path / "export"],
             ["fit", "--resume", copy, "--epochs", 2]], cwd=tmp_path)
        assert "digit.png" in ok(predicted) and "test accuracy" in ok(evaluated)
        ok(exported)
        assert (tmp_path / "export/ft/export.json").is_file()
        ok(resumed)
        assert json.loads((copy / "state.json").read_text())["epochs_done"] == 2
        assert " finished " in ok(in_process("runs", copy.parent))
    finally:
        moved.rename(pre.parent)
