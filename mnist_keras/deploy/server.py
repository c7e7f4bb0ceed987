"""`mnist-keras serve`: TensorFlow Serving's REST API and a drawing page, on FastAPI and uvicorn.

Endpoints (NAME is the model's name; `/versions/N` may follow it, as in TensorFlow Serving):
GET /v1/models/NAME (status), GET /v1/models/NAME/metadata (signature and class names),
POST /v1/models/NAME:predict (JSON images, payloads.py), POST /v1/models/NAME:classify (an image file),
GET /v1/stats (batching counts) and GET / (the page). Every refusal is a 4xx with {"error": message}.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import socket
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import quote

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import UserError
from .batching import Batcher
from .payloads import INPUT_NAME, BadRequest, predict_images
from .served import ServedModel, load_served, locate

MAX_BODY = 16 * 1024 * 1024  # bytes: 16 MiB, checked before the body is read
MAX_INSTANCES = 1024  # images per :predict request


def serve(target: str, host: str = "127.0.0.1", port: int = 8501, max_batch_size: int = 64,
          batch_wait: float = 0.002, announce=print) -> None:
    """Serve a run directory or export folder until Ctrl-C; UserError for a bad folder or a port in use."""
    found = locate(target)
    listener = _listen(host, port)  # a port in use is reported before the model loads
    model = load_served(found)
    gc.collect()
    gc.freeze()  # TensorFlow's millions of objects are never garbage: collections skip them from here on
    app = create_app(model, Batcher(model.predict, max_batch_size, batch_wait))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                                            timeout_graceful_shutdown=5))
    listener.listen(2048)  # connections wait in the backlog from here on, until uvicorn takes them
    bound_host, bound_port = listener.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    announce(f"serving {model.name} (version {model.version}) from {model.source} at http://{url_host}:{bound_port}/ "
             f"(REST API: /v1/models/{model.name}; Ctrl-C stops)")
    server.run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, not yet listening, so that a port in use is found before the model loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host}: cannot resolve it: {err}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"{host}:{port}: the port is in use; pick another with --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def create_app(model: ServedModel, batcher: Batcher, max_body: int = MAX_BODY,
               max_instances: int = MAX_INSTANCES) -> FastAPI:
    """The FastAPI application serving `model`, its predictions batched by `batcher`."""

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"mnist-keras: {model.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(BodyLimit, max_body=max_body)
    app.add_exception_handler(BadRequest, lambda _r, err: _error(err.message, err.status))
    app.add_exception_handler(HTTPException, lambda _r, err: _error(str(err.detail), err.status_code))
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, lambda _r, err: _error(f"internal error: {type(err).__name__}: {err}", 500))
    page = _page(model)

    def servable(request: Request) -> None:
        """Raises TensorFlow Serving's 404 unless the path names this model (and its version, if any)."""
        name, version = request.path_params["name"], request.path_params.get("version")
        if name != model.name or version not in (None, str(model.version)):
            wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise BadRequest(f"Servable not found for request: {wanted}", 404)

    async def status(request: Request):
        servable(request)
        return _json({"model_version_status": [{"version": str(model.version), "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]})

    async def metadata(request: Request):
        servable(request)
        return _json({"model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
                      "metadata": {"signature_def": _signature_def(model), "class_names": model.class_names}})

    async def stats(_request: Request):
        return _json({"model": model.name, "batching": _batching(batcher), **batcher.stats.as_dict()})

    async def home(_request: Request):
        return HTMLResponse(page)

    async def predict(request: Request):
        servable(request)
        images, columnar = predict_images(await request.body(), model.input_shape, max_instances)
        probabilities = await batcher.predict(images)
        return _json({"outputs" if columnar else "predictions": probabilities})

    async def classify(request: Request):
        servable(request)
        upload = (await request.form(max_files=1, max_fields=8)).get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest('send the image as the multipart/form-data file field "file"')
        data = await upload.read()
        try:
            image = await run_in_threadpool(model.decode, data, upload.filename)
        except UserError as err:
            raise BadRequest(" ".join(err.messages)) from None
        probabilities = (await batcher.predict(image[np.newaxis]))[0]
        best = int(probabilities.argmax())
        return _json({"class": best, "label": model.class_names[best],
                      "probabilities": dict(zip(model.class_names, probabilities.tolist()))})

    # Plain Starlette routes: every endpoint reads its Request itself, so FastAPI's parameter machinery is skipped
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        app.add_route(prefix, status, methods=["GET"])
        app.add_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_route(prefix + ":predict", predict, methods=["POST"])
        app.add_route(prefix + ":classify", classify, methods=["POST"])
    app.add_route("/v1/stats", stats, methods=["GET"])
    app.add_route("/", home, methods=["GET"])
    return app


class BodyLimit:
    """ASGI middleware: a body over `max_body` bytes is refused with 413, by its Content-Length before it is
    read, or as soon as that many bytes have streamed in."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            return await _error(self._message(declared), 413)(scope, receive, send)
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BadRequest(self._message(b"more than that"), 413)
            return message

        await self.app(scope, capped_receive, send)

    def _message(self, declared: bytes) -> str:
        return f"the body is too large ({declared.decode('latin-1')} bytes); at most {self.max_body:,} bytes"


def _disconnected(request: Request, _err: ClientDisconnect) -> Response:
    """A client that left before sending its whole body: one log line, no traceback (and no one to answer)."""
    declared = request.headers.get("content-length")
    logging.getLogger("uvicorn.error").warning(
        "%s %s: the client disconnected before sending its whole body%s", request.method, request.url.path,
        f" ({declared} bytes declared)" if declared else "")
    return Response(status_code=400)


def _json(content: dict) -> Response:
    """A JSON response; numpy arrays are written as nested lists (float32 in its shortest form)."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _batching(batcher: Batcher) -> dict:
    return {"enabled": batcher.max_batch_size > 1, "max_batch_size": batcher.max_batch_size,
            "batch_wait_ms": batcher.max_wait * 1000}


def _signature_def(model: ServedModel) -> dict:
    """TensorFlow Serving's metadata of the serving_default signature."""
    def tensor(dtype: str, dims: list[int], name: str) -> dict:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                                 "unknown_rank": False}, "name": name}

    return {"signature_def": {"serving_default": {
        "inputs": {INPUT_NAME: tensor("DT_UINT8", [-1, *model.input_shape], f"serving_default_{INPUT_NAME}:0")},
        "outputs": {"probabilities": tensor("DT_FLOAT", [-1, len(model.class_names)], "StatefulPartitionedCall:0")},
        "method_name": "tensorflow/serving/predict"}}}


def _page(model: ServedModel) -> str:
    """page.html with the model's name, image shape, class names and endpoints filled in."""
    base = f"/v1/models/{quote(model.name, safe='')}"
    info = {"name": model.name, "input_shape": list(model.input_shape), "class_names": model.class_names,
            "predict": base + ":predict", "classify": base + ":classify"}
    script_safe = json.dumps(info).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return resources.files(__package__).joinpath("page.html").read_text().replace("__MODEL__", script_safe)
