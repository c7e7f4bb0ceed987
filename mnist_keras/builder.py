"""Spec -> keras.Sequential, from the layer plan the spec already checked."""

from __future__ import annotations

from .spec import Spec


def build_model(spec: Spec):
    """The uncompiled keras.Sequential the spec describes, named after the spec. Under mixed precision
    a parameter-free float32 layer ends it, so the logits and the loss stay in float32."""
    from .backend import keras

    layers = [keras.Input(shape=spec.input_shape(), name="image")]
    layers += [planned.layer.keras(planned.name) for planned in spec.plan()]
    if spec.runtime.mixed_precision:
        layers.append(keras.layers.Activation("linear", dtype="float32", name="float32_logits"))
    return keras.Sequential(layers, name=spec.name)
