"""Specs built in Keras: every layer, stack and template matches the plan's shapes and counts."""

import numpy as np
import pytest

from conftest import SHIPPED
from mnist_keras.model.build import build_model
from mnist_keras.spec.loader import load_spec

LAYERS = {
    "dense_conv_pools": """
      - conv2d: {filters: 5, kernel_size: [3, 5], strides: 2, padding: same, activation: relu, use_bias: false}
      - max_pool2d: {pool_size: 2, strides: 1, padding: same}
      - conv2d: {filters: 3, kernel_size: 3, dilation_rate: 2, kernel_initializer: he_normal,
                 kernel_regularizer: {l2: 0.001}, bias_regularizer: {l1: 0.01}}
      - avg_pool2d: {pool_size: [2, 3]}
      - flatten
      - dense: {units: 7, activation: tanh, bias_initializer: ones}
      - dense: 10""",
    "batch_norm_activation_dropout": """
      - flatten
      - dense: 16
      - batch_norm: {momentum: 0.9, epsilon: 0.001, center: false}
      - activation: elu
      - dropout: 0.3
      - dense: 10""",
    "reshape_resizing_rescaling": """
      - rescaling: {scale: 2.0, offset: -1.0}
      - resizing: {height: 20, width: 24, interpolation: nearest}
      - reshape: [-1, 24]
      - dense: 3
      - flatten
      - dense: 10""",
    "augmentation": """
      - random_translation: 0.1
      - random_rotation: {factor: 0.05, fill_mode: nearest}
      - random_zoom: {height_factor: 0.1, width_factor: 0.2}
      - flatten
      - dense: 10""",
    "stacks": """
      - conv_pool_stack: {filters: [4, 6], kernel_size: 5, padding: valid, pool: avg, batch_norm: true}
      - flatten
      - dense_stack: {units: [30, 20], dropout: [0.1, 0.2], batch_norm: true, activation: selu}
      - dense_stack: {units: [10], activation: null}""",
}


def check_matches_keras(spec):
    model = build_model(spec)
    plan = spec.plan()
    assert model.count_params() == sum(p.trainable + p.non_trainable for p in plan)
    assert len(model.layers) == len(plan)
    for layer, planned in zip(model.layers, plan):
        assert layer.name == planned.name
        assert tuple(layer.output.shape[1:]) == planned.output_shape, layer.name
        assert layer.count_params() == planned.trainable + planned.non_trainable, layer.name
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == sum(p.trainable for p in plan)
    return model


@pytest.mark.parametrize("name", LAYERS)
def test_layers_match_keras(name, write_spec):
    check_matches_keras(load_spec(write_spec(f"model:\n  layers:{LAYERS[name]}\n")))


@pytest.mark.parametrize("variant", ["{activation: relu, pool: max}", "{activation: tanh, pool: avg, padding: same}"])
def test_lenet5_template_matches_keras(variant, write_spec):
    check_matches_keras(load_spec(write_spec(f"model: {{template: {{lenet5: {variant}}}}}\n")))


@pytest.mark.parametrize("name", ["lenet5", "dense", "cnn"])
def test_shipped_specs_build(name):
    model = check_matches_keras(load_spec(SHIPPED / f"{name}.yaml"))
    assert model.name == name
    assert model.layers[-1].output.shape[-1] == 10


def test_initializer_arguments_and_regularizers(write_spec):
    spec = load_spec(write_spec(
        "model:\n  layers:\n    - flatten\n"
        "    - dense: {units: 512, kernel_initializer: {type: random_normal, stddev: 0.02},"
        " kernel_regularizer: {l2: 0.0005}}\n    - dense: 10\n"
    ))
    model = build_model(spec)
    kernel = model.layers[1].kernel.numpy()
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.002
    model(np.zeros((1, 28, 28, 1), "float32"))
    assert len(model.losses) == 1  # the L2 penalty
