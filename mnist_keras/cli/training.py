"""`fit`, `lr-find`, `evaluate`, `predict` and `devices`: training a spec (and its learning rate found), and its model
measured and used."""

from __future__ import annotations

import click

from ..errors import UserError
from ..train.lr_find import MAX_LR, MAX_STEPS, MIN_LR, STEPS
from .options import flag_overrides, note as note_line, overrides_option, reporter


def _fit_summary(run) -> str:
    metrics, test = run.metrics, run.metrics.test
    seconds = sum(metrics.seconds_per_epoch)
    loss = "nan" if test.loss is None else f"{test.loss:.4f}"
    accuracy = "nan" if test.accuracy is None else f"{test.accuracy:.2%}"
    head = f"test accuracy {accuracy}, loss {loss} | {metrics.epochs_done} epochs in {seconds:.1f} s, " \
           f"{metrics.images_per_second:,.0f} images/s"
    if metrics.stopped:
        head += f" | stopped after epoch {metrics.stopped.epoch}: {metrics.stopped.reason()}"
        head += f" in {metrics.stopped.seconds:.1f} s" if metrics.stopped.by == "stop_at" else ""
    if run.path is None:
        return f"{metrics.device}: {head} | weights {metrics.weights_sha256} | the chief writes the run"
    weights = f" | weights {metrics.weights_sha256}" if run.spec.runtime.distribute == "multi_worker" else ""
    return f"{head}{weights} | run {run.path} | tensorboard --logdir {run.path}"


@click.command()
@click.argument("spec", required=False)
@overrides_option
@click.option("--epochs", type=click.IntRange(min=1), help="Train for this many epochs (overrides train.epochs).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
@click.option("--device", metavar="auto|cpu|gpu|gpu:N", help="Where to train (overrides runtime.device).")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi_worker"]),
              help="Train on this machine's GPUs (mirrored) or on several machines (multi_worker); overrides "
                   "runtime.distribute. data.batch_size stays the global batch.")
@click.option("--workers", "--worker", "workers", multiple=True, metavar="HOST:PORT,...",
              help="multi_worker: every worker's address, comma-separated (or the option once per worker), in the "
                   "same order on each (instead of TF_CONFIG). Worker 0 is the chief: it alone writes the run.")
@click.option("--worker-index", "--task-index", "worker_index", type=click.IntRange(min=0),
              help="multi_worker: this machine's place in the --workers list.")
@click.option("--runs", "runs_root", default="runs", show_default=True, help="The folder that holds run directories.")
@click.option("--name", help="The run's name (overrides the spec's name): runs/NAME/TIMESTAMP.")
@click.option("--resume", "resume_dir", metavar="RUN_DIR", help="Continue an interrupted run from its last checkpoint.")
@click.option("--mlflow", is_flag=True, help="Log the run to MLflow too (runtime.tracking: mlflow): the server of "
              "MLFLOW_TRACKING_URI, else RUNS/mlflow.db.")
@click.option("--mlflow-uri", metavar="URI", help="The MLflow tracking server (overrides MLFLOW_TRACKING_URI; "
              "implies --mlflow).")
@click.option("--register", metavar="NAME", help="Register the trained model in MLflow's model registry as NAME "
              "(implies --mlflow).")
def fit(spec, overrides, epochs, data_dir, device, distribute, workers, worker_index, runs_root, name, resume_dir,
        mlflow, mlflow_uri, register):
    """Train SPEC and evaluate it on the test set, in a new run directory."""
    from .. import api
    from ..train.cluster import cluster_from_flags

    cluster = cluster_from_flags(workers, worker_index)
    if resume_dir:
        run = api.resume(resume_dir, epochs, data_dir=data_dir, device=device, distribute=distribute,
                         overrides=overrides, spec=spec or None, cluster=cluster, reporter=reporter(),
                         mlflow_uri=mlflow_uri)
    elif not spec:
        raise click.UsageError("give a SPEC to train, or --resume RUN_DIR")
    else:
        tracking = "mlflow" if mlflow or mlflow_uri or register else None
        run = api.fit(spec, runs_root, overrides=[*overrides, *flag_overrides(epochs, device, distribute, name,
                                                                               tracking)],
                      data_dir=data_dir, cluster=cluster, reporter=reporter(), mlflow_uri=mlflow_uri,
                      register=register)
    click.echo(_fit_summary(run))


@click.command("lr-find")
@click.argument("spec")
@overrides_option
@click.option("--steps", type=int, default=STEPS, show_default=True,
              help=f"Steps of the test, 10 to {MAX_STEPS:,}; it stops sooner once the loss diverges.")
@click.option("--min-lr", type=float, default=MIN_LR, show_default=True, help="The learning rate of the first step.")
@click.option("--max-lr", type=float, default=MAX_LR, show_default=True, help="The learning rate of the last step.")
@click.option("--out", type=click.Path(dir_okay=False), default="lr-find.png", show_default=True,
              help="The figure to write: loss against learning rate, the suggestion marked.")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
def lr_find(spec, overrides, steps, min_lr, max_lr, out, data_dir):
    """Find a learning rate for SPEC: the range test (Smith; fastai's lr_find).

    A fresh model from the spec trains on its training data for up to --steps steps while the learning rate
    rises exponentially from --min-lr to --max-lr; the test stops once the smoothed loss passes 4 times its
    lowest. It prints the suggested rate (a tenth of the rate at the lowest smoothed loss) and writes the figure;
    it leaves no run directory. `train.optimizer.learning_rate: auto` runs the same test inside `fit`.
    """
    from ..api import lr_find as find

    found = find(spec, overrides, steps=steps, min_lr=min_lr, max_lr=max_lr, out=out, data_dir=data_dir,
                 reporter=reporter())
    end = ", where the loss diverged" if found.diverged else ""
    click.echo(f"suggested learning rate {found.suggestion:.3g} ({found.rule}) | {len(found.rates)} steps from "
               f"{found.rates[0]:.3g} to {found.rates[-1]:.3g}{end} | wrote {found.figure}")
    for note in found.notes:
        note_line(f"note: {note}")


@click.command("tune-runtime")
@click.argument("spec")
@overrides_option
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
def tune_runtime(spec, overrides, data_dir):
    """Choose SPEC's runtime by measurement: what `runtime.autotune: true` does before a run's first epoch.

    Float32 without XLA, one step per call, is the reference; mixed precision (where the hardware computes in it),
    XLA and several steps per call are each timed on the spec's model and training data for a few dozen steps, and
    kept when faster and their loss after those steps is float32's within 5%. Fields the spec sets are not
    measured. Prints every timing and the values to write in the spec; trains no run.
    """
    from ..api import tune_runtime as measure
    from ..train.autotune import TOLERANCE, TUNED

    choice = measure(spec, overrides, data_dir=data_dir, reporter=reporter())
    for timing in choice.timings:
        loss = "nan" if timing.loss is None else f"{timing.loss:.4f}"
        verdict = "reference" if timing is choice.timings[0] else "agrees" if timing.agrees else \
            f"rejected: not float32's loss within {TOLERANCE:.0%}"
        click.echo(f"  {timing.choice:<50} {timing.images_per_second:>10,.0f} images/s   loss {loss}   {verdict}")
    chosen = ", ".join(f"runtime.{name}={getattr(choice, name)}".replace("=False", "=false").replace("=True", "=true")
                       for name in TUNED if name not in choice.pinned)
    kept = f" (kept from the spec: {', '.join(choice.pinned)})" if choice.pinned else ""
    click.echo(f"chosen: {chosen or 'nothing to choose'}{kept}")


@click.command()
def devices():
    """What TensorFlow sees: CPUs, and GPUs with their memory and compute capability."""
    from ..api import devices as device_lines

    for line in device_lines():
        click.echo(line)


@click.command()
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: the run's).")
@click.option("--spec", "spec_file", help="The spec the model was trained with (default: the run's spec.yaml).")
def evaluate(target, data_dir, spec_file):
    """Test-set loss and accuracy of a trained model."""
    from ..api import evaluate as evaluate_model

    result = evaluate_model(target, data_dir=data_dir, spec_file=spec_file, reporter=reporter())
    accuracy, loss = result.test.accuracy, result.test.loss
    click.echo(f"{result.model}: test accuracy {'nan' if accuracy is None else format(accuracy, '.2%')}, loss "
               f"{'nan' if loss is None else format(loss, '.4f')} on {result.images:,} {result.dataset} test images "
               f"({result.source})")
    if result.per_class is not None:
        click.echo("per class: " + ", ".join(
            f"{name} {'-' if c.accuracy is None else format(c.accuracy, '.1%')} ({c.images:,})"
            for name, c in result.per_class.items()))


@click.command()
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
    from ..api import predict as predict_images

    predictions, problems = predict_images(target, list(images), spec_file=spec_file)
    for p in predictions:
        if p.value is not None:
            click.echo(f"{p.file}: {round(p.value)} (regression output {p.value:.3f})")
        else:
            click.echo(f"{p.file}: {p.label} (probability {p.probability:.3f})")
    if problems:
        raise UserError(*problems)
