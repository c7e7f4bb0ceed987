"""TensorFlow Serving's REST request bodies, checked and turned into uint8 image batches or encoded image files.

A :predict body is JSON: `{"instances": [...]}` (the row format: one image per element) or `{"inputs": batch}`
(the columnar format: the whole batch as one list, or `{"images": batch}` / `{"image_bytes": batch}`). An image
is a nested list of pixels, `{"images": pixels}`, or an encoded image file (PNG, JPEG, GIF, BMP) in TensorFlow
Serving's base64 form, `{"b64": "..."}` or `{"image_bytes": {"b64": "..."}}`. Pixels go to the signature
`serving_default`, files to `serving_bytes` (`signature_name` may say which; one kind per request). An image of
shape [H, W, C] may also be sent as [H, W] when C is 1, and every pixel is a whole number in 0..255. A :classify
body is `{"examples": [...]}` of the same images (each example `{"image_bytes": {"b64": ...}}` or
`{"images": pixels}`, with `"context"` features shared by all). Anything else is a `BadRequest` whose message
says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import orjson
from starlette.responses import Response

from ..runs.exports import BYTES_NAME, INPUT_NAME

SIGNATURES = {"serving_default": INPUT_NAME, "serving_bytes": BYTES_NAME}
KINDS = {INPUT_NAME: "images as pixel lists", BYTES_NAME: 'encoded image files ({"b64": ...})'}


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and a message for the client."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Instances:
    """The images of a request: uint8 pixels (N, H, W, C), or encoded image files (and where each was in the
    request); `columnar` for an answer in the columnar format."""

    images: np.ndarray | None = None
    files: list[bytes] | None = None
    columnar: bool = False
    places: list[str] | None = None  # where each file is in the request, for messages

    def __len__(self) -> int:
        return len(self.files) if self.images is None else len(self.images)


def predict_images(body: bytes, shape: tuple[int, int, int], max_instances: int) -> Instances:
    """The images of a :predict body."""
    request = json_body(body)
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise BadRequest('the body must be a JSON object with either "instances" (a list of images) or "inputs"')
    signature = _signature(request)
    if "instances" in request:
        return _instances(request["instances"], '"instances"', "instances", shape, max_instances, signature)
    batch = request["inputs"]
    if isinstance(batch, dict):
        batch = _named(batch, '"inputs"')[1]
    return _instances(batch, '"inputs"', "inputs", shape, max_instances, signature, columnar=True)


def classify_images(body: bytes, shape: tuple[int, int, int], max_instances: int) -> Instances:
    """The images of a :classify body."""
    request = json_body(body)
    if not isinstance(request, dict) or not isinstance(request.get("examples"), list):
        raise BadRequest('the body must be a JSON object with "examples": a list of {"image_bytes": {"b64": ...}}')
    context = request.get("context", {})
    if not isinstance(context, dict):
        raise BadRequest('"context" must be an object of features shared by every example')
    examples = [{**context, **example} if isinstance(example, dict) else example for example in request["examples"]]
    return _instances(examples, '"examples"', "examples", shape, max_instances, _signature(request), examples=True)


def _signature(request: dict) -> str | None:
    name = request.get("signature_name")
    if name not in (None, *SIGNATURES):
        raise BadRequest(f"unknown signature_name {name!r:.80}: the model has serving_default (uint8 images) and "
                         "serving_bytes (encoded image files)")
    return name


def _instances(rows, field: str, where: str, shape: tuple[int, int, int], max_instances: int, signature: str | None,
               columnar: bool = False, examples: bool = False) -> Instances:
    if not isinstance(rows, list) or not rows:
        raise BadRequest(f"{field} must be a non-empty list of images")
    if len(rows) > max_instances:
        raise BadRequest(f"too many instances: {len(rows)}; at most {max_instances} images per request")
    kinds, values = zip(*(_one(row, f"{where}[{i}]", examples) for i, row in enumerate(rows)))
    files = kinds[0] == BYTES_NAME
    for i, kind in enumerate(kinds):
        if kind != kinds[0]:
            raise BadRequest(f"{where}[{i}]: {KINDS[kind]} after {KINDS[kinds[0]]}; send one kind per request")
    if signature and SIGNATURES[signature] != kinds[0]:
        raise BadRequest(f"signature_name {signature} takes {KINDS[SIGNATURES[signature]]}, not {KINDS[kinds[0]]}")
    if files:
        places = [f"{where}[{i}]" for i in range(len(values))]
        return Instances(files=[_b64(value, place) for value, place in zip(values, places)], columnar=columnar,
                         places=places)
    return Instances(np.stack([_image(value, shape, f"{where}[{i}]") for i, value in enumerate(values)]),
                     columnar=columnar)


def _one(row, where: str, example: bool) -> tuple[str, object]:
    """(INPUT_NAME or BYTES_NAME, the value) of one instance or example."""
    if isinstance(row, dict) and set(row) == {"b64"} and not example:
        return BYTES_NAME, row
    if isinstance(row, dict):
        return _named(row, where)
    if example:
        raise BadRequest(f'{where}: an example is an object of features, {{"image_bytes": {{"b64": ...}}}}')
    return INPUT_NAME, row


def _named(value: dict, where: str) -> tuple[str, object]:
    """(name, value) of a value given by input name: {"images": pixels} or {"image_bytes": file}."""
    if len(value) != 1 or next(iter(value)) not in SIGNATURES.values():
        raise BadRequest(f"{where}: serving_default has one input, {INPUT_NAME!r}, and serving_bytes one, "
                         f"{BYTES_NAME!r}; got {sorted(value)[:8]}")
    return next(iter(value.items()))


def _b64(value, where: str) -> bytes:
    """The bytes of {"b64": text}."""
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise BadRequest(f'{where}: an encoded image is {{"b64": "<base64 of the file>"}}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest(f"{where}: b64: not base64 ({err})") from None


def json_response(content: dict) -> Response:
    """A JSON response; numpy arrays are written as nested lists (float32 in its shortest form)."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def json_body(body: bytes):
    """The JSON of a request body; 400 when it is not JSON."""
    try:
        return orjson.loads(body)  # 5x faster than json on pixel lists; refuses NaN, Infinity and deep nesting
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None


def _image(value, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """One image as uint8 (H, W, C); [H, W] is taken for C = 1."""
    try:
        pixels = np.asarray(value)
    except ValueError:  # numpy refuses ragged nesting
        raise BadRequest(f"{where}: a ragged list: every row must have the same length; expected shape "
                         f"{list(shape)}") from None
    if pixels.dtype.kind not in "iuf":
        raise BadRequest(f"{where}: pixel values must be numbers 0..255, not {_kind(pixels)}")
    if pixels.shape != shape and not (shape[2] == 1 and pixels.shape == shape[:2]):
        accepted = f"{list(shape)} or {list(shape[:2])}" if shape[2] == 1 else str(list(shape))
        raise BadRequest(f"{where}: an image of shape {list(pixels.shape)}; the model takes {accepted}")
    return as_uint8(pixels, where).reshape(shape)


def as_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """Numeric pixels as uint8; 400 unless every one is a whole number in 0..255."""
    if pixels.dtype.kind == "f" and not np.array_equal(pixels, np.round(pixels)):
        raise BadRequest(f"{where}: pixel values must be whole numbers 0..255 (uint8)")
    if pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest(f"{where}: pixel values must be in 0..255 (uint8); found {pixels.min():g}..{pixels.max():g}")
    return pixels.astype(np.uint8)


def _kind(pixels: np.ndarray) -> str:
    return {"U": "text", "b": "true/false", "O": "null, objects or numbers beyond 64 bits"}.get(
        pixels.dtype.kind, str(pixels.dtype))
