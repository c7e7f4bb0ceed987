"""Experiment tracking in MLflow, next to TensorBoard: `fit --mlflow` (or `runtime.tracking: mlflow`) logs the run
to MLflow's tracking server as it trains, through MLflow's client API (no process-wide MLflow state).

The server is MLFLOW_TRACKING_URI, unless one is given; without either, a SQLite file beside the runs
(RUNS/mlflow.db, artifacts in RUNS/mlartifacts), which works offline. The experiment is MLFLOW_EXPERIMENT_NAME
or the spec's name. Logged: every resolved spec value as a parameter (its dotted spec path), the data's
provenance and the class names as tags, each epoch's metrics with the epoch as step (Keras' names, as in the
run's history), the test metrics (test_loss, test_accuracy, ...), spec.yaml, metrics.json, history.csv and the
report (learning curves, confusion matrix, per-class accuracy) as artifacts, and the deployable model (uint8
images in, probabilities out) as an MLflow model of the Keras flavour with its signature and class names, so
that `mlflow.pyfunc.load_model` and `mlflow models serve` take it; `register` adds it to the model registry.

The run's MLflow id is kept in its record (state.json, `tracking`): a resume logs to the same MLflow run,
first the epochs it had not received. An interrupted, failed or pruned run is marked KILLED or FAILED; one
whose process died unseen (kill -9) is marked KILLED by the next tracked run of its experiment on its machine
(its run directory says no process trains it any more), or RUNNING again by its resume. An
unreachable server is a UserError before training; a server that goes away while training does not stop it:
what could not be logged is said once, when the run ends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from .errors import UserError, first_line
from .runs.record import Tracking, read_state
from .runs.run import Run
from .spec import Spec

HTTP_TIMEOUT = 10  # seconds per call to the tracking server: training never waits longer than this on it
MAX_PARAM = 6000  # characters: MLflow's limit on a parameter's value
TERMINAL = {"interrupted": "KILLED", "pruned": "KILLED", "failed": "FAILED"}


def tracking_uri(runs: str | Path, uri: str | None = None) -> str:
    """The tracking server: `uri`, else MLFLOW_TRACKING_URI, else a SQLite file in the runs folder."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(runs) / 'mlflow.db').resolve()}"


def shown(uri: str) -> str:
    """The URI without its password, for messages and the run record."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _hidden(text: str, uri: str) -> str:
    """`text` (an error's) without the URI's password, cut to 300 characters."""
    password = urlsplit(uri).password
    return (text.replace(password, "***") if password else text)[:300]


def flat_params(spec: Spec) -> dict[str, str]:
    """Every resolved spec value by its dotted path (list items by index), as MLflow's text parameters."""
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list) and value and all(isinstance(item, (dict, list)) for item in value):
            for index, item in enumerate(value):
                walk(item, f"{path}.{index}")
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            found[path] = text if len(text) <= MAX_PARAM else text[:MAX_PARAM - 3] + "..."

    walk(spec.model_dump(mode="json"), "")
    return found


@contextmanager
def _bounded_http() -> Iterator[None]:
    """MLflow's HTTP calls without its retries (minutes of back-off) and with a timeout, and its INFO lines (a new
    database's tables) unprinted; all restored afterwards."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(HTTP_TIMEOUT))
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class MLflowTracker:
    """A RunObserver that logs the run to an MLflow tracking server; open it with open_tracker()."""

    def __init__(self, client, uri: str, experiment: str, artifacts: str | None, register: str | None,
                 notify: Callable[[str], None], recorded: Tracking | None, tags: dict[str, str] | None = None):
        self.client, self.uri, self.experiment, self.artifacts = client, uri, experiment, artifacts
        self.register, self.notify, self.tags = register, notify, tags or {}
        self.run_id = recorded.run_id if recorded else None
        self.missed: list[str] = []  # what could not be logged, since the server went away
        self.error: str | None = None
        self.ended = False

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        """`action` against the server; after a first failure nothing more is sent, and `what` is noted."""
        if self.error is None:
            try:
                with _bounded_http():
                    return action()
            except Exception as err:  # MlflowException, requests' errors, a full artifact disk...
                self.error = _hidden(first_line(err), self.uri)
        self.missed.append(what)
        return None

    def begun(self, run: Run) -> None:
        if self.run_id is None:
            self._create(run)
        else:
            self._call("the end of runs whose process died", lambda: self._close_dead(run.state.tracking.experiment_id))
            self._call("the run's RUNNING status", lambda: self.client.update_run(self.run_id, status="RUNNING"))
            logged = self._call("the metrics of the epochs logged so far",
                                lambda: self.client.get_metric_history(self.run_id, "loss")) or []
            done = {metric.step for metric in logged}
            for epoch in run.state.history:
                if epoch.epoch not in done and self.error is None:
                    self._log_epoch(epoch)
        if self.run_id:
            self.notify(f"mlflow: run {self.run_id} of experiment {self.experiment!r} at {shown(self.uri)}")

    def _create(self, run: Run) -> None:
        from mlflow.entities import Param, RunTag

        def create() -> str:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(
                self.experiment, artifact_location=self.artifacts)
            tags = {"mnist_keras.run_dir": str(run.path.resolve()), "mnist_keras.host": socket.gethostname(),
                    "mnist_keras.spec": run.spec.name,
                    "mnist_keras.class_names": json.dumps(run.class_names)[:MAX_PARAM],
                    **{f"mnist_keras.data.{key}": str(value)[:MAX_PARAM] for key, value in
                       (run.state.data.model_dump(exclude_none=True) if run.state.data else {}).items()
                       if isinstance(value, (str, int, float))}}
            self._close_dead(experiment_id)
            created = self.client.create_run(experiment_id, run_name=f"{run.spec.name}/{run.path.name}",
                                             tags={**tags, **self.tags})
            params = [Param(key, value) for key, value in flat_params(run.spec).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
                self.client.log_batch(created.info.run_id, params=params[start:start + 100])
            self.client.log_batch(created.info.run_id, tags=[RunTag("mnist_keras.overrides",
                                                                    json.dumps(run.spec.overrides)[:MAX_PARAM])])
            return experiment_id, created.info.run_id

        made = self._call("the run itself", create)
        if made:
            experiment_id, self.run_id = made
            run.state.tracking = Tracking(uri=shown(self.uri), experiment_id=experiment_id, run_id=self.run_id)
            run.save()

    def _close_dead(self, experiment_id: str) -> None:
        """Mark KILLED the experiment's RUNNING runs of this machine whose run directory no process trains."""
        found = self.client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                        max_results=100)
        for other in found:
            tags = other.data.tags
            folder = Path(tags.get("mnist_keras.run_dir", ""))
            if other.info.run_id == self.run_id or tags.get("mnist_keras.host") != socket.gethostname() or \
                    not (folder / "state.json").is_file():
                continue
            try:
                if read_state(folder).shown_status(folder) == "running":
                    continue
            except UserError:  # a record no longer readable: no process can be training it
                pass
            self.client.set_terminated(other.info.run_id, "KILLED")
            self.notify(f"mlflow: run {other.info.run_id} ({folder}) marked KILLED: no process trains it any more")

    def epoch_recorded(self, run: Run) -> None:
        self._log_epoch(run.state.history[-1])

    def _log_epoch(self, epoch) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, epoch.epoch) for key, value in epoch.logged().items()
                   if key != "epoch" and value is not None]
        self._call(f"epoch {epoch.epoch}'s metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def finished(self, run: Run) -> None:
        from mlflow.entities import Metric

        stamp, step = int(time.time() * 1000), run.state.epochs_done
        test = [Metric(f"test_{key}", float(value), stamp, step)
                for key, value in run.metrics.test.model_dump().items() if value is not None]
        self._call("the test metrics", lambda: self.client.log_batch(self.run_id, metrics=test))
        for name in ("spec.yaml", "metrics.json", "history.csv"):
            if (run.path / name).is_file():
                self._call(name, lambda name=name: self.client.log_artifact(self.run_id, str(run.path / name)))
        with tempfile.TemporaryDirectory(prefix="mnist-keras-mlflow-") as scratch:
            self._log_report(run, Path(scratch))
            self._log_model(run, Path(scratch) / "model")
        self._end("FINISHED")

    def stopped(self, run: Run, status: str) -> None:
        self._end(TERMINAL.get(status, "FAILED"))

    def _log_report(self, run: Run, scratch: Path) -> None:
        from .reports.page import build_report

        try:
            build_report([str(run.path)], scratch / "report", run.state.data_dir, lambda message: None)
        except UserError as err:  # the test images are gone: the report is missed, the rest is logged
            self.missed.append(f"the report ({err.messages[0]})")
            return
        self._call("the report", lambda: self.client.log_artifacts(self.run_id, str(scratch / "report"), "report"))

    def _log_model(self, run: Run, folder: Path) -> None:
        """The deployable model as an MLflow model of the Keras flavour (exported: it loads without mnist_keras),
        registered under `register` when asked."""
        import mlflow.keras
        import numpy as np
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        from .backend import quiet
        from .deploy.serving import run_deployable

        deployable = run_deployable(run.path)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *deployable.input_shape))]),  # unnamed: an array
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(deployable.class_names)))]))
        with quiet():
            mlflow.keras.save_model(deployable.model, str(folder), save_exported_model=True, signature=signature,
                                    metadata={"class_names": deployable.class_names, "run_dir": str(run.path)})
        self._call("the model", lambda: self.client.log_artifacts(self.run_id, str(folder), "model"))
        if self.register and self.error is None:
            def register() -> None:
                source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
                try:
                    self.client.create_registered_model(self.register)
                except Exception as err:  # it is there already: a new version of it
                    if "RESOURCE_ALREADY_EXISTS" not in str(getattr(err, "error_code", "")) and \
                            "already exists" not in str(err):
                        raise
                version = self.client.create_model_version(self.register, source, run_id=self.run_id)
                self.notify(f"mlflow: registered model {self.register!r} version {version.version}")

            self._call(f"the registration of model {self.register!r}", register)

    def outcome(self, state: str, value: float | None = None) -> None:
        """A sweep trial's end: its state (COMPLETE, PRUNED, FAIL) as a tag, its objective value as a metric."""
        from mlflow.entities import Metric, RunTag

        if self.run_id:
            metrics = [] if value is None else [Metric("objective", float(value), int(time.time() * 1000), 0)]
            self._call("the trial's outcome", lambda: self.client.log_batch(
                self.run_id, metrics=metrics, tags=[RunTag("mnist_keras.trial_state", state)]))

    def close(self, status: str) -> None:
        """End the MLflow run as `status` (KILLED, FAILED), unless it has ended already."""
        if not self.ended:
            self._end(status)

    def _end(self, status: str) -> None:
        self.ended = True
        if self.run_id:
            self._call(f"the run's {status} status", lambda: self.client.set_terminated(self.run_id, status))
        if self.missed:
            why = self.error or "see above"
            self.notify(f"mlflow: {shown(self.uri)}: could not log {_listed(self.missed)} ({why}); the run "
                        "directory holds all of it")


def _listed(missed: list[str]) -> str:
    """`a`, `a and b`, `a, b, c and d`, or `a, b, c, d, e, ... and z`."""
    if len(missed) == 1:
        return missed[0]
    head = ", ".join(missed[:min(len(missed) - 1, 5)]) + (", ..." if len(missed) > 6 else "")
    return f"{head} and {missed[-1]}"


def open_tracker(spec: Spec, runs: str | Path, uri: str | None = None, register: str | None = None,
                 notify: Callable[[str], None] = lambda message: None, recorded: Tracking | None = None,
                 tags: dict[str, str] | None = None) -> MLflowTracker:
    """A tracker for a run of `spec` (or, with `recorded`, for the resume of one; `tags` for a new run), its
    server checked first: UserError when MLflow is not installed or the server does not answer."""
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError:
        raise UserError("runtime.tracking: mlflow needs MLflow: pip install -e \".[mlflow]\"") from None
    uri = tracking_uri(runs, uri or (recorded.uri if recorded and "***" not in recorded.uri else None))
    local = uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = (Path(runs) / "mlartifacts").resolve().as_uri() if local else None
    if local:
        Path(runs).mkdir(parents=True, exist_ok=True)
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or spec.name
    try:
        with _bounded_http():  # a new SQLite store's tables are made here, and MLflow logs it at INFO
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            if recorded:
                client.get_run(recorded.run_id)
            else:
                client.search_experiments(max_results=1)
    except Exception as err:
        what = f"its run {recorded.run_id}" if recorded else "the server"
        raise UserError(f"mlflow: {shown(uri)}: cannot reach {what}: {_hidden(first_line(err), uri)}") from None
    return MLflowTracker(client, uri, experiment, artifacts, register, notify, recorded, tags)


class SweepTracking:
    """A sweep in MLflow: a parent run for its study (its id kept in the study, so every worker and every later
    run of the sweep logs under the same one), and a nested run per trial (open_trial)."""

    def __init__(self, spec: Spec, runs: str | Path, study: str, space: str, parent_id: str | None,
                 notify: Callable[[str], None]):
        self.spec, self.runs, self.study, self.notify = spec, runs, study, notify
        self.tracker = open_tracker(spec, runs, notify=notify)
        if parent_id is None:
            parent_id = self._create_parent(space)
        self.parent_id = parent_id
        self.tracker._call("the sweep's RUNNING status",
                           lambda: self.tracker.client.update_run(parent_id, status="RUNNING"))

    def _create_parent(self, space: str) -> str:
        from mlflow.entities import Param

        tracker = self.tracker

        def create() -> str:
            found = tracker.client.get_experiment_by_name(tracker.experiment)
            experiment_id = found.experiment_id if found else tracker.client.create_experiment(
                tracker.experiment, artifact_location=tracker.artifacts)
            created = tracker.client.create_run(experiment_id, run_name=f"sweep {self.study}",
                                                tags={"mnist_keras.study": self.study})
            tracker.client.log_batch(created.info.run_id, params=[Param("space", space[:MAX_PARAM])])
            return created.info.run_id

        made = tracker._call("the sweep's parent run", create)
        if made is None:
            raise UserError(f"mlflow: {shown(tracker.uri)}: cannot create the sweep's run: {tracker.error}")
        return made

    def open_trial(self, spec: Spec, recorded: Tracking | None, trial: int) -> MLflowTracker:
        """The tracker of one trial's run, nested under the sweep's."""
        return open_tracker(spec, self.runs, notify=lambda message: None, recorded=recorded,
                            tags={"mlflow.parentRunId": self.parent_id, "mnist_keras.trial": str(trial),
                                  "mnist_keras.study": self.study})

    def end(self, status: str) -> None:
        self.tracker.run_id = self.parent_id
        self.tracker.close(status)
