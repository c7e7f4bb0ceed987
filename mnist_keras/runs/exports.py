"""The export record: `export.json` and `labels.txt` of an export folder OUT/NAME, as typed models, read and
written only through them.

export.json holds the model exported (name, run, model file and its sha256, how uploads are decoded), what
its artifacts take and give (`bytes_input`: what the SavedModel's serving_bytes takes too), the class names,
an entry per artifact (`formats`), and while an export is writing, `pending`: its scratch folder and the
entry about to be put in place, so a crash leaves nothing unrecorded. Records of older versions (no `fit`,
no `model_sha256`, no `bytes_input`, entries without `sha256`) are read as they were. The names of the
artifacts live here too, since the record names them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, \
    ValidationError, ValidationInfo, field_validator

from ..errors import UserError
from ..spec.fields import MAX_INT, NonNegativeInt
from .files import first_problem, read_json, write_json, write_text

RECORD_FILE, LABELS_FILE = "export.json", "labels.txt"
INPUT_NAME, BYTES_NAME, OUTPUT_NAME = "images", "image_bytes", "probabilities"  # every artifact's tensors
VERSION_LABELS = "assets.extra"  # VERSION/assets.extra/labels.txt: a SavedModel version's own class names
RECORD_LIMIT = 2**20  # bytes: export.json and labels.txt are a few kilobytes
RECORD_SHAPE = '{"name": str, "image_shape": [H, W, C], "class_names": [str, ...], "formats": {...}, ...}'
FORMATS = ("savedmodel", "litert", "onnx")
QUANTIZATIONS = ("float16", "int8")
EVERY_EXPORT = (("savedmodel", None), ("litert", None), ("litert", "float16"), ("litert", "int8"), ("onnx", None))
SAVED_MODEL_VERSION = "1"
FITS = ("stretch", "crop", "pad")


def artifact_key(fmt: str, quantize: str | None) -> str:
    """The artifact's entry in export.json: savedmodel, litert, litert-float16, litert-int8 or onnx."""
    return f"{fmt}-{quantize}" if quantize else fmt


def artifact_name(fmt: str, quantize: str | None) -> str:
    """The artifact's file or folder name inside OUT/NAME."""
    if fmt == "savedmodel":
        return SAVED_MODEL_VERSION
    return f"model-{quantize}.tflite" if quantize else ("model.tflite" if fmt == "litert" else "model.onnx")


KEYS = tuple(artifact_key(fmt, quantize) for fmt, quantize in EVERY_EXPORT)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Parity(_Record):
    """The figures of one export against the Keras model on the test set, and whether they meet the bar."""

    images: NonNegativeInt
    agreement: float  # share of test images where both give the same top-1 class
    keras_accuracy: float
    export_accuracy: float
    max_probability_difference: float
    file_bytes: NonNegativeInt
    latency_ms: float  # per image, one image per call
    bar: str
    passed: bool

    def lines(self) -> list[str]:
        """The figures as aligned lines, for the terminal."""
        change = (self.export_accuracy - self.keras_accuracy) * 100
        return [f"  top-1 agreement with Keras   {self.agreement:.2%} of {self.images:,} test images",
                f"  accuracy                     Keras {self.keras_accuracy:.2%}, export {self.export_accuracy:.2%} "
                f"({change:+.2f} points)",
                f"  largest probability change   {self.max_probability_difference:.2e}",
                f"  file size                    {self.file_bytes / 1024:,.1f} KiB",
                f"  latency per image            {self.latency_ms:.3f} ms (batch 1)",
                f"  bar                          {self.bar}: {'passed' if self.passed else 'FAILED'}"]


class ImageSource(_Record):
    """Where the test images of the parity check came from."""

    dataset: str
    source: str


class FormatEntry(_Record):
    """One artifact in export.json: what it is, its file or folder inside OUT/NAME (`<name>.failed` when it
    missed its bar) and that file's sha256 (a folder's over its tree; None in records of older versions)."""

    format: Literal["savedmodel", "litert", "onnx"]
    quantize: Literal["float16", "int8"] | None = None
    path: str
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    status: Literal["ok", "failed"]
    exported_at: str
    test_images: ImageSource
    parity: Parity
    versions: dict[str, str]

    @field_validator("quantize")
    @classmethod
    def _quantized_litert(cls, quantize: str | None, info: ValidationInfo) -> str | None:
        if quantize and info.data.get("format") not in (None, "litert"):
            raise ValueError(f"{quantize}: only litert exports are quantized")
        return quantize

    @field_validator("path")
    @classmethod
    def _artifact_path(cls, path: str, info: ValidationInfo) -> str:
        if "format" in info.data and "quantize" in info.data:
            name = artifact_name(info.data["format"], info.data["quantize"])
            if path not in (name, f"{name}.failed"):
                raise ValueError(f"{path[:80]!r} is not this artifact's name ({name}, or {name}.failed)")
        return path

    @property
    def key(self) -> str:
        return artifact_key(self.format, self.quantize)


class Pending(_Record):
    """What an export in progress has named before making it: its scratch folder inside OUT/NAME, and the
    entry of the artifact it is about to rename into place."""

    scratch: Annotated[str, StringConstraints(pattern=r"^\.partial-[0-9a-f]{16}$")]
    entry: FormatEntry | None = None


class Tensor(_Record):
    """An artifact's input or output: its name, dtype and shape (None for the batch axis)."""

    name: str
    dtype: str
    shape: list[Annotated[int, Field(ge=1, le=MAX_INT)] | None]


def _known_fit(fit):
    if fit is not None and fit not in FITS:
        raise ValueError(f"fit must be null, {', '.join(FITS[:-1])} or {FITS[-1]}, not {fit!r:.40}")
    return fit


def _known_key(key: str) -> str:
    if key not in KEYS:
        raise ValueError(f"{key[:40]!r} is not an artifact of an export ({', '.join(KEYS)})")
    return key


ImageSide = Annotated[int, Field(ge=1, le=2**16)]


class ExportRecord(_Record):
    """export.json. Only `name` is always there: what an export fills in may be missing from a record made by
    hand for `serve` (image_shape, class_names) or from one that holds no artifact yet."""

    name: str
    run: str | None = None
    model: str | None = None
    model_sha256: str | None = None
    fit: Annotated[Literal["stretch", "crop", "pad"] | None, BeforeValidator(_known_fit)] = None
    image_shape: Annotated[list[ImageSide], Field(min_length=3, max_length=3)] | None = None
    class_names: list[str] | None = None
    input: Tensor | None = None
    bytes_input: Tensor | None = None  # the SavedModel's serving_bytes: encoded image files
    output: Tensor | None = None
    formats: dict[Annotated[str, AfterValidator(_known_key)], FormatEntry] = {}
    pending: Pending | None = None

    @field_validator("formats")
    @classmethod
    def _entries_under_their_keys(cls, formats: dict[str, FormatEntry]) -> dict[str, FormatEntry]:
        for key, entry in formats.items():
            if entry.key != key:
                raise ValueError(f"{key}: holds the entry of {entry.key}")
        return formats

    def same_model(self, other: "ExportRecord") -> bool:
        """True when both are exports of one model file of one run, decoding uploads alike."""
        return all(getattr(self, field) == getattr(other, field)
                   for field in ("name", "run", "model", "model_sha256", "fit"))

    @property
    def upload_fit(self) -> str | None:
        """How uploaded image files are decoded (as data.images does): `fit`, or for a record of a version that
        did not write it, MNIST-like for one channel and stretched otherwise."""
        if "fit" in self.model_fields_set or self.image_shape is None:
            return self.fit
        return None if self.image_shape[2] == 1 else "stretch"


def read_export_record(folder: Path) -> ExportRecord:
    """OUT/NAME/export.json; UserError naming the file (and the field) when it is no export record."""
    file = Path(folder) / RECORD_FILE
    raw = read_json(file, RECORD_LIMIT)
    if not isinstance(raw, dict):
        raise UserError(f"{file}: expected a JSON object, not {type(raw).__name__}")
    try:
        return ExportRecord.model_validate(raw, strict=True)
    except ValidationError as err:
        raise UserError(f"{file}: {first_problem(err)}; expected {RECORD_SHAPE}") from None


def write_export_record(folder: Path, record: ExportRecord) -> None:
    """Write OUT/NAME/export.json atomically (`pending` and `bytes_input` only while they are set)."""
    unset = {field for field in ("pending", "bytes_input") if getattr(record, field) is None}
    write_json(Path(folder) / RECORD_FILE, record.model_dump(mode="json", exclude=unset))


def read_labels(folder: Path) -> list[str] | None:
    """OUT/NAME/labels.txt, one class name per line; None when there is none, UserError naming it when it is
    no small text file (never read through a link)."""
    file = Path(folder) / LABELS_FILE
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UserError(f"{file}: cannot read: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{file}: cannot read: not a regular file")
        if info.st_size > RECORD_LIMIT:
            raise UserError(f"{file}: {info.st_size:,} bytes is too large for this file (limit {RECORD_LIMIT:,})")
        data = handle.read(RECORD_LIMIT + 1)
    try:
        return data.decode().splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: cannot read: {err}") from None


def write_labels(folder: Path, class_names: list[str]) -> None:
    write_text(Path(folder) / LABELS_FILE, "".join(f"{name}\n" for name in class_names))
