"""TensorBoard dashboards beyond Keras' own scalars, written into the run's `logs/` folder.

  logs/validation  images `confusion_matrix` and `misclassified`, every train.tensorboard.images_every
                   epochs and after the last (classifiers with a validation set)
  logs/            text `spec` (the resolved spec, on a fresh start), the HParams session (hyperparameters
                   and `--set` values) and, at the end, scalars `Test/accuracy` and `Test/loss` (capitalised, so
                   the HParams table, which orders metrics by tag, shows them first)

The HParams metrics are found by the plugin itself from the scalars of logs/ and its train/ and
validation/ folders. No experiment config (`hp.hparams_config`) is written: with several runs under one
--logdir the plugin would pick one run's config at random, hide the other runs' hyperparameters and
mark none as differing; without it, it takes the union of all runs' sessions and marks the columns
whose values differ, so every run of a sweep compares side by side.

The HParams tab checks 5 columns by default: those that differ between the runs first, then the rest
by name (the plugin sorts by name, capitals first; a config cannot change that). So the five that
matter most for one run are named by their spec paths capitalised (`Train.optimizer.learning_rate`),
the others by their plain spec paths. The table shows every number to 5 significant digits (42 as
42.000), so integers are written as text; a row is named by its run folder, then the spec's name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import keras, tf
from ..data.pipeline import data_splits
from ..runs.record import RunState
from ..spec import Spec, dump_spec, parse_override
from .plots import confusion_figure, confusion_matrix, misclassified_figure, rgba

from tensorboard.plugins.hparams import api as hp

MISCLASSIFIED_SHOWN = 32


def layer_sizes(spec: Spec) -> str:
    """The widths of the weighted layers, e.g. 'conv6 conv16 dense120 dense84 dense10'."""
    sizes = []
    for planned in spec.plan():
        for kind, field in (("conv", "filters"), ("dense", "units")):
            if planned.name.startswith(kind) and hasattr(planned.layer, field):
                sizes.append(f"{kind}{getattr(planned.layer, field)}")
    return " ".join(sizes)


def _lookup(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


SHOWN = {"data.batch_size": "Data.batch_size", "model.layers": "Model.layers",  # checked by default
         "train.lr_schedule.type": "Train.lr_schedule.type", "train.optimizer.learning_rate":
         "Train.optimizer.learning_rate", "train.optimizer.type": "Train.optimizer.type"}


def _column(value: Any) -> bool | float | str:
    """A value as the HParams table shows it as written: an integer as text, a list or mapping as JSON."""
    if isinstance(value, (bool, float, str)):
        return value
    return str(value) if isinstance(value, int) else json.dumps(value)


def hparams(spec: Spec, found: float | None = None) -> dict[str, bool | float | str]:
    """The run's hyperparameters for the HParams dashboard, named by their spec paths (the five of SHOWN
    capitalised): the main ones, then each overridden path (spec.overrides) with its resolved value (what the
    spec holds after validation, so 1 and 1.0 for a float agree across runs, and an override of a main one is
    the same column). `found`: the rate `learning_rate: auto` stands for in the run."""
    values: dict[str, Any] = {
        "train.optimizer.type": spec.train.optimizer.type,
        "train.optimizer.learning_rate": spec.train.optimizer.resolved_learning_rate(found),
        "train.lr_schedule.type": spec.train.lr_schedule.type, "data.batch_size": spec.data.batch_size,
        "train.epochs": spec.train.epochs, "model.layers": layer_sizes(spec),
        "model.params": sum(p.trainable + p.non_trainable for p in spec.plan()), "seed": spec.seed,
    }
    resolved = spec.model_dump(mode="json")
    for name, value in spec.overrides.items():
        try:
            value = _lookup(resolved, parse_override(f"{name}=null")[0])
        except (KeyError, IndexError, TypeError):
            pass  # a path that validation rewrote (e.g. into a shorthand layer entry): the value as given
        values[name] = value
    return {SHOWN.get(name, name): _column(value) for name, value in values.items()}


def _image(figure) -> np.ndarray:
    """A matplotlib figure as a [1, H, W, 4] uint8 batch for tf.summary.image."""
    return rgba(figure)[np.newaxis]


class RunDescription(keras.callbacks.Callback):
    """At the start of training: the resolved spec as text (fresh runs only) and the HParams session."""

    def __init__(self, log_dir: Path, spec: Spec, resumed: bool, found: float | None = None):
        super().__init__()
        self.log_dir, self.spec, self.resumed, self.found = log_dir, spec, resumed, found

    def on_train_begin(self, logs=None):
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default(step=0):
            if not self.resumed:
                tf.summary.text("spec", f"```yaml\n{dump_spec(self.spec)}```")
            run_dir = self.log_dir.parent  # each run its own HParams row, named by its directory (a resume: the same):
            hp.hparams(hparams(self.spec, self.found), trial_id=f"{run_dir.name} {run_dir.parent.name}")  # the part that differs first
        writer.close()


class ValidationImages(keras.callbacks.Callback):
    """Every `every` epochs and after the last: one prediction pass over the validation set, drawn as a
    confusion matrix and a grid of the first misclassified images (true -> predicted)."""

    def __init__(self, log_dir: Path, validation, images: np.ndarray, labels: np.ndarray, names: list[str],
                 every: int = 1):
        super().__init__()
        self.log_dir, self.validation, self.images, self.labels = log_dir, validation, images, labels
        self.names, self.classes, self.every = names, len(names), every

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(str(self.log_dir))
        # Traced once for the run, batch size left open: model.predict would trace a function of its own, and
        # calling the model eagerly batch by batch cost 1.5 s per LeNet-5 epoch on a 2-core CPU.
        images = self.validation.element_spec[0]
        self.classify = tf.function(lambda x: tf.argmax(self.model(x, training=False), axis=-1),
                                    input_signature=[tf.TensorSpec((None, *images.shape[1:]), images.dtype)])

    def predictions(self) -> np.ndarray:
        """The class the model gives each validation image, in order."""
        return np.concatenate([self.classify(x).numpy() for x, _ in self.validation])

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != (self.params or {}).get("epochs"):
            return
        predicted = self.predictions()
        counts = confusion_matrix(self.labels, predicted, self.classes)
        wrong = np.flatnonzero(predicted != self.labels)
        shown = wrong[:MISCLASSIFIED_SHOWN]
        title = f"epoch {epoch + 1}: {len(wrong):,} of {len(self.labels):,} validation images misclassified"
        grid = misclassified_figure(self.images[shown], self.labels[shown], predicted[shown],
                                    title + (f" (first {len(shown)}; true \u2192 predicted)" if len(shown) else ""),
                                    names=self.names)
        with self.writer.as_default(step=epoch):
            tf.summary.image("confusion_matrix", _image(confusion_figure(counts, f"validation, epoch {epoch + 1}", self.names)))
            tf.summary.image("misclassified", _image(grid))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


def dashboard_callbacks(spec: Spec, log_dir: Path, state: RunState, arrays, validation) -> list:
    """The callbacks above for this run; no validation images without a validation set or for a regression."""
    callbacks: list = [RunDescription(log_dir, spec, bool(state.epochs_done), state.found_learning_rate())]
    if validation is None or spec.loss() == "mse" or not hasattr(arrays, "x_train"):  # images in memory only
        return callbacks
    images, labels = data_splits(spec.data, arrays)[1]
    callbacks.append(ValidationImages(log_dir / "validation", validation, images, labels.astype(np.int64),
                                      arrays.class_names or spec.data.class_labels(),
                                      spec.train.tensorboard.images_every))
    return callbacks


def write_test_metrics(log_dir: Path, test: dict[str, float], epoch: int) -> None:
    """The test set's metrics as scalars `Test/<metric>` in logs/, first in the HParams table (tags sort before
    `epoch_...`)."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=epoch):
        for name, value in test.items():
            tf.summary.scalar(f"Test/{name}", value)
    writer.close()
