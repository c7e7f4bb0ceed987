"""The pretrained networks a `backbone` can name (`keras.applications`), and what each needs and gives.

Their shapes and parameter counts come from Keras itself: the network is built once, without weights,
for each input shape (so only specs with such a backbone import TensorFlow to be checked).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

# Keras name -> the keras.applications module whose preprocess_input the network's pixels go through.
APPLICATIONS = {
    "MobileNetV2": "mobilenet_v2", "MobileNetV3Small": "mobilenet_v3", "MobileNetV3Large": "mobilenet_v3",
    "EfficientNetB0": "efficientnet", "EfficientNetB1": "efficientnet", "EfficientNetB2": "efficientnet",
    "ResNet50": "resnet", "ResNet101": "resnet", "ResNet50V2": "resnet_v2", "VGG16": "vgg16", "VGG19": "vgg19",
    "DenseNet121": "densenet", "DenseNet169": "densenet", "Xception": "xception", "InceptionV3": "inception_v3",
}
MIN_SIDE = {"Xception": 71, "InceptionV3": 75}  # the others take 32x32 and larger


@dataclass(frozen=True)
class LayerWeights:
    """One layer of a backbone: its name, weights it would train, weights it never trains, and whether
    it is a BatchNormalization (which stays in inference mode in a backbone that is frozen at any stage)."""

    name: str
    trainable: int
    non_trainable: int
    batch_norm: bool


@dataclass(frozen=True)
class Described:
    """A backbone for one input shape: its output shape and its layers, in order."""

    output_shape: tuple[int, ...]
    layers: tuple[LayerWeights, ...]
    until: int | None = None  # an earlier run's backbone: the index of its last layer taken


def input_problem(name: str, shape: tuple[int, ...]) -> str | None:
    """Why `name` cannot take images of `shape` (height, width, channels), or None."""
    if len(shape) != 3:
        return f"{name} takes images (height, width, channels), but its input has shape {tuple(shape)}"
    side = MIN_SIDE.get(name, 32)
    if shape[2] != 3:
        return (f"{name} takes RGB images (3 channels), but the data gives {shape[2]}; set data.image_shape to "
                f"[{max(side, shape[0])}, {max(side, shape[1])}, 3] (every source is read as that: gray images "
                "replicated to RGB, resized by data.preprocess.fit)")
    if min(shape[:2]) < side:
        return (f"{name} needs images of at least {side}x{side}, but its input is {shape[0]}x{shape[1]}; set "
                f"data.preprocess.resize: [{max(side, shape[0])}, {max(side, shape[1])}] or larger")
    return None


def make_network(name: str, shape: tuple[int, ...], pooling: str, weights: str | None):
    """The keras.applications network without its top (Keras' download message kept off stdout)."""
    from ..backend import keras

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`input_shape` is undefined or non-square")  # 224's weights, as documented
        return getattr(keras.applications, name)(include_top=False, weights=weights, input_shape=tuple(shape),
                                                 pooling=None if pooling == "none" else pooling)


@lru_cache(maxsize=32)
def describe(name: str, shape: tuple[int, ...], pooling: str) -> Described:
    """The network's output shape and per-layer weights for this input shape (built once, without weights)."""
    from ..backend import keras

    network = make_network(name, shape, pooling, None)
    layers = tuple(
        LayerWeights(layer.name, sum(math.prod(w.shape) for w in layer.trainable_weights),
                     sum(math.prod(w.shape) for w in layer.non_trainable_weights),
                     isinstance(layer, keras.layers.BatchNormalization))
        for layer in network.layers if layer.weights)
    return Described(tuple(network.output_shape[1:]), layers)
