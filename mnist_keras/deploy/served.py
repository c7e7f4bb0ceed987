"""The model a server serves, from a run directory or an exported SavedModel, behind one interface.

An export folder is `OUT/NAME` holding `export.json`, `labels.txt` and numbered SavedModel versions (`1/`,
`2/`, ...; TensorFlow Serving's layout). A version's class names are those of `VERSION/assets.extra/labels.txt`
when it has one (a version copied in from another export brings its own), else the folder's. A run directory
is served as version 1, through serving.py's deployable model. TensorFlow loads only once the folder has been
recognised.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.images import decode_image
from ..errors import UserError, first_line
from ..runs.exports import RECORD_FILE, RECORD_SHAPE, VERSION_LABELS, ExportRecord, read_export_record, read_labels


@dataclass
class ServedModel:
    """A classifier of uint8 images of `input_shape` (H, W, C): name, version, class names, and how uploaded
    image files are decoded (`fit`: None for MNIST-like, else stretch, crop or pad, as data.images does)."""

    name: str
    version: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    fit: str | None
    source: str
    call: Callable[[np.ndarray], np.ndarray]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) -> float32 probabilities (N, classes)."""
        return np.asarray(self.call(images), np.float32)

    def decode(self, data: bytes, filename: str | None) -> np.ndarray:
        """An uploaded image file as one uint8 image of `input_shape`; UserError naming the file when it is not one."""
        upload = io.BytesIO(data)
        upload.name = filename or "the upload"
        return decode_image(upload, list(self.input_shape), self.fit).reshape(self.input_shape)


def locate(target: str | Path):
    """What `target` holds, checked without TensorFlow: an export folder `OUT/NAME` (also found as the one
    NAME inside `OUT`) as its Path, or a run directory as its Run; UserError for anything else."""
    from ..runs.run import open_run

    path = Path(target)
    if not path.is_dir():
        raise UserError(f"{target}: no such run directory or export folder")
    return _export_folder(path) or open_run(path)


def versions_of(found) -> dict[int, Path]:
    """The versions of what locate() found, by number: a run directory is version 1; an export folder's are its
    folders named by a number (ASCII digits: "²".isdigit() too) that hold a saved_model.pb."""
    if not isinstance(found, Path):
        return {1: found.path}
    try:
        return dict(sorted((int(p.name), p) for p in found.iterdir()
                           if p.name.isascii() and p.name.isdigit() and (p / "saved_model.pb").is_file()))
    except OSError as err:
        raise UserError(f"{found}: cannot read: {err.strerror or err}") from None


def load_served(found, version: int | None = None) -> ServedModel:
    """The model of what locate() found (of `version`, by default the highest), loaded and ready to predict."""
    if isinstance(found, Path):
        versions = versions_of(found)
        if not versions:
            raise UserError(f"{found}: no SavedModel version folder (1/, 2/, ...) with a saved_model.pb")
        version = max(versions) if version is None else version
        served = _load_export(found, version, versions[version])
    else:
        served = _load_run(found)
    width = served.predict(np.zeros((1, *served.input_shape), np.uint8)).shape[1]  # traced now, not on a request
    if width != len(served.class_names):
        raise UserError(f"{served.source}: the model gives {width} probabilities for {len(served.class_names)} "
                        "class names")
    return served


def _export_folder(path: Path) -> Path | None:
    if (path / RECORD_FILE).is_file():
        return path
    try:
        found = sorted(p for p in path.iterdir() if (p / RECORD_FILE).is_file())
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(found) > 1:
        raise UserError(f"{path}: holds {len(found)} exported models ({', '.join(p.name for p in found)}); "
                        f"serve one of them: {path / found[0].name}")
    return found[0] if found else None


def _load_run(run) -> ServedModel:
    from ..backend import tf
    from ..model.objects import load_run_model
    from .serving import serving_model

    deployable = serving_model(run.spec, load_run_model(run), run.class_names)
    signature = tf.TensorSpec([None, *deployable.input_shape], tf.uint8)
    forward = tf.function(lambda images: deployable.model(images, training=False), input_signature=[signature])
    return ServedModel(deployable.name, 1, deployable.input_shape, deployable.class_names, run.upload_fit, str(run.path),
                       lambda images: forward(images).numpy())


def _load_export(folder: Path, version: int, saved: Path) -> ServedModel:
    record, class_names = _export_info(folder)
    class_names = read_labels(saved / VERSION_LABELS) or class_names
    from ..backend import tf

    try:
        loaded = tf.saved_model.load(str(saved))
    except Exception as err:  # TensorFlow raises many kinds on a damaged SavedModel
        raise UserError(f"{saved}: cannot load the SavedModel: {first_line(err)}") from None
    if "serving_default" not in loaded.signatures:
        raise UserError(f"{saved}: the SavedModel has no serving_default signature")
    signature = loaded.signatures["serving_default"]
    (input_name, spec), = signature.structured_input_signature[1].items()
    shape = tuple(record.image_shape)
    if spec.dtype != tf.uint8 or list(spec.shape) != [None, *shape]:
        raise UserError(f"{saved}: serving_default takes {spec.dtype.name} {list(spec.shape)}, export.json says "
                        f"uint8 images of {list(shape)}")
    outputs = list(signature.structured_outputs)
    output = "probabilities" if "probabilities" in outputs else outputs[0]

    def call(images: np.ndarray, model=loaded) -> np.ndarray:  # `model` keeps the variables alive
        return signature(**{input_name: tf.constant(images)})[output].numpy()

    return ServedModel(record.name, version, shape, class_names, record.upload_fit, str(folder), call)


def _export_info(folder: Path) -> tuple[ExportRecord, list[str]]:
    """export.json, with what serving needs of it: image_shape, and class_names (from labels.txt when it has none)."""
    record, file = read_export_record(folder), folder / RECORD_FILE
    class_names = record.class_names or read_labels(folder)
    if record.image_shape is None:
        raise UserError(f"{file}: image_shape: missing; expected {RECORD_SHAPE}")
    if not class_names:
        raise UserError(f"{file}: class_names: missing, and no labels.txt beside it; expected {RECORD_SHAPE}")
    return record, class_names
