"""KServe's V2 inference protocol (the Open Inference Protocol of Triton, Seldon, TorchServe and KServe) beside
TensorFlow Serving's API, with its binary tensor data and classification extensions.

GET /v2/health/live, /v2/health/ready (503 while loading or draining), /v2 (server metadata),
/v2/models/NAME[/versions/V] (model metadata), .../ready, and POST .../infer. A request has one input:
`images` (UINT8 or FP32 whole numbers 0..255, shape [N, H, W, C], or [N, H, W] for one channel) or
`image_bytes` (BYTES, shape [N]: encoded PNG, JPEG, GIF or BMP files; as JSON, each a base64 string). Data
come as JSON (`data`, flat or nested) or, with the header Inference-Header-Content-Length, as raw bytes after
the JSON (`parameters.binary_data_size`; BYTES elements each a 4-byte little-endian length and the bytes).
The output `probabilities` (FP32 [N, classes]) comes as JSON, or as raw bytes when asked (`binary_data` on
the output, or `binary_data_output` on the request); `classification: K` gives instead the top K of each
image as BYTES "score:index:label". Errors are {"error": message}.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .. import __version__
from ..runs.exports import BYTES_NAME, INPUT_NAME, OUTPUT_NAME
from .payloads import BadRequest, Instances, as_uint8, json_body, json_response
from .repository import Repository

HEADER = "inference-header-content-length"
PIXEL_TYPES = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}


def add_v2_routes(app: FastAPI, repository: Repository, found, max_instances: int) -> None:
    """The V2 endpoints on `app`; `found(request)` is the servable a request names (404 or 503 otherwise)."""
    async def live(_request: Request):
        return json_response({"live": True})

    async def ready(_request: Request):
        if not repository.ready:
            why = "draining" if repository.draining else "loading the models" if repository.loading else "stopping"
            raise BadRequest(f"not ready: {why}", 503)
        return json_response({"ready": True})

    async def server_metadata(_request: Request):
        return json_response({"name": "mnist-keras", "version": __version__,
                      "extensions": ["binary_tensor_data", "classification"]})

    async def model_metadata(request: Request):
        model = found(request).model
        versions = sorted(repository.served[model.name]) if "version" not in request.path_params else [model.version]
        return json_response({"name": model.name, "versions": [str(v) for v in versions],
                              "platform": "tensorflow_savedmodel",
                      "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, *model.input_shape]},
                                 {"name": BYTES_NAME, "datatype": "BYTES", "shape": [-1]}],
                      "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.class_names)]}],
                      "parameters": {"class_names": model.class_names}})

    async def model_ready(request: Request):
        model = found(request).model
        return json_response({"name": model.name, "version": str(model.version), "ready": True})

    async def infer(request: Request):
        servable = found(request)
        model = servable.model
        request_id, instances, outputs = infer_request(await request.body(), request.headers.get(HEADER),
                                                       model.input_shape, max_instances)
        probabilities = await servable.predict(instances)
        return infer_response(model.name, model.version, model.class_names, probabilities, request_id, outputs)

    app.add_route("/v2/health/live", live, methods=["GET"])
    app.add_route("/v2/health/ready", ready, methods=["GET"])
    app.add_route("/v2", server_metadata, methods=["GET"])
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_route(prefix, model_metadata, methods=["GET"])
        app.add_route(prefix + "/ready", model_ready, methods=["GET"])
        app.add_route(prefix + "/infer", infer, methods=["POST"])


def infer_request(body: bytes, header_length: str | None, shape: tuple[int, int, int], max_instances: int
                  ) -> tuple[str | None, Instances, list[tuple[bool, int]]]:
    """(the request's id, its images, per requested output (binary?, classification K or 0)) of an infer body."""
    if header_length is None:
        header, binary = body, b""
    elif header_length.isdigit() and int(header_length) <= len(body):
        header, binary = body[:int(header_length)], body[int(header_length):]
    else:
        raise BadRequest(f"Inference-Header-Content-Length {header_length[:40]!r}: must be a whole number at most the "
                         f"body's {len(body):,} bytes")
    request = json_body(header)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise BadRequest(f'the body must be a JSON object whose "inputs" is a list of one tensor, {INPUT_NAME!r} or '
                         f'{BYTES_NAME!r}')
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    parameters = _object(request.get("parameters", {}), '"parameters"')
    tensor = _object(request["inputs"][0], "inputs[0]")
    data = _tensor_data(tensor, binary)
    if tensor.get("name") == BYTES_NAME:
        files = _files(tensor, data, max_instances)
        instances = Instances(files=files, places=[f"inputs[0].data[{i}]" for i in range(len(files))])
    elif tensor.get("name") == INPUT_NAME:
        instances = Instances(images=_pixels(tensor, data, shape, max_instances))
    else:
        raise BadRequest(f"inputs[0].name: {str(tensor.get('name'))[:80]!r}: the model's inputs are {INPUT_NAME!r} "
                         f"(UINT8 or FP32 [N, H, W, C]) and {BYTES_NAME!r} (BYTES [N])")
    return request_id, instances, _outputs(request.get("outputs"), parameters.get("binary_data_output") is True)


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: must be a JSON object")
    return value


def _tensor_data(tensor: dict, binary: bytes):
    """The tensor's data: its raw bytes (binary tensor data extension) or its JSON `data`."""
    size = _object(tensor.get("parameters", {}), "inputs[0].parameters").get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise BadRequest("inputs[0]: no data (neither \"data\" nor parameters.binary_data_size)")
        return tensor["data"]
    if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
        raise BadRequest(f"inputs[0].parameters.binary_data_size: {size!r:.40} for {len(binary):,} bytes after the "
                         "JSON header")
    return binary


def _shape(tensor: dict, max_instances: int) -> list[int]:
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d
                                                      for d in shape)):
        raise BadRequest("inputs[0].shape: must be a list of whole numbers, the batch first")
    if not 1 <= shape[0] <= max_instances:
        raise BadRequest(f"inputs[0].shape: a batch of {shape[0]}; 1 to {max_instances} images per request")
    return shape


def _pixels(tensor: dict, data, shape: tuple[int, int, int], max_instances: int) -> np.ndarray:
    """uint8 images (N, H, W, C) of an `images` tensor."""
    dims, datatype = _shape(tensor, max_instances), tensor.get("datatype")
    if datatype not in PIXEL_TYPES:
        raise BadRequest(f"inputs[0].datatype: {str(datatype)[:40]!r}; {INPUT_NAME} takes UINT8 or FP32")
    accepted = ([dims[0], *shape], [dims[0], *shape[:2]] if shape[2] == 1 else None)
    if dims not in accepted:
        raise BadRequest(f"inputs[0].shape: {dims}; the model takes [N, {', '.join(map(str, shape))}]"
                         + (f" or [N, {shape[0]}, {shape[1]}]" if shape[2] == 1 else ""))
    count = math.prod(dims)
    if isinstance(data, bytes):
        dtype = PIXEL_TYPES[datatype]
        if len(data) != count * dtype.itemsize:
            raise BadRequest(f"inputs[0]: {len(data):,} bytes of data for shape {dims} of {datatype}")
        pixels = np.frombuffer(data, dtype)
    else:
        try:
            pixels = np.asarray(data).reshape(-1)
        except ValueError:
            raise BadRequest("inputs[0].data: a ragged list") from None
        if pixels.dtype.kind not in "iuf" or pixels.size != count:
            got = "numbers" if pixels.dtype.kind in "iuf" else "values, not all numbers"
            raise BadRequest(f"inputs[0].data: must be {count:,} numbers (shape {dims}), got {pixels.size:,} {got}")
    return as_uint8(pixels, "inputs[0].data").reshape(dims[0], *shape)


def _files(tensor: dict, data, max_instances: int) -> list[bytes]:
    """The encoded image files of an `image_bytes` tensor."""
    dims = _shape(tensor, max_instances)
    if tensor.get("datatype") != "BYTES" or dims not in ([dims[0]], [dims[0], 1]):
        raise BadRequest(f"inputs[0]: {BYTES_NAME} is BYTES of shape [N] (one encoded image file each)")
    if isinstance(data, bytes):
        files, offset = [], 0
        while offset < len(data):
            if len(files) == dims[0]:  # more elements than the shape says: refused before they pile up
                raise BadRequest(f"inputs[0]: more than the {dims[0]} elements of shape {dims} in the binary data")
            if offset + 4 > len(data):
                raise BadRequest("inputs[0]: binary BYTES data ends inside an element's 4-byte length")
            (size,), offset = struct.unpack_from("<I", data, offset), offset + 4
            files.append(data[offset:offset + size])
            offset += size
        if offset != len(data):
            raise BadRequest("inputs[0]: binary BYTES data ends inside an element")
    elif isinstance(data, list) and all(isinstance(item, str) for item in data):
        try:
            files = [base64.b64decode(item, validate=True) for item in data]
        except (binascii.Error, ValueError) as err:
            raise BadRequest(f"inputs[0].data: as JSON, each element of BYTES is base64 text ({err})") from None
    else:
        raise BadRequest("inputs[0].data: as JSON, BYTES data is a list of base64 strings")
    if len(files) != dims[0]:
        raise BadRequest(f"inputs[0]: {len(files)} elements for shape {dims}")
    return files


def _outputs(requested, binary_default: bool) -> list[tuple[bool, int]]:
    """(binary?, classification K) per requested output; all of them (the one) when none is named."""
    if requested is None:
        return [(binary_default, 0)]
    if not isinstance(requested, list) or not requested:
        raise BadRequest('"outputs": must be a non-empty list of {"name": ...}')
    chosen = []
    for i, output in enumerate(requested):
        output = _object(output, f"outputs[{i}]")
        if output.get("name") != OUTPUT_NAME:
            raise BadRequest(f"outputs[{i}].name: {str(output.get('name'))[:80]!r}: the model's output is "
                             f"{OUTPUT_NAME!r}")
        parameters = _object(output.get("parameters", {}), f"outputs[{i}].parameters")
        count = parameters.get("classification", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BadRequest(f"outputs[{i}].parameters.classification: must be a whole number of classes")
        chosen.append((parameters.get("binary_data", binary_default) is True, count))
    return chosen


def infer_response(name: str, version: int, class_names: list[str], probabilities: np.ndarray, request_id,
                   outputs: list[tuple[bool, int]]) -> Response:
    """The infer answer: JSON, then the raw bytes of the outputs sent as binary data."""
    tensors, chunks = [], []
    for binary, count in outputs:
        if count:
            top = np.argsort(-probabilities, axis=1, kind="stable")[:, :min(count, len(class_names))]
            values = [f"{probabilities[i, j]:f}:{j}:{class_names[j]}" for i, row in enumerate(top) for j in row]
            tensor = {"name": OUTPUT_NAME, "datatype": "BYTES", "shape": list(top.shape)}
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values) if binary else None
            data = values
        else:
            tensor = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(probabilities.shape)}
            raw = np.ascontiguousarray(probabilities, "<f4").tobytes() if binary else None
            data = probabilities.reshape(-1)
        if binary:
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = data
        tensors.append(tensor)
    answer = {"model_name": name, "model_version": str(version), "outputs": tensors}
    if request_id is not None:
        answer["id"] = request_id
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})
