"""`mnist-keras data info | preview | check`: what a spec's data section reads, what the model sees, and
what is wrong with a folder of images before training.

Imports beyond click happen inside the commands, so that `mnist-keras --help` stays fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ..errors import UserError



def _data_options(func):
    func = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                        help="Override a spec value, e.g. --set data.validation=5000.")(func)
    func = click.option("--data-dir", type=click.Path(file_okay=False),
                        help="A folder with the dataset's IDX files (or mnist.npz); tried first.")(func)
    func = click.option("--dataset", help="mnist, fashion_mnist, a folder of IDX files, an .npz file, a folder "
                                          "of class folders or a .csv (default: the spec's, else mnist).")(func)
    return click.argument("spec", required=False)(func)


def _load(spec_file: str | None, dataset: str | None, overrides: tuple[str, ...], data_dir: str | None):
    """The spec file, or a default spec for `dataset` whose output layer fits its classes, with the overrides
    applied (relative paths as `fit` takes them: see load_spec)."""
    from ..spec import Override, load_spec, validate_spec

    extra = (Override(f"data.dataset={json.dumps(dataset)}", f"--dataset {dataset}"),) if dataset else ()
    if spec_file:
        return load_spec(spec_file, overrides + extra, data_dir)

    def default(units: int, **sections):
        return validate_spec({"name": "data", "model": {"layers": ["flatten", {"dense": units}]}, **sections},
                             "(default spec)", {}, overrides + extra, data_dir=data_dir)

    try:  # the classes the data has (data.num_classes, given or inferred): a regression head fits any
        units = default(1, train={"loss": "mse"}, data={"preprocess": {"one_hot": False}}).data.num_classes
    except UserError:
        units = 10  # the second validation says what is wrong
    return default(units)


def _note(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def data():
    """Inspect the data a spec reads: sources, shapes, statistics, and a preview of what the model sees."""


@data.command()
@_data_options
def info(spec, dataset, data_dir, overrides):
    """Source, shapes, dtypes, class counts and pixel statistics of the dataset."""
    import numpy as np

    from .pipeline import data_splits, pixels
    from .loading import load_arrays

    loaded = _load(spec, dataset, overrides, data_dir)
    arrays = load_arrays(loaded.data, data_dir, _note, loaded.seed)
    prov, prep = arrays.provenance, loaded.data.preprocess
    train, validation, _ = data_splits(loaded.data, arrays)
    n_train, n_val = len(train[1]), len(validation[1]) if validation else 0
    click.echo(f"dataset   {prov['dataset']} from {prov['source']}: {prov['path'] or 'keras.datasets'}")
    for name, digest in prov.get("sha256", {}).items():
        click.echo(f"          sha256 {digest}  {name}")
    for split, x, y in (("train", arrays.x_train, arrays.y_train), ("validation", arrays.x_val, arrays.y_val),
                        ("test", arrays.x_test, arrays.y_test)):
        if x is None:
            continue
        click.echo(f"{split:<9} images {x.dtype} {x.shape}, labels {y.dtype} {y.shape}")
        counts = np.bincount(y, minlength=loaded.data.num_classes)
        click.echo("          per class: " + "  ".join(f"{c}: {n:,}" for c, n in zip(arrays.class_names, counts)))
    x = arrays.x_train.reshape(len(arrays.x_train), -1, arrays.x_train.shape[3] if arrays.x_train.ndim == 4 else 1)
    # a histogram per channel, in slices: exact statistics without large temporary arrays
    hist = sum(np.stack([np.bincount(c.ravel(), minlength=256) for c in np.moveaxis(x[i:i + 4096], -1, 0)], -1)
               for i in range(0, len(x), 4096))
    fed = "fed to the model" + (" (before resize)" if prep.resize else "")
    stored = np.arange(256.0)[:, np.newaxis]
    for name, values in (("pixels    stored", stored), (" " * 10 + fed, pixels(stored, prep))):
        values = np.broadcast_to(values, hist.shape)
        mean = (hist * values).sum() / hist.sum()
        std = math.sqrt((hist * (values - mean) ** 2).sum() / hist.sum())
        present = values[hist > 0]
        click.echo(f"{name}: min {present.min():.4g}, max {present.max():.4g}, mean {mean:.4g}, std {std:.4g}")
    held_out = "the file's own split" if arrays.x_val is not None else _held_out(prov, loaded.seed)
    click.echo(f"splits    {n_train:,} training, {n_val:,} validation ({held_out}), "
               f"{len(arrays.x_test):,} test; model input {loaded.input_shape()}")


def _held_out(provenance: dict, seed: int) -> str:
    """How the validation images were chosen: drawn per class from image files (folders.py), the split a
    folder or file holds, else the last training images (pipeline.py)."""
    if "validation" in provenance.get("held_out", {}):
        return f"drawn per class with seed {seed}"
    if "validation" in provenance.get("counts", {}):
        return "the dataset's own validation split"
    return "the last training images"


@data.command()
@_data_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The PNG file to write.")
@click.option("--count", default=36, show_default=True, type=click.IntRange(1, 400), help="How many images.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="train: the first images of epoch 0, in training order; test: the first test images.")
def preview(spec, dataset, data_dir, overrides, out, count, split):
    """A grid of images as they enter the model (after preprocessing), each titled with its label."""
    import numpy as np
    from matplotlib.figure import Figure

    from .pipeline import make_pipelines
    from .loading import load_arrays

    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"{out}: the folder {out.parent} does not exist")
    loaded = _load(spec, dataset, overrides, data_dir)
    arrays = load_arrays(loaded.data, data_dir, _note, loaded.seed)
    pipes = make_pipelines(loaded, arrays)
    shown = list((pipes.train if split == "train" else pipes.test).unbatch().take(count).as_numpy_iterator())
    images = np.stack([x for x, _ in shown])
    labels = [y.argmax() if loaded.data.preprocess.one_hot else y.item() for _, y in shown]
    low, high = float(images.min()), float(images.max())
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    figure = Figure(figsize=(1.3 * cols, 1.3 * rows + 0.7), dpi=100, layout="constrained")
    figure.suptitle(f"{loaded.data.dataset} {split}: {len(images)} images as the model sees them\n"
                    f"shape {pipes.input_shape}, values {low:.3g} to {high:.3g}", fontsize=10)
    for i, axes in enumerate(figure.subplots(rows, cols, squeeze=False).flat):
        axes.axis("off")
        if i < len(images):
            shown_image = np.clip((images[i] - low) / (high - low or 1), 0, 1) if images.ndim == 4 else images[i]
            axes.imshow(shown_image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axes.set_title(arrays.class_names[int(labels[i])] if loaded.loss() != "mse" else f"{labels[i]:g}",
                           fontsize=10)
    try:
        figure.savefig(out)
    except OSError as err:
        raise UserError(f"{out}: cannot write: {err.strerror or err}") from None
    click.echo(f"wrote {out} ({len(images)} {split} images from {pipes.input_shape} inputs)")


@data.command()
@_data_options
def check(spec, dataset, data_dir, overrides):
    """Check image files before training: files that do not decode (each decoded whole), empty or missing
    classes, classes left without training images, images shared between splits, and the balance of the
    classes (exit 2 on a problem that stops training)."""
    from .loading import load_data
    from .sources import Arrays

    loaded, notes = _load(spec, dataset, overrides, data_dir), []
    found = load_data(loaded.data, data_dir, notes.append, loaded.seed, decode=True)
    if isinstance(found, Arrays):
        click.echo(f"{loaded.data.dataset}: {len(found.x_train):,} training and {len(found.x_test):,} test images "
                   "from array files, checked on loading")
        return
    prov, counts = found.provenance, found.provenance["counts"]
    click.echo(f"dataset   {prov['dataset']} from {prov['source']}: {prov['path']}")
    width = max(len(name) for name in [*found.class_names, "class", "total"]) + 2
    click.echo("class".ljust(width) + "".join(f"{split:>12}" for split in counts))
    for name in found.class_names + ["total"]:
        cells = (sum(c.values()) if name == "total" else c[name] for c in counts.values())
        click.echo(name.ljust(width) + "".join(f"{n:>12,}" for n in cells))
    for note in notes:
        click.echo(note)
    skipped = f" ({len(prov['skipped'])} skipped)" if prov["skipped"] else ""
    click.echo(f"checked {sum(sum(c.values()) for c in counts.values()):,} images: all decode{skipped}, "
               f"{len(prov['shared'])} shared between splits")
