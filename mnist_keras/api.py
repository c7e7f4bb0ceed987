"""The Python API: the steps of the command line as functions that return values and raise typed errors
(UserError, TrainingFailed, Interrupted), printing nothing unless given a Reporter.

    import mnist_keras as mk
    spec = mk.load_spec("model_specs/lenet5.yaml", overrides=["train.epochs=1"])
    model = mk.build_model(spec)          # the keras.Sequential, not yet compiled
    run = mk.fit(spec, runs="runs")       # an mk.Run: run.path, run.metrics.test.accuracy
    model = mk.load_model(run)            # the trained keras model
    run = mk.resume(mk.open_run(run.path), epochs=2)
    found = mk.lr_find(spec, out="lr-find.png")  # the learning-rate range test: found.suggestion, found.rule
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .data.inspection import DataCheck, DataInfo, DataPreview, check_dataset, data_spec, dataset_info, preview_grid
from .errors import ExportFailed, Interrupted, UserError
from .reporter import Reporter
from .runs.run import Run, open_run
from .runs.table import RunRow
from .spec import Spec
from .spec import load_spec as _load_spec
from .spec.summary import ModelSummary, summarize_model
from .train.global_state import keeps_global_state
from .train.lr_find import MAX_LR, MIN_LR, STEPS, LRFinding
from .train.session import fit_run, resume_run

if TYPE_CHECKING:
    from .deploy.export import Exported
    from .model.inference import Evaluation, Prediction
    from .sweeps.results import SweepResult


def load_spec(path: str | Path, overrides: Sequence[Any] = (), data_dir: str | None = None) -> Spec:
    """Read and validate a spec file with `--set`-style overrides ("train.epochs=3"); UserError lists every
    problem at file:line:col. The overrides are remembered (spec.overrides) for the run record. Relative paths
    in the file are inside its folder, those of overrides inside the current folder; a relative data.dataset is
    inside `data_dir` (--data-dir) when one is given."""
    return _load_spec(path, overrides, data_dir)


@dataclass
class Checked:
    """A file `validate` found good: the spec it loads (a sweep file's at its space's first point), its planned
    Keras layers and parameters, and the spec paths a sweep file searches (empty for a spec)."""

    file: str
    spec: Spec
    layers: int
    params: int
    searched: list[str]


def validate(files: Sequence[str | Path], overrides: Sequence[Any] = ()) -> tuple[list[Checked], list[str]]:
    """Check spec files and sweep files (a sweep file's spec at every listed value and range end, as `sweep` does
    before training), with the overrides: ([a Checked per good file], [every problem of the others, each at its
    place])."""
    from .sweeps.file import check_points, is_sweep_file, read_sweep

    checked, problems = [], []
    for file in files:
        try:
            if is_sweep_file(file):
                sweep = read_sweep(file)
                check_points(sweep, list(overrides))
                spec, searched = sweep.load_point({}, overrides), list(sweep.space)
            else:
                spec, searched = load_spec(file, overrides), []
        except UserError as err:
            problems += err.messages
            continue
        planned = spec.plan()
        checked.append(Checked(str(file), spec, len(planned), sum(p.trainable + p.non_trainable for p in planned),
                               searched))
    return checked, problems


def load_model(run: Run | str | Path, which: str = "final"):
    """A run's trained keras model: "final" (model.keras), "best" or "last" (checkpoints), checked against its spec."""
    from .model.objects import load_run_model

    return load_run_model(run if isinstance(run, Run) else open_run(run), which)


def build_model(spec: Spec):
    """The uncompiled keras.Sequential the spec describes."""
    from .model.build import build_model as build

    return build(spec)


def _spec_of(spec: Spec | str | Path, overrides: Sequence[Any], data_dir: str | None = None) -> Spec:
    """A Spec as given, or a spec file loaded with the overrides (load_spec)."""
    if not isinstance(spec, Spec):
        return load_spec(spec, overrides, data_dir)
    if overrides:
        raise UserError("overrides go with a spec file: load_spec(path, overrides)")
    return spec


@keeps_global_state
def fit(spec: Spec | str | Path, runs: str | Path = "runs", *, overrides: Sequence[Any] = (),
        data_dir: str | None = None, device: str | None = None, distribute: str | None = None,
        cluster: dict | None = None, reporter: Reporter | None = None, callbacks: Sequence = (),
        mlflow_uri: str | None = None, register: str | None = None) -> Run:
    """Train `spec` (a Spec, or a spec file loaded with `overrides`) in a new run directory under `runs`, evaluate
    it on the test set, and return the Run. `device` and `distribute` override the spec's runtime; `cluster` is a
    TF_CONFIG mapping for multi_worker; `callbacks`: Keras callbacks run after the run's own each epoch, as
    resume's. With `runtime.tracking: mlflow` (or `mlflow_uri` or `register`, which imply it) the run is logged
    to MLflow too (tracking.py): to `mlflow_uri` (default MLFLOW_TRACKING_URI, else RUNS/mlflow.db), its model
    registered as `register` when given."""
    spec = _spec_of(spec, overrides, data_dir)
    reporter = reporter or Reporter()
    tracker = _tracker(spec, runs, mlflow_uri, register, reporter)
    with _closed_on_failure(tracker):
        return fit_run(spec, runs, data_dir=data_dir, device=device, distribute=distribute, cluster=cluster,
                       reporter=reporter, callbacks=callbacks, observer=tracker)


def _tracker(spec: Spec, runs: str | Path, uri: str | None, register: str | None, reporter: Reporter,
             recorded=None):
    """The MLflow tracker of a run: None unless runtime.tracking is mlflow, the run was tracked, or a server or a
    model name is given (which imply it)."""
    if spec.runtime.tracking != "mlflow" and recorded is None and not (uri or register):
        return None
    from .tracking import open_tracker

    return open_tracker(spec, runs, uri, register, reporter, recorded)


@contextmanager
def _closed_on_failure(tracker):
    """The tracked run marked KILLED (interrupted) or FAILED when training ends in an error it has not seen."""
    try:
        yield
    except BaseException as err:
        if tracker is not None:
            tracker.close("KILLED" if isinstance(err, (Interrupted, KeyboardInterrupt)) else "FAILED")
        raise


@keeps_global_state
def resume(run: Run | str | Path, epochs: int | None = None, *, data_dir: str | None = None,
           device: str | None = None, distribute: str | None = None, overrides: Sequence[str] = (),
           spec: Spec | str | Path | None = None, cluster: dict | None = None, reporter: Reporter | None = None,
           callbacks: Sequence = (), mlflow_uri: str | None = None) -> Run:
    """Continue a run from its last checkpoint, to `epochs` epochs in all (default: the spec's). Only the
    epochs and where it runs may change: `overrides` (of the run's spec, or of `spec`: a Spec or a spec file)
    that change anything else are refused. `callbacks`: Keras callbacks run after the run's own each epoch (a
    sweep's pruning). A run logged to MLflow goes on logging to its MLflow run (at `mlflow_uri` if given)."""
    if spec is not None and not isinstance(spec, Spec):
        spec, overrides = load_spec(spec, overrides, data_dir), ()
    run = run if isinstance(run, Run) else open_run(run)
    reporter = reporter or Reporter()
    tracker = _tracker(run.spec, run.path.parent.parent, mlflow_uri, None, reporter, run.state.tracking) \
        if run.path is not None and (run.spec.runtime.tracking == "mlflow" or run.state.tracking) else None
    with _closed_on_failure(tracker):
        return resume_run(run, epochs, data_dir=data_dir, device=device, distribute=distribute, overrides=overrides,
                          spec=spec, cluster=cluster, reporter=reporter, callbacks=callbacks, observer=tracker)


@keeps_global_state
def lr_find(spec: Spec | str | Path, overrides: Sequence[Any] = (), *, steps: int = STEPS, min_lr: float = MIN_LR,
            max_lr: float = MAX_LR, out: str | Path | None = None, data_dir: str | None = None,
            reporter: Reporter | None = None) -> LRFinding:
    """The learning-rate range test of `spec` (a Spec, or a spec file loaded with `overrides`): a fresh model from
    it trains on its training data for up to `steps` steps at a rate rising exponentially from `min_lr` to
    `max_lr`, stopping once the smoothed loss diverges; returns an LRFinding (rates, losses, smoothed losses,
    the suggested rate and its rule, notes) and writes its figure to `out` when given. No run directory is made,
    and the process's global settings are left as found."""
    from .train.session import find_learning_rate

    return find_learning_rate(_spec_of(spec, overrides, data_dir), data_dir, steps, min_lr, max_lr,
                              None if out is None else Path(out), reporter or Reporter())


@keeps_global_state
def tune_runtime(spec: Spec | str | Path, overrides: Sequence[Any] = (), *, data_dir: str | None = None,
                 reporter: Reporter | None = None):
    """runtime.autotune's measurement of `spec` (a Spec, or a spec file loaded with `overrides`) on this machine:
    float32, mixed precision where the hardware computes in it, XLA and several steps per call, each timed for a
    few dozen steps of the spec's model on its training data; returns the RuntimeChoice (the values chosen, the
    fields the spec pins, every timing). No run directory is made, and the process's global settings are left as
    found."""
    from .train.session import tune_runtime as measure

    return measure(_spec_of(spec, overrides, data_dir), data_dir, reporter or Reporter())


@keeps_global_state
def evaluate(target: str | Path, *, data_dir: str | None = None, spec_file: str | None = None,
             reporter: Reporter | None = None) -> Evaluation:
    """Test-set figures of a run's model (or a .keras file): an Evaluation (test metrics, accuracy per class by
    name, images, model file, dataset and source)."""
    from .model.inference import evaluate_model

    return evaluate_model(target, data_dir, spec_file, reporter or Reporter())


@keeps_global_state
def predict(target: str | Path, images: Sequence[str], *, spec_file: str | None = None
            ) -> tuple[list[Prediction], list[str]]:
    """Classify image files with a run's model: ([a Prediction per readable file: its class name and probability,
    or a regression's value], [a message per unreadable file]). Images are decoded as the run's data set was
    (MNIST-like for digit data, else to data.image_shape by data.preprocess.fit); missing files are found before
    TensorFlow loads."""
    from .model.inference import predict_files

    return predict_files(target, images, spec_file)


@keeps_global_state
def export(run: Run | str | Path, fmt: str = "savedmodel", quantize: str | None = None, *,
           out: str | Path | None = None, data_dir: str | None = None, reporter: Reporter | None = None):
    """Export a run's model for deployment ("savedmodel", "litert" with quantize None/"float16"/"int8", or
    "onnx") into OUT/NAME (default RUN_DIR/export/NAME) and check it against the Keras model on the test set;
    returns a deploy.export.Exported (path, parity figures). UserError for bad input, ExportFailed (exit 1)
    when the export misses its parity bar."""
    from .deploy.export import export_run

    return export_run(run.path if isinstance(run, Run) else run, fmt, quantize, out=out, data_dir=data_dir,
                      notify=reporter or Reporter())


@dataclass
class Exports:
    """What `export_all` made, in order: an Exported, or the ExportFailed of an export that missed its bar (its
    parity figures with it), each; and a note per format left out for a missing package."""

    results: list[Exported | ExportFailed]
    skipped: list[str]


def export_all(run: Run | str | Path, *, out: str | Path | None = None, data_dir: str | None = None,
               reporter: Reporter | None = None) -> Exports:
    """Every format and quantization the installed packages can export, as `export` makes each (the notes of
    the formats left out go to the reporter first); an export that misses its bar does not stop the others."""
    from .deploy.export import every_export

    reporter = reporter or Reporter()
    requests, skipped = every_export()
    for line in skipped:
        reporter(line)
    results: list[Exported | ExportFailed] = []
    for fmt, quantize in requests:
        try:
            results.append(export(run, fmt, quantize, out=out, data_dir=data_dir, reporter=reporter))
        except ExportFailed as err:
            results.append(err)
    return Exports(results, skipped)


@keeps_global_state
def sweep(file: str | Path, grids: Sequence[str] = (), overrides: Sequence[Any] = (), *, sample: int | None = None,
          seed: int = 0, runs: str | Path = "runs", storage: str | None = None, study: str | None = None,
          jobs: int = 1, show: bool = False, plots: str | Path | None = None, data_dir: str | None = None,
          worker: int = 0, reporter: Reporter | None = None) -> SweepResult | None:
    """Search hyperparameters through Optuna, and return the trials best first (a SweepResult: `failed` holds the
    first failure's message when every trial failed). `file` is a sweep file (a YAML file with `space:`): its
    study lives in `storage` (default sqlite:///RUNS/sweeps.db) under `study` (default: the file's stem), is
    gone on with when run again, and may be shared by `jobs` worker processes and other machines; `show` only
    reads it, `plots` also writes Optuna's figures into that folder. Or `file` is a spec and `grids` are
    "PATH=V1,V2,..." values: every combination (or `sample` of them drawn with `seed`) is trained through a
    grid sampler, in a study in memory (run again, the grid trains again). Every point is checked before the
    first trains; each trial is a run directory under RUNS/<study>. Returns None in a --jobs worker (`worker`)."""
    from .sweeps.file import is_sweep_file
    from .sweeps.search import open_grid, open_search, results, run_search

    reporter = reporter or Reporter()
    if is_sweep_file(file):
        if grids or sample:
            raise UserError(f"{file}: a sweep file lists its `space:`; --grid and --random go with a spec")
        if show and overrides:
            raise UserError("--set goes with a sweep that trains; --show reads what the trials trained")
        search = open_search(file, storage, study, runs, list(overrides), existing=show)
        progress = None
    elif not grids:
        raise UserError(f"{file}: give --grid PATH=V1,V2,... with a spec, or a sweep file (with `space:`)")
    elif storage or study or jobs > 1 or show or plots:
        raise UserError("--storage, --study, --jobs, --show and --plots go with a sweep file (with `space:`)")
    else:
        search, progress = open_grid(file, grids, list(overrides), sample, seed, runs), reporter
    if not show:
        run_search(search, jobs, data_dir, reporter, worker, progress)
    return None if worker else results(search, plots)


def summary(spec: Spec | str | Path, overrides: Sequence[Any] = (), *, keras: bool = False) -> ModelSummary:
    """The layers, output shapes and parameter counts (per stage) of `spec` (a Spec, or a spec file loaded with
    `overrides`), computed without TensorFlow; `keras` also builds the model for Keras' own summary (its
    `keras` lines, see keras_summary)."""
    from .sweeps.file import is_sweep_file, read_sweep

    if not isinstance(spec, Spec) and is_sweep_file(spec):
        raise UserError(f"{spec}: a sweep file, and summary takes a spec: "
                        f"mnist-keras summary {read_sweep(spec).spec_file}")
    spec = _spec_of(spec, overrides)
    plan = summarize_model(spec)
    if keras:
        plan.keras = keras_summary(spec, plan)
    return plan


def keras_summary(spec: Spec, plan: ModelSummary | None = None) -> list[str]:
    """Keras' own summary of the built model, as lines; UserError if Keras counts other parameters than the plan."""
    plan = plan or summarize_model(spec)
    model = build_model(spec)
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    if model.count_params() != plan.trainable + plan.frozen:
        raise UserError(f"{spec.name}: Keras counts {model.count_params():,} parameters, the plan "
                        f"{plan.trainable + plan.frozen:,}")
    return lines


def schema(out: str | Path | None = None) -> str:
    """The JSON Schema of spec files as JSON text (for editor completion and checking), also written to `out`
    when given; UserError when its folder does not exist or it cannot be written."""
    from .runs.files import write_text
    from .spec import json_schema

    text = json.dumps(json_schema(), indent=2)
    if out is None:
        return text
    if not Path(out).parent.is_dir():
        raise UserError(f"{out}: the folder {Path(out).parent} does not exist")
    try:
        write_text(Path(out), text + "\n")
    except OSError as err:
        raise UserError(f"{out}: cannot write: {err.strerror or err}") from None
    return text


def list_runs(root: str | Path = "runs") -> list[RunRow]:
    """Every run directory under `root`, oldest first, at a glance; a run that cannot be read is a row whose
    state is `unreadable`. UserError when `root` holds none."""
    from .runs.table import find_runs, summarize

    found = find_runs(root)
    if not found:
        raise UserError(f"{root}: no run directories here")
    return [summarize(run_dir) for run_dir in found]


def report(run_dirs: Sequence[str | Path], out: str | Path | None = None, *, data_dir: str | None = None,
           reporter: Reporter | None = None) -> Path:
    """Learning curves, the test confusion matrix and per-class accuracy of one or several runs, as figures and
    an HTML page in `out` (default: RUN_DIR/report for one run); returns index.html's path."""
    from .reports.page import build_report

    if out is None and len(run_dirs) != 1:
        raise UserError("give the folder to write a report on several runs to (out)")
    return build_report([str(d) for d in run_dirs], Path(out or Path(run_dirs[0]) / "report"), data_dir,
                        reporter or Reporter())


def devices() -> list[str]:
    """What TensorFlow sees, a line each: its build, the CPU, and each GPU with memory and compute capability."""
    from .train.distribute import device_lines

    return device_lines()


def serve(target: str | Path | Sequence[str | Path] = (), *, models_config: str | Path | None = None,
          host: str = "127.0.0.1", port: int = 8501, max_batch: int = 64, batch_wait: float = 0.002,
          poll: float = 2.0, access_log: bool = True, threads: int | None = None, drain_delay: float = 0.0,
          reporter: Reporter | None = None) -> None:
    """Serve run directories or export folders (one, or several), or the models of a models config file, over
    TensorFlow Serving's REST API and KServe's V2 protocol until Ctrl-C or SIGTERM. Concurrent requests are
    batched (up to `max_batch` images, the first waiting `batch_wait` seconds for others); export folders are
    polled every `poll` seconds for new versions (0: never); `access_log` writes a line per request to stdout;
    `threads` is TensorFlow's intra-op threads for model calls (default: one fewer than the CPU cores);
    after a SIGTERM it serves on for `drain_delay` seconds with readiness off, then drains and returns."""
    try:
        from .deploy.server import serve as run_server
    except ModuleNotFoundError as err:
        raise UserError(f"serve needs {err.name}: pip install -e \".[serve]\"") from None
    targets = [str(target)] if isinstance(target, (str, Path)) else [str(t) for t in target]
    run_server(targets, str(models_config) if models_config else None, host, port, max_batch, batch_wait, poll,
               access_log, threads, drain_delay, announce=reporter or Reporter())


def data_info(spec: str | Path | None = None, dataset: str | Path | None = None, *, data_dir: str | None = None,
              overrides: Sequence[Any] = (), reporter: Reporter | None = None) -> DataInfo:
    """Source, shapes, dtypes, class counts and pixel statistics of the dataset a spec file reads, or of `dataset`
    (mnist, fashion_mnist, a folder or file of images) with a default model that fits its classes."""
    return dataset_info(data_spec(spec, dataset, overrides, data_dir), data_dir, reporter or Reporter())


def data_preview(out: str | Path, spec: str | Path | None = None, dataset: str | Path | None = None, *, count: int = 36,
                 split: str = "train", data_dir: str | None = None, overrides: Sequence[Any] = (),
                 reporter: Reporter | None = None) -> DataPreview:
    """Write a PNG grid of `count` images as they enter the model, each titled with its label: the first of
    epoch 0 in training order (`split` "train") or the first test images ("test"). Spec and dataset as data_info."""
    return preview_grid(data_spec(spec, dataset, overrides, data_dir), out, count, split, data_dir,
                        reporter or Reporter())


def data_check(spec: str | Path | None = None, dataset: str | Path | None = None, *, data_dir: str | None = None,
               overrides: Sequence[Any] = ()) -> DataCheck:
    """Check image files before training (spec and dataset as data_info): each decoded whole, classes empty,
    missing or left without training images, images shared between splits, the classes' balance. UserError for
    a problem that stops training; the rest is in the DataCheck."""
    return check_dataset(data_spec(spec, dataset, overrides, data_dir), data_dir)


__all__ = ["Checked", "DataCheck", "DataInfo", "DataPreview", "Exports", "LRFinding", "Reporter", "Run", "build_model",
           "data_check", "data_info", "data_preview", "devices", "evaluate", "export", "export_all", "fit",
           "keras_summary", "list_runs", "load_model", "load_spec", "lr_find", "open_run", "predict", "report",
           "resume", "schema", "serve", "summary", "sweep", "validate"]
