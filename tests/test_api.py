"""The Python API and the run record (issue 12): the README's example, typed errors, and the defects the
old untyped state hid, each with a test that failed before."""

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from mnist_keras.cli import main

TINY = """
name: tiny
seed: 7
data: {source: bundled, max_train: 1280, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers: [flatten, {dense: {units: 32, activation: relu}}, {dense: 10}]
train:
  epochs: 2
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
EXTRA
runtime: {deterministic: true}
"""


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny(write_spec, extra: str = "", name: str = "tiny.yaml") -> Path:
    return write_spec(TINY.replace("EXTRA", extra), name)


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.glob("*/*") if p.is_dir()]
    return run


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python block, as written, on the bundled sample (paths made absolute)."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    code = code.replace('"model_specs/', f'"{ROOT}/model_specs/')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    run = scope["run"]
    assert run.state.epochs_done == 2 and run.state.status == "finished"
    assert 0.5 < run.metrics.test.accuracy <= 1
    assert run.path.resolve().parent.parent == tmp_path / "runs"


def test_api_is_silent_and_raises_typed_errors(write_spec, tmp_path, capfd):
    import mnist_keras as mk

    with pytest.raises(mk.UserError) as err:
        mk.load_spec(write_spec("model: {layers: [flatten, {dense: 7}]}\n"))
    assert err.value.exit_code == 2 and re.search(r"spec.yaml:1:\d+: model.layers\[1\]", err.value.messages[0])
    spec = mk.load_spec(tiny(write_spec), overrides=["train.epochs=1"])
    assert spec.overrides == {"train.epochs": 1}
    from mnist_keras.backend import keras

    class Seen(keras.callbacks.Callback):  # a caller's callback sees each epoch after the run's own
        epochs: list = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((epoch, logs["epoch_seconds"]))

    run = mk.fit(spec, runs=tmp_path / "runs", callbacks=[Seen()])
    assert Seen.epochs == [(0, run.state.history[0].epoch_seconds)]
    out, errors = capfd.readouterr()
    assert "training" not in out + errors and "Epoch" not in out + errors  # silent by default
    assert run.state.overrides == {"train.epochs": 1}
    assert json.loads((run.path / "state.json").read_text())["overrides"] == {"train.epochs": 1}
    opened = mk.open_run(run.path)
    assert opened.metrics == run.metrics and opened.spec.overrides == {"train.epochs": 1}
    model = mk.load_model(opened)
    assert model.count_params() == mk.build_model(spec).count_params()
    with pytest.raises(mk.UserError, match="the run finished after 1 epochs"):
        mk.resume(opened)
    with pytest.raises(mk.UserError, match="refusing to resume with a different spec"):
        mk.resume(opened, epochs=2, overrides=["train.optimizer.learning_rate=0.5"])
    resumed = mk.resume(run.path, epochs=2)
    assert resumed.state.epochs_done == 2 and resumed.metrics.epochs_done == 2
    assert [h.epoch for h in resumed.metrics.history] == [1, 2] and resumed.metrics.data.source == "bundled"
    evaluation = mk.evaluate(resumed.path)  # typed: the run's own test figures, per class by name
    assert evaluation.test.accuracy == pytest.approx(resumed.metrics.test.accuracy, abs=1e-4)
    assert list(evaluation.per_class) == resumed.class_names
    assert sum(c.images for c in evaluation.per_class.values()) == evaluation.images


def test_plateau_without_validation_is_refused_before_training(write_spec, tmp_path):
    """Defect 1: a plateau schedule watching val_loss with no validation set died with a traceback."""
    result = cli("fit", tiny(write_spec), "--set", "data.validation=0", "--set", "train.lr_schedule={type: plateau}",
                 "--runs", tmp_path / "runs")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "val_loss" in result.output and "data.validation" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra", [
    "  early_stopping: {patience: 1}\n  validation_freq: 2",
    "  lr_schedule: {type: plateau, patience: 1}\n  validation_freq: 2",
])
def test_callbacks_wait_for_epochs_with_validation(write_spec, tmp_path, extra):
    """Defect 2 (and its plateau twin): a metric not seen yet (validation every 2nd epoch) crashed the state."""
    path = write_spec(TINY.replace("train:\n", "train:\n" + extra + "\n").replace("EXTRA", ""), "cb.yaml")
    result = cli("fit", path, "--epochs", 3, "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    state = json.loads((only_run(tmp_path / "runs") / "state.json").read_text())
    assert state["status"] == "finished" and state["epochs_done"] == 3
    (saved,) = state["callbacks"].values()
    assert saved["best"] is not None  # the epoch-2 validation was seen


def test_best_weights_survive_a_resume(write_spec, tmp_path):
    """Defect 3: after --resume, restore_best_weights restored the best epoch since the resume. Monitoring the
    training loss in mode max makes epoch 1 the best (the loss falls), so the final model is epoch 1's."""
    extra = ("  early_stopping: {monitor: loss, mode: max, patience: 10}\n"
             "  checkpoint: {monitor: loss, mode: max}")
    path = write_spec(TINY.replace("train:\n", "train:\n" + extra + "\n").replace("EXTRA", ""), "es.yaml")
    assert cli("fit", path, "--runs", tmp_path / "runs").exit_code == 0
    run = only_run(tmp_path / "runs")
    result = cli("fit", "--resume", run, "--epochs", 4)
    assert result.exit_code == 0, result.output
    state = json.loads((run / "state.json").read_text())
    assert state["best"]["epoch"] == 1 and state["callbacks"]["early_stopping"]["best_epoch"] == 0
    from mnist_keras.model.objects import load_model

    final, best = load_model(run / "model.keras").get_weights(), load_model(run / "checkpoints/best.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, best))


def test_extending_a_cosine_run_trains_and_says_so(write_spec, tmp_path):
    """Defect 4: epochs added to a finished cosine run trained at learning rate 0, silently."""
    path = write_spec(TINY.replace("EXTRA", "  lr_schedule: {type: cosine}"), "cos.yaml")
    assert cli("fit", path, "--runs", tmp_path / "runs").exit_code == 0
    run = only_run(tmp_path / "runs")
    result = cli("fit", "--resume", run, "--epochs", 4)
    assert result.exit_code == 0, result.output
    assert "the run grows from 2 to 4 epochs; the cosine schedule now spans 4 epochs: epoch 3 starts at learning " \
           "rate 0.0015" in result.output
    rates = [h["learning_rate"] for h in json.loads((run / "state.json").read_text())["history"]]
    assert rates[2] == pytest.approx(0.0015, rel=1e-3) and 0 < rates[3] < rates[2]


def test_terminate_on_nan_false_trains_through(write_spec, tmp_path):
    """Defect 5: train.terminate_on_nan was accepted but nothing read it."""
    diverging = TINY.replace("{type: adam, learning_rate: 0.003}", "{type: sgd, learning_rate: 1.0e+8}")
    result = cli("fit", write_spec(diverging.replace("EXTRA", "  terminate_on_nan: false"), "nan.yaml"),
                 "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "loss nan" in result.output
    state = json.loads((only_run(tmp_path / "runs") / "state.json").read_text())
    assert state["epochs_done"] == 2 and state["history"][-1]["loss"] is None
    stopped = cli("fit", write_spec(diverging.replace("EXTRA", ""), "stop.yaml"), "--runs", tmp_path / "runs2")
    assert stopped.exit_code == 1 and "the loss became NaN" in stopped.output


def test_sweep_runs_do_not_inherit_determinism(write_spec, tmp_path):
    """Defect 6: once one run of a sweep turned on op determinism, every later run was deterministic too."""
    from tensorflow.python.framework import config

    result = cli("sweep", tiny(write_spec), "--grid", "runtime.deterministic=true,false", "--epochs", 1,
                 "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert not config.is_op_determinism_enabled()


def test_run_files_follow_the_umask(tiny_run_copy):
    """Defect 7: atomically written files got mode 0600 while the rest of the run followed the umask."""
    run = tiny_run_copy  # copied with the modes fit gave its files
    assert cli("report", run).exit_code == 0
    expected = 0o666 & ~_umask()
    for name in ("spec.yaml", "state.json", "metrics.json", "model.keras", "checkpoints/best.keras",
                 "checkpoints/epoch-0001.keras", "report/index.html", "report/report.json", "history.csv"):
        assert stat.S_IMODE((run / name).stat().st_mode) == expected, name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_newer_run_format_is_refused_with_its_version(tiny_run_copy, tmp_path):
    """Defect 8: a run that this version cannot read is refused with its format named."""
    run = tiny_run_copy
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "format": 99}))
    for args in (["fit", "--resume", run, "--epochs", 2], ["evaluate", run], ["report", run]):
        result = cli(*args)
        assert result.exit_code == 2 and "run format 99; this mnist-keras reads run formats 1 and 2 (the run was " \
            "written by a newer version: upgrade to read it)" in result.output, (args, result.output)
    listed = cli("runs", tmp_path / "runs")
    assert listed.exit_code == 0 and "unreadable" in listed.output


def test_format_1_runs_are_read(tiny_run_copy):
    """A run of mnist-keras 0.1 (state.json without a format, overrides as --set texts) still opens."""
    import mnist_keras as mk

    run = tiny_run_copy
    state = json.loads((run / "state.json").read_text())
    old = {key: value for key, value in state.items() if key not in ("format", "best", "data", "overrides")}
    old.update(overrides=["train.epochs=1"], best=state["best"]["value"], best_epoch=1, provenance=state["data"])
    (run / "state.json").write_text(json.dumps(old))
    opened = mk.open_run(run)
    assert opened.state.overrides == {"train.epochs": 1} and opened.state.best.epoch == 1
    assert cli("evaluate", run).exit_code == 0


def _digit_folders(root: Path) -> Path:
    """Split folders of two classes of bundled digits (PNG), a train image copied into test, a file that is no image."""
    from PIL import Image

    from mnist_keras.data import sources

    with np.load(sources.BUNDLED) as sample:
        x, y = sample["x_train"], sample["y_train"]
    for split, start in (("train", 0), ("test", 8)):
        for label, name in ((0, "zero"), (1, "one")):
            (root / split / name).mkdir(parents=True)
            for i in np.flatnonzero(y == label)[start:start + (8 if split == "train" else 3)]:
                Image.fromarray(x[i]).save(root / split / name / f"{i}.png")
    copied = next((root / "train" / "one").iterdir())
    (root / "test" / "one" / "copy.png").write_bytes(copied.read_bytes())
    (root / "train" / "zero" / "broken.png").write_bytes(b"not a png")
    return root


def test_data_functions_return_what_the_data_commands_print(tmp_path, capfd):
    """data_info, data_preview and data_check: typed facts, the problems found with their files, nothing printed."""
    import mnist_keras as mk

    root = _digit_folders(tmp_path / "digits")
    skip = ["data.on_bad_file=skip", "data.validation=4"]
    info = mk.data_info(dataset=str(root), overrides=skip)
    assert (info.dataset, info.source, info.path) == (str(root), "split-folders", str(root.resolve()))
    assert [(s.name, s.images_dtype, s.images_shape, s.per_class) for s in info.splits] == [
        ("train", "uint8", (16, 28, 28, 1), {"one": 8, "zero": 8}),
        ("test", "uint8", (7, 28, 28, 1), {"one": 4, "zero": 3})]
    assert (info.training, info.validation, info.test, info.input_shape) == (12, 4, 7, (28, 28, 1))
    assert info.held_out == "drawn per class with seed 42" and not info.fed_before_resize
    assert 0 <= info.stored.min < info.stored.mean < info.stored.max <= 255 and info.fed.max <= 1
    preview = mk.data_preview(tmp_path / "grid.png", dataset=str(root), count=5, split="test", overrides=skip)
    assert preview.path.read_bytes()[:4] == b"\x89PNG" and preview.split == "test"
    assert len(preview.titles) == 5 and set(preview.titles) <= {"one", "zero"} and preview.input_shape == (28, 28, 1)
    assert 0 <= preview.low < preview.high <= 1
    found = mk.data_check(dataset=str(root), overrides=skip)
    assert found.decoded and found.class_names == ["one", "zero"]
    assert found.counts == {"train": {"one": 6, "zero": 6}, "validation": {"one": 2, "zero": 2},
                            "test": {"one": 4, "zero": 3}} and found.images == {"train": 12, "validation": 4, "test": 7}
    assert [Path(file).name for file in found.skipped] == ["broken.png"]
    (shared,) = found.shared
    assert shared.startswith("the same image is in ") and "copy.png" in shared
    assert any("skipped 1 of" in note for note in found.notes) and f"warning: {shared}" in found.notes
    arrays = mk.data_check(overrides=["data.source=bundled"])
    assert not arrays.decoded and arrays.images == {"train": 10_000, "test": 2_000} and arrays.source == "bundled"
    out, errors = capfd.readouterr()
    assert out + errors == ""
    with pytest.raises(mk.UserError, match="the folder .* does not exist"):
        mk.data_preview(tmp_path / "no" / "grid.png")
    with pytest.raises(mk.UserError, match="--dataset nowhere"):
        mk.data_check(dataset="nowhere")
