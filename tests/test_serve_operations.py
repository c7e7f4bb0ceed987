"""`mnist-keras serve` in operation (issue 27): several models from a models config, a version folder added and
removed while it serves (and one refused for its class names, one that cannot load), readiness, SIGTERM during a
burst of requests (every request answered or refused, exit 0), and bad models configs."""

from __future__ import annotations

import http.client
import shutil
import signal
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.server
pytest.importorskip("fastapi")

from conftest import in_process  # noqa: E402
from serve_process import Server  # noqa: E402

SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    from mnist_keras.deploy.export import export_run

    return export_run(tiny_run, "savedmodel", out=tmp_path_factory.mktemp("exported")).folder


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).integers(0, 256, (4, *SHAPE), dtype=np.uint8)


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within 60 s"
        time.sleep(0.1)


def test_two_models_and_a_version_added_while_serving(tiny_run, exported, images, tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(exported, folder)
    config = tmp_path / "models.yaml"
    config.write_text(f"models:\n  - name: run\n    path: {tiny_run}\n  - name: digits\n    path: digits\n")
    with Server(None, "--models-config", str(config), "--poll", "0.2") as server:
        body = {"instances": images.tolist()}
        status, first = server.request("POST", "/v1/models/digits:predict", body)
        assert status == 200
        status, run = server.request("POST", "/v1/models/run:predict", body)
        assert status == 200
        np.testing.assert_allclose(first["predictions"], run["predictions"], atol=1e-5)

        relabelled = tmp_path / "relabelled"  # a version whose class names differ: refused, version 1 serves on
        shutil.copytree(folder / "1", relabelled)
        assert (relabelled / "assets.extra" / "labels.txt").read_text() == "".join(f"{i}\n" for i in range(10))
        (relabelled / "assets.extra" / "labels.txt").write_text("".join(f"c{i}\n" for i in range(10)))
        relabelled.rename(folder / "3")
        broken = tmp_path / "broken"  # a version that cannot load: reported, version 1 serves on
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        broken.rename(folder / "4")
        shutil.copytree(folder / "1", tmp_path / "two")
        (tmp_path / "two").rename(folder / "2")  # moved in whole, as TF Serving's file system source wants
        wait_for(lambda: server.request("GET", "/v1/models/digits/versions/2")[0] == 200)
        status, answer = server.request("GET", "/v1/models/digits")
        assert [v["version"] for v in answer["model_version_status"]] == ["2", "1"]
        for path in ("/v1/models/digits:predict", "/v1/models/digits/versions/2:predict",
                     "/v1/models/digits/versions/1:predict"):
            status, answer = server.request("POST", path, body)
            assert status == 200
            np.testing.assert_allclose(answer["predictions"], first["predictions"], atol=1e-5)
        for missing in (3, 4):
            assert server.request("GET", f"/v1/models/digits/versions/{missing}")[0] == 404

        shutil.rmtree(folder / "2")  # a version folder that goes is unloaded; the highest left serves
        wait_for(lambda: server.request("GET", "/v1/models/digits/versions/2")[0] == 404)
        assert server.request("POST", "/v1/models/digits:predict", body)[0] == 200
    errors = [line for line in server.stderr.splitlines() if line not in ("", "interrupted")]  # Ctrl-C's own
    assert len(errors) == 2, server.stderr
    assert errors[0].startswith("digits version 3: not served: ") and "class 0 is 'c0', not '0'" in errors[0] \
        and "allow_label_change: true" in errors[0]
    assert errors[1].startswith("digits version 4: not served: ") and "cannot load the SavedModel" in errors[1]
    assert "digits: serving version 2 too" in server.stdout and "digits: version 2 unloaded" in server.stdout


def test_a_changed_label_is_served_when_the_config_allows_it(exported, tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(exported, folder)
    shutil.copytree(folder / "1", folder / "2")
    (folder / "2" / "assets.extra" / "labels.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    config = tmp_path / "models.yaml"
    for allow, served in ((False, None), (True, ["2", "1"])):
        config.write_text(f"models:\n  - {{path: digits, allow_label_change: {str(allow).lower()}}}\n")
        if not allow:  # at start, the refusal stops the server: exit 2, one message
            result = in_process("serve", "--models-config", config, "--port", 0, within=60)
            assert result.returncode == 2 and "its class names differ from those of version 1" in result.stderr
            assert result.stderr.count("\n") == 1 and result.stdout == ""
            continue
        with Server(None, "--models-config", str(config), "--no-access-log") as server:
            status, answer = server.request("GET", "/v1/models/tiny")
            assert [v["version"] for v in answer["model_version_status"]] == served
            assert server.request("GET", "/v1/models/tiny/metadata")[1]["metadata"]["class_names"][0] == "c0"
            assert server.request("GET", "/v1/models/tiny/versions/1/metadata")[1]["metadata"]["class_names"][0] == "0"


def test_sigterm_during_a_burst_answers_every_request_and_exits_0(tiny_run, images):
    """Clients on keep-alive connections post without pause; SIGTERM comes in the middle. Each request gets a
    200 or, once the server has closed its connection or its port, a connection error: never a 5xx or a hang."""
    body = b'{"instances": ' + str(images[:1].tolist()).encode() + b"}"
    server = Server(tiny_run, "--no-access-log").__enter__()
    outcomes, stop = [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                while not stop.is_set():
                    connection.request("POST", "/v1/models/tiny:predict", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    outcomes.append(response.status)
                    if response.getheader("connection") == "close":
                        break
            except (ConnectionError, http.client.HTTPException, OSError):
                outcomes.append("refused")
                time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: outcomes.count(200) > 200)
    answered_before = outcomes.count(200)
    returncode = server.stop(signal.SIGTERM)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert returncode == 0 and server.stderr == "", server.stderr
    assert set(outcomes) <= {200, "refused"} and outcomes.count(200) > answered_before


BAD_CONFIGS = {
    "not a mapping": ("- a\n- b\n", "a models config is a mapping with models"),
    "no models": ("models: []\n", "models"),
    "an unknown key": ("models:\n  - {path: x, version: 2}\n", "version"),
    "a bad name": ("models:\n  - {name: 'a/b', path: x}\n", "name"),
    "versions twice": ("models:\n  - {path: x, versions: [1, 1]}\n", "each version once"),
    "a missing folder": ("models:\n  - {path: nowhere}\n", "nowhere: no such run directory or export folder"),
}


@pytest.mark.parametrize("text, says", BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_a_bad_models_config_exits_2_with_its_place(tmp_path, text, says):
    config = tmp_path / "models.yaml"
    config.write_text(text)
    result = in_process("serve", "--models-config", config, "--port", 0, within=60)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert result.stdout == ""


def test_two_folders_of_one_name_and_folders_with_a_config_are_refused(tiny_run, exported, tmp_path):
    result = in_process("serve", tiny_run, exported, "--port", 0, within=60)
    assert result.returncode == 2 and "serves as 'tiny'" in result.stderr and "name: ..." in result.stderr
    config = tmp_path / "models.yaml"
    config.write_text(f"models:\n  - {{path: {exported}}}\n")
    result = in_process("serve", tiny_run, "--models-config", config, "--port", 0, within=60)
    assert result.returncode == 2 and "not both" in result.stderr
    result = in_process("serve", "--port", 0, within=60)
    assert result.returncode == 2 and "give a run directory or export folder to serve" in result.stderr


def test_the_access_log_is_one_line_per_request_on_stdout(tiny_run, images):
    with Server(tiny_run) as server:
        for path in ("/v1/models/tiny:predict", "/v1/models/tiny:predict", "/v1/models/nobody:predict"):
            server.request("POST", path, {"instances": images[:1].tolist()})
        server.request("GET", "/v1/models/tiny?verbose=1")
    lines = [line for line in server.stdout.splitlines()
             if '"POST /v1/models/' in line or '"GET /v1/models/tiny' in line]
    assert len(lines) == 4, server.stdout
    assert [line.split('"')[1] for line in lines] == ["POST /v1/models/tiny:predict"] * 2 + [
        "POST /v1/models/nobody:predict", "GET /v1/models/tiny?verbose=1"]
    codes = [line.split('"')[2].split()[0] for line in lines]
    assert codes == ["200", "200", "404", "200"]
    assert all(line.startswith("127.0.0.1:") and line.endswith(" ms") for line in lines)


def test_a_models_config_pins_versions(exported, tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(exported, folder)
    shutil.copytree(folder / "1", folder / "2")
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - {name: pinned, path: digits, versions: [1]}\n")
    with Server(None, "--models-config", str(config), "--no-access-log") as server:
        status, answer = server.request("GET", "/v1/models/pinned")
        assert status == 200 and [v["version"] for v in answer["model_version_status"]] == ["1"]
        assert server.request("GET", "/v1/models/pinned/versions/2")[0] == 404
        assert server.request("GET", "/v2/models/pinned")[1]["versions"] == ["1"]
    config.write_text("models:\n  - {path: digits, versions: [5]}\n")
    result = in_process("serve", "--models-config", config, "--port", 0, within=60)
    assert result.returncode == 2 and "none of versions [5] is there (found: [1, 2])" in result.stderr


def test_sigterm_with_a_drain_delay_turns_readiness_off_and_serves_on(tiny_run, images):
    server = Server(tiny_run, "--no-access-log", "--drain-delay", "3").__enter__()
    assert server.request("GET", "/v2/health/ready") == (200, {"ready": True})
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: server.request("GET", "/v2/health/ready")[0] == 503)
    assert server.request("GET", "/v2/health/ready") == (503, {"error": "not ready: draining"})
    assert server.request("POST", "/v1/models/tiny:predict", {"instances": images[:1].tolist()})[0] == 200
    server.process.wait(timeout=60)
    assert time.monotonic() - signalled >= 3
    assert server.stop() == 0 and server.stderr == "", server.stderr
