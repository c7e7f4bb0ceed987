"""The `mnist-keras` command line: parse, call the API, print, and map its errors to exit codes in one place
(UserError 2, TrainingFailed and ExportFailed 1, Interrupted and Ctrl-C 130). TensorFlow loads only inside the commands
that train or predict."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .data.commands import data
from .errors import Error, Interrupted, TrainingFailed, UserError


class Group(click.Group):
    """Turns the API's errors into their messages on stderr and their exit codes, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Error as err:
            prefix = "\n" if isinstance(err, Interrupted) else "error: "
            for message in err.messages:
                click.echo(f"{prefix}{message}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


def run() -> None:
    """The `mnist-keras` console script: main(), then, once TensorFlow was loaded, exit at once. Python's own
    teardown of TensorFlow (its atexit handlers, threads and modules) adds 2 s or more to every training command,
    and by then every file has been written and closed."""
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def overrides_option(func):
    return click.option(
        "--set", "overrides", multiple=True, metavar="PATH=VALUE",
        help="Override a spec value, e.g. --set train.epochs=3 --set data.batch_size=64.",
    )(func)


def note(message: str) -> None:
    click.echo(message, err=True)


def reporter():
    """Progress on stdout (notes on stderr), with Keras' bar on a terminal and a line per epoch otherwise."""
    from .api import Reporter

    return Reporter(echo=lambda message: click.echo(message, err=message.startswith("note:")),
                    verbose=1 if sys.stdout.isatty() else 2)


FIRST_STEP = "Try first: mnist-keras fit model_specs/lenet5.yaml  (LeNet-5 on MNIST)"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=FIRST_STEP)
@click.version_option(__version__, prog_name="mnist-keras")
def main():
    """Declarative Keras models: YAML specs in, trained models and TensorBoard runs out."""


main.add_command(data)


@main.command()
@click.argument("specs", nargs=-1, required=True)
@overrides_option
def validate(specs, overrides):
    """Check spec files and sweep files (a sweep file's spec at every listed value and range end, as `sweep`
    does before training); print every problem with its file, line and spec path."""
    from .api import validate as check

    checked, problems = check(specs, overrides)
    for found in checked:
        searched = f"; a sweep of {len(found.searched)} spec paths" if found.searched else ""
        click.echo(f"ok: {found.file} ({found.spec.name}: {found.layers} layers, {found.params:,} parameters{searched})")
    if problems:
        raise UserError(*problems)


@main.command()
@click.argument("spec")
@overrides_option
@click.option("--keras", "with_keras", is_flag=True, help="Also build the model in Keras and print its own summary.")
def summary(spec, overrides, with_keras):
    """Layers, output shapes and parameter counts, computed before any training."""
    from .api import load_spec, summary as summarize
    from .sweeps.file import is_sweep_file, read_sweep

    if is_sweep_file(spec):
        raise UserError(f"{spec}: a sweep file, and summary takes a spec: "
                        f"mnist-keras summary {read_sweep(spec).spec_file}")
    plan = summarize(load_spec(spec, overrides))
    heads = [f"stage {s.number} trainable / frozen" for s in plan.stages] if plan.staged else []
    rows = [("#", "layer", "output shape", "params", *heads, "from spec")]
    for i, layer in enumerate(plan.layers, 1):
        cells = [f"{t:,} / {f:,}" for t, f in layer.stage_weights] if plan.staged else []
        shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
        rows.append((str(i), layer.name, shape, f"{layer.params:,}", *cells, layer.origin))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {0, 3, *range(4, 4 + len(heads))}
    click.echo(f"Model: {plan.name}    input shape: {plan.input_shape}")
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                             for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
    total = plan.trainable + plan.frozen
    click.echo(f"Total params: {total:,} ({total * 4 / 1024:,.2f} KB as float32)")
    click.echo(f"Trainable params: {plan.trainable:,}")
    click.echo(f"Non-trainable params: {plan.frozen:,}")
    for index, stage in enumerate(plan.stages if plan.staged else ()):
        backbone = stage.trainable if isinstance(stage.trainable, bool) else f"last {stage.trainable.last} layers"
        trainable, frozen = plan.stage_totals(index)
        click.echo(f"Stage {stage.number}: epochs {stage.first + 1}-{stage.end}, backbone trainable: "
                   f"{str(backbone).lower()}, {stage.spec.train.optimizer.type} at learning rate "
                   f"{stage.spec.train.optimizer.resolved_learning_rate():g}: {trainable:,} trainable, "
                   f"{frozen:,} frozen")
    if with_keras:
        from .api import keras_summary

        for line in keras_summary(load_spec(spec, overrides), plan):
            click.echo(line)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
def schema(out):
    """Print the JSON Schema of spec files (for editor completion and checking)."""
    from .runs.files import write_text
    from .spec import json_schema

    text = json.dumps(json_schema(), indent=2)
    if not out:
        click.echo(text)
        return
    if not Path(out).parent.is_dir():
        raise UserError(f"{out}: the folder {Path(out).parent} does not exist")
    try:
        write_text(Path(out), text + "\n")
    except OSError as err:
        raise UserError(f"{out}: cannot write: {err.strerror or err}") from None


def _flags(epochs=None, device=None, distribute=None, name=None) -> list:
    """The --epochs/--device/--distribute/--name values as spec overrides that name their flag in messages."""
    from .spec import Override

    return [Override(f"{key}={json.dumps(value)}", f"{flag} {value}") for key, flag, value in
            (("train.epochs", "--epochs", epochs), ("runtime.device", "--device", device),
             ("runtime.distribute", "--distribute", distribute), ("name", "--name", name)) if value is not None]


def _fit_summary(run) -> str:
    metrics, test = run.metrics, run.metrics.test
    seconds = sum(metrics.seconds_per_epoch)
    loss = "nan" if test.loss is None else f"{test.loss:.4f}"
    accuracy = "nan" if test.accuracy is None else f"{test.accuracy:.2%}"
    head = f"test accuracy {accuracy}, loss {loss} | {metrics.epochs_done} epochs in {seconds:.1f} s, " \
           f"{metrics.images_per_second:,.0f} images/s"
    if run.path is None:
        return f"{metrics.device}: {head} | weights {metrics.weights_sha256} | the chief writes the run"
    weights = f" | weights {metrics.weights_sha256}" if run.spec.runtime.distribute == "multi_worker" else ""
    return f"{head}{weights} | run {run.path} | tensorboard --logdir {run.path}"


@main.command()
@click.argument("spec", required=False)
@overrides_option
@click.option("--epochs", type=click.IntRange(min=1), help="Train for this many epochs (overrides train.epochs).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
@click.option("--device", metavar="auto|cpu|gpu|gpu:N", help="Where to train (overrides runtime.device).")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi_worker"]),
              help="Train on this machine's GPUs (mirrored) or on several machines (multi_worker); overrides "
                   "runtime.distribute. data.batch_size stays the global batch.")
@click.option("--worker", "workers", multiple=True, metavar="HOST:PORT",
              help="multi_worker: one worker's address; repeat it for every worker, in the same order on each "
                   "(instead of TF_CONFIG). Worker 0 is the chief: it alone writes the run.")
@click.option("--task-index", type=click.IntRange(min=0), help="multi_worker: this machine's place in the --worker list.")
@click.option("--runs", "runs_root", default="runs", show_default=True, help="The folder that holds run directories.")
@click.option("--name", help="The run's name (overrides the spec's name): runs/NAME/TIMESTAMP.")
@click.option("--resume", "resume_dir", metavar="RUN_DIR", help="Continue an interrupted run from its last checkpoint.")
def fit(spec, overrides, epochs, data_dir, device, distribute, workers, task_index, runs_root, name, resume_dir):
    """Train SPEC and evaluate it on the test set, in a new run directory."""
    from . import api
    from .train.distribute import cluster_from_flags

    cluster = cluster_from_flags(workers, task_index)
    if resume_dir:
        asked = api.load_spec(spec, overrides, data_dir) if spec else None
        run = api.resume(resume_dir, epochs, data_dir=data_dir, device=device, distribute=distribute,
                         overrides=() if spec else overrides, spec=asked, cluster=cluster, reporter=reporter())
    elif not spec:
        raise click.UsageError("give a SPEC to train, or --resume RUN_DIR")
    else:
        loaded = api.load_spec(spec, [*overrides, *_flags(epochs, device, distribute, name)], data_dir)
        run = api.fit(loaded, runs_root, data_dir=data_dir, cluster=cluster, reporter=reporter())
    click.echo(_fit_summary(run))


@main.command()
@click.argument("file", metavar="SPEC|SWEEP_FILE")
@click.option("--grid", "grids", multiple=True, metavar="PATH=V1,V2,...",
              help="With a SPEC: values to try for one spec path, e.g. --grid train.optimizer.learning_rate=0.1,0.01; "
                   "repeat for more paths: every combination is trained.")
@overrides_option
@click.option("--random", "sample", type=click.IntRange(min=1), metavar="N",
              help="With --grid: train N combinations drawn at random instead of all of them.")
@click.option("--seed", default=0, show_default=True, help="Seed of the --random draw.")
@click.option("--epochs", type=click.IntRange(min=1), help="Train each run for this many epochs.")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
@click.option("--runs", "runs_root", default="runs", show_default=True, help="The folder that holds run directories.")
@click.option("--storage", metavar="URL", help="With a SWEEP_FILE: the study's database (default: "
              "sqlite:///RUNS/sweeps.db; postgresql://... to share a study between machines).")
@click.option("--study", "study_name", metavar="NAME", help="With a SWEEP_FILE: the study (default: the file's stem).")
@click.option("--jobs", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="With a SWEEP_FILE: worker processes taking trials from the study (one GPU each when there are).")
@click.option("--show", is_flag=True, help="With a SWEEP_FILE: only show the study's ranked trials and best spec.")
@click.option("--plots", type=click.Path(file_okay=False), metavar="DIR",
              help="With a SWEEP_FILE: also write Optuna's figures (history, importances, parallel coordinates) as "
                   "PNG files into DIR.")
@click.option("--worker", type=int, default=0, hidden=True)
def sweep(file, grids, overrides, sample, seed, epochs, data_dir, runs_root, storage, study_name, jobs, show, plots,
          worker):
    """Search hyperparameters of a spec: a SWEEP_FILE (a YAML file with `space:`) runs an Optuna study (run again,
    it goes on); a SPEC with --grid trains every combination of values through Optuna's grid sampler, one run
    after another, in a study kept in memory (run again, the grid trains again).

    Every trial is a normal run directory; its values are logged as hyperparameters, so
    `tensorboard --logdir RUNS` compares them in the HParams dashboard.
    """
    from .api import sweep as search
    from .sweeps.results import grid_table, ranked_table

    result = search(file, grids, [*overrides, *_flags(epochs)], sample=sample, seed=seed, runs=runs_root,
                    storage=storage, study=study_name, jobs=jobs, show=show, plots=plots, data_dir=data_dir,
                    worker=worker, reporter=reporter())
    if result is None:  # a worker of --jobs: the sweep command shows the results
        return
    click.echo(grid_table(result) if result.grid else ranked_table(result))
    for line in result.lines:
        click.echo(line, err=line.startswith("note:"))
    if result.grid:
        click.echo(f"compare them: tensorboard --logdir {runs_root}")
    if result.failed and not show:
        raise TrainingFailed(result.failed)


@main.command()
@click.argument("root", default="runs", required=False)
def runs(root):
    """A table of the runs under ROOT (default: runs): name, start, epochs, accuracies, state, directory."""
    from .api import list_runs
    from .runs.table import COLUMNS, format_table

    rows = list_runs(root)
    click.echo(format_table([row.columns() for row in rows], COLUMNS))
    for row in rows:
        if row.reason:
            click.echo(f"unreadable: {row.reason}", err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", type=click.Path(file_okay=False),
              help="The folder to write to (default: RUN_DIR/report for one run; required for several).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: each run's).")
def report(run_dirs, out, data_dir):
    """Learning curves, test confusion matrix, per-class accuracy and an HTML page for one or several runs."""
    from .api import Reporter, report as write_report

    if out is None and len(run_dirs) > 1:
        raise click.UsageError("give --out DIR for a report on several runs")
    index = write_report(list(run_dirs), out, data_dir=data_dir, reporter=Reporter(echo=note))
    click.echo(f"wrote {index} and its figures ({len(run_dirs)} run{'s' if len(run_dirs) > 1 else ''})")


@main.command()
def devices():
    """What TensorFlow sees: CPUs, and GPUs with their memory and compute capability."""
    from .api import devices as device_lines

    for line in device_lines():
        click.echo(line)


@main.command()
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: the run's).")
@click.option("--spec", "spec_file", help="The spec the model was trained with (default: the run's spec.yaml).")
def evaluate(target, data_dir, spec_file):
    """Test-set loss and accuracy of a trained model."""
    from .api import evaluate as evaluate_model

    result = evaluate_model(target, data_dir=data_dir, spec_file=spec_file, reporter=reporter())
    click.echo(f"{result['model']}: test accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f} "
               f"on {result['images']:,} {result['dataset']} test images ({result['source']})")
    if "per_class" in result:
        click.echo("per class: " + ", ".join(
            f"{name} {'-' if c['accuracy'] is None else format(c['accuracy'], '.1%')} ({c['images']:,})"
            for name, c in result["per_class"].items()))


@main.command()
@click.argument("target", metavar="RUN_DIR|EXPORT_DIR")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on (0.0.0.0: all).")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(0, 65535),
              help="The port (TensorFlow Serving's REST port by default; 0: any free one).")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1, 1024),
              help="At most this many images per model call when concurrent requests are batched.")
@click.option("--batch-wait", default=2.0, show_default=True, type=click.FloatRange(0, 1000), metavar="MS",
              help="How long the first request of a batch waits for others, in milliseconds.")
@click.option("--no-batching", is_flag=True, help="One model call per request (same as --max-batch 1).")
def serve(target, host, port, max_batch, batch_wait, no_batching):
    """Serve a run's model, or an exported one, over TensorFlow Serving's REST API, with a drawing page at /.

    POST /v1/models/NAME:predict takes {"instances": [...]} of uint8 images; POST /v1/models/NAME:classify
    an image file (multipart field "file"). Concurrent requests are batched into one model call.
    """
    from .api import Reporter, serve as run_server

    run_server(target, host=host, port=port, max_batch=1 if no_batching else max_batch,
               batch_wait=0 if no_batching else batch_wait / 1000, reporter=Reporter(echo=click.echo))


@main.command()
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.argument("images", nargs=-1, required=True)
@click.option("--spec", "spec_file", help="The spec the model was trained with (default: the run's spec.yaml).")
def predict(target, images, spec_file):
    """Classify image files (PNG, JPEG, GIF, BMP; any size, gray or colour).

    Each image is made MNIST-like before the spec's own preprocessing: converted to gray (transparency
    laid over white), resized as a whole to the dataset's image size, and inverted when it is dark ink
    on a light background, since MNIST digits are light on dark. Unreadable files are reported and the
    others classified (exit 2 if any was unreadable).
    """
    from .api import predict as predict_images

    predictions, problems = predict_images(target, list(images), spec_file=spec_file)
    for p in predictions:
        if "value" in p:
            click.echo(f"{p['file']}: {round(p['value'])} (regression output {p['value']:.3f})")
        else:
            click.echo(f"{p['file']}: {p['class']} (probability {p['probability']:.3f})")
    if problems:
        raise UserError(*problems)


@main.command("export")
@click.argument("run_dir")
@click.option("--format", "fmt", type=click.Choice(["savedmodel", "litert", "onnx", "all"]), default="savedmodel",
              show_default=True, help="savedmodel: TensorFlow Serving's layout; litert: a .tflite file; onnx: a .onnx "
              "file; all: every format and quantization the installed packages can export.")
@click.option("--quantize", type=click.Choice(["float16", "int8"]),
              help="litert only: float16 weights, or int8 throughout (calibrated on training images).")
@click.option("--out", type=click.Path(file_okay=False), help="The folder to export into (default: RUN_DIR/export).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: the run's).")
def export_command(run_dir, fmt, quantize, out, data_dir):
    """Export a run's model for deployment (uint8 images in, probabilities out), then check it against the
    Keras model on the test set; exit 1 if it misses its bar (float: 99.9% top-1 agreement; int8: at most
    0.5 accuracy points lost)."""
    from .api import Reporter, export
    from .deploy.export import every_export
    from .errors import ExportFailed

    requests, skipped = [(fmt, quantize)], []
    if fmt == "all":
        if quantize:
            raise UserError(f"--quantize {quantize}: not with --format all, which exports every quantization")
        requests, skipped = every_export()
    for line in skipped:
        note(line)
    failures, exported = [], None
    for request in requests:
        try:
            exported = export(run_dir, *request, out=out, data_dir=data_dir, reporter=Reporter(echo=note))
        except ExportFailed as err:
            for line in err.parity.lines() if err.parity else []:
                click.echo(line)
            failures.append(err)
            continue
        click.echo(f"exported {exported.key}: {exported.path}")
        for line in exported.parity.lines():
            click.echo(line)
    if exported:
        click.echo(f"labels.txt and export.json in {exported.folder}")
    if failures:
        raise ExportFailed(*[message for err in failures for message in err.messages])
