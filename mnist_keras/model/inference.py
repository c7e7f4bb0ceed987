"""A trained model on data: its test-set figures (`evaluate`) and the classes of image files (`predict`), typed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..reporter import Reporter
from ..runs.record import TestMetrics
from ..runs.run import model_target


@dataclass
class ClassScore:
    """One class of the test set: its images and the fraction the model gets right (None without images)."""

    images: int
    accuracy: float | None


@dataclass
class Evaluation:
    """A model's test-set figures: the compiled metrics, the accuracy per class by name (None for a regression),
    how many images, which model file, and the dataset and source they came from."""

    test: TestMetrics
    per_class: dict[str, ClassScore] | None
    images: int
    model: str
    dataset: str | None
    source: str | None


@dataclass
class Prediction:
    """One image file's answer: its class name and probability, or for a regression its output `value`."""

    file: str
    label: str | None = None
    probability: float | None = None
    value: float | None = None


def evaluate_model(target: str | Path, data_dir: str | None, spec_file: str | None, notify: Reporter) -> Evaluation:
    """The test-set figures of a run's model (or a .keras file, with its run's or `spec_file`'s spec)."""
    spec, model_file, run = model_target(target, spec_file)  # before TensorFlow loads: bad input is refused fast
    from ..data import load_arrays, make_pipelines
    from .objects import load_model

    arrays = load_arrays(spec.data, data_dir or (run and run.state.data_dir), notify, spec.seed)
    model = load_model(model_file, spec)
    test = make_pipelines(spec, arrays).test
    metrics = TestMetrics(**{k: float(v) for k, v in model.evaluate(test, verbose=0, return_dict=True).items()})
    per_class = None
    if spec.loss() != "mse":
        names = run.class_names if run else arrays.class_names
        predicted, truth = model.predict(test, verbose=0).argmax(axis=-1), arrays.y_test
        per_class = {name: ClassScore(int((truth == i).sum()),
                                      float((predicted[truth == i] == i).mean()) if (truth == i).any() else None)
                     for i, name in enumerate(names)}
    return Evaluation(metrics, per_class, len(arrays.x_test), str(model_file), arrays.provenance["dataset"],
                      arrays.provenance["source"])


def predict_files(target: str | Path, images: Sequence[str], spec_file: str | None
                  ) -> tuple[list[Prediction], list[str]]:
    """The answers of a run's model for image files, decoded as its data set's images were, and a message per file
    that cannot be read; missing files are found before TensorFlow loads."""
    import numpy as np

    from ..data.images import check_image_files, decoding_fit, read_images

    missing = check_image_files(list(images))
    if len(missing) == len(images):
        raise UserError(*missing)
    spec, model_file, run = model_target(target, spec_file)
    fit = run.upload_fit if run else decoding_fit(spec.data, None)
    pixels, files, problems = read_images(list(images), spec.data.image_shape, fit)
    if not files:
        return [], problems
    from ..data.pipeline import preprocess_images
    from .objects import load_model

    outputs = load_model(model_file, spec).predict(preprocess_images(spec, pixels), verbose=0)
    if spec.loss() == "mse":
        return [Prediction(f, value=float(out[0])) for f, out in zip(files, outputs)], problems
    probabilities = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = run.class_names if run else spec.data.class_labels()
    if len(names) != outputs.shape[1]:
        raise UserError(f"{model_file}: the model gives {outputs.shape[1]} classes, the run's class list "
                        f"{len(names)}")
    return [Prediction(f, names[int(p.argmax())], float(p.max())) for f, p in zip(files, probabilities)], problems
