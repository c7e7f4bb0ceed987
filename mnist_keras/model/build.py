"""Spec -> keras.Sequential, from the layer plan the spec already checked."""

from __future__ import annotations

from ..spec import Spec


def build_model(spec: Spec):
    """The uncompiled keras.Sequential the spec describes, named after the spec, its backbone (if any) frozen as
    the first stage says. Under mixed precision a parameter-free float32 layer ends it, so the logits and the
    loss stay in float32."""
    from ..backend import keras
    from .objects import OWN_LAYERS

    layers, shape = [keras.Input(shape=spec.input_shape(), name="image")], spec.input_shape()
    for planned in spec.plan():
        if planned.backbone:
            from .backbones import build_backbone

            layers.append(build_backbone(spec, planned, shape))
        else:
            with keras.saving.custom_object_scope(OWN_LAYERS):
                layers.append(planned.layer.keras(planned.name))
        shape = planned.output_shape
    mixed = spec.runtime.mixed_precision
    if mixed and (mixed != "auto" or keras.mixed_precision.global_policy().name != "float32"):
        layers.append(keras.layers.Activation("linear", dtype="float32", name="float32_logits"))
    model = keras.Sequential(layers, name=spec.name)
    if spec.backbone():
        from .backbones import set_trainable

        set_trainable(model, spec, spec.stages()[0].trainable)
    return model
