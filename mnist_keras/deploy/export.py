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

An export replaces only what it can prove it made: export.json records each artifact's sha256 (a folder's over
its tree), and before anything is renamed into place export.json names the scratch folder and the artifact's
sha256 (`pending`), so whatever a crash leaves is still recorded. Nothing is written through a symbolic link.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import stat
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ExportFailed, UserError, first_line
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
EVERY_EXPORT = (("savedmodel", None), ("litert", None), ("litert", "float16"), ("litert", "int8"), ("onnx", None))
KEYS = {f"{fmt}-{quantize}" if quantize else fmt for fmt, quantize in EVERY_EXPORT}
RECORD_LIMIT = 2**20  # bytes: export.json and labels.txt are a few kilobytes


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
    identity = {"name": run.spec.name, "run": str(run.path.resolve()), "model": str(model_file.resolve()),
                "model_sha256": _sha256(model_file), "fit": run.upload_fit}
    created = _open_folder(folder)
    try:
        with _locked(folder):
            return _export(run, fmt, quantize, folder, identity, data_dir, notify)
    finally:
        if created:
            try:
                folder.rmdir()  # only when nothing is left in it: a first export that failed
            except OSError:
                pass


def _sha256(path: Path | str, flags: int = 0) -> str:
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | flags), "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(path: Path) -> str | None:
    """The sha256 of a regular file, or of a folder's tree (every name, and every file's sha256); None for a
    symbolic link or anything else anywhere in it, or what cannot be read. No link is followed."""
    try:
        return _tree_digest(path)
    except OSError:
        return None


def _tree_digest(path: Path) -> str | None:
    flags = os.O_NOFOLLOW | os.O_NONBLOCK  # lstat said a regular file: never a link or a pipe when opened
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        return _sha256(path, flags)
    if not stat.S_ISDIR(mode):
        return None
    digest, folders = hashlib.sha256(), [""]
    while folders:  # depth first, in name order, without recursion (a hostile tree may be deep)
        relative = folders.pop()
        for name in sorted(os.listdir(path / relative), reverse=True):
            inside = os.path.join(relative, name)
            mode = os.lstat(path / inside).st_mode
            if stat.S_ISDIR(mode):
                folders.append(inside)
                digest.update(os.fsencode(inside) + b"/\0")
            elif stat.S_ISREG(mode):
                digest.update(os.fsencode(inside) + b"\0" + _sha256(path / inside, flags).encode() + b"\0")
            else:
                return None
    return digest.hexdigest()


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _link_error(path: Path) -> UserError:
    return UserError(f"{path}: a symbolic link; an export writes only files it made, never through a link, so "
                     "remove it or choose another --out")


def _open_folder(folder: Path) -> bool:
    """OUT/NAME, created if need be (True then), when it is a folder that holds nothing or an export (export.json);
    UserError otherwise, before anything is written."""
    info = _lstat(folder)
    if info and stat.S_ISLNK(info.st_mode):
        raise _link_error(folder)
    try:
        foreign = info and (not stat.S_ISDIR(info.st_mode) or not (
            _lstat(folder / "export.json") or all(p.name == ".lock" for p in folder.iterdir())))
    except OSError as err:
        raise UserError(f"{folder}: cannot read the export folder ({err.strerror or err})") from None
    if foreign:
        raise UserError(f"{folder}: exists and is not an mnist-keras export (no export.json); choose another --out "
                        "or remove it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the export folder ({err.strerror or err})") from None
    return info is None


def _artifact_names() -> set[str]:
    """Every artifact name an export writes into OUT/NAME, failed ones included."""
    names = {artifact_name(fmt, quantize) for fmt, quantize in EVERY_EXPORT}
    return names | {f"{name}.failed" for name in names}


def _read_record(folder: Path, identity: dict) -> dict | None:
    """OUT/NAME/export.json, or None when there is none, with what a crashed export left recovered (_recover);
    UserError when it is no export record of mnist-keras or belongs to another model."""
    file = folder / "export.json"
    info = _lstat(file)
    if info is None:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(file)
    record = read_json(file, RECORD_LIMIT)
    formats = record.get("formats") if isinstance(record, dict) else None
    pending = record.get("pending") if isinstance(record, dict) else None
    if not (isinstance(formats, dict) and all(map(_valid_entry, formats.values()))
            and (pending is None or (isinstance(pending, dict) and isinstance(pending.get("scratch"), str)
                                     and re.fullmatch(r"\.partial-[0-9a-f]{16}", pending["scratch"])
                                     and ("entry" not in pending or _valid_entry(pending["entry"]))))):
        raise UserError(f"{file}: not an export record of mnist-keras; remove {folder} first")
    if any(record.get(key) != value for key, value in identity.items()):
        raise UserError(f"{folder}: holds the export of another model ({record.get('model')}); exports of one "
                        "model share labels.txt and export.json, so choose another --out or remove this folder")
    return _recover(folder, record)


def _valid_entry(entry) -> bool:
    """A format's entry in export.json: its key, its artifact's name and sha256 (None in records of old versions)."""
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"] in _artifact_names()
            and artifact_key(entry.get("format"), entry.get("quantize")) in KEYS
            and isinstance(entry.get("sha256"), (str, type(None))))


def _recover(folder: Path, record: dict) -> dict:
    """The record of an export that crashed (its `pending` part left in it): its scratch folder removed, and its
    entry adopted when its artifact was renamed into place."""
    pending = record.pop("pending", None)
    if pending:
        scratch = folder / pending["scratch"]
        if stat.S_ISDIR(getattr(_lstat(scratch), "st_mode", 0)):
            shutil.rmtree(scratch, ignore_errors=True)
        entry = pending.get("entry")
        if entry and entry["sha256"] and _lstat(folder / entry["path"]) and \
                _digest(folder / entry["path"]) == entry["sha256"]:
            record["formats"][artifact_key(entry["format"], entry["quantize"])] = entry
    return record


def _check_owned(folder: Path, record: dict | None, labels: str, targets: tuple[Path, ...]) -> None:
    """UserError naming the first of `targets` (the paths this export replaces) that export.json does not record
    with its present content, or a labels.txt other than `labels`: what an export cannot prove it made, it
    never replaces."""
    claims: dict[str, set] = {}
    for entry in (record or {}).get("formats", {}).values():
        claims.setdefault(entry["path"], set()).add(entry["sha256"])
    for path in targets:
        info = _lstat(path)
        if info and stat.S_ISLNK(info.st_mode):
            raise _link_error(path)
        if info and _digest(path) not in claims.get(path.name, set()) - {None}:
            raise UserError(f"{path}: not an artifact this export made (export.json records no {path.name} with "
                            "this content); an export replaces only its own, so move it away or choose another --out")
    file = folder / "labels.txt"
    info = _lstat(file)
    if info and stat.S_ISLNK(info.st_mode):
        raise _link_error(file)
    if info and not (stat.S_ISREG(info.st_mode) and info.st_size <= RECORD_LIMIT
                     and _read_bytes(file) == labels.encode()):
        raise UserError(f"{file}: not the class names of this model, one per line; an export replaces only its "
                        "own files, so move it away or choose another --out")


def _read_bytes(path: Path) -> bytes | None:
    """A small file's bytes, None when it cannot be read."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as handle:
            return handle.read(RECORD_LIMIT + 1)
    except OSError:
        return None


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold OUT/NAME/.lock, an empty file, while one export writes into the folder (export.json is read,
    changed, rewritten), and remove it afterwards; never through a link, never truncating a file."""
    lock = folder / ".lock"
    for _ in range(100):  # another export may remove the file between our open and our flock: open it again
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _link_error(lock) from None
            raise UserError(f"{lock}: cannot open the export's lock file ({err.strerror or err})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size:
                raise UserError(f"{lock}: not the empty lock file an export makes; remove it or choose another --out")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{folder}: another export is writing into this folder; run this one when it is "
                                "done") from None
            now = _lstat(lock)
            if now and (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
                try:
                    yield
                finally:
                    lock.unlink(missing_ok=True)  # while it is held: a waiting export then opens a new one
                return
        finally:
            os.close(fd)
    raise UserError(f"{folder}: another export is writing into this folder; run this one when it is done")


def _export(run: Run, fmt: str, quantize: str | None, folder: Path, identity: dict, data_dir: str | None,
            notify: Callable[[str], None]) -> Exported:
    """Convert in a scratch folder, check parity there, then rename the artifact into place (or aside as failed)
    and record it in export.json; export.json is as it was when anything fails before the rename."""
    from ..data import load_arrays
    from ..model.objects import load_run_model
    from .serving import serving_model

    spec, key, name = run.spec, artifact_key(fmt, quantize), artifact_name(fmt, quantize)
    deployable = serving_model(spec, load_run_model(run), run.class_names)
    labels = "".join(f"{label}\n" for label in deployable.class_names)
    good, failed = folder / name, folder / f"{name}.failed"
    previous = _read_record(folder, identity)
    _check_owned(folder, previous, labels, (good, failed))
    arrays = load_arrays(spec.data, data_dir or run.state.data_dir, notify, spec.seed)
    images = _as_images(arrays.x_test, deployable.input_shape)
    keras_probabilities = deployable.model.predict(images, batch_size=256, verbose=0)
    record = {**(previous or identity), "image_shape": list(deployable.input_shape),
              "class_names": deployable.class_names,
              "input": {"name": "images", "dtype": "uint8", "shape": [None, *deployable.input_shape]},
              "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(deployable.class_names)]},
              "formats": dict((previous or {}).get("formats", {}))}
    scratch = folder / f".partial-{secrets.token_hex(8)}"
    write_json(folder / "export.json", {**record, "pending": {"scratch": scratch.name}})  # named before it exists
    placed = False
    try:
        try:
            scratch.mkdir(mode=0o700)
        except OSError as err:
            raise UserError(f"{folder}: cannot write here ({err.strerror or err})") from None
        artifact = scratch / name
        try:
            _convert(fmt, quantize, deployable, artifact,
                     lambda: _calibration(arrays.x_train, deployable.input_shape, spec.seed))
        except Exception as err:  # a converter's own failure: its message, not its traceback
            raise ExportFailed(f"{good}: the {key} converter failed: {first_line(err)}") from None
        try:
            parity = check_parity(fmt, artifact, quantize, keras_probabilities, images, arrays.y_test)
        except Exception as err:
            raise ExportFailed(f"{good}: the {key} export does not run in its own runtime: {first_line(err)}") \
                from None
        kept = good if parity.passed else failed
        entry = {"format": fmt, "quantize": quantize, "path": kept.name, "sha256": _digest(artifact),
                 "status": "ok" if parity.passed else "failed", "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "test_images": {"dataset": arrays.provenance["dataset"], "source": arrays.provenance["source"]},
                 "parity": parity.record(), "versions": _versions(fmt)}
        write_json(folder / "export.json", {**record, "pending": {"scratch": scratch.name, "entry": entry}})
        placed = True
        for old in (good, failed):  # proven ours by _check_owned: moved into the scratch folder, deleted with it
            if _lstat(old):
                old.rename(scratch / f"replaced-{old.name}")
        artifact.rename(kept)
        if not _lstat(folder / "labels.txt"):
            write_text(folder / "labels.txt", labels)
        write_json(folder / "export.json", {**record, "formats": {**record["formats"], key: entry}})
    except BaseException:
        if not placed:  # nothing was put in place: export.json as it was (none, if there was none)
            if previous is None:
                (folder / "export.json").unlink(missing_ok=True)
            else:
                write_json(folder / "export.json", previous)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
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

