"""Exports of a trained run's deployable model (serving.py), each checked against the Keras model on the test set
(parity.py) before it is put in place; export_folder.py keeps OUT/NAME crash-safe, runs/exports.py is the record.

Layout of OUT/NAME (OUT: RUN_DIR/export by default; NAME: the run's spec name):
  1/                              the SavedModel, in TensorFlow Serving's layout (version 1)
  model[-float16|-int8].tflite    LiteRT
  model.onnx                      ONNX
  labels.txt                      one class name per line, in class-index order
  export.json                     the run, image shape, class names, and per artifact its parity figures and versions
Every artifact takes `images` (uint8, [N, H, W, C]) and gives `probabilities` (float32, [N, classes]); the
SavedModel and LiteRT ones under the signature `serving_default`. The SavedModel has a second signature,
`serving_bytes`: `image_bytes` (string, [N]), one PNG, JPEG, GIF or BMP file each, decoded inside the graph
exactly as uploads are (decoding.py), to the same `probabilities`. One that misses its parity bar is renamed
`<artifact>.failed` instead (export.json says so) and the export raises ExportFailed.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ExportFailed, UserError, first_line
from ..runs.exports import BYTES_NAME, EVERY_EXPORT, FORMATS, QUANTIZATIONS, VERSION_LABELS, ExportRecord, \
    FormatEntry, ImageSource, Parity, Tensor, artifact_key, artifact_name, write_labels
from ..runs.run import Run, open_run
from .export_folder import Staging, check_owned, digest, locked, open_folder, read_previous, sha256_file
from .parity import check_parity

CALIBRATION_IMAGES = 300  # int8: training images the converter measures activation ranges on
RUNTIMES = {"savedmodel": ("tensorflow", "keras"), "litert": ("tensorflow", "ai_edge_litert"),
            "onnx": ("tf2onnx", "onnx", "onnxruntime")}
PACKAGES = {"ai_edge_litert": "ai-edge-litert"}  # import names whose distribution is spelled otherwise
BYTES_INPUT = Tensor(name=BYTES_NAME, dtype="string", shape=[None])  # the SavedModel's serving_bytes


@dataclass
class Exported:
    """One export that met its bar: `path` is the artifact, `folder` OUT/NAME."""

    name: str
    key: str  # savedmodel, litert, litert-float16, litert-int8 or onnx: its entry in export.json
    path: Path
    folder: Path
    parity: Parity


def _silent(message: str) -> None:
    """Drop a note (the API prints nothing unless asked)."""


def check_request(fmt: str, quantize: str | None) -> None:
    """UserError for an unknown format or quantization, or one the format does not take."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize {quantize}: unknown quantization; choose one of {', '.join(QUANTIZATIONS)}")
    if quantize and fmt != "litert":
        raise UserError(f"--quantize {quantize}: only --format litert is quantized; the {fmt} export keeps the "
                        "model's float32 weights")
    missing = _missing(fmt)
    if missing:
        raise UserError(f"--format {fmt}: needs {' and '.join(missing)}; install them with "
                        "pip install 'mnist-keras[export]'")


def _missing(fmt: str) -> list[str]:
    """The packages `fmt` needs that are not installed."""
    return [PACKAGES.get(name, name) for name in RUNTIMES[fmt] if importlib.util.find_spec(name) is None]


def every_export() -> tuple[list[tuple[str, str | None]], list[str]]:
    """`--format all`: every (format, quantization) the installed packages can export, and a note per format
    skipped for a missing package."""
    missing = {fmt: _missing(fmt) for fmt in FORMATS}
    notes = [f"note: --format all skips {fmt}: it needs {' and '.join(names)} (pip install 'mnist-keras[export]')"
             for fmt, names in missing.items() if names]
    return [(fmt, quantize) for fmt, quantize in EVERY_EXPORT if not missing[fmt]], notes


def export_run(run_dir: str | Path, fmt: str = "savedmodel", quantize: str | None = None, *,
               out: str | Path | None = None, data_dir: str | None = None,
               notify: Callable[[str], None] = _silent) -> Exported:
    """Export a run's model as `fmt` into OUT/NAME (OUT defaults to RUN_DIR/export), check its parity with the
    Keras model on the test set, and return it; UserError for bad input, ExportFailed when it misses its bar."""
    check_request(fmt, quantize)
    run = open_run(run_dir)
    from .serving import require_classifier

    require_classifier(run.spec, run.path)
    model_file = run.model_file()
    if run.state.status != "finished":
        notify(f"note: {run.path} is {run.state.status}, not finished: exporting its last checkpoint {model_file.name}")
    folder = Path(out) / run.spec.name if out else run.path / "export" / run.spec.name
    identity = ExportRecord(name=run.spec.name, run=str(run.path.resolve()), model=str(model_file.resolve()),
                            model_sha256=sha256_file(model_file), fit=run.upload_fit)
    created = open_folder(folder)
    try:
        with locked(folder):
            return _export(run, fmt, quantize, folder, identity, data_dir, notify)
    finally:
        if created:
            try:
                folder.rmdir()  # only when nothing is left in it: a first export that failed
            except OSError:
                pass


def _export(run: Run, fmt: str, quantize: str | None, folder: Path, identity: ExportRecord, data_dir: str | None,
            notify: Callable[[str], None]) -> Exported:
    """Convert in a scratch folder, check parity there, then rename the artifact into place (or aside as failed)
    and record it in export.json; export.json is as it was when anything fails before the rename."""
    from ..data import load_arrays
    from ..model.objects import load_run_model
    from .serving import serving_model

    spec, key, name = run.spec, artifact_key(fmt, quantize), artifact_name(fmt, quantize)
    deployable = serving_model(spec, load_run_model(run), run.class_names)
    good, failed = folder / name, folder / f"{name}.failed"
    previous = read_previous(folder, identity)
    check_owned(folder, previous, deployable.class_names, (good, failed))
    arrays = load_arrays(spec.data, data_dir or run.state.data_dir, notify, spec.seed)
    images = _as_images(arrays.x_test, deployable.input_shape)
    keras_probabilities = deployable.model.predict(images, batch_size=256, verbose=0)
    record = (previous or identity).model_copy(update={
        "image_shape": list(deployable.input_shape), "class_names": deployable.class_names,
        "input": Tensor(name="images", dtype="uint8", shape=[None, *deployable.input_shape]),
        "output": Tensor(name="probabilities", dtype="float32", shape=[None, len(deployable.class_names)]),
        "formats": dict(previous.formats if previous else {}),
        **({"bytes_input": BYTES_INPUT} if fmt == "savedmodel" else {})})
    with Staging(folder, record, previous) as staging:
        artifact = staging.scratch / name
        try:
            _convert(fmt, quantize, deployable, identity.fit, artifact,
                     lambda: _calibration(arrays.x_train, deployable.input_shape, spec.seed))
        except Exception as err:  # a converter's own failure: its message, not its traceback
            raise ExportFailed(f"{good}: the {key} converter failed: {first_line(err)}") from None
        try:
            parity = check_parity(fmt, artifact, quantize, keras_probabilities, images, arrays.y_test)
        except Exception as err:
            raise ExportFailed(f"{good}: the {key} export does not run in its own runtime: {first_line(err)}") \
                from None
        entry = FormatEntry(
            format=fmt, quantize=quantize, path=(good if parity.passed else failed).name, sha256=digest(artifact),
            status="ok" if parity.passed else "failed", exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            test_images=ImageSource(dataset=arrays.provenance["dataset"], source=arrays.provenance["source"]),
            parity=parity, versions=_versions(fmt))
        staging.put_in_place(artifact, entry)
    if not parity.passed:
        raise ExportFailed(f"{failed}: the {key} export missed its bar ({parity.bar}); it is kept under this name "
                           "for inspection only and export.json marks it failed", parity=parity)
    return Exported(spec.name, key, good, folder, parity)


def _convert(fmt: str, quantize: str | None, deployable, fit: str | None, artifact: Path,
             calibration: Callable) -> None:
    """Write the artifact with the converter's logs and warnings silenced; `fit`: how uploads are decoded."""
    from ..backend import quiet

    with quiet():
        if fmt == "savedmodel":
            write_saved_model(deployable, artifact, fit)
        elif fmt == "onnx":
            write_onnx(deployable, artifact)
        else:
            write_litert(deployable, artifact, quantize, calibration)


def _as_images(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images (N, H, W[, C]) as (N, H, W, C), the exported models' input."""
    return np.asarray(x, dtype=np.uint8).reshape((len(x), *shape))


def _calibration(x_train: np.ndarray, shape: tuple[int, int, int], seed: int) -> Iterator[list[np.ndarray]]:
    """CALIBRATION_IMAGES training images drawn with the spec's seed, one at a time (the converter's
    representative dataset)."""
    pick = np.sort(np.random.default_rng(seed).choice(len(x_train), min(CALIBRATION_IMAGES, len(x_train)),
                                                      replace=False))
    for image in _as_images(x_train[pick], shape):
        yield [image[np.newaxis]]


def _versions(fmt: str) -> dict[str, str]:
    from .. import __version__

    found = {"mnist-keras": __version__, "python": sys.version.split()[0], "numpy": np.__version__}
    for name in ("tensorflow", "keras", *RUNTIMES[fmt]):
        try:
            found[PACKAGES.get(name, name)] = version(PACKAGES.get(name, name))
        except PackageNotFoundError:
            pass
    return found


def write_saved_model(deployable, path: Path, fit: str | None) -> None:
    """The SavedModel: signatures serving_default (`images` uint8 [None, H, W, C]) and serving_bytes
    (`image_bytes` string [None], encoded files decoded as uploads are with `fit`), both -> `probabilities`; its
    class names in assets.extra/labels.txt (TF Serving's place for extra files), so that a copy of the version
    folder into another export brings them along."""
    from ..backend import tf
    from .decoding import decode_images

    model, archive = deployable.model, _archive(deployable)
    archive.add_endpoint(
        "serving_bytes",
        lambda image_bytes: {"probabilities": model(decode_images(image_bytes, deployable.input_shape, fit),
                                                    training=False)},
        input_signature=[tf.TensorSpec((None,), tf.string, name=BYTES_INPUT.name)])
    archive.write_out(str(path), verbose=False)
    (path / VERSION_LABELS).mkdir()
    write_labels(path / VERSION_LABELS, deployable.class_names)


def _archive(deployable):
    """An ExportArchive of the model with the signature serving_default, `images` -> `probabilities`."""
    from ..backend import keras, tf

    model = deployable.model
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda images: {"probabilities": model(images, training=False)},
                         input_signature=[tf.TensorSpec((None, *deployable.input_shape), tf.uint8, name="images")])
    return archive


def write_litert(deployable, path: Path, quantize: str | None, calibration: Callable) -> None:
    """A .tflite file converted with TensorFlow Lite's built-in ops only from a SavedModel of serving_default
    alone (uint8 images; no serving_bytes); float16 stores the weights as float16, int8 computes in int8
    throughout (the uint8 images go in unchanged, the probabilities come out as float32)."""
    from ..backend import tf

    saved = path.parent / "savedmodel-for-litert"
    _archive(deployable).write_out(str(saved), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())
    shutil.rmtree(saved)


def write_onnx(deployable, path: Path) -> None:
    """An .onnx file through Keras' exporter (tf2onnx), its output renamed `probabilities` and its batch axis
    named `batch`."""
    import onnx

    deployable.model.export(str(path), format="onnx", verbose=False)
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["probabilities" if output == old else output for output in node.output]
    graph.output[0].name = "probabilities"
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))

