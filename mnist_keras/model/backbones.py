"""Backbones in Keras: a keras.applications network or an earlier run's layers, behind the pixel
adaptation they need, and freezing them stage by stage.

A backbone sees pixels the way it was trained on them, whatever the spec's data.preprocess gives: an
affine layer turns the pipeline's pixels back into 0..255 for a network's own `preprocess_input` (which
runs inside the model, so predict and exports need nothing extra), or into an earlier run's preprocessing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..backend import keras
from ..errors import UserError
from ..spec import Preprocess, Spec, dotted
from ..spec.applications import APPLICATIONS, make_network
from ..spec.backbone_layer import Backbone
from ..spec.layer_plan import PlannedLayer

BACKBONE = "backbone"  # the Keras name of the backbone inside the model


@keras.saving.register_keras_serializable(package="mnist_keras")
class PixelAffine(keras.layers.Layer):
    """x * multiplier + shift, per channel: one preprocessing turned into another."""

    def __init__(self, multiplier, shift, **kwargs):
        super().__init__(**kwargs)
        self.multiplier, self.shift = [float(m) for m in multiplier], [float(s) for s in shift]

    def call(self, x):
        return x * np.array(self.multiplier, "float32") + np.array(self.shift, "float32")

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier, "shift": self.shift}


@keras.saving.register_keras_serializable(package="mnist_keras")
class ApplicationPreprocess(keras.layers.Layer):
    """A keras.applications module's own `preprocess_input`, on pixels in 0..255."""

    def __init__(self, module: str, **kwargs):
        super().__init__(**kwargs)
        self.module = module

    def call(self, x):
        return getattr(keras.applications, self.module).preprocess_input(x)

    def get_config(self):
        return {**super().get_config(), "module": self.module}


def _affine(prep: Preprocess, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, b) with preprocessed = raw * m + b, per channel, for raw pixels in 0..255."""
    m, b = np.full(channels, prep.scale, "float64"), np.full(channels, prep.offset, "float64")
    if prep.normalize:
        # the spec turns `normalize: imagenet` into its mean and std as it validates
        mean, std = np.broadcast_to(prep.normalize.mean, channels), np.broadcast_to(prep.normalize.std, channels)
        m, b = m / std, (b - mean) / std
    return m, b


def _adapter(source: Preprocess, target: Preprocess | None, channels: int) -> list:
    """The PixelAffine from `source`'s pixels to `target`'s (None: raw 0..255), or nothing if they agree."""
    m, b = _affine(source, channels)
    m_t, b_t = _affine(target, channels) if target else (np.ones(channels), np.zeros(channels))
    multiplier, shift = m_t / m, b_t - b * m_t / m
    if np.allclose(multiplier, 1) and np.allclose(shift, 0):
        return []
    return [PixelAffine(multiplier, shift, name="pixels")]


def _keras_home() -> str:
    """The folder Keras keeps downloads in ($KERAS_HOME, else ~/.keras)."""
    try:
        from keras.src.backend.config import keras_home
    except ImportError:  # a Keras that moved it: its documented default
        return os.environ.get("KERAS_HOME", "~/.keras")
    return keras_home()


def _network(backbone: Backbone, shape: tuple, place: str):
    """The keras.applications network with the weights the spec names; UserError before training if they
    cannot be had (offline `imagenet`, a missing or mismatched file)."""
    file = backbone.weights_file()
    if file and not Path(file).is_file():
        raise UserError(f"{place}.weights: {file}: no such file (give a .keras, .h5 or .weights.h5 file, "
                        "imagenet or none)")
    try:
        network = make_network(backbone.name, shape, backbone.pool(), "imagenet" if backbone.pretrained() else None)
    except Exception as err:  # Keras' get_file raises a bare Exception when it cannot download
        if "URL fetch failure" not in str(err):
            raise
        url = str(err).split("URL fetch failure on ", 1)[1].split(": ", 1)[0]
        folder = Path(_keras_home()).expanduser() / "models"
        raise UserError(f"{place}.weights: imagenet: Keras could not download {Path(url).name} (from {url}) on "
                        f"this machine; copy that file into {folder}/ and run again, or use weights: none or a "
                        "weights file") from None
    if file:
        try:
            with warnings.catch_warnings(record=True) as caught:  # Keras warns, not raises, for some mismatches
                warnings.simplefilter("always")
                network.load_weights(file)
            skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
            if skipped:
                raise ValueError(skipped[0])
        except Exception as err:  # Keras raises ValueError, KeyError or OSError for a file of another model
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise UserError(f"{place}.weights: {file} does not fit {backbone.name} with input "
                            f"{list(shape)} and pooling {backbone.pool()} ({first})") from None
    return network


def _run_layers(backbone: Backbone, until: int) -> tuple[list, Preprocess]:
    """The earlier run's layers up to `until` (from its best model, else its final one) and its preprocessing."""
    from ..runs.run import open_run
    from .objects import load_run_model

    run = open_run(backbone.run)
    model = load_run_model(run, "best" if run.state.best else "final")
    return model.layers[:until + 1], run.spec.data.preprocess


def build_backbone(spec: Spec, planned: PlannedLayer, shape: tuple):
    """The backbone as one Keras model named `backbone`, taking the pipeline's pixels of `shape`."""
    backbone, place = planned.layer, dotted(planned.origin)
    channels = shape[-1] if len(shape) == 3 else 1
    if backbone.name:
        network = _network(backbone, shape, place)
        layers = [*_adapter(spec.data.preprocess, None, channels),
                  ApplicationPreprocess(APPLICATIONS[backbone.name], name="preprocess_input"), network]
    else:
        taken, preprocess = _run_layers(backbone, planned.backbone.until)
        layers = [*_adapter(spec.data.preprocess, preprocess, channels), *taken]
    return keras.Sequential([keras.Input(shape=shape), *layers], name=BACKBONE)


def _own_layers(model) -> list:
    """The backbone's layers with weights, in order (a keras.applications network's own layers)."""
    backbone = model.get_layer(BACKBONE)
    layers = []
    for layer in backbone.layers:
        inner = layer.layers if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential) else [layer]
        layers += [sub for sub in inner if sub.weights]
    return layers


def set_trainable(model, spec: Spec, trainable) -> None:
    """Freeze the backbone as `trainable` says (false, true or {last: N}); its BatchNorm layers stay frozen,
    so in inference mode, whenever the spec freezes the backbone at any stage. No-op without a backbone."""
    if trainable is None:
        return
    backbone, layers = model.get_layer(BACKBONE), _own_layers(model)
    backbone.trainable = True
    count = len(layers) if trainable is True else 0 if trainable is False else trainable.last
    keep_frozen = spec.keeps_batch_norm_frozen()
    for i, layer in enumerate(layers):
        layer.trainable = i >= len(layers) - count and not (
            keep_frozen and isinstance(layer, keras.layers.BatchNormalization))
