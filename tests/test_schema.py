"""The schema against Keras: defaults are Keras' defaults, every class is built by Keras' own registry,
every field is documented, and no way of making a Spec gives an invalid one."""

import importlib
import inspect
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from mnist_keras.backend import keras
from mnist_keras.cli import main
from mnist_keras.spec.fields import INITIALIZERS, KerasObject, Regularizer
from mnist_keras.spec.layer_registry import ENTRIES, LAYERS
from mnist_keras.spec.loader import json_schema
from mnist_keras.spec.schema import Spec, SpecProblems
from mnist_keras.spec.train_section import Optimizer

OPTIMIZERS = typing.get_args(typing.get_args(Optimizer)[0])
# A backbone is a keras.applications network or an earlier run's layers, not one Keras class's arguments.
KERAS_CLASSES = [*(cls for cls in LAYERS.values() if cls.kind != "backbone"), *INITIALIZERS, Regularizer, *OPTIMIZERS]
MODEL = {"layers": ["flatten", {"dense": 10}]}


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def _fields(cls: type[KerasObject]):
    return [(name, field) for name, field in cls.model_fields.items() if name != "type"]


@pytest.mark.parametrize("cls", KERAS_CLASSES, ids=lambda cls: cls.__name__)
def test_defaults_are_keras_defaults(cls):
    """Each field is an argument of the Keras class with Keras' default (or, in `keras_names`, stands for Keras
    arguments); a default that differs (None: Keras decides, or one where Keras has none) must say so in its
    description."""
    keras_cls = getattr(importlib.import_module(cls.keras_module), cls.keras_class)
    parameters = inspect.signature(keras_cls.__init__).parameters
    for name, field in _fields(cls):
        standing_for = getattr(cls, "keras_names", {}).get(name)
        if standing_for:
            assert set(standing_for) <= set(parameters), f"{cls.__name__}.{name}: {standing_for} not all arguments"
            assert "default" in (field.description or ""), f"{cls.__name__}.{name} does not say its default"
            continue
        assert name in parameters, f"{cls.__name__}.{name} is not an argument of {cls.keras_class}"
        keras_default, default = parameters[name].default, field.default
        if default is PydanticUndefined or _plain(default) == _plain(keras_default):
            continue
        assert "default" in (field.description or ""), (
            f"{cls.__name__}.{name} defaults to {default!r}, Keras to {keras_default!r}, and its description "
            "does not say why")


@pytest.mark.parametrize("cls", [*INITIALIZERS, Regularizer, *OPTIMIZERS], ids=lambda cls: cls.__name__)
def test_keras_registry_builds_each_class(cls):
    registry = importlib.import_module(cls.keras_module)
    made = cls().keras(0.1) if cls in OPTIMIZERS else registry.get(cls().keras_config())
    assert type(made).__name__ == cls.keras_class


def test_optimizer_passes_every_argument_and_the_schedule_through():
    spec = Spec.model_validate({"model": MODEL, "train": {"optimizer": {"type": "sgd", "momentum": 0.5,
                                                                        "nesterov": True, "clipnorm": 2.0}}})
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    made = spec.train.optimizer.keras(schedule)
    assert (made.momentum, made.nesterov, made.clipnorm) == (0.5, True, 2.0)
    assert made.learning_rate is not None and made._learning_rate is schedule
    assert spec.train.optimizer.resolved_learning_rate() == 0.01  # SGD's default in Keras
    assert Spec.model_validate({"model": MODEL}).train.optimizer.resolved_learning_rate() == 0.001


def test_initializers_take_exactly_their_keras_arguments():
    dense = {"units": 10, "kernel_initializer": {"type": "random_normal", "stddev": 0.02, "seed": 1}}
    spec = Spec.model_validate({"model": {"layers": ["flatten", {"dense": dense}]}})
    layer = spec.plan()[-1].layer.keras("out")
    assert layer.kernel_initializer.stddev == 0.02 and layer.kernel_initializer.seed == 1
    for bad in ({"type": "he_normal", "stddev": 0.1}, {"type": "zeros", "value": 1.0}):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            Spec.model_validate({"model": {"layers": ["flatten", {"dense": {"units": 10, "kernel_initializer": bad}}]}})


def _schema_properties(node, where=""):
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            yield f"{where}.{key}", value
        for key, value in node.items():
            yield from _schema_properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for value in node:
            yield from _schema_properties(value, where)


def test_every_property_of_the_generated_schema_has_a_description():
    """What an editor shows on hover, the layer-entry keys (`conv2d:`) included (issue 23)."""
    properties = list(_schema_properties(json_schema()))
    undocumented = [where for where, prop in properties if not prop.get("description")]
    assert not undocumented
    entries = {where.rsplit(".", 1)[1]: prop["description"] for where, prop in properties
               if where.rsplit(".", 1)[0].endswith("Entry")}
    assert set(entries) == set(ENTRIES) and "short for `dense: {units: VALUE}`" in entries["dense"]
    assert entries["conv2d"].startswith("A 2D convolution") and "keras.layers.Conv2D" in entries["conv2d"]


@pytest.mark.parametrize("make", [Spec.model_validate, lambda data: Spec(**data)], ids=["model_validate", "init"])
def test_whole_spec_problems_are_validation_errors_at_their_paths(make):
    data = {"data": {"validation": 0}, "model": {"layers": ["flatten", {"dense": 7}]},
            "train": {"lr_schedule": {"type": "plateau"}, "tensorboard": {"profile_batches": [5, 2]}}}
    with pytest.raises(ValidationError) as caught:
        make(data)
    errors = {err["loc"]: err["ctx"]["error"] for err in caught.value.errors()}
    assert set(errors) == {("train", "lr_schedule", "monitor"), ("train", "tensorboard", "profile_batches"),
                           ("model", "layers", 1, "dense")}
    for loc, error in errors.items():
        assert isinstance(error, SpecProblems) and error.problems[0][0] == loc
    assert "monitor 'loss' or hold out validation images" in str(errors[("train", "lr_schedule", "monitor")])


def test_problems_stays_callable_and_empty_for_a_valid_spec():
    assert Spec.model_validate({"model": MODEL}).problems() == []


def test_activation_memory_names_the_largest_layer():
    data = {"data": {"batch_size": 4096}, "model": {"layers": [{"conv2d": {"filters": 4096, "kernel_size": 3}},
                                                               "flatten", {"dense": 10}]},
            "runtime": {"max_params": 10**9}}
    with pytest.raises(ValidationError, match=r"over runtime.max_activation_bytes = 8.0 GiB; the largest is conv2d_1, "
                                              r"output \(26, 26, 4096\)"):
        Spec.model_validate(data)
    data["runtime"]["max_activation_bytes"] = 2**45
    assert Spec.model_validate(data)


@pytest.mark.parametrize("path", sorted((Path(__file__).parent / "bad_specs").glob("*.yaml")), ids=lambda p: p.stem)
def test_fit_refuses_every_bad_spec_before_training(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["fit", str(path)])
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    assert result.exit_code == 2 and expected in result.stderr, result.output
    assert not list(tmp_path.iterdir())
