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
    from .specfile import load_spec

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
    from .specfile import dotted, load_spec

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
    from .specfile import json_schema

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
@click.option("--runs", "runs_root", default="runs", show_default=True, help="The folder that holds run directories.")
@click.option("--name", help="The run's name (overrides the spec's name): runs/NAME/TIMESTAMP.")
@click.option("--resume", "resume_dir", metavar="RUN_DIR", help="Continue an interrupted run from its last checkpoint.")
def fit(spec, overrides, epochs, data_dir, device, runs_root, name, resume_dir):
    """Train SPEC and evaluate it on the test set, in a new run directory."""
    from .runs import create_run_dir, open_run_dir, read_json, remove_partial_files, write_text
    from .specfile import dump_spec, load_spec

    flags = [f"{key}={json.dumps(value)}" for key, value in
             (("train.epochs", epochs), ("runtime.device", device), ("name", name)) if value is not None]
    if resume_dir:
        run = open_run_dir(resume_dir)
        state = read_json(run / "state.json")
        loaded = load_spec(run / "spec.yaml", flags)
        if spec:
            asked = load_spec(spec, [*overrides, *flags]).model_copy(update={"name": loaded.name})
            if asked != loaded:
                raise UserError(f"{run}: refusing to resume with a different spec (only --epochs and --device may "
                                f"change):\n{_spec_diff(dump_spec(loaded), dump_spec(asked))}")
        if state.get("status") == "finished" and state.get("epochs_done", 0) >= loaded.train.epochs:
            raise UserError(f"{run}: all {loaded.train.epochs} epochs are done; pass --epochs N to train further")
        data_dir = state["data_dir"] = data_dir or state.get("data_dir")
        remove_partial_files(run)
    elif not spec:
        raise click.UsageError("give a SPEC to train, or --resume RUN_DIR")
    else:
        loaded = load_spec(spec, [*overrides, *flags])
        state = None

    from .train import TrainingFailed, fit as train, prepare

    prepared = prepare(loaded, data_dir)
    if not resume_dir:
        run = create_run_dir(runs_root, loaded.name)
        state = {"status": "running", "epochs_done": 0, "history": [], "data_dir": data_dir}
    try:
        write_text(run / "spec.yaml", dump_spec(loaded))
        metrics = train(loaded, run, prepared, state)
    except KeyboardInterrupt:
        done = _mark_stopped(run, "interrupted")
        click.echo(f"\ninterrupted after epoch {done}; resume with: mnist-keras fit --resume {run}", err=True)
        sys.exit(130)
    except TrainingFailed as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except OSError as err:  # a full disk, a folder made read-only, a removed run directory
        done = _mark_stopped(run, "failed")
        click.echo(f"error: cannot write {err.filename or run}: {err.strerror or err}; training stopped after "
                   f"epoch {done}, whose checkpoint is kept. Free some space (or fix the folder), then resume "
                   f"with: mnist-keras fit --resume {run}", err=True)
        sys.exit(1)
    test = metrics["test"]
    seconds = sum(metrics["seconds_per_epoch"])
    click.echo(
        f"test accuracy {test['accuracy']:.2%}, loss {test['loss']:.4f} | {metrics['epochs_done']} epochs in "
        f"{seconds:.1f} s, {metrics['images_per_second']:,.0f} images/s | run {run} | tensorboard --logdir {run}"
    )


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
    from .inference import find_model, load_model, read_images

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
