"""The `mnist-keras` command line. TensorFlow is imported only inside the commands that need it."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .data.commands import data
from .errors import UserError


class Group(click.Group):
    """Turns bad input into its messages on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as err:
            for message in err.messages:
                click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


def overrides_option(func):
    return click.option(
        "--set", "overrides", multiple=True, metavar="PATH=VALUE",
        help="Override a spec value, e.g. --set train.epochs=3 --set model.layers[0].conv2d.filters=8.",
    )(func)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mnist-keras")
def main():
    """Declarative Keras models: YAML specs in, trained models and TensorBoard runs out."""


main.add_command(data)


@main.command()
@click.argument("specs", nargs=-1, required=True)
@overrides_option
def validate(specs, overrides):
    """Check spec files; print every problem with its file, line and spec path."""
    from .spec import load_spec

    failed = []
    for file in specs:
        try:
            spec = load_spec(file, overrides)
        except UserError as err:
            failed += err.messages
            continue
        planned = spec.plan()
        params = sum(p.trainable + p.non_trainable for p in planned)
        click.echo(f"ok: {file} ({spec.name}: {len(planned)} layers, {params:,} parameters)")
    if failed:
        raise UserError(*failed)


@main.command()
@click.argument("spec")
@overrides_option
@click.option("--keras", "with_keras", is_flag=True, help="Also build the model in Keras and print its own summary.")
def summary(spec, overrides, with_keras):
    """Layers, output shapes and parameter counts, computed before any training."""
    from .spec import dotted, load_spec

    loaded = load_spec(spec, overrides)
    planned = loaded.plan()
    rows = [("#", "layer", "output shape", "params", "from spec")]
    for i, p in enumerate(planned, 1):
        shape = "(None, " + ", ".join(str(d) for d in p.output_shape) + ")"
        rows.append((str(i), p.name, shape, f"{p.trainable + p.non_trainable:,}", dotted(p.origin)))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    click.echo(f"Model: {loaded.name}    input shape: {loaded.input_shape()}")
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if c in (0, 3) else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
    trainable = sum(p.trainable for p in planned)
    frozen = sum(p.non_trainable for p in planned)
    click.echo(f"Total params: {trainable + frozen:,} ({(trainable + frozen) * 4 / 1024:,.2f} KB as float32)")
    click.echo(f"Trainable params: {trainable:,}")
    click.echo(f"Non-trainable params: {frozen:,}")
    if with_keras:
        from .builder import build_model

        model = build_model(loaded)
        model.summary(print_fn=lambda line, **_: click.echo(line))
        if model.count_params() != trainable + frozen:
            raise UserError(f"{spec}: Keras counts {model.count_params():,} parameters, the plan {trainable + frozen:,}")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
def schema(out):
    """Print the JSON Schema of spec files (for editor completion and checking)."""
    from .spec import json_schema

    text = json.dumps(json_schema(), indent=2)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        click.echo(text)


def _spec_diff(old: str, new: str) -> str:
    import difflib

    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "run's spec", "new spec", n=0, lineterm="")
    return "\n".join(line for line in lines if not line.startswith("@@"))


def _mark_stopped(run, status: str) -> int:
    """Record why the run stopped in state.json, if the disk still allows; return the epochs it finished."""
    from .runs import read_json, write_json

    try:
        state = read_json(run / "state.json")
    except UserError:  # stopped before training began
        return 0
    try:
        write_json(run / "state.json", {**state, "status": status})
    except OSError:
        pass  # state.json still names the last finished epoch and its checkpoint
    return state.get("epochs_done", 0)


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
    from .distribute import cluster_from_flags
    from .runs import open_run_dir, read_json, remove_partial_files
    from .spec import dump_spec, load_spec

    cluster = cluster_from_flags(workers, task_index)
    flags = [f"{key}={json.dumps(value)}" for key, value in
             (("train.epochs", epochs), ("runtime.device", device), ("runtime.distribute", distribute),
              ("name", name)) if value is not None]
    if resume_dir:
        run = open_run_dir(resume_dir)
        state = read_json(run / "state.json")
        loaded = load_spec(run / "spec.yaml", flags)
        if spec:
            asked = load_spec(spec, [*overrides, *flags]).model_copy(update={"name": loaded.name})
            if asked != loaded:
                raise UserError(f"{run}: refusing to resume with a different spec (only --epochs, --device and "
                                f"--distribute may change):\n{_spec_diff(dump_spec(loaded), dump_spec(asked))}")
        if state.get("status") == "finished" and state.get("epochs_done", 0) >= loaded.train.epochs:
            raise UserError(f"{run}: all {loaded.train.epochs} epochs are done; pass --epochs N to train further")
        data_dir = state["data_dir"] = data_dir or state.get("data_dir")
        remove_partial_files(run)
    elif not spec:
        raise click.UsageError("give a SPEC to train, or --resume RUN_DIR")
    else:
        loaded = load_spec(spec, [*overrides, *flags])
        run = state = None
    try:
        run, metrics = _train(loaded, data_dir, runs_root, overrides, run, state, cluster)
    except KeyboardInterrupt:
        sys.exit(130)
    if metrics is None:
        sys.exit(1)
    test = metrics["test"]
    seconds = sum(metrics["seconds_per_epoch"])
    weights = f" | weights {metrics['weights_sha256']}" if loaded.runtime.distribute == "multi_worker" else ""
    click.echo(
        f"test accuracy {test['accuracy']:.2%}, loss {test['loss']:.4f} | {metrics['epochs_done']} epochs in "
        f"{seconds:.1f} s, {metrics['images_per_second']:,.0f} images/s{weights} | run {run} | tensorboard --logdir {run}"
    )


def _train(loaded, data_dir, runs_root, overrides=(), run=None, state=None, cluster=None):
    """Train `loaded` in a new run directory (or resume `run` from `state`): (run, metrics), metrics None when
    the loss became NaN (the run is kept, marked failed). Ctrl-C marks the run interrupted and re-raises.
    A multi_worker worker other than the chief trains in step and exits here, writing no run."""
    from .runs import create_run_dir, write_text
    from .spec import dump_spec
    from .train import TrainingFailed, fit as train, prepare

    try:
        prepared = prepare(loaded, data_dir, cluster)
    except KeyboardInterrupt:
        click.echo("\ninterrupted before training began; nothing was written", err=True)
        raise
    if state is None:
        state = {"status": "running", "epochs_done": 0, "history": [], "data_dir": data_dir,
                 "overrides": list(overrides)}
    if not prepared[0].is_chief:
        _fit_worker(loaded, run, prepared, state)
        sys.exit(0)
    if run is None:
        run = create_run_dir(runs_root, loaded.name)
    try:
        write_text(run / "spec.yaml", dump_spec(loaded))
        return run, train(loaded, run, prepared, state)
    except KeyboardInterrupt:
        done = _mark_stopped(run, "interrupted")
        click.echo(f"\ninterrupted after epoch {done}; resume with: mnist-keras fit --resume {run}", err=True)
        raise
    except TrainingFailed as err:
        click.echo(f"error: {err}", err=True)
        return run, None
    except OSError as err:  # a full disk, a folder made read-only, a removed run directory
        done = _mark_stopped(run, "failed")
        click.echo(f"error: cannot write {err.filename or run}: {err.strerror or err}; training stopped after "
                   f"epoch {done}, whose checkpoint is kept. Free some space (or fix the folder), then resume "
                   f"with: mnist-keras fit --resume {run}", err=True)
        sys.exit(1)


@main.command()
@click.argument("spec")
@click.option("--grid", "grids", multiple=True, required=True, metavar="PATH=V1,V2,...",
              help="Values to try for one spec path, e.g. --grid train.optimizer.learning_rate=0.1,0.01; "
                   "repeat for more paths: every combination is trained.")
@overrides_option
@click.option("--random", "sample", type=click.IntRange(min=1), metavar="N",
              help="Train N combinations drawn at random instead of all of them.")
@click.option("--seed", default=0, show_default=True, help="Seed of the --random draw.")
@click.option("--epochs", type=click.IntRange(min=1), help="Train each run for this many epochs.")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (IDX or .npz), tried first.")
@click.option("--runs", "runs_root", default="runs", show_default=True, help="The folder that holds run directories.")
def sweep(spec, grids, overrides, sample, seed, epochs, data_dir, runs_root):
    """Train SPEC once per combination of --grid values, one run after another; rank them by validation accuracy.

    Every run is a normal run directory; its grid values are logged as hyperparameters, so
    `tensorboard --logdir RUNS` compares them in the HParams dashboard.
    """
    from .spec import load_spec
    from .sweep import combinations, ranked_table

    combos = combinations(grids, sample, seed)
    flags = [f"train.epochs={epochs}"] if epochs else []
    loaded, problems = [], []
    for combo in combos:  # every combination is checked before the first one trains
        try:
            loaded.append(load_spec(spec, [*overrides, *combo, *flags]))
        except UserError as err:
            problems += [m for m in err.messages if m not in problems]
    if problems:
        raise UserError(*problems)
    results = []
    for number, (combo, one) in enumerate(zip(combos, loaded), 1):
        click.echo(f"sweep {number}/{len(combos)}: {' '.join(combo)}", err=True)
        try:
            run, _ = _train(one, data_dir, runs_root, [*overrides, *combo])
        except KeyboardInterrupt:
            if results:
                click.echo(ranked_table(results))
            sys.exit(130)
        results.append((combo, run))
    click.echo(ranked_table(results))
    click.echo(f"compare them: tensorboard --logdir {runs_root}")


@main.command()
@click.argument("root", default="runs", required=False)
def runs(root):
    """A table of the runs under ROOT (default: runs): name, start, epochs, accuracies, state, directory."""
    from .catalog import COLUMNS, find_runs, format_table, summarize

    found = find_runs(root)
    if not found:
        raise UserError(f"{root}: no run directories here")
    click.echo(format_table([summarize(run) for run in found], COLUMNS))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", type=click.Path(file_okay=False),
              help="The folder to write to (default: RUN_DIR/report for one run; required for several).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: each run's).")
def report(run_dirs, out, data_dir):
    """Learning curves, test confusion matrix, per-class accuracy and an HTML page for one or several runs."""
    from pathlib import Path

    from .report import build_report

    if out is None and len(run_dirs) > 1:
        raise click.UsageError("give --out DIR for a report on several runs")
    index = build_report(list(run_dirs), Path(out or Path(run_dirs[0]) / "report"), data_dir)
    click.echo(f"wrote {index} and its figures ({len(run_dirs)} run{'s' if len(run_dirs) > 1 else ''})")


def _fit_worker(spec, chief_run, prepared: tuple, state: dict) -> None:
    """Train as a worker other than the chief of a multi_worker cluster: in step with the chief, writing
    nothing into any run directory."""
    from .distribute import scratch_run_dir
    from .train import TrainingFailed, fit as train

    described = prepared[0].described
    with scratch_run_dir(chief_run) as scratch:
        try:
            metrics = train(spec, scratch, prepared, state)
        except TrainingFailed:
            click.echo(f"error: {described}: the loss became NaN; the chief's run keeps the last good checkpoint", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
    test = metrics["test"]
    click.echo(f"{described}: test accuracy {test['accuracy']:.2%}, loss {test['loss']:.4f}, weights "
               f"{metrics['weights_sha256']} | the chief writes the run")


@main.command()
def devices():
    """What TensorFlow sees: CPUs, and GPUs with their memory and compute capability."""
    from .distribute import device_lines

    for line in device_lines():
        click.echo(line)


@main.command()
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: the run's).")
@click.option("--spec", "spec_file", help="The spec the model was trained with (default: the run's spec.yaml).")
def evaluate(target, data_dir, spec_file):
    """Test-set loss and accuracy of a trained model."""
    from .data import load_arrays, make_pipelines
    from .inference import find_model, load_model

    spec, model_file, state = find_model(target, spec_file)
    arrays = load_arrays(spec.data, data_dir or state.get("data_dir"))
    test = make_pipelines(spec, arrays).test
    model = load_model(model_file)
    result = model.evaluate(test, verbose=0, return_dict=True)
    source = arrays.provenance
    click.echo(f"{model_file}: test accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f} "
               f"on {len(arrays.x_test):,} {source['dataset']} test images ({source['source']})")


@main.command()
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.argument("images", nargs=-1, required=True)
@click.option("--spec", "spec_file", help="The spec the model was trained with (default: the run's spec.yaml).")
def predict(target, images, spec_file):
    """Classify image files (PNG, JPEG, GIF, BMP; any size, gray or colour).

    Each image is made MNIST-like before the spec's own preprocessing: converted to gray (transparency
    laid over white), resized as a whole to the dataset's image size, and inverted when it is dark ink
    on a light background, since MNIST digits are light on dark.
    """
    import numpy as np

    from .data.pipeline import preprocess_images
    from .data.images import read_images
    from .inference import find_model, load_model

    spec, model_file, _ = find_model(target, spec_file)
    height, width = spec.data.image_shape[:2]
    pixels = read_images(list(images), height, width)
    model = load_model(model_file)
    outputs = model.predict(preprocess_images(spec, pixels), verbose=0)
    for file, out in zip(images, outputs):
        if spec.loss() == "mse":
            click.echo(f"{file}: {round(float(out[0]))} (regression output {float(out[0]):.3f})")
        else:
            probs = np.exp(out - out.max())
            probs /= probs.sum()
            click.echo(f"{file}: {int(probs.argmax())} (probability {probs.max():.3f})")
