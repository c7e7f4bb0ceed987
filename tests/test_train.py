"""Training on the bundled sample: fit, schedules, optimizers, checkpoints, resume, TensorBoard, bad input."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_keras.cli import main
from mnist_keras.runs.files import create_run_dir

TINY = """
name: tiny
seed: 7
data: {{source: bundled, max_train: {max_train}, validation: 256, batch_size: 64, shuffle: 1000}}
model:
  layers:
    - flatten
    - dense: {{units: 32, activation: relu}}
    - dense: 10
train:
  epochs: {epochs}
  optimizer: {{type: adam, learning_rate: 0.003}}
  tensorboard: {{histograms: true}}
{extra}runtime: {{deterministic: true}}
"""


def fit(args, runs: Path):
    result = CliRunner().invoke(main, ["fit", *map(str, args), "--runs", str(runs)])
    return result


def only_run(runs: Path, name: str = "tiny") -> Path:
    (run,) = sorted((runs / name).iterdir())
    return run


@pytest.fixture
def tiny(write_spec):
    def make(epochs=2, max_train=1280, extra=""):
        return write_spec(TINY.format(epochs=epochs, max_train=max_train, extra=extra), "tiny.yaml")

    return make


def fitted_once(tmp_path_factory, epochs: int, max_train: int):
    """`fit` of the tiny spec, for a module's tests that read the run (or copy it): (the result, the run)."""
    folder = tmp_path_factory.mktemp(f"fitted-{epochs}")
    (folder / "tiny.yaml").write_text(TINY.format(epochs=epochs, max_train=max_train, extra=""))
    result = fit([folder / "tiny.yaml"], folder / "runs")
    assert result.exit_code == 0, result.output
    return result, only_run(folder / "runs")


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """3 epochs on 3000 images: test_fit_beats_chance_and_writes_the_run, test_evaluate_and_predict_image_files."""
    return fitted_once(tmp_path_factory, epochs=3, max_train=3000)


def test_fit_beats_chance_and_writes_the_run(three_epochs):
    result, run = three_epochs
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", result.output).group(1))
    assert accuracy > 75  # chance is 10%
    assert f"tensorboard --logdir {run}" in result.output
    for name in ("spec.yaml", "state.json", "metrics.json", "model.keras", "history.csv",
                 "checkpoints/best.keras", "checkpoints/epoch-0003.keras"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]) == 3
    assert metrics["data"]["source"] == "bundled"
    assert metrics["device"].startswith("cpu") and metrics["versions"]["keras"].startswith("3")
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy / 100, abs=1e-4)
    assert all(h["images_per_second"] > 0 and h["epoch_seconds"] > 0 for h in metrics["history"])


SCHEDULES = {
    # type: (spec, lr of epoch e given base lr 0.1 and 5 epochs of 4 steps)
    "constant": ("{type: constant}", lambda e: 0.1),
    "exponential": ("{type: exponential, decay_rate: 0.5, every: 2}", lambda e: 0.1 * 0.5 ** (e / 2)),
    "step": ("{type: step, every: 2, gamma: 0.5}", lambda e: 0.1 * 0.5 ** (e // 2)),
    "multistep": ("{type: multistep, milestones: [1, 3], gamma: 0.1}", lambda e: 0.1 * 0.1 ** ((e >= 1) + (e >= 3))),
    "polynomial": ("{type: polynomial, end_learning_rate: 0.01, power: 2}",
                   lambda e: (0.1 - 0.01) * (1 - e / 5) ** 2 + 0.01),
    "cosine": ("{type: cosine, alpha: 0.1}", lambda e: 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * e / 5)))),
    "cosine_warmup": ("{type: cosine, warmup: 1}", lambda e: 0.0 if e == 0 else 0.1 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 4))),
    "inverse_time": ("{type: inverse_time, gamma: 0.5, power: 0.75}", lambda e: 0.1 * (1 + 0.5 * e) ** -0.75),
    "steps_unit": ("{type: step, every: 8, gamma: 0.5, unit: step}", lambda e: 0.1 * 0.5 ** (e * 4 // 8)),
}


def schedule_spec(tiny, tmp_path, sched: str) -> Path:
    """The tiny spec with SGD at 0.1 and `sched`, over 5 epochs of 4 steps (256 of 512 images train, 64 a batch)."""
    spec = tiny(epochs=5, max_train=512, extra=f"  lr_schedule: {sched}\n").read_text()
    spec = spec.replace("{type: adam, learning_rate: 0.003}", "{type: sgd, learning_rate: 0.1}")
    path = tmp_path / "sched.yaml"
    path.write_text(spec.replace("validation: 256", "validation: 256, drop_remainder: true"))
    return path


@pytest.mark.parametrize("name", SCHEDULES)
def test_learning_rate_per_epoch_follows_its_formula(name, tiny, tmp_path):
    """The optimizer compile_model makes, read as the epoch callback reads it at the start of each epoch
    (after 4 steps an epoch); test_a_trained_run_logs_the_learning_rate_of_its_schedule trains one."""
    from mnist_keras.model.build import build_model
    from mnist_keras.spec.loader import load_spec
    from mnist_keras.train.compile import compile_model, current_lr

    sched, formula = SCHEDULES[name]
    spec = load_spec(schedule_spec(tiny, tmp_path, sched))
    model = build_model(spec)
    compile_model(model, spec, steps_per_epoch=4)
    logged = []
    for epoch in range(5):
        model.optimizer.iterations.assign(epoch * 4)
        logged.append(current_lr(model))
    assert logged == pytest.approx([formula(e) for e in range(5)], rel=1e-4, abs=1e-7)


def test_a_trained_run_logs_the_learning_rate_of_its_schedule(tiny, tmp_path):
    """The wiring: the schedule's learning rate at the start of each epoch is what the run's history holds."""
    sched, formula = SCHEDULES["cosine_warmup"]
    result = fit([schedule_spec(tiny, tmp_path, sched)], tmp_path / "runs")
    assert result.exit_code == 0, result.output
    history = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())["history"]
    logged = [h["learning_rate"] for h in history]
    assert logged == pytest.approx([formula(e) for e in range(5)], rel=1e-4, abs=1e-7)


def test_plateau_cuts_the_learning_rate(tiny, tmp_path):
    extra = "  lr_schedule: {type: plateau, monitor: val_loss, factor: 0.5, patience: 0, min_delta: 1000}\n"
    assert fit([tiny(epochs=4, max_train=512, extra=extra)], tmp_path / "runs").exit_code == 0
    history = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())["history"]
    assert [h["learning_rate"] for h in history] == pytest.approx([0.003, 0.003, 0.0015, 0.00075])


OPTIMIZERS = {  # spec: (Keras class, its configuration as the spec sets it)
    "{type: sgd, learning_rate: 0.05, momentum: 0.9, nesterov: true, clipnorm: 1.0}":
        ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "clipnorm": 1.0}),
    "{type: adam, amsgrad: true}": ("Adam", {"learning_rate": 0.001, "amsgrad": True}),
    "{type: adamw, weight_decay: 0.01}": ("AdamW", {"weight_decay": 0.01}),
    "nadam": ("Nadam", {"learning_rate": 0.001}),
    "{type: rmsprop, momentum: 0.5, centered: true}": ("RMSprop", {"momentum": 0.5, "centered": True}),
    "{type: adagrad, learning_rate: 0.05}": ("Adagrad", {"learning_rate": 0.05}),
    "{type: adadelta, learning_rate: 1.0, global_clipnorm: 5.0}":
        ("Adadelta", {"learning_rate": 1.0, "global_clipnorm": 5.0}),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_is_built_as_the_spec_says_and_trains(optimizer, tiny, tmp_path):
    """The optimizer compile_model makes, with the spec's arguments, fits the tiny model on bundled images."""
    from mnist_keras.backend import keras
    from mnist_keras.data import load_arrays, make_pipelines
    from mnist_keras.model.build import build_model
    from mnist_keras.spec.loader import load_spec
    from mnist_keras.train.compile import compile_model

    path = tiny(epochs=1, max_train=1280)
    path.write_text(path.read_text().replace("{type: adam, learning_rate: 0.003}", optimizer))
    spec = load_spec(path)
    pipes = make_pipelines(spec, load_arrays(spec.data))
    keras.utils.set_random_seed(spec.seed)
    model = build_model(spec)
    compile_model(model, spec, pipes.steps_per_epoch)
    name, config = OPTIMIZERS[optimizer]
    assert type(model.optimizer).__name__ == name
    assert {key: model.optimizer.get_config()[key] for key in config} == pytest.approx(config)
    model.fit(pipes.train, epochs=1, steps_per_epoch=pipes.steps_per_epoch, verbose=0, shuffle=False)
    loss, accuracy = model.evaluate(pipes.test, verbose=0)
    assert math.isfinite(loss) and accuracy > 0.2


def test_an_optimizer_from_the_spec_trains_through_fit(tiny, tmp_path):
    """The wiring, once: `fit` of a spec with another optimizer than the default exits 0 with a useful model."""
    path = tiny(epochs=1, max_train=1280)
    path.write_text(path.read_text().replace("{type: adam, learning_rate: 0.003}", next(iter(OPTIMIZERS))))
    result = fit([path], tmp_path / "runs")
    assert result.exit_code == 0, result.output
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["loss"]) and metrics["test"]["accuracy"] > 0.2


def final_weights(run: Path):
    import keras

    return keras.models.load_model(run / "model.keras").get_weights()


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tiny, tmp_path):
    extra = "  lr_schedule: {type: step, every: 1, gamma: 0.5}\n"
    assert fit([tiny(epochs=3, extra=extra)], tmp_path / "full").exit_code == 0
    assert fit([tiny(epochs=1, extra=extra)], tmp_path / "part").exit_code == 0
    part = only_run(tmp_path / "part")
    result = CliRunner().invoke(main, ["fit", "--resume", str(part), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    full = only_run(tmp_path / "full")
    for a, b in zip(final_weights(full), final_weights(part)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history = json.loads((part / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["learning_rate"] for h in history] == pytest.approx([0.003, 0.0015, 0.00075])
    assert len((part / "history.csv").read_text().splitlines()) == 4  # header + 3 epochs, appended


def test_resume_refuses_a_different_spec(tiny, tmp_path):
    spec = tiny(epochs=1)
    assert fit([spec], tmp_path / "runs").exit_code == 0
    run = only_run(tmp_path / "runs")
    before = (run / "state.json").read_text()
    result = CliRunner().invoke(main, ["fit", str(spec), "--resume", str(run), "--epochs", "2",
                                       "--set", "model.layers[1].dense.units=64"])
    assert result.exit_code == 2
    assert "refusing to resume with a different spec" in result.stderr and "units: 64" in result.stderr
    assert (run / "state.json").read_text() == before


def test_tensorboard_event_files_hold_the_scalars(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert fit([tiny(epochs=2)], tmp_path / "runs").exit_code == 0
    logs = only_run(tmp_path / "runs") / "logs"
    train = EventAccumulator(str(logs / "train"), size_guidance={"tensors": 0}).Reload()
    valid = EventAccumulator(str(logs / "validation"), size_guidance={"tensors": 0}).Reload()
    tags = set(train.Tags()["tensors"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_images_per_second"} <= tags
    assert any(t.endswith("histogram") for t in tags)
    assert {"epoch_loss", "epoch_accuracy"} <= set(valid.Tags()["tensors"])
    assert [e.step for e in train.Tensors("epoch_loss")] == [0, 1]
    assert train.Tags()["graph"]


def test_run_directories_are_never_reused(tmp_path):
    runs = [create_run_dir(tmp_path, "same") for _ in range(3)]
    assert len(set(runs)) == 3 and all(r.is_dir() for r in runs)


@pytest.mark.parametrize("args,message", [
    (["--resume", "{tmp}/nowhere"], "no such run directory"),
    (["--resume", "{tmp}"], "not a run directory"),
    (["{spec}", "--device", "gpu"], "'gpu' was asked for, but TensorFlow sees no GPU"),
    (["{spec}", "--runs", "{tmp}/file.txt"], "cannot create the runs folder"),
    (["{spec}", "--data-dir", "{tmp}/missing", "--set", "data.source=auto"], "missing"),
])
def test_bad_input_exits_2(args, message, tiny, tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    spec = tiny(epochs=1)
    args = [a.format(tmp=tmp_path, spec=spec) for a in args]
    result = CliRunner().invoke(main, ["fit", *args, *([] if "--runs" in args else ["--runs", str(tmp_path / "r")])])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # nothing is created for a run that cannot start


def test_corrupt_checkpoint_is_reported_and_left_alone(tiny_run_copy):
    run = tiny_run_copy
    checkpoint = run / "checkpoints/epoch-0001.keras"
    checkpoint.write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["fit", "--resume", str(run), "--epochs", "2"])
    assert result.exit_code == 2
    assert "cannot load this checkpoint" in result.stderr
    assert checkpoint.read_bytes() == b"garbage"


def write_images(folder: Path, count: int = 20):
    """Test images from the bundled sample as files in several forms; returns (paths, labels)."""
    import tensorflow as tf

    from mnist_keras.data.sources import BUNDLED

    with np.load(BUNDLED) as sample:
        x, y = sample["x_test"][:count], sample["y_test"][:count]
    paths = []
    for i, image in enumerate(x):
        form = i % 3
        if form == 0:  # as MNIST stores it: gray, light on dark
            data, name = tf.io.encode_png(image[..., None]), f"{i}.png"
        elif form == 1:  # dark ink on white paper, in colour, larger
            big = tf.image.resize(np.repeat(255 - image[..., None], 3, -1), (84, 84)).numpy().astype("uint8")
            data, name = tf.io.encode_png(big), f"{i}-paper.png"
        else:
            data, name = tf.io.encode_jpeg(np.repeat(image[..., None], 3, -1), quality=95), f"{i}.jpg"
        paths.append(folder / name)
        paths[-1].write_bytes(data.numpy())
    return paths, y


def test_evaluate_and_predict_image_files(three_epochs, tmp_path):
    run = three_epochs[1]  # evaluate and predict only read it
    result = CliRunner().invoke(main, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"test accuracy {metrics['test']['accuracy']:.2%}" in result.output
    paths, labels = write_images(tmp_path)
    result = CliRunner().invoke(main, ["predict", str(run / "model.keras"), *map(str, paths)])
    assert result.exit_code == 0, result.output
    predicted = [int(re.search(r": (\d) \(probability", line).group(1)) for line in result.output.splitlines()]
    assert np.mean(np.array(predicted) == labels) >= 0.7
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    result = CliRunner().invoke(main, ["predict", str(run), str(tmp_path / "broken.png")])
    assert result.exit_code == 2 and "broken.png: cannot be read as an image" in result.stderr


@pytest.mark.parametrize("group,step", [("4", 4), ("epoch", 16)])
def test_nan_loss_stops_with_epoch_and_step_named(group, step, tiny, tmp_path):
    sets = ["train.optimizer.type=sgd", "train.optimizer.learning_rate=1.0e+30", f"runtime.steps_per_execution={group}"]
    result = fit([tiny(epochs=3), *[arg for s in sets for arg in ("--set", s)]], tmp_path / "runs")
    assert result.exit_code == 1, result.output
    assert f"the loss became NaN in epoch 1, by step {step};" in result.stderr
    assert json.loads((only_run(tmp_path / "runs") / "state.json").read_text())["status"] == "failed"


def test_a_ctrl_c_that_tensorflow_cleanup_turned_into_another_error_is_still_a_ctrl_c():
    """A Ctrl-C while a function is traced came out of TensorFlow's graph-stack cleanup as an AssertionError
    (`Nesting violated for default stack`) and ended the run with a traceback instead of "interrupted"."""
    from mnist_keras.train.session import _ctrl_c_kept

    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_kept():
            try:
                raise KeyboardInterrupt
            finally:
                raise AssertionError("Nesting violated for default stack")
    with pytest.raises(AssertionError):  # any other error stays what it is
        with _ctrl_c_kept():
            raise AssertionError("a real one")
