"""The deployable model: raw uint8 images in, class probabilities out, the spec's preprocessing inside.

Training feeds the model preprocessed float tensors (data/pipeline.py); a deployed model must not rely on
its caller to repeat that, so `serving_model` wraps the trained model with the very same `preprocess_images`
in front and a softmax behind. The class names travel beside it (`Deployable.class_names`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backend import keras
from ..errors import UserError
from ..data.pipeline import apply_preprocess
from ..spec import Preprocess, Spec


@keras.saving.register_keras_serializable(package="mnist_keras")
class Preprocessing(keras.layers.Layer):
    """uint8 images (N, H, W, C) -> the float tensor the trained model takes, exactly as in training."""

    def __init__(self, preprocess: dict, **kwargs):
        super().__init__(**kwargs)
        self.preprocess, self._prep = preprocess, Preprocess.model_validate(preprocess)

    def call(self, images):
        return apply_preprocess(self._prep, images)

    def get_config(self):
        return {**super().get_config(), "preprocess": self.preprocess}


@dataclass
class Deployable:
    """A run's model ready to deploy: `model` maps uint8 images of `input_shape` to probabilities."""

    name: str
    model: object
    input_shape: tuple[int, int, int]
    class_names: list[str]


def image_shape(spec: Spec) -> tuple[int, int, int]:
    """(height, width, channels) of the images as the data set holds them."""
    shape = spec.data.image_shape
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def require_classifier(spec: Spec, where: str | Path | None = None) -> None:
    """UserError for a regression spec, naming `where` (the run directory) or else the spec."""
    if spec.loss() == "mse":
        raise UserError(f"{where or spec.name}: a regression model (loss mse) gives a value, not class "
                        "probabilities; only classifiers can be deployed")


def serving_model(spec: Spec, trained, class_names: list[str] | None = None) -> Deployable:
    """The trained model behind the spec's preprocessing and a softmax; UserError for a regression spec."""
    require_classifier(spec)
    shape = image_shape(spec)
    images = keras.Input(shape=shape, dtype="uint8", name="images")
    logits = trained(Preprocessing(spec.data.preprocess.model_dump(mode="json"), name="preprocessing")(images))
    probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(logits)
    model = keras.Model(images, probabilities, name=f"{spec.name}_serving")
    names = list(class_names or spec.data.class_labels())
    return Deployable(spec.name, model, shape, names)


def run_deployable(target: str | Path, which: str = "final") -> Deployable:
    """The deployable model of a run directory (its final model by default)."""
    from ..model.objects import load_run_model
    from ..runs.run import open_run

    run = open_run(target)
    return serving_model(run.spec, load_run_model(run, which), run.class_names)
