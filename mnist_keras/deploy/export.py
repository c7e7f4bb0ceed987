"""Exports of a trained run's deployable model (serving.py), each checked against the Keras model on the test set
(parity.py) before it is put in place.

Layout of OUT/NAME/ (OUT: RUN_DIR/export by default; NAME: the run's spec name):
  1/                              the SavedModel, in TensorFlow Serving's layout (version 1)
  model[-float16|-int8].tflite    LiteRT
  model.onnx                      ONNX
  labels.txt                      one class name per line, in class-index order
  export.json                     the run, image shape, class names, and per artifact its parity figures and versions
Every artifact takes `images` (uint8, [N, H, W, C]) and gives `probabilities` (float32, [N, classes]); the
SavedModel and LiteRT ones under the signature `serving_default`. Each is written into a scratch folder
beside it and renamed into place, so a crash never leaves half an export; one that misses its parity bar is
renamed `<artifact>.failed` instead (export.json says so) and the export raises ExportFailed.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ExportFailed, UserError
from ..runs.files import read_json, write_json, write_text
from ..runs.run import Run, open_run
from .parity import Parity, check_parity

FORMATS = ("savedmodel", "litert", "onnx")
QUANTIZATIONS = ("float16", "int8")
CALIBRATION_IMAGES = 300  # int8: training images the converter measures activation ranges on
SAVED_MODEL_VERSION = "1"
RUNTIMES = {"savedmodel": ("tensorflow", "keras"), "litert": ("tensorflow", "ai_edge_litert"),
            "onnx": ("tf2onnx", "onnx", "onnxruntime")}
PACKAGES = {"ai_edge_litert": "ai-edge-litert"}  # import names whose distribution is spelled otherwise


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


def artifact_key(fmt: str, quantize: str | None) -> str:
    return f"{fmt}-{quantize}" if quantize else fmt


def artifact_name(fmt: str, quantize: str | None) -> str:
    """The artifact's file or folder name inside OUT/NAME."""
    if fmt == "savedmodel":
        return SAVED_MODEL_VERSION
    return f"model-{quantize}.tflite" if quantize else ("model.tflite" if fmt == "litert" else "model.onnx")


def check_request(fmt: str, quantize: str | None) -> None:
    """UserError for an unknown format or quantization, or one the format does not take."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize {quantize}: unknown quantization; choose one of {', '.join(QUANTIZATIONS)}")
    if quantize and fmt != "litert":
        raise UserError(f"--quantize {quantize}: only --format litert is quantized; the {fmt} export keeps the "
                        "model's float32 weights")
    missing = [PACKAGES.get(name, name) for name in RUNTIMES[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--format {fmt}: needs {' and '.join(missing)}; install them with "
                        "pip install 'mnist-keras[export]'")


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
    identity = _open_folder(folder, run, model_file)
    with _locked(folder):
        return _export(run, fmt, quantize, folder, _read_record(folder, identity), data_dir, notify)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_folder(folder: Path, run: Run, model_file: Path) -> dict:
    """OUT/NAME, created if need be, when it holds nothing or exports of this very model; the identity of the
    model that its export.json must match. UserError otherwise."""
    from ..data.images import decoding_fit

    identity = {"name": run.spec.name, "run": str(run.path.resolve()), "model": str(model_file.resolve()),
                "model_sha256": _sha256(model_file),
                "fit": decoding_fit(run.spec.data, (run.state.data or {}).get("source"))}  # how `serve` decodes uploads
    if (folder / "export.json").is_file():
        _read_record(folder, identity)
    elif folder.exists() and (not folder.is_dir() or not all(_ours(p.name) for p in folder.iterdir())):
        raise UserError(f"{folder}: exists and is not an mnist-keras export (no export.json); choose another --out "
                        "or remove it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the export folder ({err.strerror or err})") from None
    return identity


def _ours(name: str) -> bool:
    """Whether an export could have left this file in OUT/NAME (a crash may leave it without export.json)."""
    artifacts = {artifact_name(fmt, quantize) for fmt in FORMATS for quantize in (None, *QUANTIZATIONS)
                 if not quantize or fmt == "litert"}
    return (name in {"export.json", "labels.txt", ".lock"} or name.removesuffix(".failed") in artifacts
            or name.startswith(".partial-"))


def _read_record(folder: Path, identity: dict) -> dict:
    """OUT/NAME/export.json, or a new record when there is none; UserError when it belongs to another model."""
    if not (folder / "export.json").is_file():
        return {**identity, "formats": {}}
    record = read_json(folder / "export.json")
    if not isinstance(record, dict) or not isinstance(record.get("formats"), dict):
        raise UserError(f"{folder / 'export.json'}: not an export record of mnist-keras; remove {folder} first")
    if any(record.get(key) != value for key, value in identity.items()):
        raise UserError(f"{folder}: holds the export of another model ({record.get('model')}); exports of one "
                        "model share labels.txt and export.json, so choose another --out or remove this folder")
    return record


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold OUT/NAME/.lock: one export at a time writes into a folder (export.json is read, changed, rewritten)."""
    try:
        handle = open(folder / ".lock", "w")
    except OSError as err:
        raise UserError(f"{folder}: cannot write here ({err.strerror or err})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{folder}: another export is writing into this folder; run this one when it is done") \
                from None
        yield


@contextmanager
def _scratch(folder: Path) -> Iterator[Path]:
    """A scratch folder inside `folder`, removed afterwards with whatever is left in it (and any a crash left:
    the caller holds the folder's lock)."""
    for stale in folder.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
    except OSError as err:
        raise UserError(f"{folder}: cannot write here ({err.strerror or err})") from None
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _replace(source: Path, target: Path, scratch: Path) -> None:
    """Rename `source` to `target`; an old `target` is first moved into `scratch` (deleted with it)."""
    if target.exists():
        target.rename(scratch / f"replaced-{target.name}")
    source.rename(target)


def _export(run: Run, fmt: str, quantize: str | None, folder: Path, record: dict, data_dir: str | None,
            notify: Callable[[str], None]) -> Exported:
    """Convert in a scratch folder, check parity there, then rename the artifact into place (or aside as failed)
    and record it in export.json."""
    from ..data import load_arrays
    from ..model.objects import load_run_model
    from .serving import serving_model

    spec, key, name = run.spec, artifact_key(fmt, quantize), artifact_name(fmt, quantize)
    deployable = serving_model(spec, load_run_model(run), run.state.classes)
    arrays = load_arrays(spec.data, data_dir or run.state.data_dir, notify, spec.seed)
    images = _as_images(arrays.x_test, deployable.input_shape)
    keras_probabilities = deployable.model.predict(images, batch_size=256, verbose=0)
    good, failed = folder / name, folder / f"{name}.failed"
    with _scratch(folder) as scratch:
        artifact = scratch / name
        try:
            _convert(fmt, quantize, deployable, artifact,
                     lambda: _calibration(arrays.x_train, deployable.input_shape, spec.seed))
        except Exception as err:  # a converter's own failure: its message, not its traceback
            raise ExportFailed(f"{good}: the {key} converter failed: {_first_line(err)}") from None
        try:
            parity = check_parity(fmt, artifact, quantize, keras_probabilities, images, arrays.y_test)
        except Exception as err:
            raise ExportFailed(f"{good}: the {key} export does not run in its own runtime: {_first_line(err)}") \
                from None
        kept, dropped = (good, failed) if parity.passed else (failed, good)
        _replace(artifact, kept, scratch)
        if dropped.exists():
            dropped.rename(scratch / f"dropped-{dropped.name}")
    entry = {"format": fmt, "quantize": quantize, "path": kept.name, "status": "ok" if parity.passed else "failed",
             "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "test_images": {"dataset": arrays.provenance["dataset"], "source": arrays.provenance["source"]},
             "parity": parity.record(), "versions": _versions(fmt)}
    formats = {**record.pop("formats"), key: entry}
    record = {**record, "image_shape": list(deployable.input_shape), "class_names": deployable.class_names,
              "input": {"name": "images", "dtype": "uint8", "shape": [None, *deployable.input_shape]},
              "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(deployable.class_names)]},
              "formats": formats}
    write_text(folder / "labels.txt", "".join(f"{label}\n" for label in deployable.class_names))
    write_json(folder / "export.json", record)
    if not parity.passed:
        raise ExportFailed(f"{failed}: the {key} export missed its bar ({parity.bar}); it is kept under this name "
                           "for inspection only and export.json marks it failed", parity=parity)
    return Exported(spec.name, key, good, folder, parity)


def _convert(fmt: str, quantize: str | None, deployable, artifact: Path, calibration: Callable) -> None:
    """Write the artifact with the converter's logs and warnings silenced."""
    from ..backend import quiet

    with quiet():
        if fmt == "savedmodel":
            write_saved_model(deployable, artifact)
        elif fmt == "onnx":
            write_onnx(deployable, artifact)
        else:
            write_litert(deployable, artifact, quantize, calibration)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def write_saved_model(deployable, path: Path) -> None:
    """The SavedModel: signature serving_default, `images` uint8 [None, H, W, C] -> `probabilities`."""
    from ..backend import keras, tf

    model = deployable.model
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda images: {"probabilities": model(images, training=False)},
                         input_signature=[tf.TensorSpec((None, *deployable.input_shape), tf.uint8, name="images")])
    archive.write_out(str(path), verbose=False)


def write_litert(deployable, path: Path, quantize: str | None, calibration: Callable) -> None:
    """A .tflite file converted from the SavedModel with TensorFlow Lite's built-in ops only; float16 stores
    the weights as float16, int8 computes in int8 throughout (the uint8 images go in unchanged, the
    probabilities come out as float32)."""
    from ..backend import tf

    saved = path.parent / "savedmodel-for-litert"
    write_saved_model(deployable, saved)
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

