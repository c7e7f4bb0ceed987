"""MLflow tracking (issue 28) against a real `mlflow server` (SQLite backend store, local artifacts, a free loopback
port), read back through MLflow's client API: a real `fit --mlflow` (parameters, per-epoch metric histories,
artifacts, the model loaded with mlflow.pyfunc agreeing with the run's model, the registry), resume into the
same MLflow run, kill -9 then resume, the server stopped mid-run, and an unreachable server refused before
training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.mlflow, pytest.mark.server]
mlflow = pytest.importorskip("mlflow")

from conftest import TINY_SERVED  # noqa: E402
from faults import Forked  # noqa: E402
from serve_process import free_port, run_cli  # noqa: E402

SPEC = TINY_SERVED.replace("epochs: 1", "epochs: 3")


class MlflowServer:
    """`mlflow server` with a SQLite store and artifacts in `folder`, on a free loopback port, until stop()."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=5).read()
                break
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(SPEC)
    return path


def client(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.uri)


def tracked_run(run_dir: Path):
    """The MLflow run id recorded in a run directory's state.json."""
    return json.loads((run_dir / "state.json").read_text())["tracking"]["run_id"]


def only_run(runs: Path) -> Path:
    (run,) = [p for p in (runs / "tiny").iterdir() if p.is_dir()]
    return run


def test_fit_logs_params_metrics_artifacts_and_a_model_pyfunc_loads(server, spec_file, tmp_path):
    result = run_cli("fit", str(spec_file), "--runs", str(tmp_path / "runs"), "--mlflow-uri", server.uri,
                     "--register", "tiny-digits", "--set", "data.batch_size=32")
    assert result.returncode == 0, result.stderr
    assert "mlflow: run " in result.stdout and "registered model 'tiny-digits' version 1" in result.stdout
    assert result.stderr == "", result.stderr  # nothing of MLflow's own logging
    run_dir = only_run(tmp_path / "runs")
    found = client(server).get_run(tracked_run(run_dir))
    assert found.info.status == "FINISHED" and found.info.run_name == f"tiny/{run_dir.name}"
    params = found.data.params
    assert params["train.epochs"] == "3" and params["data.batch_size"] == "32" and params["seed"] == "7"
    assert params["model.layers.1.dense.units"] == "32" and params["runtime.tracking"] == "mlflow"
    assert found.data.tags["mnist_keras.class_names"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert found.data.tags["mnist_keras.data.source"] == "bundled"
    history = client(server).get_metric_history(found.info.run_id, "val_loss")
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([e["val_loss"] for e in recorded["history"]])
    assert found.data.metrics["test_accuracy"] == pytest.approx(recorded["test"]["accuracy"])
    artifacts = {a.path for a in client(server).list_artifacts(found.info.run_id)}
    assert {"spec.yaml", "metrics.json", "history.csv", "model", "report"} <= artifacts
    report = {a.path for a in client(server).list_artifacts(found.info.run_id, "report")}
    assert "report/1-tiny-confusion.png" in report and "report/curves.png" in report

    from mnist_keras.data.sources import BUNDLED
    from mnist_keras.deploy.serving import run_deployable

    with np.load(BUNDLED) as sample:
        images = sample["x_test"][:32].reshape(-1, 28, 28, 1)
    mlflow.set_tracking_uri(server.uri)
    try:
        for uri in (f"runs:/{found.info.run_id}/model", "models:/tiny-digits/1"):
            loaded = mlflow.pyfunc.load_model(uri)
            np.testing.assert_allclose(loaded.predict(images), run_deployable(run_dir).model.predict(images, verbose=0),
                                       atol=1e-5)
        assert loaded.metadata.metadata["class_names"] == [str(i) for i in range(10)]
    finally:
        mlflow.set_tracking_uri(None)


def test_resume_and_kill_9_go_on_in_the_same_mlflow_run(server, spec_file, tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("fit", str(spec_file), "--runs", str(runs), "--mlflow-uri", server.uri, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    run_dir = only_run(runs)
    run_id = tracked_run(run_dir)
    killed = Forked("kill-at-batch:3:5", "fit", "--resume", run_dir, "--epochs", 4, "--mlflow-uri", server.uri,
                    cwd=tmp_path)
    code, _, _ = killed.finish(timeout=300)
    assert code == -signal.SIGKILL
    assert client(server).get_run(run_id).info.status == "RUNNING"  # kill -9: no one could say otherwise
    other = run_cli("fit", str(spec_file), "--runs", str(tmp_path / "other"), "--mlflow-uri", server.uri,
                    "--epochs", "1")  # the next tracked run of the experiment on this machine closes it
    assert other.returncode == 0 and f"mlflow: run {run_id} ({run_dir}) marked KILLED" in other.stdout
    assert client(server).get_run(run_id).info.status == "KILLED"
    result = run_cli("fit", "--resume", str(run_dir), "--epochs", "4", "--mlflow-uri", server.uri)
    assert result.returncode == 0, result.stderr
    assert tracked_run(run_dir) == run_id
    found = client(server).get_run(run_id)
    assert found.info.status == "FINISHED"
    assert [m.step for m in client(server).get_metric_history(run_id, "loss")] == [1, 2, 3, 4]


def test_the_server_stopped_mid_run_does_not_stop_training(spec_file, tmp_path):
    import mnist_keras as mk
    from mnist_keras.backend import keras
    from mnist_keras.reporter import Reporter

    own = MlflowServer(tmp_path / "own")
    lines: list[str] = []

    class StopTheServer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                own.stop()

    try:
        run = mk.fit(mk.load_spec(spec_file), tmp_path / "runs", reporter=Reporter(echo=lines.append),
                     callbacks=[StopTheServer()], mlflow_uri=own.uri)
    finally:
        own.stop()
    assert run.state.status == "finished" and run.state.epochs_done == 3
    said = [line for line in lines if "could not log" in line]
    assert len(said) == 1 and said[0].startswith(f"mlflow: {own.uri}: could not log ")
    assert "the run directory holds all of it" in said[0]


def test_an_unreachable_server_is_refused_before_training(spec_file, tmp_path):
    port = free_port()
    for uri, shown in ((f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
                       (f"http://ada:s3cret@127.0.0.1:{port}", f"http://ada:***@127.0.0.1:{port}")):
        result = run_cli("fit", str(spec_file), "--runs", str(tmp_path / "runs"), "--mlflow-uri", uri, timeout=180)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: mlflow: {shown}: cannot reach the server: ")
        assert result.stderr.count("\n") == 1 and "s3cret" not in result.stderr
        assert not (tmp_path / "runs" / "tiny").exists()


def test_without_a_uri_it_logs_to_a_sqlite_file_beside_the_runs_and_mlflow_serves_the_model(spec_file, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run_cli("fit", str(spec_file), "--runs", str(tmp_path / "runs"), "--mlflow", "--epochs", "1")
    assert result.returncode == 0 and result.stderr == "", result.stderr  # nothing of MLflow's making its database
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    run_dir = only_run(tmp_path / "runs")
    found = MlflowClient(store).get_run(tracked_run(run_dir))
    assert found.info.status == "FINISHED" and found.data.metrics["test_accuracy"] > 0.1
    assert found.info.artifact_uri.startswith((tmp_path / "runs" / "mlartifacts").as_uri())

    port = free_port()  # `mlflow models serve` takes the logged model as it is
    serving = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{found.info.run_id}/model", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "MLFLOW_TRACKING_URI": store,
                                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    try:
        from mnist_keras.data.sources import BUNDLED
        from mnist_keras.deploy.serving import run_deployable

        with np.load(BUNDLED) as sample:
            images = sample["x_test"][:8].reshape(-1, 28, 28, 1)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5).read()
                break
            except OSError:
                assert serving.poll() is None and time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         json.dumps({"inputs": images.tolist()}).encode(),
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        np.testing.assert_allclose(answer["predictions"], run_deployable(run_dir).model.predict(images, verbose=0),
                                   atol=1e-5)
    finally:
        os.killpg(serving.pid, signal.SIGTERM)
        serving.wait(timeout=60)


def test_ctrl_c_marks_the_mlflow_run_killed(server, spec_file, tmp_path):
    interrupted = Forked("sigint-at-batch:2:3", "fit", spec_file, "--runs", tmp_path / "runs", "--mlflow-uri",
                         server.uri, cwd=tmp_path)
    code, _, err = interrupted.finish(timeout=300)
    assert code == 130, err
    found = client(server).get_run(tracked_run(only_run(tmp_path / "runs")))
    assert found.info.status == "KILLED"
    assert [m.step for m in client(server).get_metric_history(found.info.run_id, "loss")] == [1]


def test_a_sweep_is_a_parent_run_with_a_nested_run_per_trial(server, spec_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny-sweep")
    result = run_cli("sweep", str(spec_file), "--grid", "train.optimizer.learning_rate=0.003,0.01", "--epochs", "1",
                     "--runs", str(tmp_path / "runs"), "--mlflow", timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    experiment = client(server).get_experiment_by_name("tiny-sweep")
    found = client(server).search_runs([experiment.experiment_id])
    (parent,) = [run for run in found if "mlflow.parentRunId" not in run.data.tags]
    trials = [run for run in found if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep ")
    assert '"space"' in parent.data.params["space"]
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    assert sorted(run.data.params["train.optimizer.learning_rate"] for run in trials) == ["0.003", "0.01"]
    assert all(run.data.tags["mnist_keras.trial_state"] == "COMPLETE" for run in trials)
    assert all(run.data.metrics["objective"] == pytest.approx(run.data.metrics["val_accuracy"]) for run in trials)


@pytest.mark.browser
def test_mlflow_ui_shows_the_run_with_its_metrics(server, spec_file, tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    result = run_cli("fit", str(spec_file), "--runs", str(tmp_path / "runs"), "--mlflow-uri", server.uri,
                     "--epochs", "1")
    assert result.returncode == 0, result.stderr
    run_dir = only_run(tmp_path / "runs")
    found = client(server).get_run(tracked_run(run_dir))
    browser.get(f"{server.uri}/#/experiments/{found.info.experiment_id}/runs/{found.info.run_id}")
    WebDriverWait(browser, 90).until(
        lambda page: f"tiny/{run_dir.name}" in page.page_source and "test_accuracy" in page.page_source
        and "val_accuracy" in page.page_source)


def test_a_pruned_trial_is_marked_in_its_nested_run(server, tmp_path, monkeypatch):
    import optuna
    from conftest import in_process
    from test_sweeps import _distributions, trials_of, write_sweep

    from mnist_keras.sweeps.search import open_search

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "pruned-sweep")
    sweep_file = write_sweep(tmp_path, trials=6, epochs=3, pruner="median")
    study = open_search(sweep_file, runs=tmp_path / "runs").study
    for _ in range(5):  # five finished trials far better than a tiny run: the sixth, the one that trains, is pruned
        study.add_trial(optuna.trial.create_trial(
            params={"train.optimizer.learning_rate": 0.01, "data.batch_size": 64}, value=0.999,
            distributions=_distributions(sweep_file), intermediate_values={0: 0.999, 1: 0.999, 2: 0.999}))
    done = in_process("sweep", "sweep.yaml", "--mlflow", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (real,) = [t for t in trials_of(tmp_path) if "run_dir" in t.user_attrs]
    assert real.state == optuna.trial.TrialState.PRUNED
    experiment = client(server).get_experiment_by_name("pruned-sweep")
    (nested,) = client(server).search_runs([experiment.experiment_id],
                                           filter_string=f"tags.mnist_keras.trial = '{real.number}'")
    assert nested.data.tags["mnist_keras.trial_state"] == "PRUNED" and nested.info.status == "KILLED"
    assert nested.data.tags["mlflow.parentRunId"] == study.user_attrs["mlflow_run_id"]
    assert "objective" not in nested.data.metrics
