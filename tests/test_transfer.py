"""Transfer learning (issue 15): keras.applications and earlier-run backbones, freezing with BatchNorm kept in
inference mode, staged training with exact resume, the offline `imagenet` message, and every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mnist_keras as mk
from conftest import ROOT, SHIPPED
from mnist_keras.cli import main
from test_folders import photos

PRETRAIN = """
name: pre
seed: 7
data: {source: bundled, max_train: 640, validation: 128, batch_size: 64}
model:
  layers:
    - conv2d: {filters: 8, kernel_size: 3, activation: relu}
    - batch_norm
    - max_pool2d: 2
    - flatten
    - dense: {units: 32, activation: relu}
    - dense: 10
train: {epochs: 1, tensorboard: {enabled: false}}
runtime: {deterministic: true}
"""

FINETUNE = """
name: ft
seed: 7
data: {source: bundled, max_train: 640, validation: 128, batch_size: 64, preprocess: PREPROCESS}
model:
  layers:
    - backbone: {run: RUN, until: dense_1}
    - dense: 10
train:
  tensorboard: {enabled: false}
  stages:
    - {epochs: 1}
    - {epochs: 2, trainable: SECOND, optimizer: {type: sgd, learning_rate: 0.01, momentum: 0.9},
       lr_schedule: {type: step, every: 1, gamma: 0.5}}
runtime: {deterministic: true}
"""

MOBILENET = """
name: mobile
seed: 3
data: {dataset: DATASET, image_shape: [32, 32, 3], num_classes: 2, validation: 0, test_split: 0.25,
       batch_size: 8, preprocess: {normalize: imagenet}}
model:
  layers:
    - random_flip: horizontal
    - backbone: {name: MobileNetV2, weights: WEIGHTS, pooling: max}
    - dense: 2
train:
  tensorboard: {enabled: false}
  checkpoint: {monitor: accuracy}
  stages:
    - {epochs: 1}
    - {epochs: 1, trainable: {last: 10}, optimizer: {type: adam, learning_rate: 0.0001}}
"""


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def finetune(write_spec, run: Path, second="true", preprocess="{}", name="ft.yaml") -> Path:
    text = FINETUNE.replace("RUN", str(run)).replace("SECOND", second).replace("PREPROCESS", preprocess)
    return write_spec(text, name)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A 1-epoch CNN with a BatchNorm layer, trained on the bundled MNIST sample."""
    folder = tmp_path_factory.mktemp("pretrained")
    (folder / "pre.yaml").write_text(PRETRAIN)
    return mk.fit(mk.load_spec(folder / "pre.yaml"), runs=folder / "runs").path


def batch_norm_stats(model) -> list[np.ndarray]:
    backbone = model.get_layer("backbone")
    layers = [sub for layer in backbone.layers for sub in getattr(layer, "layers", [layer])]
    return [w.numpy().copy() for layer in layers if "BatchNormalization" in type(layer).__name__
            for w in (layer.moving_mean, layer.moving_variance)]


def test_an_earlier_run_is_a_backbone_and_its_frozen_batch_norm_never_moves(write_spec, tmp_path, pretrained):
    before = batch_norm_stats(_as_backbone(pretrained))
    run = mk.fit(mk.load_spec(finetune(write_spec, pretrained)), runs=tmp_path / "runs")
    model = mk.load_model(run)
    after = batch_norm_stats(model)
    assert before and all(np.array_equal(b, a) for b, a in zip(before, after))  # frozen in stage 1, kept in 2
    assert [h.get("stage") for h in run.state.history] == [1, 2, 2]
    source = mk.load_model(pretrained)
    conv = lambda m: m.get_layer("backbone").get_layer("conv2d_1").get_weights()[0]  # noqa: E731
    assert not np.array_equal(conv(model), source.get_layer("conv2d_1").get_weights()[0])  # stage 2 trained it


def _as_backbone(run: Path):
    """The pretrained model with its layers under a `backbone` Sequential, as batch_norm_stats reads them."""
    from mnist_keras.backend import keras

    source = mk.load_model(run)
    return keras.Sequential([keras.Input(source.input_shape[1:]), keras.Sequential(source.layers, name="backbone")])


def test_a_backbone_trained_throughout_updates_its_batch_norm(write_spec, tmp_path, pretrained):
    """The same check fails when the backbone is never frozen: BatchNorm then trains, as it should."""
    spec = finetune(write_spec, pretrained).read_text().replace("backbone: {run:", "backbone: {trainable: true, run:")
    path = write_spec(spec, "trained.yaml")
    before = batch_norm_stats(_as_backbone(pretrained))
    after = batch_norm_stats(mk.load_model(mk.fit(mk.load_spec(path), runs=tmp_path / "runs")))
    assert not all(np.array_equal(b, a) for b, a in zip(before, after))


def test_a_run_resumed_inside_the_second_stage_ends_bit_identical(write_spec, tmp_path, pretrained):
    """One run stopped after stage 1 is resumed at the boundary (to epoch 2), then inside stage 2 (to epoch 3): a
    difference made by either resume shows in the weights it ends with."""
    path = finetune(write_spec, pretrained, second="{last: 1}")
    whole = mk.load_model(mk.fit(mk.load_spec(path), runs=tmp_path / "whole")).get_weights()
    run = mk.fit(mk.load_spec(path, ["train.epochs=1"]), runs=tmp_path / "part")
    for stop in (2, 3):  # at the boundary, and inside stage 2
        resumed = mk.resume(run.path, epochs=stop)
        assert [h.get("stage") for h in resumed.state.history] == [1, 2, 2][:stop]
    assert all(np.array_equal(a, b) for a, b in zip(whole, mk.load_model(resumed).get_weights()))


def test_the_backbone_sees_its_own_runs_pixels(write_spec, tmp_path, pretrained):
    """Another preprocessing in the new spec is turned into the pretrained run's inside the model."""
    from mnist_keras.data.pipeline import preprocess_images

    path = finetune(write_spec, pretrained, preprocess="{normalize: {mean: 0.5, std: 0.25}}")
    spec = mk.load_spec(path)
    model = mk.build_model(spec)
    source = mk.open_run(pretrained)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    ours = model.get_layer("backbone").predict(preprocess_images(spec, x), verbose=0)
    theirs = _as_backbone(pretrained).layers[0].layers
    expected = preprocess_images(source.spec, x)
    for layer in mk.load_model(source).layers[:5]:
        expected = layer(expected)
    assert np.allclose(ours, np.asarray(expected), atol=1e-4)
    assert theirs


def test_a_keras_application_trains_in_stages_and_predicts_plain_images(write_spec, tmp_path):
    """MobileNetV2 without weights: freezing per stage, BatchNorm in inference mode, preprocess_input inside."""
    folder = photos(tmp_path / "photos", per_class=12)
    path = write_spec(MOBILENET.replace("DATASET", str(folder)).replace("WEIGHTS", "none"), "mobile.yaml")
    summary = cli("summary", path)
    assert summary.exit_code == 0, summary.output
    assert "stage 2 trainable / frozen" in summary.output and "backbone trainable: last 10 layers" in summary.output
    start = batch_norm_stats(mk.build_model(mk.load_spec(path)))
    run = mk.fit(mk.load_spec(path), runs=tmp_path / "runs")
    assert run.state.status == "finished" and len(run.state.history) == 2
    model = mk.load_model(run)
    assert model.count_params() == sum(p.trainable + p.non_trainable for p in mk.load_spec(path).plan())
    layers = [layer.name for layer in model.get_layer("backbone").layers]
    assert layers[:2] == ["pixels", "preprocess_input"]
    assert all(np.array_equal(a, b) for a, b in zip(start, batch_norm_stats(model)))
    predicted = cli("predict", run.path, *sorted(str(p) for p in (folder / "china").glob("*.jpg"))[:2])
    assert predicted.exit_code == 0 and predicted.output.count("china") + predicted.output.count("flower") >= 2


def test_a_weights_file_is_loaded_and_one_of_another_network_refused(write_spec, tmp_path):
    from mnist_keras.spec.applications import make_network

    folder = photos(tmp_path / "photos", per_class=6)
    good, bad = tmp_path / "mobilenet.weights.h5", tmp_path / "vgg.weights.h5"
    network = make_network("MobileNetV2", (32, 32, 3), "max", None)
    network.save_weights(good)
    make_network("VGG16", (32, 32, 3), "max", None).save_weights(bad)
    text = MOBILENET.replace("DATASET", str(folder))
    model = mk.build_model(mk.load_spec(write_spec(text.replace("WEIGHTS", str(good)), "good.yaml")))
    loaded = model.get_layer("backbone").layers[-1]
    assert all(np.array_equal(a, b) for a, b in zip(network.get_weights(), loaded.get_weights()))
    result = cli("fit", write_spec(text.replace("WEIGHTS", str(bad)), "bad.yaml"), "--runs", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "model.layers[1].backbone.weights" in result.output and "does not fit MobileNetV2" in result.output
    assert "Traceback" not in result.output


def test_imagenet_weights_offline_name_the_file_and_the_folder(write_spec, tmp_path):
    """A proxy on a closed port stands for a machine that cannot download."""
    folder = photos(tmp_path / "photos", per_class=6)
    path = write_spec(MOBILENET.replace("DATASET", str(folder)).replace("WEIGHTS", "imagenet"), "imagenet.yaml")
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mnist_keras", "fit", str(path), "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in done.stderr  # 32x32: 224's file
    assert str(tmp_path / "keras" / "models") in done.stderr and "model.layers[1].backbone.weights" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "Downloading" not in done.stdout
    assert done.stderr.count("error:") == 1 and "Warning" not in done.stderr, done.stderr
    assert not list((tmp_path / "runs").rglob("*.keras"))


@pytest.mark.parametrize("file", ["cats_vs_dogs_resnet50.yaml", "cats_vs_dogs_mobilenet.yaml"])
def test_the_transfer_zoo_specs_build_as_planned_in_two_stages(tmp_path, file):
    """Both shipped specs build with the planned parameters, in two stages. Training a keras.applications backbone
    in stages (frozen, then its last layers) is test_a_keras_application_trains_in_stages_and_predicts_plain_images;
    each backbone is planned as Keras builds it in test_each_named_backbone_is_planned_as_keras_builds_it."""
    folder = photos(tmp_path / "pets", per_class=4)
    (folder / "china").rename(folder / "cat")
    (folder / "flower").rename(folder / "dog")
    spec = mk.load_spec(SHIPPED / file, [f"data.dataset={folder}", "model.layers[1].backbone.weights=none"])
    planned = sum(p.trainable + p.non_trainable for p in spec.plan())
    assert mk.build_model(spec).count_params() == planned and len(spec.stages()) == 2


@pytest.mark.parametrize("name", ["MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0",
                                  "ResNet50", "VGG16", "DenseNet121"])
def test_each_named_backbone_is_planned_as_keras_builds_it(write_spec, name):
    path = write_spec(f"""
data: {{image_shape: [40, 40, 3], num_classes: 3, source: bundled}}
model: {{layers: [{{backbone: {{name: {name}, weights: none}}}}, {{dense: 3}}]}}
""")
    spec = mk.load_spec(path)
    planned = spec.plan()
    model = mk.build_model(spec)
    assert model.count_params() == sum(p.trainable + p.non_trainable for p in planned)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == sum(p.trainable for p in planned)


BAD = [
    ("{backbone: {name: MobileNetv2, weights: none}}", "MobileNetV2", "model.layers[0].backbone.name",
     "did you mean 'MobileNetV2'"),
    ("{dense: 4}, {backbone: {name: MobileNetV2, weights: none}}", "MobileNetV2", "model.layers[1].backbone",
     "must be the first layer"),
    ("{backbone: {name: MobileNetV2, weights: none}}", "SMALL", "model.layers[0].backbone",
     "needs images of at least 32x32, but its input is 28x28"),
    ("{backbone: {name: ResNet50, weights: none}}", "GRAY", "model.layers[0].backbone",
     "takes RGB images (3 channels), but the data gives 1"),
    ("{backbone: {run: NOT_A_RUN}}", "", "model.layers[0].backbone.run", "is not a run directory"),
    ("{backbone: {run: RUN, until: dense_9}}", "", "model.layers[0].backbone.until",
     "has no layer 'dense_9'; its layers are 0: conv2d_1, 1: batch_norm_1"),
    ("{backbone: {run: RUN, weights: none}}", "", "model.layers[0].backbone",
     "weights belong to a keras.applications backbone"),
    ("{backbone: {name: VGG16, until: 3}}", "", "model.layers[0].backbone", "`until` picks a layer of an earlier run"),
]


@pytest.mark.parametrize("layer, data, where, message", BAD)
def test_bad_backbones_are_refused_before_training(write_spec, tmp_path, pretrained, layer, data, where, message):
    shape = {"SMALL": "image_shape: [28, 28, 3]", "GRAY": "image_shape: [64, 64, 1]", "MobileNetV2":
             "image_shape: [32, 32, 3]", "": ""}[data]
    layer = layer.replace("NOT_A_RUN", str(tmp_path)).replace("RUN", str(pretrained))
    path = write_spec(f"data: {{source: bundled, {shape}}}\nmodel: {{layers: [{layer}, {{dense: 10}}]}}\n")
    result = cli("fit", path, "--runs", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert where in result.output and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_stage_problems_name_their_place(write_spec, tmp_path, pretrained):
    path = finetune(write_spec, pretrained).read_text().replace("tensorboard: {enabled: false}",
                                                                 "epochs: 9\n  tensorboard: {enabled: false}")
    result = cli("validate", write_spec(path, "long.yaml"))
    assert result.exit_code == 2 and "train.epochs: 9 epochs, but the stages cover 3" in result.output
    result = cli("validate", write_spec("""
data: {source: bundled}
model: {layers: [flatten, {dense: 10}]}
train: {stages: [{epochs: 1, lr_schedule: plateau}, {epochs: 1, trainable: true}]}
""", "nobackbone.yaml"))
    assert result.exit_code == 2 and "train.stages[1].trainable: there is no backbone" in result.output
    assert "train.stages[0].lr_schedule: plateau watches the whole run" in result.output


def test_validate_needs_no_tensorflow_without_a_backbone(write_spec):
    code = ("import sys; from mnist_keras.spec import load_spec; load_spec(sys.argv[1]).plan(); "
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(SHIPPED / "lenet5.yaml")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "False", done.stderr
