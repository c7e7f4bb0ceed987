"""MixUp and CutMix in the input pipeline (data.augment) and the RandAugment, AugMix and RandomErasing layers: the
mixtures they make, training batches only, stateless draws for exact resume, the spec's checks, a real fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import in_process
from mnist_keras.data import make_pipelines
from mnist_keras.data.mixing import apply, batch_key, draw
from mnist_keras.spec import Spec
from mnist_keras.spec.data_section import Augment
from test_data import as_arrays, small
from test_streaming import as_files

MODEL = {"layers": ["flatten", {"dense": {"units": 10}}]}


def one_hot(labels, classes=10):
    return np.eye(classes, dtype=np.float32)[labels]


def mixed(augment: Augment, shape=(8, 6, 5, 1), key=(3, 4)):
    """A batch of distinct random pixels and one-hot labels, mixed with the draw of stateless seed `key`."""
    from mnist_keras.backend import tf

    rng = np.random.default_rng(0)
    x, y = rng.random(shape, dtype=np.float32), one_hot(rng.integers(0, 10, shape[0]))
    mix = draw(augment, tf.constant(key, tf.int64), shape[0], shape[1], shape[2])
    x2, y2 = apply(tf.constant(x), tf.constant(y), mix)
    return x, y, x2.numpy(), y2.numpy(), mix


def test_mixup_blends_each_image_and_its_label_with_a_partner_in_the_drawn_share():
    x, y, x2, y2, mix = mixed(Augment(mixup=0.4))
    share, partner = mix.share.numpy(), mix.partner.numpy()
    assert bool(mix.mixed) and not bool(mix.cut) and sorted(partner) == list(range(8)) and len(set(share)) == 8
    blend = share[:, None, None, None]
    np.testing.assert_allclose(x2, blend * x + (1 - blend) * x[partner], rtol=1e-6)
    np.testing.assert_allclose(y2, share[:, None] * y + (1 - share[:, None]) * y[partner], rtol=1e-6)
    np.testing.assert_allclose(y2.sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("shape", [(16, 12, 10, 1), (16, 12, 10, 3), (16, 12, 10)], ids=["gray", "rgb", "no-axis"])
def test_cutmix_pastes_a_box_of_the_partner_and_weighs_labels_by_its_area(shape):
    x, y, x2, y2, mix = mixed(Augment(cutmix=1.0), shape)
    partner, box = mix.partner.numpy(), mix.box.numpy()
    pasted = x2 != x if len(shape) == 3 else (x2 != x).any(axis=-1)
    for i, (top, bottom, left, right) in enumerate(box):
        inside = np.zeros(shape[1:3], bool)
        inside[top:bottom, left:right] = True
        if partner[i] != i:
            np.testing.assert_array_equal(pasted[i], inside)  # the box alone changed
        np.testing.assert_array_equal(x2[i][inside], x[partner[i]][inside])
        area = inside.mean()
        np.testing.assert_allclose(y2[i], (1 - area) * y[i] + area * y[partner[i]], rtol=1e-6)
    assert 0 < np.mean([pasted[i].mean() for i in range(16) if partner[i] != i]) < 1
    np.testing.assert_allclose(y2.sum(axis=1), 1, rtol=1e-6)


def test_with_both_one_of_them_is_drawn_per_batch_and_prob_leaves_batches_unmixed():
    from mnist_keras.backend import tf

    def draws(augment):
        """(mixed, cut) of 300 batches, and the labels of the first unmixed one."""
        x, y = tf.ones([4, 8, 8, 1]), tf.constant(one_hot([1, 2, 3, 4]))

        def one(step):
            mix = draw(augment, batch_key(7, 0, step), 4, 8, 8)
            return mix.mixed, mix.cut, apply(x, y, mix)[1]

        flags, cuts, labels = tf.function(lambda: tf.map_fn(one, tf.range(300, dtype=tf.int64),
                                                            fn_output_signature=(tf.bool, tf.bool, tf.float32)))()
        return flags.numpy(), cuts.numpy(), labels.numpy()

    mixed, cut, _ = draws(Augment(mixup=0.2, cutmix=1.0))
    assert mixed.all() and 0.4 < cut.mean() < 0.6
    mixed, cut, labels = draws(Augment(mixup=0.2, prob=0.3))
    assert 0.2 < mixed.mean() < 0.4 and not cut.any()
    np.testing.assert_array_equal(labels[~mixed], np.broadcast_to(one_hot([1, 2, 3, 4]), labels[~mixed].shape))
    assert (labels[mixed].max(axis=2) < 1).any()


def spec(augment=None, **data) -> Spec:
    data = {"batch_size": 16, "validation": 10, **data, **({"augment": augment} if augment else {})}
    return Spec.model_validate({"seed": 5, "data": data, "model": MODEL, "train": {"epochs": 3}})


def batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return as_files(tmp_path_factory.mktemp("png"), small())


@pytest.mark.parametrize("source", ["arrays", "streamed"])
def test_training_batches_are_mixed_and_validation_and_test_batches_never(source, files):
    data = as_arrays(small()) if source == "arrays" else files
    extra = {} if source == "arrays" else {"cache": "none"}
    plain = make_pipelines(spec(**extra), data)
    pipes = make_pipelines(spec({"mixup": 0.2, "cutmix": 1.0}, **extra), data)
    for name in ("validation", "test"):
        for (x, y), (x0, y0) in zip(batches(getattr(pipes, name)), batches(getattr(plain, name)), strict=True):
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
    train, train0 = batches(pipes.train), batches(plain.train)
    assert len(train) == len(train0) == 3 * pipes.steps_per_epoch
    labels = np.concatenate([y for _, y in train])
    np.testing.assert_allclose(labels.sum(axis=1), 1, rtol=1e-6)
    assert (labels.max(axis=1) < 1).mean() > 0.5  # most labels are mixtures
    assert all(not np.array_equal(x, x0) for (x, _), (x0, _) in zip(train, train0))


def test_the_same_seed_and_epoch_give_the_same_mixed_batches_so_a_resumed_run_sees_them():
    arrays, mixes = as_arrays(small()), {"mixup": 0.3, "cutmix": 1.0, "prob": 0.8}
    uninterrupted = batches(make_pipelines(spec(mixes), arrays).train)
    steps = len(uninterrupted) // 3
    for start in (1, 2):
        resumed = make_pipelines(spec(mixes), arrays, start_epoch=start)
        for (x, y), (x0, y0) in zip(batches(resumed.train), uninterrupted[start * steps:], strict=True):
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
        again = batches(resumed.train_from(start))[0]
        np.testing.assert_array_equal(again[0], uninterrupted[start * steps][0])
    other_seed = Spec.model_validate({**spec(mixes).model_dump(), "seed": 6})
    assert not np.array_equal(batches(make_pipelines(other_seed, arrays).train)[0][1], uninterrupted[0][1])


# ------------------------------------------------------------------------------------------------ layers

LAYERS = {"rand_augment": {"num_ops": 3, "factor": 0.8}, "aug_mix": {"num_chains": 2},
          "random_erasing": {"factor": 1.0, "scale": [0.2, 0.4]}}


def layer_spec(kind: str, args: dict, **preprocess) -> Spec:
    return Spec.model_validate({"seed": 1, "data": {"preprocess": preprocess},
                                "model": {"layers": [{kind: args}, "flatten", {"dense": 10}]}})


@pytest.mark.parametrize("kind", LAYERS)
def test_each_layer_changes_a_gray_batch_while_training_and_is_the_identity_at_inference(kind):
    from mnist_keras.backend import keras
    from mnist_keras.model.build import build_model

    spec = layer_spec(kind, LAYERS[kind])
    assert getattr(spec.model.layers[0], kind).value_range == [0.0, 1.0]  # the range of data.preprocess's defaults
    keras.utils.set_random_seed(1)
    layer = build_model(spec).layers[0]
    x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    trained = layer(x, training=True).numpy()
    assert trained.shape == x.shape and not np.allclose(trained, x) and 0 <= trained.min() <= trained.max() <= 1
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)


def test_each_layer_trains_under_mixed_precision():
    from mnist_keras.backend import keras, tf
    from mnist_keras.model.build import build_model

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(Spec.model_validate({"model": {"layers": [*LAYERS, "flatten", {"dense": 10}]},
                                                 "runtime": {"mixed_precision": "float16"}}))
        out = tf.function(lambda x: model(x, training=True))(np.ones((4, 28, 28, 1), np.float32) / 2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.shape == (4, 10) and np.isfinite(out.numpy()).all()


def test_the_value_range_follows_data_preprocess_and_rescaling_and_a_given_one_stays():
    normalized = layer_spec("rand_augment", {}, normalize={"mean": 0.5, "std": 0.25})
    assert normalized.model.layers[0].rand_augment.value_range == [-2.0, 2.0]
    rescaled = Spec.model_validate({"data": {"preprocess": {"scale": 1.0}}, "model": {"layers": [
        {"rescaling": {"scale": -1 / 255, "offset": 1.0}}, "random_flip", {"random_erasing": {}}, "flatten",
        {"dense": 10}]}})
    assert rescaled.model.layers[2].random_erasing.value_range == [0.0, 1.0]
    given = layer_spec("aug_mix", {"value_range": [0, 255]}, normalize={"mean": 0.5, "std": 0.25})
    assert given.model.layers[0].aug_mix.value_range == [0, 255]
    per_channel = Spec.model_validate({"data": {"image_shape": [8, 8, 3], "preprocess": {"normalize": "imagenet"}},
                                       "model": {"layers": [{"aug_mix": {}}, "flatten", {"dense": 10}]}})
    low, high = per_channel.model.layers[0].aug_mix.value_range
    assert (low, high) == pytest.approx(((0 - 0.485) / 0.229, (1 - 0.406) / 0.225))


def test_aug_mix_draws_its_operations_per_batch_from_its_restorable_seed_state():
    """Keras' AugMix picks them with Python's random when traced: one sequence for every batch of a fit."""
    from mnist_keras.backend import keras, tf
    from mnist_keras.model.build import build_model
    from mnist_keras.train.callbacks import restore_rng_state, rng_state

    keras.utils.set_random_seed(2)
    model = build_model(layer_spec("aug_mix", {"chain_depth": 2}))
    layer, x = model.layers[0], np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
    picks = tf.function(lambda: layer.get_random_transformation(x, training=True)["picks"])
    assert len({picks().numpy().tobytes() for _ in range(6)}) > 1
    saved = rng_state(model)
    assert len(saved[layer.name]) == 10  # its own seed generator and its random operations'
    step = tf.function(lambda images: layer(images, training=True))
    first = step(x).numpy()
    assert not np.array_equal(step(x).numpy(), first)
    restore_rng_state(model, saved)
    np.testing.assert_array_equal(step(x).numpy(), first)


# ------------------------------------------------------------------------------------------ bad specs

BAD = {
    "mse": ("data: {augment: {mixup: 0.2}, preprocess: {one_hot: false}}\ntrain: {loss: mse}\n"
            "model: {layers: [flatten, {dense: 1}]}", "data.augment.mixup: MixUp mixes the labels", "loss: mse"),
    "sparse": ("data: {augment: {cutmix: 1.0}, preprocess: {one_hot: false}}\nmodel: {layers: [flatten, {dense: 10}]}",
               "data.augment.cutmix: CutMix mixes", "sparse_categorical_crossentropy"),
    "alpha": ("data: {augment: {mixup: -1}}\nmodel: {layers: [flatten, {dense: 10}]}",
              "data.augment.mixup", "greater than or equal to 0"),
    "channels": ("model: {layers: [{conv2d: {filters: 4, kernel_size: 3}}, {rand_augment: {value_range: [0, 1]}}, "
                 "flatten, {dense: 10}]}",
                 "model.layers[1].rand_augment: rand_augment takes gray (1 channel) or RGB", "got 4 channels"),
    "unknown-range": ("model: {layers: [{conv2d: {filters: 1, kernel_size: 3}}, {rescaling: 2.0}, random_erasing, "
                      "flatten, {dense: 10}]}", "model.layers[2].random_erasing.value_range",
                      "unknown after a layer other"),
    "flattened": ("model: {layers: [flatten, aug_mix, {dense: 10}]}", "model.layers[1].aug_mix: aug_mix needs an "
                  "image input", "channel_axis"),
    "erasing-scale": ("model: {layers: [{random_erasing: {scale: [0.5, 2]}}, flatten, {dense: 10}]}",
                      "model.layers[0].random_erasing.scale", "0 <= low < high <= 1"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_spec_these_cannot_work_with_is_refused_in_one_line_at_its_path(name, tmp_path):
    text, where, why = BAD[name]
    (tmp_path / "bad.yaml").write_text(text + "\n")
    result = in_process("validate", tmp_path / "bad.yaml")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert where in lines[0] and why in lines[0], lines[0]


def test_mixup_with_label_smoothing_is_fine_and_validate_and_summary_say_what_is_added(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "data: {augment: {mixup: 0.2, cutmix: 1.0, prob: 0.5}, preprocess: {normalize: {mean: 0.5, std: 0.25}}}\n"
        "model: {layers: [rand_augment, {random_erasing: 0.5}, flatten, {dense: 10}]}\ntrain: {label_smoothing: 0.1}\n")
    validated = in_process("validate", tmp_path / "spec.yaml")
    assert validated.returncode == 0, validated.stderr
    summary = in_process("summary", tmp_path / "spec.yaml").stdout
    for out in (validated.stdout, summary):
        assert "MixUp alpha 0.2 and CutMix alpha 1.0 (one per batch) in the training pipeline, on 50% of the " \
               "batches" in out
        assert "rand_augment_1: RandAugment, 2 of 11 operations per batch at strength up to 0.5, pixels in [-2, 2]" \
               in out
        assert "random_erasing_1: RandomErasing" in out and "training only" in out


# ---------------------------------------------------------------------------------------------- fit

FIT = """
name: recipes
seed: 3
data: {source: bundled, max_train: 256, validation: 64, batch_size: 64, augment: {mixup: 0.2, cutmix: 1.0}}
model:
  layers: [{rand_augment: {num_ops: 1}}, flatten, {dense: {units: 32, activation: relu}}, {dense: 10}]
train: {epochs: 2, optimizer: {type: adam, learning_rate: 0.003}, tensorboard: {enabled: false}}
"""


def test_a_fit_with_mixup_cutmix_and_rand_augment_trains_and_evaluates(tmp_path):
    """A resumed run is exact through the stateless draws of the pipeline and the seed states of the layers, both
    tested above."""
    (tmp_path / "recipes.yaml").write_text(FIT)
    result = in_process("fit", tmp_path / "recipes.yaml", "--runs", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    run, = (tmp_path / "runs" / "recipes").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(math.isfinite(epoch["loss"]) for epoch in metrics["history"]) and len(metrics["history"]) == 2
    assert math.isfinite(metrics["test"]["loss"]) and metrics["test"]["accuracy"] > 0.2
    assert "rand_augment_1" in json.loads((run / "state.json").read_text())["rng"]  # its seed state, for resume
