"""Spec -> keras.Sequential, from the layer plan the spec already checked."""

from __future__ import annotations

from .runtime import tensorflow
from .spec import Spec


def build_model(spec: Spec):
    """The uncompiled keras.Sequential the spec describes, named after the spec."""
    tensorflow()
    import keras

    layers = [keras.Input(shape=spec.input_shape(), name="image")]
    layers += [planned.layer.keras(planned.name) for planned in spec.plan()]
    return keras.Sequential(layers, name=spec.name)
