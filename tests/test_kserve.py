"""KServe's V2 inference protocol of `mnist-keras serve` (issue 27), spoken by the real client library,
`tritonclient.http`: server and model readiness, metadata, and infers of real test digits (UINT8 and FP32
tensors, JSON and binary data, encoded files as BYTES, the classification extension) against the Keras model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytestmark = pytest.mark.server
pytest.importorskip("fastapi")
http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SHAPE = (28, 28, 1)
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def client(tiny_server):
    return http.InferenceServerClient(f"127.0.0.1:{tiny_server.port}")


@pytest.fixture(scope="module")
def digits():
    """Sixteen bundled test digits."""
    from mnist_keras.data.sources import BUNDLED

    with np.load(BUNDLED) as sample:
        images = sample["x_test"][:16].reshape(-1, *SHAPE)
    return images


@pytest.fixture(scope="module")
def expected(tiny_run, digits):
    """The run model's probabilities for the digits, computed in this process."""
    from mnist_keras.deploy.serving import run_deployable

    return run_deployable(tiny_run).model.predict(digits, verbose=0)


def test_server_and_model_readiness_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("other") and not client.is_model_ready("tiny", "7")
    server = client.get_server_metadata()
    assert server["name"] == "mnist-keras" and "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("tiny")
    assert model["name"] == "tiny" and model["versions"] == ["1"]
    assert model["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, *SHAPE]}
    assert model["inputs"][1] == {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    with pytest.raises(InferenceServerException, match="Servable not found"):
        client.get_model_metadata("other")


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_of_test_digits_matches_the_keras_model(client, digits, expected, datatype, binary):
    tensor = http.InferInput("images", list(digits.shape), datatype)
    tensor.set_data_from_numpy(digits.astype(np.float32 if datatype == "FP32" else np.uint8), binary_data=binary)
    result = client.infer("tiny", [tensor], outputs=[http.InferRequestedOutput("probabilities", binary_data=binary)],
                          request_id="r-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (16, 10) and result.get_response()["id"] == "r-1"
    assert (probabilities.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_encoded_files_as_bytes_and_the_classification_extension(client, digits, expected, tiny_server):
    from PIL import Image

    files = []
    for digit in digits:
        buffer = io.BytesIO()
        Image.fromarray(digit[..., 0]).save(buffer, "PNG")
        files.append(buffer.getvalue())
    tensor = http.InferInput("image_bytes", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    result = client.infer("tiny", [tensor], model_version="1")  # no outputs named: every one, as binary data
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)

    tensor = http.InferInput("images", list(digits.shape), "UINT8")
    tensor.set_data_from_numpy(digits)
    top = client.infer("tiny", [tensor], outputs=[http.InferRequestedOutput("probabilities", class_count=3)])
    rows = top.as_numpy("probabilities")
    assert rows.shape == (16, 3)
    for row, probabilities in zip(rows, expected):
        scores, indices, labels = zip(*(item.decode().split(":") for item in row))
        assert [int(i) for i in indices] == list(np.argsort(-probabilities, kind="stable")[:3])
        assert list(labels) == [CLASSES[int(i)] for i in indices]
        np.testing.assert_allclose([float(s) for s in scores], np.sort(probabilities)[::-1][:3], atol=1e-5)


EMPTY_FILES = json.dumps({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",  # 20,000 of them
                                      "parameters": {"binary_data_size": 80000}}]}).encode()
BAD_INFERS = [
    (b"{not json", None, 400, "not valid JSON"),
    (json.dumps({"inputs": []}).encode(), None, 400, "a list of one tensor"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [1]}]}).encode(), None, 400,
     "the model's inputs are 'images'"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "INT64",
                             "data": [0] * 784}]}).encode(), None, 400, "takes UINT8 or FP32"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 27, 28, 1], "datatype": "UINT8",
                             "data": [0] * 756}]}).encode(), None, 400, "the model takes [N, 28, 28, 1]"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8",
                             "data": [0] * 783}]}).encode(), None, 400, "must be 784 numbers"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "FP32",
                             "data": [0.5] * 784}]}).encode(), None, 400, "whole numbers 0..255"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                             "parameters": {"binary_data_size": 784}}]}).encode() + b"\0" * 10, "999999", 400,
     "Inference-Header-Content-Length"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                             "parameters": {"binary_data_size": 784}}]}).encode() + b"\0" * 10, "5", 400,
     "not valid JSON"),
    (json.dumps({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                             "data": ["%%%"]}]}).encode(), None, 400, "base64"),
    (EMPTY_FILES + b"\0\0\0\0" * 20000, str(len(EMPTY_FILES)), 400, "more than the 1 elements"),
    (json.dumps({"inputs": [{"name": "images", "shape": [2000, 28, 28], "datatype": "UINT8",
                             "data": [0]}]}).encode(), None, 400, "1 to 1024 images"),
    (json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}],
                 "outputs": [{"name": "logits"}]}).encode(), None, 400, "the model's output is 'probabilities'"),
]


@pytest.mark.parametrize("body, header, status, error", BAD_INFERS, ids=[e for *_, e in BAD_INFERS])
def test_bad_infer_requests_are_4xx_with_an_error(tiny_server, client, body, header, status, error):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    got, answer = tiny_server.request("POST", "/v2/models/tiny/infer", body, headers)
    assert got == status and list(answer) == ["error"] and error in answer["error"], answer
    assert client.is_server_ready()
