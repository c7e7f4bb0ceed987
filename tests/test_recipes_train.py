"""Training recipes of the optimizer: the new Keras optimizers, the average of the weights (EMA), the one-cycle
schedule and its momentum cycle; their formulas without training, then one staged run through the real `fit`
(recorded step by step) with every recipe (also MixUp and CutMix, RandAugment, AugMix, RandomErasing, label
smoothing), and the same run interrupted twice mid-epoch and resumed, which must end bit for bit alike."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import in_process
from mnist_keras.backend import keras, tf

MODEL = {"layers": ["flatten", {"dense": {"units": 8, "activation": "relu"}}, {"dense": 10}]}


def spec_of(train: dict):
    from mnist_keras.spec.schema import Spec

    return Spec.model_validate({"data": {"source": "bundled"}, "model": MODEL, "train": train})


def pytorch_one_cycle(step: int, total: int, warmup: float, start: float, peak: float, end: float) -> float:
    """torch.optim.lr_scheduler.OneCycleLR's cosine curve (three_phase off), as its source computes it."""
    phases = [(warmup * total - 1, start, peak), (total - 1, peak, end)]
    begin = 0.0
    for i, (stop, first, last) in enumerate(phases):
        if step <= stop or i == len(phases) - 1:
            fraction = (step - begin) / (stop - begin)
            return last + (first - last) / 2 * (math.cos(math.pi * fraction) + 1)
        begin = stop


def test_one_cycle_values_at_chosen_steps_follow_the_formula():
    """5 epochs of 4 steps: the rate from max / div up to max at step 0.3 * 20 - 1 = 5, down to max / div /
    final_div at step 19; SGD's momentum the other way, read from what the optimizer's update computes with."""
    from mnist_keras.train.compile import compile_model, current_lr

    spec = spec_of({"epochs": 5, "optimizer": {"type": "sgd", "learning_rate": 0.02, "momentum": 0.9},
                    "lr_schedule": {"type": "one_cycle", "max": 0.1, "base_momentum": 0.8}})
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    compile_model(model, spec, steps_per_epoch=4)
    steps = [0, 1, 3, 5, 6, 12, 18, 19, 25]
    rates, momenta = [], []
    for step in steps:
        model.optimizer.iterations.assign(step)
        rates.append(current_lr(model))
        momenta.append(float(keras.ops.convert_to_numpy(keras.ops.cast(model.optimizer.momentum, "float32"))))
    assert rates == pytest.approx([pytorch_one_cycle(min(s, 19), 20, 0.3, 0.004, 0.1, 4e-7) for s in steps],
                                  rel=1e-5, abs=1e-9)
    assert momenta == pytest.approx([pytorch_one_cycle(min(s, 19), 20, 0.3, 0.95, 0.8, 0.95) for s in steps],
                                    rel=1e-6)
    assert rates[0] == pytest.approx(0.004) and rates[3] == pytest.approx(0.1) and rates[7] == pytest.approx(4e-7)
    assert model.optimizer.get_config()["momentum"] == 0.9  # what a saved model's config holds


@pytest.mark.parametrize("optimizer, name", [({"type": "sgd", "momentum": 0.9}, "momentum"),
                                             ({"type": "adam"}, "beta_1")])
def test_the_momentum_cycle_changes_every_step_of_the_traced_update(optimizer, name):
    """`fit` (one traced function) ends as an eager loop that sets the cycle's rate and momentum before each step
    does, not as one that keeps the momentum."""
    from mnist_keras.train.compile import compile_model

    x = np.random.default_rng(0).random((48, 28, 28, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(48) % 10]
    spec = spec_of({"epochs": 2, "optimizer": {**optimizer, "learning_rate": 0.05},
                    "lr_schedule": {"type": "one_cycle", "warmup": 0.5, "base_momentum": 0.5}})

    def model():
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])

    def by_hand(momentum) -> list[np.ndarray]:
        """Six steps, eagerly, at the cycle's rate and momentum(step)."""
        trained, loss = model(), keras.losses.CategoricalCrossentropy(from_logits=True)
        config = fitted.optimizer.get_config()
        optimizer = type(fitted.optimizer).from_config({**config, "learning_rate": 0.0, name: float(config[name])})
        for step in range(6):
            optimizer.learning_rate = pytorch_one_cycle(step, 6, 0.5, 0.05 / 25, 0.05, 0.05 / 25 / 1e4)
            setattr(optimizer, name, momentum(step))
            batch = slice(16 * (step % 3), 16 * (step % 3 + 1))
            with tf.GradientTape() as tape:
                value = loss(y[batch], trained(x[batch]))
            optimizer.apply(tape.gradient(value, trained.trainable_variables), trained.trainable_variables)
        return trained.get_weights()

    fitted = model()
    compile_model(fitted, spec, steps_per_epoch=3)
    fitted.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    cycled, kept = by_hand(lambda step: pytorch_one_cycle(step, 6, 0.5, 0.95, 0.5, 0.95)), by_hand(lambda step: 0.9)
    for got, expected in zip(fitted.get_weights(), cycled):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fitted.get_weights()[0], kept[0], rtol=1e-4, atol=1e-5)


NEW_OPTIMIZERS = {  # spec: (Keras class, its configuration as the spec sets it)
    "{type: lion, learning_rate: 0.0003, beta_1: 0.95, beta_2: 0.98, weight_decay: 0.01}":
        ("Lion", {"learning_rate": 0.0003, "beta_1": 0.95, "beta_2": 0.98, "weight_decay": 0.01}),
    "{type: lamb, beta_2: 0.99, epsilon: 1e-6}": ("Lamb", {"beta_2": 0.99, "epsilon": 1e-6}),
    "{type: adafactor, beta_2_decay: -0.5, clip_threshold: 2.0, relative_step: false}":
        ("Adafactor", {"beta_2_decay": -0.5, "clip_threshold": 2.0, "relative_step": False, "epsilon_1": 1e-30}),
    "{type: adamax, learning_rate: 0.002, ema: 0.99}":
        ("Adamax", {"learning_rate": 0.002, "use_ema": True, "ema_momentum": 0.99, "beta_1": 0.9}),
    "{type: ftrl, learning_rate_power: -0.25, l1_regularization_strength: 0.001, beta: 0.5}":
        ("Ftrl", {"learning_rate_power": -0.25, "l1_regularization_strength": 0.001, "beta": 0.5,
                  "initial_accumulator_value": 0.1}),
}


@pytest.mark.parametrize("optimizer", NEW_OPTIMIZERS)
def test_each_new_optimizer_is_built_as_the_spec_says_and_takes_a_step(optimizer, write_spec):
    from mnist_keras.spec.loader import load_spec
    from mnist_keras.train.compile import compile_model

    spec = load_spec(write_spec(f"model: {json.dumps(MODEL)}\ntrain: {{epochs: 2, optimizer: {optimizer}}}\n"))
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    compile_model(model, spec, steps_per_epoch=4)
    name, config = NEW_OPTIMIZERS[optimizer]
    assert type(model.optimizer).__name__ == name
    assert {key: model.optimizer.get_config()[key] for key in config} == pytest.approx(config)
    before = model.get_weights()[0].copy()
    with tf.GradientTape() as tape:
        loss = model.loss(np.eye(10, dtype=np.float32)[:8], model(np.ones((8, 28, 28, 1), np.float32)))
    model.optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    assert math.isfinite(float(loss)) and not np.array_equal(before, model.get_weights()[0])


BAD = {  # the train section: (the spec path named, words of the message)
    "{epochs: 1, optimizer: {type: adam, ema: 0.99}}": ("train.optimizer.ema", "one-epoch run"),
    "{epochs: 3, stages: [{epochs: 2}, {epochs: 1, optimizer: {type: sgd, ema: 0.9}}]}":
        ("train.stages[1].optimizer.ema", "one-epoch run"),
    "{optimizer: {type: sgd, learning_rate: 0.1}, lr_schedule: {type: one_cycle, max: 0.05}}":
        ("train.lr_schedule.max", "below train.optimizer.learning_rate = 0.1"),
    "{optimizer: adagrad, lr_schedule: {type: one_cycle, cycle_momentum: true}}":
        ("train.lr_schedule.cycle_momentum", "adagrad has no momentum"),
    "{optimizer: {type: sgd, momentum: 0.0}, lr_schedule: {type: one_cycle, cycle_momentum: true}}":
        ("train.lr_schedule.cycle_momentum", "momentum is 0"),
    "{lr_schedule: {type: one_cycle, base_momentum: 0.96}}": ("train.lr_schedule", "above max_momentum"),
    "{optimizer: {type: adam, ema: 1.0}}": ("train.optimizer.ema", "less than 1"),
}


@pytest.mark.parametrize("train", BAD)
def test_a_contradicting_recipe_exits_2_naming_its_path(train, write_spec):
    result = in_process("validate", write_spec(f"model: {json.dumps(MODEL)}\ntrain: {train}\n"))
    path, words = BAD[train]
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f": {path}: " in result.stderr and words in result.stderr, result.stderr


def test_summary_and_validate_show_what_the_recipes_add(write_spec):
    spec = write_spec(f"model: {json.dumps(MODEL)}\ntrain: {{optimizer: {{type: sgd, momentum: 0.9, ema: 0.999}}, "
                      "lr_schedule: {type: one_cycle, max: 0.01}}\n")
    lines = ["EMA of 6,370 weights (momentum 0.999)", "one-cycle: lr 0.0004 -> 0.01 at 30% -> 4e-08, momentum 0.95 "
             "-> 0.85 -> 0.95"]
    for command in ("summary", "validate"):
        result = in_process(command, spec)
        assert result.returncode == 0 and all(line in result.stdout for line in lines), result.stdout


STAGED = """
name: recipes
seed: 5
data:
  source: bundled
  max_train: 512
  validation: 128
  batch_size: 64
  preprocess: {one_hot: true}
  augment: {mixup: 0.2, cutmix: 1.0, prob: 0.8}
model:
  layers: [rand_augment, aug_mix, random_erasing, flatten, {dense: {units: 16, activation: relu}}, {dropout: 0.2},
           {dense: 10}]
train:
  label_smoothing: 0.1
  epochs: 4
  optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9, ema: 0.8}
  lr_schedule: {type: one_cycle, max: 0.2}
  stages:
    - {epochs: 2}
    - {epochs: 2, optimizer: {type: adam, learning_rate: 0.003, ema: 0.7}, lr_schedule: one_cycle}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""
STEPS, EMAS = 6, (0.8, 0.7)  # (512 - 128 validation) / 64 steps an epoch; each stage's ema


def with_callback(monkeypatch, callback) -> None:
    """`callback` after the run's own, in every session (as tests/faults.py adds its faults)."""
    from mnist_keras.train import loop

    make = loop.make_callbacks

    def with_it(*args, **kwargs):
        callbacks, guard = make(*args, **kwargs)
        return [*callbacks, callback], guard

    monkeypatch.setattr(loop, "make_callbacks", with_it)


class CtrlC(keras.callbacks.Callback):
    """Ctrl-C after training step `step` of epoch `epoch` (both from 1)."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.target, self.epoch = (epoch, step), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.target:
            raise KeyboardInterrupt


class Record(keras.callbacks.Callback):
    """The raw weights after each training step."""

    def __init__(self):
        super().__init__()
        self.raw: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.raw.append([w.copy() for w in self.model.get_weights()])


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The staged spec trained in one go, with the raw weights after every training step: (run dir, weights)."""
    import mnist_keras as mk

    folder, record = tmp_path_factory.mktemp("staged"), Record()
    (folder / "recipes.yaml").write_text(STAGED)
    with pytest.MonkeyPatch.context() as monkeypatch:
        with_callback(monkeypatch, record)
        run = mk.fit(mk.load_spec(folder / "recipes.yaml"), runs=folder / "runs")
    assert len(record.raw) == 4 * STEPS
    return Path(run.path), record.raw


def averages(raw: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The average after each step, by hand: each stage's starts at its first step's weights (Keras' start)."""
    out = []
    for step, weights in enumerate(raw):
        ema = EMAS[step // (2 * STEPS)]
        first = step % (2 * STEPS) == 0
        out.append([w.astype(np.float64) if first else ema * a + (1 - ema) * w for w, a in
                    zip(weights, out[-1] if out else weights)])
    return out


def loaded(path: Path):
    return keras.models.load_model(path)


def test_the_saved_model_and_checkpoints_hold_the_hand_computed_average(staged):
    run, raw = staged
    expected = averages(raw)
    state = json.loads((run / "state.json").read_text())
    for file, step in [("model.keras", -1), (state["checkpoint"], -1), ("checkpoints/best.keras",
                                                                         state["best"]["epoch"] * STEPS - 1)]:
        for got, want in zip(loaded(run / file).get_weights(), expected[step]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=file)
    last = loaded(run / state["checkpoint"]).optimizer._model_variables_moving_average
    for slot, want in zip(last, raw[-1]):  # the checkpoint keeps the raw weights, for resume
        np.testing.assert_array_equal(slot.numpy(), want)
    assert not np.allclose(raw[-1][0], expected[-1][0], rtol=1e-3)  # the average is not the raw weights


def test_validation_sees_the_average_and_the_rate_follows_each_stages_cycle(staged):
    from mnist_keras.data import load_arrays, make_pipelines
    from mnist_keras.spec.loader import load_spec

    run, _ = staged
    metrics = json.loads((run / "metrics.json").read_text())
    spec = load_spec(run / "spec.yaml")
    pipes = make_pipelines(spec, load_arrays(spec.data))
    assert pipes.steps_per_epoch == STEPS
    val_loss, _ = loaded(run / "model.keras").evaluate(pipes.validation, verbose=0)
    assert metrics["history"][-1]["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    cycle = [pytorch_one_cycle(s, 2 * STEPS, 0.3, peak / 25, peak, peak / 25 / 1e4) for peak in (0.2, 0.003)
             for s in (0, STEPS)]
    assert [h["learning_rate"] for h in metrics["history"]] == pytest.approx(cycle, rel=1e-5)


def test_interrupted_twice_and_resumed_it_ends_bit_for_bit_like_one_go(staged, tmp_path, monkeypatch):
    """Ctrl-C in stage 1 (resumed with the checkpoint's optimizer and average) and at stage 2's first epoch
    (resumed from stage 1's average with a new optimizer), then the rest."""
    import mnist_keras as mk
    from mnist_keras.errors import Interrupted

    reference, _ = staged
    (tmp_path / "recipes.yaml").write_text(STAGED)
    run = None
    for epoch, step in [(2, 3), (3, 2)]:
        with monkeypatch.context() as patched:
            with_callback(patched, CtrlC(epoch, step))
            with pytest.raises(Interrupted, match=f"after epoch {epoch - 1}"):
                mk.fit(mk.load_spec(tmp_path / "recipes.yaml"), runs=tmp_path / "runs") if run is None else \
                    mk.resume(run)
        run = run or next((tmp_path / "runs/recipes").iterdir())
    mk.resume(run)
    for file in ("model.keras", "checkpoints/best.keras"):
        for got, want in zip(loaded(run / file).get_weights(), loaded(reference / file).get_weights()):
            np.testing.assert_array_equal(got, want, err_msg=file)
    resumed, once = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in once["history"]]
    assert resumed["test"] == once["test"]
