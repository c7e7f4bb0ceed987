"""runtime.autotune and `mnist-keras tune-runtime`: the runtime chosen by measurement keeps only choices whose loss
agrees with float32 (a choice made to disagree is rejected however fast), never measures what the spec sets, is
recorded in the run and applied, not measured again, on resume, which ends bit-identical to a run with the chosen
values written in the spec. Real fits on the bundled sample."""

import json

import pytest

from conftest import in_process
from mnist_keras.train import autotune

SPEC = """
name: tuned
seed: 3
data: {source: bundled, max_train: 1600, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers:
    - conv2d: {filters: 4, kernel_size: 3, activation: relu}
    - flatten
    - dropout: 0.2
    - dense: 10
train:
  epochs: 2
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
runtime: {autotune: true, deterministic: true}
"""


def state_of(runs) -> dict:
    (state,) = runs.glob("*/*/state.json")
    return json.loads(state.read_text())


def metrics_of(runs) -> dict:
    (metrics,) = runs.glob("*/*/metrics.json")
    return json.loads(metrics.read_text())


def test_the_choice_is_recorded_applied_on_resume_and_bit_identical_to_writing_it(write_spec, tmp_path):
    spec = write_spec(SPEC)
    first = in_process("fit", spec, "--runs", tmp_path / "tuned", "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert "runtime chosen by measurement" in first.stdout + first.stderr
    recorded = state_of(tmp_path / "tuned")["autotune"]
    assert recorded["timings"][0]["choice"] == "float32, XLA off, steps_per_execution 1"
    assert recorded["pinned"] == [] and len(recorded["timings"]) >= 2  # the reference, several steps per call
    assert not any("XLA on" in t["choice"] for t in recorded["timings"])  # Keras runs no XLA under determinism
    assert all(t["agrees"] for t in recorded["timings"]
               if t["choice"] == autotune._label({name: recorded[name] for name in autotune.TUNED}))

    (run,) = (tmp_path / "tuned").glob("*/*")
    resumed = in_process("fit", "--resume", run, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "runtime chosen by measurement" not in resumed.stdout + resumed.stderr  # measured once, before the first epoch
    assert state_of(tmp_path / "tuned")["autotune"] == recorded

    written = [f"runtime.{name}={json.dumps(recorded[name])}" for name in autotune.TUNED]
    plain = in_process("fit", spec, "--runs", tmp_path / "written", "--set", "runtime.autotune=false",
                       *[arg for value in written for arg in ("--set", value)])
    assert plain.returncode == 0, plain.stderr
    assert metrics_of(tmp_path / "tuned")["weights_sha256"] == metrics_of(tmp_path / "written")["weights_sha256"]
    assert metrics_of(tmp_path / "tuned")["history"] == [
        {**epoch, "epoch_seconds": ours["epoch_seconds"], "images_per_second": ours["images_per_second"]}
        for epoch, ours in zip(metrics_of(tmp_path / "written")["history"], metrics_of(tmp_path / "tuned")["history"])]


def test_a_choice_whose_loss_disagrees_is_rejected_however_fast(write_spec, tmp_path, monkeypatch):
    measured = autotune.measure

    def xla_breaks_the_numbers(spec, batches, class_weight, on_gpu):
        speed, loss = measured(spec, batches, class_weight, on_gpu)
        return (1e9, 3 * loss) if spec.runtime.jit_compile else (speed, loss)  # fastest, but wrong

    monkeypatch.setattr(autotune, "measure", xla_breaks_the_numbers)
    result = in_process("fit", write_spec(SPEC.replace(", deterministic: true", "")), "--runs", tmp_path / "runs", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    recorded = state_of(tmp_path / "runs")["autotune"]
    assert recorded["jit_compile"] is False
    (xla,) = [t for t in recorded["timings"] if "XLA on" in t["choice"]]
    assert xla["agrees"] is False and xla["images_per_second"] > max(
        t["images_per_second"] for t in recorded["timings"] if t is not xla)
    assert "XLA on" in result.stdout + result.stderr and "rejected" in result.stdout + result.stderr


def test_fields_the_spec_sets_are_never_measured(write_spec, tmp_path):
    spec = write_spec(SPEC.replace("{autotune: true, deterministic: true}",
                                   "{autotune: true, mixed_precision: false, jit_compile: true}"))
    result = in_process("tune-runtime", spec)
    assert result.returncode == 0, result.stderr
    assert "kept from the spec: jit_compile, mixed_precision" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("  ") and "images/s" in line]
    assert rows and not any("mixed" in row for row in rows)  # mixed precision was never tried
    assert all("XLA on" in row for row in rows[1:])
    assert "chosen: runtime.steps_per_execution=" in result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("setting", ["runtime.distribute=mirrored"])
def test_tune_runtime_measures_on_one_device(write_spec, setting):
    result = in_process("tune-runtime", write_spec(SPEC), "--set", setting)
    assert result.returncode == 2 and "tune-runtime measures on one device" in result.stderr, result.stderr


def test_a_model_xla_cannot_compile_is_neither_tried_with_it_nor_warned_about(write_spec, tmp_path):
    rotating = SPEC.replace("    - conv2d: {filters: 4", "    - random_rotation: {factor: 0.05}\n    - conv2d: {filters: 4")
    tuned = in_process("tune-runtime", write_spec(rotating.replace(", deterministic: true", "")))
    assert tuned.returncode == 0, tuned.stderr
    assert "note: XLA not tried: Keras cannot compile RandomRotation with it" in tuned.stderr
    assert "XLA on" not in tuned.stdout and "UserWarning" not in tuned.stderr

    pinned = in_process("fit", write_spec(rotating.replace("{autotune: true, deterministic: true}", "{jit_compile: true}")),
                        "--runs", tmp_path / "runs", "--epochs", "1")
    assert pinned.returncode == 0, pinned.stderr
    assert "note: runtime.jit_compile: true runs without XLA: Keras cannot compile RandomRotation" in pinned.stderr
    assert "UserWarning" not in pinned.stdout + pinned.stderr
