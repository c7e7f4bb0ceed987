"""`mnist-keras serve`: TensorFlow Serving's REST API and KServe's Open Inference Protocol (kserve.py) on one port,
Prometheus metrics, and a drawing page, on FastAPI and uvicorn, for the models of repository.py.

V1 endpoints (NAME a served model; `/versions/N` may follow it, as in TensorFlow Serving):
GET /v1/models/NAME (status), GET /v1/models/NAME/metadata (signatures and class names),
POST /v1/models/NAME:predict (images or encoded files, payloads.py), POST /v1/models/NAME:classify (examples of
encoded files; answers [label, score] pairs), GET /v1/stats (batching counts). Also POST /upload/NAME (a
multipart image file, for the page), GET /metrics, GET / (the page; ?model=NAME picks one). Every refusal is
a 4xx (503 while loading or draining) with {"error": message}. SIGTERM drains: the listener closes, requests
in flight are answered, and the process exits 0.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import UserError
from .batching import Batcher
from .kserve import add_v2_routes
from .metrics import AccessLog, Measured, Metrics
from ..runs.exports import BYTES_NAME, INPUT_NAME
from .payloads import BadRequest, Instances, classify_images, json_response, predict_images
from .repository import Repository, Servable, log, model_sources

MAX_BODY = 16 * 1024 * 1024  # bytes: 16 MiB, checked before the body is read
MAX_INSTANCES = 1024  # images per :predict request
DRAIN_SECONDS = 10  # at most this long for requests in flight after SIGTERM


def serve(targets: list[str], config: str | None = None, host: str = "127.0.0.1", port: int = 8501,
          max_batch_size: int = 64, batch_wait: float = 0.002, poll: float = 2.0, access_log: bool = True,
          threads: int | None = None, drain_delay: float = 0.0, announce=print) -> None:
    """Serve run directories or export folders (or a models config's) until Ctrl-C or SIGTERM, model calls on
    `threads` TensorFlow threads (default: model_threads()), serving on for `drain_delay` seconds after a
    SIGTERM with readiness off; UserError for a bad folder, a model that cannot load, or a port in use."""
    sources = model_sources(targets, config)
    listener = _listen(host, port)  # a port in use is reported before the models load
    _logs()
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/"
    server: Draining | None = None

    def loaded(repository: Repository) -> None:
        announce(f"serving {_listing(repository)} at {url} (REST: /v1/models/NAME, /v2/models/NAME; "
                 "metrics: /metrics; Ctrl-C or SIGTERM stops)")

    repository = Repository(sources, lambda model: Batcher(model.predict, max_batch_size, batch_wait,
                                                           metrics.batch_observer(model)), poll, announce,
                            prepare=lambda: _set_model_threads(threads))
    metrics = Metrics(repository)
    batching = {"enabled": max_batch_size > 1, "max_batch_size": max_batch_size, "batch_wait_ms": batch_wait * 1000}
    app = create_app(repository, metrics, batching, access_log, on_loaded=loaded, on_failure=lambda: server.stop())
    server = Draining(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, proxy_headers=False,
                                     timeout_graceful_shutdown=DRAIN_SECONDS), repository, drain_delay)
    listener.listen(2048)  # connections wait in the backlog from here on, until uvicorn takes them
    server.run(sockets=[listener])
    if repository.failure:
        raise repository.failure


class Draining(uvicorn.Server):
    """uvicorn's server, not ready from the first SIGTERM or Ctrl-C on. A SIGTERM first keeps serving for
    `drain_delay` seconds (readiness 503, so a load balancer takes the server out of rotation: Kubernetes'
    preStop delay), then stops accepting, answers what is in flight and returns (exit 0), instead of raising
    the signal again as uvicorn does. A second SIGTERM skips what is left of the delay."""

    def __init__(self, config: uvicorn.Config, repository: Repository, drain_delay: float = 0.0):
        super().__init__(config)
        self.repository, self.drain_delay, self._delayed = repository, drain_delay, False

    def handle_exit(self, sig: int, frame) -> None:
        self.repository.draining = True
        if sig == signal.SIGTERM and self.drain_delay and not self._delayed:
            self._delayed = True
            threading.Timer(self.drain_delay, self.stop).start()
            return
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)

    def stop(self) -> None:
        self.should_exit = True


def model_threads() -> int:
    """TensorFlow's intra-op threads for serving: one fewer than the CPU cores (at least one), so that the event
    loop keeps a core for HTTP and JSON. On 2 cores one thread is faster for LeNet-5 at every batch size
    (benchmarks/serving.py: 2,191 against 1,738 predictions/s unbatched)."""
    return max(1, (os.cpu_count() or 1) - 1)


def _set_model_threads(threads: int | None) -> None:
    """Set TensorFlow's intra-op threads, unless TensorFlow has started in this process already (then an asked-for
    count that differs is a UserError, and the default is left as it is)."""
    from ..backend import tf

    wanted, config = threads or model_threads(), tf.config.threading
    if config.get_intra_op_parallelism_threads() != wanted:
        try:
            config.set_intra_op_parallelism_threads(wanted)
        except RuntimeError:
            if threads:
                raise UserError(f"--threads {threads}: TensorFlow has started in this process with "
                                f"{config.get_intra_op_parallelism_threads() or 'its default'} threads, which "
                                "cannot change now") from None


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


def _logs() -> None:
    """Server events and problems to stderr (the access log is metrics.py's); uvicorn's own warnings go to stderr
    through Python's last-resort handler (uvicorn configures no logging here)."""
    log.handlers[:] = [_Stream("stderr")]
    log.setLevel(logging.INFO)
    log.propagate = False


class _Stream(logging.StreamHandler):
    """A handler writing to sys.stdout or sys.stderr as they are when each line is written."""

    def __init__(self, which: str):
        super().__init__()
        self.which = which

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self.which)
        super().emit(record)


def _listing(repository: Repository) -> str:
    """`tiny (version 1) from PATH, other (versions 1, 2) from PATH`."""
    parts = []
    for source in repository.sources:
        versions = sorted(repository.served[source.name])
        label = "version" if len(versions) == 1 else "versions"
        parts.append(f"{source.name} ({label} {', '.join(map(str, versions))}) from {source.where}")
    return ", ".join(parts)


def create_app(repository: Repository, metrics: Metrics, batching: dict, access_log: bool = True, *,
               on_loaded=lambda repository: None,
               on_failure=lambda: None, max_body: int = MAX_BODY, max_instances: int = MAX_INSTANCES) -> FastAPI:
    """The FastAPI application serving `repository`'s models (`batching`: its settings, for /v1/stats)."""

    @asynccontextmanager
    async def lifespan(_app):
        await repository.start(lambda: on_loaded(repository), on_failure)
        yield
        await repository.stop()
        if access:
            access.flush()

    app = FastAPI(title="mnist-keras serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_body=max_body)
    access = AccessLog() if access_log else None
    app.add_middleware(Measured, metrics=metrics, access_log=access)
    app.add_exception_handler(BadRequest, lambda _r, err: _error(err.message, err.status))
    app.add_exception_handler(HTTPException, lambda _r, err: _error(str(err.detail), err.status_code))
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, lambda _r, err: _error(f"internal error: {type(err).__name__}: {err}", 500))

    def found(request: Request) -> Servable:
        return repository.find(request.path_params["name"], request.path_params.get("version"))

    async def status(request: Request):
        servable, name = found(request), request.path_params["name"]  # 404 (or 503) unless it is served
        chosen = [servable] if "version" in request.path_params else [s for n, s in repository.servables() if n == name]
        return json_response({"model_version_status": [
            {"version": str(servable.model.version), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}} for servable in reversed(chosen)]})

    async def metadata(request: Request):
        model = found(request).model
        return json_response({"model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
                              "metadata": {"signature_def": _signature_def(model), "class_names": model.class_names}})

    async def predict(request: Request):
        servable = found(request)
        instances = predict_images(await request.body(), servable.model.input_shape, max_instances)
        probabilities = await servable.predict(instances)
        return json_response({"outputs" if instances.columnar else "predictions": probabilities})

    async def classify(request: Request):
        servable = found(request)
        instances = classify_images(await request.body(), servable.model.input_shape, max_instances)
        probabilities = await servable.predict(instances)
        names = servable.model.class_names
        return json_response({"results": [[[name, score] for name, score in zip(names, row)]
                                          for row in probabilities.tolist()]})

    async def upload(request: Request):
        servable = found(request)
        upload = (await request.form(max_files=1, max_fields=8)).get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest('send the image as the multipart/form-data file field "file"')
        probabilities = (await servable.predict(Instances(files=[await upload.read()], places=[upload.filename])))[0]
        best, names = int(probabilities.argmax()), servable.model.class_names
        return json_response({"class": best, "label": names[best], "version": servable.model.version,
                              "probabilities": dict(zip(names, probabilities.tolist()))})

    async def stats(_request: Request):
        return json_response({"batching": batching,
                              "models": {name: {str(v): s.batcher.stats.as_dict() for v, s in sorted(versions.items())}
                                         for name, versions in repository.served.items()}})

    async def metrics_text(_request: Request):
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def home(request: Request):
        name = request.query_params.get("model") or repository.sources[0].name
        return HTMLResponse(_page(repository.find(name).model))

    # Plain Starlette routes: every endpoint reads its Request itself, so FastAPI's parameter machinery is skipped
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        app.add_route(prefix, status, methods=["GET"])
        app.add_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_route(prefix + ":predict", predict, methods=["POST"])
        app.add_route(prefix + ":classify", classify, methods=["POST"])
    app.add_route("/upload/{name}", upload, methods=["POST"])
    app.add_route("/upload/{name}/versions/{version}", upload, methods=["POST"])
    app.add_route("/v1/stats", stats, methods=["GET"])
    app.add_route("/metrics", metrics_text, methods=["GET"])
    app.add_route("/", home, methods=["GET"])
    add_v2_routes(app, repository, found, max_instances)
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
    log.warning("%s %s: the client disconnected before sending its whole body%s", request.method, request.url.path,
                f" ({declared} bytes declared)" if declared else "")
    return Response(status_code=400)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _signature_def(model) -> dict:
    """TensorFlow Serving's metadata of the signatures: serving_default (uint8 images) and serving_bytes (encoded
    image files)."""
    def tensor(dtype: str, dims: list[int], name: str) -> dict:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                                 "unknown_rank": False}, "name": name}

    outputs = {"probabilities": tensor("DT_FLOAT", [-1, len(model.class_names)], "StatefulPartitionedCall:0")}
    return {"signature_def": {
        "serving_default": {"inputs": {INPUT_NAME: tensor("DT_UINT8", [-1, *model.input_shape],
                                                          f"serving_default_{INPUT_NAME}:0")},
                            "outputs": outputs, "method_name": "tensorflow/serving/predict"},
        "serving_bytes": {"inputs": {BYTES_NAME: tensor("DT_STRING", [-1], f"serving_bytes_{BYTES_NAME}:0")},
                          "outputs": outputs, "method_name": "tensorflow/serving/predict"}}}


def _page(model) -> str:
    """page.html with the model's name, image shape, class names and endpoints filled in."""
    name = quote(model.name, safe="")
    info = {"name": model.name, "input_shape": list(model.input_shape), "class_names": model.class_names,
            "predict": f"/v1/models/{name}:predict", "upload": f"/upload/{name}"}
    script_safe = json.dumps(info).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return resources.files(__package__).joinpath("page.html").read_text().replace("__MODEL__", script_safe)

