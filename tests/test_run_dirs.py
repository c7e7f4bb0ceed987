"""Tampered, hostile and odd run directories (issue 13): every command that reads a run refuses what it
cannot trust with one message naming the file and exit code 2, never writes outside the run, and never
lets two processes train one run."""

import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_keras.cli import main

TINY = """
name: tiny
seed: 7
data: {source: bundled, max_train: 640, validation: 128, batch_size: 64}
model:
  layers: [flatten, {dense: {units: 16, activation: relu}}, {dense: 10}]
train: {epochs: 1, tensorboard: {enabled: false}}
"""


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run, trained once for the module; tests work on copies."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "tiny.yaml").write_text(TINY)
    assert cli("fit", folder / "tiny.yaml", "--runs", folder / "runs").exit_code == 0
    (run,) = (folder / "runs/tiny").iterdir()
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "runs/tiny/20260101-000000"
    shutil.copytree(finished, copy)
    return copy


def refused(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_resume_never_follows_a_symlinked_checkpoints_folder(run, tmp_path):
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / ".tmp-precious").write_text("the user's")
    (outside / "epoch-0001.keras").write_text("the user's")
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(outside)
    refused(cli("fit", "--resume", run, "--epochs", 2), "checkpoints: a symbolic link inside the run directory")
    assert sorted(p.name for p in outside.iterdir()) == [".tmp-precious", "epoch-0001.keras"]
    assert (outside / ".tmp-precious").read_text() == "the user's"


def test_a_symlinked_report_folder_is_refused(run, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (run / "report").symlink_to(tmp_path / "elsewhere")
    refused(cli("report", run), "report: a symbolic link")
    assert not list((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("entry", ["../../outside.keras", "/etc/passwd", "checkpoints/../../x.keras", "model.keras"])
def test_a_checkpoint_entry_outside_the_run_is_refused(run, entry):
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "status": "interrupted", "checkpoint": entry}))
    refused(cli("fit", "--resume", run, "--epochs", 2), "state.json: checkpoint:", "checkpoints/ folder")


def test_a_run_held_by_a_live_process_is_not_resumed(run):
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "status": "running", "pid": os.getpid(),
                                                "host": socket.gethostname()}))
    with open(run / ".lock", "w") as lock:  # as the training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()} {socket.gethostname()}\n")
        lock.flush()
        refused(cli("fit", "--resume", run, "--epochs", 2), f"process {os.getpid()} on this machine is still training")
    assert json.loads((run / "state.json").read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("content", ["[]", "{}", '"text"', "null", "1e999", '{"status": 5}',
                                     '{"format": 2, "epochs_done": -1}', '{"format": "2"}',
                                     '{"format": 2, "history": {"a": 1}}', '{"format": 2, "history": [{"loss": "x"}]}',
                                     '{"format": 2, "callbacks": []}', '{"format": 2, "surprise": 1}', "not json", ""])
def test_a_malformed_state_json_is_named(run, tmp_path, content):
    (run / "state.json").write_text(content)
    for args in (["fit", "--resume", run, "--epochs", 2], ["evaluate", run], ["predict", run, __file__],
                 ["report", run, "--out", tmp_path / "report"]):
        refused(cli(*args), f"{run / 'state.json'}:")
    listed = cli("runs", run.parent.parent)
    assert listed.exit_code == 0 and "unreadable" in listed.output and str(run / "state.json") in listed.output


@pytest.mark.parametrize("content", ["[]", "{}", '{"test": 1}', "garbage"])
def test_a_malformed_metrics_json_is_named(run, tmp_path, content):
    (run / "metrics.json").write_text(content)
    refused(cli("report", run, "--out", tmp_path / "report"), f"{run / 'metrics.json'}:")
    listed = cli("runs", run.parent.parent)
    assert listed.exit_code == 0 and "unreadable" in listed.output


def test_a_spec_edited_after_training_no_longer_fits(run, tmp_path):
    text = (run / "spec.yaml").read_text()
    (run / "spec.yaml").write_text(text.replace("units: 16", "units: 24").replace("image_shape: [28, 28, 1]",
                                                                                   "image_shape: [28, 28, 1]"))
    edited = (run / "spec.yaml").read_text()
    (run / "spec.yaml").write_text(edited.replace("num_classes: 10", "num_classes: 12").replace("units: 10", "units: 12"))
    refused(cli("evaluate", run), "the spec does not fit the model: the model outputs 10 values, the spec expects 12")
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "status": "interrupted"}))
    refused(cli("fit", "--resume", run, "--epochs", 2), "the spec does not fit the model")
    (run / "spec.yaml").write_text("model: {layers: [flatten, {dense: 10}]}\ntrain: {epochs: -3}\n")
    refused(cli("evaluate", run), f"{run / 'spec.yaml'}:2:")


def test_evaluate_and_predict_with_another_models_spec(run, write_spec, tmp_path):
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    other = write_spec(TINY.replace("max_train: 640", "max_train: 640, preprocess: {resize: [20, 20]}"), "other.yaml")
    refused(cli("evaluate", run / "model.keras", "--spec", other),
            "the spec does not fit the model: the model takes images of shape [28, 28, 1], the spec gives [20, 20, 1]")
    refused(cli("predict", run, tmp_path / "digit.png", "--spec", other), "the spec does not fit the model")


@pytest.mark.parametrize("config", [
    "not json", "[]", '{"cluster": {}}', '{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
    '{"cluster": {"worker": [1, 2]}, "task": {"type": "worker", "index": 0}}',
    '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
    '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
    '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
    '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
    '{"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
    '{"cluster": {"worker": ["a:1"]}, "task": []}',
])
def test_malformed_tf_config(write_spec, tmp_path, monkeypatch, config):
    monkeypatch.setenv("TF_CONFIG", config)
    refused(cli("fit", write_spec(TINY), "--distribute", "multi_worker", "--runs", tmp_path / "runs"), "TF_CONFIG:")
    assert not (tmp_path / "runs").exists()


def test_schema_out_into_a_missing_folder(tmp_path):
    refused(cli("schema", "--out", tmp_path / "no/such/schema.json"), "the folder", "does not exist")


@pytest.mark.parametrize("override, fragment", [
    ("train.optimizer.learning_rate=0.5", "refusing to resume with a different spec"),
    ("model.layers[1].dense.units=8", "refusing to resume with a different spec"),
    ("name=!!python/object/apply:os.system ['touch /tmp/pwned']", "is not allowed"),
    ("train.nope=1", "unknown key 'nope'"),
])
def test_resume_checks_set_values(run, override, fragment):
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "status": "interrupted"}))
    refused(cli("fit", "--resume", run, "--epochs", 2, "--set", override), fragment)
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 1


RECORD_KEYS = ["format", "status", "epochs_done", "history", "data_dir", "data", "overrides", "callbacks", "best",
               "checkpoint", "learning_rate", "rng", "device", "pid", "host"]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(RECORD_KEYS), JSON, max_size=6))
def test_generated_run_records_are_read_or_refused(run, record):
    """Random state.json contents: `runs` lists the run (maybe as unreadable), open_run reads it or raises
    UserError naming the file; never another exception."""
    import mnist_keras as mk

    (run / "state.json").write_text(json.dumps(record))
    try:
        mk.open_run(run)
    except mk.UserError as err:
        assert str(run / "state.json") in err.messages[0]
    listed = cli("runs", run.parent.parent)
    assert listed.exit_code == 0, listed.output
