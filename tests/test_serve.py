"""`mnist-keras serve` (issues 16 and 27): TensorFlow Serving's REST API over a real server process (pixels and
b64 image files on :predict, examples on :classify), image uploads, every bad request answered with a 4xx and
{"error": ...}, dynamic batching, exports, and clean start and stop."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest

pytestmark = pytest.mark.server
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import in_process  # noqa: E402
from serve_process import Server, run_cli  # noqa: E402

SHAPE = (28, 28, 1)
MIB = 1 << 20
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def reference(tiny_run):
    """The run's deployable model, computed in this process: uint8 images -> probabilities."""
    from mnist_keras.deploy.serving import run_deployable

    model = run_deployable(tiny_run).model
    return lambda images: model.predict(np.asarray(images, np.uint8), verbose=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, *SHAPE), dtype=np.uint8)


def good_request_works(server, reference, images) -> None:
    status, answer = server.request("POST", "/v1/models/tiny:predict", {"instances": images[:1].tolist()})
    assert status == 200, answer
    np.testing.assert_allclose(answer["predictions"], reference(images[:1]), atol=1e-5)


def test_status_and_metadata_as_tf_serving(tiny_server):
    for path in ("/v1/models/tiny", "/v1/models/tiny/versions/1"):
        status, answer = tiny_server.request("GET", path)
        assert status == 200
        assert answer["model_version_status"] == [{"version": "1", "state": "AVAILABLE",
                                                   "status": {"error_code": "OK", "error_message": ""}}]
    status, answer = tiny_server.request("GET", "/v1/models/tiny/metadata")
    assert status == 200 and answer["model_spec"]["name"] == "tiny"
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [int(d["size"]) for d in images["tensor_shape"]["dim"]] == [-1, *SHAPE]
    assert [int(d["size"]) for d in signature["outputs"]["probabilities"]["tensor_shape"]["dim"]] == [-1, 10]
    assert answer["metadata"]["class_names"] == CLASSES


def test_predict_row_and_columnar_formats_match_the_run_model(tiny_server, reference, images):
    expected = reference(images)
    bodies = {"predictions": [{"instances": images.tolist()},                         # [H, W, C] rows
                              {"instances": images[..., 0].tolist()},                 # [H, W] for one channel
                              {"instances": [{"images": i.tolist()} for i in images]},  # named input
                              {"signature_name": "serving_default", "instances": images.astype(float).tolist()}],
              "outputs": [{"inputs": images.tolist()}, {"inputs": {"images": images[..., 0].tolist()}}]}
    for key, requests in bodies.items():
        for body in requests:
            status, answer = tiny_server.request("POST", "/v1/models/tiny:predict", body)
            assert status == 200, answer
            assert list(answer) == [key]
            np.testing.assert_allclose(answer[key], expected, atol=1e-5)
            np.testing.assert_allclose(np.sum(answer[key], axis=1), 1, atol=1e-5)


def multipart(data: bytes, field: str = "file", filename: str = "digit.png") -> tuple[bytes, dict]:
    boundary = "mnist-keras-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_classify_an_uploaded_png_as_predict_decodes_files(tiny_server, reference, tmp_path):
    from PIL import Image

    from mnist_keras.data.images import decode_image
    from mnist_keras.data.sources import BUNDLED

    with np.load(BUNDLED) as sample:
        digit = sample["x_test"][0]
    png = tmp_path / "digit.png"
    Image.fromarray(255 - digit).resize((112, 112)).save(png)  # dark ink on white paper, 4x larger
    status, answer = tiny_server.request("POST", "/upload/tiny", *multipart(png.read_bytes()))
    assert status == 200, answer
    expected = reference(decode_image(str(png), list(SHAPE)).reshape(1, *SHAPE))[0]
    assert answer["class"] == int(expected.argmax()) and answer["label"] == CLASSES[answer["class"]]
    assert list(answer["probabilities"]) == CLASSES
    np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-5)


BAD_JSON = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, '"instances"'),
    (b'{"instances": [], "inputs": []}', 400, '"instances"'),
    (b'{"instances": []}', 400, "non-empty"),
    (b'{"instances": "pixels"}', 400, "non-empty list"),
    (b'{"instances": [[1, 2, 3]]}', 400, "shape [3]"),
    (b'{"instances": [[[300]]]}', 400, "shape"),
    (b'{"inputs": [[[1, 2], [3]]]}', 400, "ragged"),
    (b'{"instances": [[[1, "a"]]]}', 400, "not text"),
    (b'{"instances": [[[1, null]]]}', 400, "not null"),
    (b'{"instances": [[[true, false]]]}', 400, "not true/false"),
    (b'{"instances": [NaN]}', 400, "not valid JSON"),
    (b'{"instances": [{"pixels": 1}]}', 400, "one input, 'images'"),
    (b'{"signature_name": "other", "instances": [0]}', 400, "unknown signature_name"),
    (json.dumps({"instances": [0] * 1025}).encode(), 400, "too many instances: 1025"),
]


@pytest.mark.parametrize("body, status, error", BAD_JSON, ids=[e for _, _, e in BAD_JSON])
def test_bad_predict_bodies_are_400_and_the_server_keeps_serving(tiny_server, reference, images, body, status, error):
    got, answer = tiny_server.request("POST", "/v1/models/tiny:predict", body, {"Content-Type": "application/json"})
    assert (got, list(answer)) == (status, ["error"])
    assert error in answer["error"]
    good_request_works(tiny_server, reference, images)


def test_bad_pixel_values_are_400(tiny_server, reference, images):
    for value, error in ((256, "in 0..255"), (-1, "in 0..255"), (1.5, "whole numbers"), (1e300, "in 0..255")):
        pixels = images[0].astype(float)
        pixels[3, 4, 0] = value
        status, answer = tiny_server.request("POST", "/v1/models/tiny:predict", {"instances": [pixels.tolist()]})
        assert status == 400 and error in answer["error"], (value, answer)
    good_request_works(tiny_server, reference, images)


@pytest.mark.parametrize("method, path, status, error", [
    ("POST", "/v1/models/other:predict", 404, "Servable not found for request: Latest(other)"),
    ("GET", "/v1/models/other", 404, "Servable not found"),
    ("GET", "/v1/models/tiny/versions/7/metadata", 404, "Specific(tiny, 7)"),
    ("GET", "/v1/nothing", 404, "Not Found"),
    ("PUT", "/v1/models/tiny:predict", 405, "Method Not Allowed"),
])
def test_unknown_models_versions_and_routes(tiny_server, reference, images, method, path, status, error):
    got, answer = tiny_server.request(method, path, b"{}" if method != "GET" else None)
    assert got == status and error in answer["error"]
    good_request_works(tiny_server, reference, images)


def test_bad_uploads_are_400(tiny_server, reference, images):
    cases = [(multipart(b"this is not an image", filename="notes.txt"), "notes.txt: cannot be read as an image"),
             (multipart(b"", filename="empty.png"), "empty.png: cannot be read as an image"),
             (multipart(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "cannot be read as an image"),
             (multipart(b"x", field="image"), 'field "file"'),
             ((b'{"file": 1}', {"Content-Type": "application/json"}), 'field "file"')]
    for (body, headers), error in cases:
        status, answer = tiny_server.request("POST", "/upload/tiny", body, headers)
        assert status == 400 and error in answer["error"], answer
    good_request_works(tiny_server, reference, images)


def raw_exchange(server, head: bytes, chunks=()) -> tuple[int, dict]:
    """Send a hand-written request (head, then body chunks, stopping if the server answers first)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the body before it was all sent
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_bodies_over_16_mib_are_413_before_being_read(tiny_server, reference, images):
    declared = (b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 20000000\r\n\r\n")
    status, answer = raw_exchange(tiny_server, declared)  # nothing of the body sent: refused on the header alone
    assert status == 413 and "at most 16,777,216 bytes" in answer["error"]

    chunk = b"[" + b"0," * 500_000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"  # 20 MB, no length
    streamed = (b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
    pieces = [chunked[i:i + MIB] for i in range(0, len(chunked), MIB)]
    status, answer = raw_exchange(tiny_server, streamed, pieces)
    assert status == 413 and "too large" in answer["error"]
    good_request_works(tiny_server, reference, images)


def test_concurrent_requests_are_answered_and_batched(tiny_server, reference):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (64, *SHAPE), dtype=np.uint8)
    expected = reference(images)
    _, before = tiny_server.request("GET", "/v1/stats")
    before = before["models"]["tiny"]["1"]
    start, answers = threading.Barrier(64), [None] * 64

    def post(i: int) -> None:
        start.wait()
        answers[i] = tiny_server.request("POST", "/v1/models/tiny:predict", {"instances": images[i:i + 1].tolist()})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, (status, answer) in enumerate(answers):
        assert status == 200, answer
        np.testing.assert_allclose(answer["predictions"][0], expected[i], atol=1e-5)
    _, stats = tiny_server.request("GET", "/v1/stats")
    assert stats["batching"] == {"enabled": True, "max_batch_size": 64, "batch_wait_ms": 2.0}
    after = stats["models"]["tiny"]["1"]
    assert after["requests"] - before["requests"] >= 64
    calls = after["model_calls"] - before["model_calls"]
    assert calls < 64 and after["largest_batch"] > 1, (before, after)  # some requests shared a model call


def test_serves_an_export_folder(tiny_run, reference, images, tmp_path):
    from mnist_keras.deploy.export import export_run

    export_run(tiny_run, "savedmodel", out=tmp_path / "out")  # OUT/tiny/1/, labels.txt, export.json
    (tmp_path / "out" / "tiny" / "0").mkdir()  # a lower version without a model: the highest is served
    with Server(tmp_path / "out", "--no-batching", "--no-access-log") as server:
        status, answer = server.request("POST", "/v1/models/tiny:predict", {"inputs": images.tolist()})
        assert status == 200
        np.testing.assert_allclose(answer["outputs"], reference(images), atol=1e-5)
        assert server.request("GET", "/v1/stats")[1]["batching"]["enabled"] is False
        assert server.request("GET", "/v1/models/tiny/metadata")[1]["metadata"]["class_names"] == CLASSES
    assert server.stdout.startswith(f"serving tiny (version 1) from {tmp_path / 'out' / 'tiny'} at "
                                    f"http://127.0.0.1:{server.port}/")
    assert server.stdout.count("\n") == 1 and "tensorflow" not in server.stderr.lower()


def test_bad_folders_and_a_port_in_use_exit_2_with_one_message(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [((tmp_path / "missing", "--port", port), "no such run directory or export folder"),  # the folder first
                 ((tmp_path / "empty",), "not a run directory"),
                 ((tiny_run, "--port", port), "the port is in use; pick another with --port")]
        for args, message in cases:
            result = run_cli("serve", *map(str, args))
            assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
            assert result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """A real SavedModel export of tiny_run: OUT/tiny with 1/, labels.txt and export.json."""
    from mnist_keras.deploy.export import export_run

    return export_run(tiny_run, "savedmodel", out=tmp_path_factory.mktemp("exported")).folder


def record_as(text):
    return lambda folder: (folder / "export.json").write_text(text)


def record_with(**changes):
    def change(folder):
        found = json.loads((folder / "export.json").read_text())
        (folder / "export.json").write_text(json.dumps({**found, **changes}))
    return change


def record_changed(change):
    def damage(folder):
        found = json.loads((folder / "export.json").read_text())
        change(found)
        (folder / "export.json").write_text(json.dumps(found))
    return damage


BAD_EXPORTS = {  # id: (how the copy of a real export is damaged, the file the message names, what it says)
    "a list": (record_as("[1, 2, 3]"), "export.json", "expected a JSON object, not list"),
    "a string": (record_as('"tiny"'), "export.json", "expected a JSON object, not str"),
    "null": (record_as("null"), "export.json", "expected a JSON object, not NoneType"),
    "not JSON": (record_as("{\"name\": "), "export.json", "cannot be read as JSON"),
    "huge": (record_as(json.dumps({"name": "tiny", "pad": "x" * (2 << 20)})), "export.json", "too large"),
    "name a number": (record_with(name=7), "export.json", "expected {"),
    "image_shape a string": (record_with(image_shape="28x28"), "export.json", "expected {"),
    "image_shape of booleans": (record_with(image_shape=[True, True, True]), "export.json", "expected {"),
    "image_shape huge": (record_with(image_shape=[10**12, 28, 1]), "export.json", "expected {"),
    "class_names a dict": (record_with(class_names={"0": 1}), "export.json", "expected {"),
    "class_names nested": (record_with(class_names=[["0"]] * 10), "export.json", "expected {"),
    "fit a list": (record_with(fit=["pad"]), "export.json", "fit must be null, stretch, crop or pad"),
    "too deep": (record_as("[" * 100 + "]" * 100), "export.json", "JSON nested deeper than 64 levels"),
    "an unknown format entry": (record_changed(lambda r: r["formats"].update(tflite=r["formats"]["savedmodel"])),
                                "export.json", "formats.tflite: 'tflite' is not an artifact of an export"),
    "parity figures as text": (record_changed(lambda r: r["formats"]["savedmodel"]["parity"].update(images="2000")),
                               "export.json", "formats.savedmodel.parity.images: Input should be a valid integer"),
    "an unknown field": (record_with(formats_v2={}), "export.json", "formats_v2: Extra inputs are not permitted"),
    "export.json a folder": (lambda f: ((f / "export.json").unlink(), (f / "export.json").mkdir()), "",
                             "not a run directory"),
    "labels.txt not text": (lambda f: (record_with(class_names=None)(f), (f / "labels.txt").write_bytes(b"\xff\xfe")),
                            "labels.txt", "cannot read"),
    "version folder ²": (lambda f: (f / "1").rename(f / "\u00b2"), "", "no SavedModel version folder"),
    "version folder ١ (Arabic-Indic one)": (lambda f: (f / "1").rename(f / "\u0661"), "",
                                             "no SavedModel version folder"),
}


@pytest.mark.parametrize("damage, named, says", BAD_EXPORTS.values(), ids=BAD_EXPORTS)
def test_a_bad_export_folder_exits_2_naming_the_file(exported, tmp_path, damage, named, says):
    """The first damage through a real `python -m mnist_keras serve`, the others through the same command in this
    process."""
    folder = tmp_path / "tiny"
    shutil.copytree(exported, folder)
    damage(folder)
    if damage is next(iter(BAD_EXPORTS.values()))[0]:
        result = run_cli("serve", str(folder), "--port", "0")
    else:
        result = in_process("serve", folder, "--port", 0, within=60)
    place = folder / named if named else folder
    assert result.returncode == 2 and result.stderr.startswith(f"error: {place}: "), result.stderr[-3000:]
    assert says in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""


def test_a_version_folder_named_01_is_served_from_that_folder(exported, tiny_run, reference, images, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(exported, folder)
    (folder / "1").rename(folder / "01")
    (folder / "\u00b2").mkdir()  # not a version: ignored
    with Server(folder) as server:
        status, answer = server.request("POST", "/v1/models/tiny:predict", {"instances": images[:2].tolist()})
        assert status == 200
        np.testing.assert_allclose(answer["predictions"], reference(images[:2]), atol=1e-5)
    assert "(version 1)" in server.stdout


def test_a_client_that_leaves_mid_body_is_one_log_line(tiny_run, reference, images):
    """Clients that declare a 1,000-byte body, send part of it and disconnect: one short line each in the log,
    no traceback, and the server goes on serving."""
    heads = [b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n{\"instances\": [[",
             b"POST /upload/tiny HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b"
             b"\r\nContent-Length: 1000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
             b"filename=\"d.png\"\r\n\r\n\x89PNG"]
    with Server(tiny_run, "--no-batching") as server:
        for head in heads * 2:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(head)
                time.sleep(0.2)  # the server is reading the body when the client leaves
        good_request_works(server, reference, images)
    lines = [line for line in server.stderr.splitlines() if line not in ("", "interrupted")]  # Ctrl-C's own
    assert len(lines) == 4 and all("the client disconnected before sending its whole body (1000 bytes declared)"
                                   in line for line in lines), server.stderr
    assert sum(":predict" in line for line in lines) == 2 and all(len(line) < 160 for line in lines)


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Real PNG and JPEG files of five bundled test digits (dark ink on white, 3x larger), and the images the
    run's decoder makes of them."""
    from PIL import Image

    from mnist_keras.data.images import decode_image
    from mnist_keras.data.sources import BUNDLED

    folder = tmp_path_factory.mktemp("digits")
    with np.load(BUNDLED) as sample:
        digits = sample["x_test"][:5]
    files = []
    for i, digit in enumerate(digits):
        path = folder / (f"{i}.png" if i % 2 else f"{i}.jpg")
        Image.fromarray(255 - digit).resize((84, 84)).save(path)
        files.append(path)
    decoded = np.stack([decode_image(str(path), list(SHAPE)).reshape(SHAPE) for path in files])
    return [path.read_bytes() for path in files], decoded


def b64(data: bytes) -> dict:
    import base64

    return {"b64": base64.b64encode(data).decode()}


def test_b64_image_files_on_predict_as_tf_serving_clients_send_them(tiny_server, reference, digit_files):
    files, decoded = digit_files
    expected = reference(decoded)
    bodies = {"predictions": [{"instances": [b64(f) for f in files]},
                              {"signature_name": "serving_bytes",
                               "instances": [{"image_bytes": b64(f)} for f in files]}],
              "outputs": [{"inputs": {"image_bytes": [b64(f) for f in files]}}, {"inputs": [b64(f) for f in files]}]}
    for key, requests in bodies.items():
        for body in requests:
            status, answer = tiny_server.request("POST", "/v1/models/tiny:predict", body)
            assert status == 200 and list(answer) == [key], answer
            np.testing.assert_allclose(answer[key], expected, atol=1e-5)


def test_classify_takes_examples_and_answers_labels_with_scores(tiny_server, reference, digit_files):
    files, decoded = digit_files
    expected = reference(decoded)
    for body in ({"examples": [{"image_bytes": b64(f)} for f in files]},
                 {"signature_name": "serving_default", "examples": [{"images": d.tolist()} for d in decoded]}):
        status, answer = tiny_server.request("POST", "/v1/models/tiny:classify", body)
        assert status == 200 and list(answer) == ["results"], answer
        assert [[label for label, _ in result] for result in answer["results"]] == [CLASSES] * len(files)
        np.testing.assert_allclose([[score for _, score in result] for result in answer["results"]], expected,
                                   atol=1e-5)


BAD_FILES = [
    ({"instances": [{"b64": "not base64!"}]}, "instances[0]: b64: not base64"),
    ({"instances": [{"b64": "aGVsbG8="}]}, "instances[0]: cannot be read as an image"),
    ({"instances": [{"b64": 7}]}, 'instances[0]: an encoded image is {"b64"'),
    ({"instances": [{"image_bytes": "aGVsbG8="}]}, 'instances[0]: an encoded image is {"b64"'),
    ({"instances": [{"b64": "aGVsbG8="}, [[0] * 28] * 28]}, "instances[1]: images as pixel lists after encoded"),
    ({"signature_name": "serving_default", "instances": [{"b64": "aGVsbG8="}]},
     "signature_name serving_default takes images as pixel lists"),
    ({"signature_name": "serving_bytes", "instances": [[[0] * 28] * 28]}, "serving_bytes takes encoded image files"),
    ({"examples": [[[0] * 28] * 28]}, "examples[0]: an example is an object of features"),
    ({"examples": "x"}, '"examples": a list'),
    ({"examples": [{"image_bytes": {"b64": "aGVsbG8="}}], "context": 3}, '"context" must be an object'),
]


@pytest.mark.parametrize("body, error", BAD_FILES, ids=[e for _, e in BAD_FILES])
def test_bad_files_and_examples_are_400(tiny_server, reference, images, body, error):
    verb = "classify" if "examples" in body else "predict"
    status, answer = tiny_server.request("POST", f"/v1/models/tiny:{verb}", body)
    assert status == 400 and error in answer["error"], answer
    good_request_works(tiny_server, reference, images)


def test_metrics_count_the_requests_by_route_model_and_code(tiny_server, reference, images):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict:
        with urllib.request.urlopen(tiny_server.url + "/metrics", timeout=30) as response:
            families = text_string_to_metric_families(response.read().decode())
            return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}

    def count(found: dict, name: str, **labels) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    before = scrape()
    for _ in range(3):
        good_request_works(tiny_server, reference, images)
    for _ in range(2):
        tiny_server.request("POST", "/v1/models/tiny:predict", b"{not json", {"Content-Type": "application/json"})
    tiny_server.request("GET", "/v1/models/nobody")
    after = scrape()
    ok, bad = {"route": "predict", "model": "tiny", "code": "200"}, {"route": "predict", "model": "tiny", "code": "400"}
    assert count(after, "mnist_keras_requests_total", **ok) - count(before, "mnist_keras_requests_total", **ok) == 3
    assert count(after, "mnist_keras_requests_total", **bad) - count(before, "mnist_keras_requests_total", **bad) == 2
    assert count(after, "mnist_keras_request_errors_total", **bad) - count(before, "mnist_keras_request_errors_total",
                                                                           **bad) == 2
    unknown = {"route": "status", "model": "", "code": "404"}  # an unknown name makes no series of its own
    assert count(after, "mnist_keras_requests_total", **unknown) - count(before, "mnist_keras_requests_total",
                                                                         **unknown) == 1
    assert not any("nobody" in str(key) for key in after)
    latency = {"route": "predict", "model": "tiny"}
    assert count(after, "mnist_keras_request_seconds_count", **latency) - count(
        before, "mnist_keras_request_seconds_count", **latency) == 5
    batches = count(after, "mnist_keras_batch_size_count", model="tiny", version="1")
    assert batches - count(before, "mnist_keras_batch_size_count", model="tiny", version="1") == 3
    assert count(after, "mnist_keras_model_version_served", model="tiny", version="1") == 1
    assert count(after, "mnist_keras_ready") == 1
    assert ("mnist_keras_queue_depth", (("model", "tiny"), ("version", "1"))) in after
