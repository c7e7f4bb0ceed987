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

    from .pipeline import pixels, split_sizes
    from .loading import load_arrays

    loaded = _load(spec, dataset, overrides, data_dir)
    arrays = load_arrays(loaded.data, data_dir, _note, loaded.seed)
    prov, prep = arrays.provenance, loaded.data.preprocess
    n_train, n_val = split_sizes(loaded.data, len(arrays.x_train))
    click.echo(f"dataset   {prov['dataset']} from {prov['source']}: {prov['path'] or 'keras.datasets'}")
    for name, digest in prov.get("sha256", {}).items():
        click.echo(f"          sha256 {digest}  {name}")
    for split, x, y in (("train", arrays.x_train, arrays.y_train), ("test", arrays.x_test, arrays.y_test)):
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
    click.echo(f"splits    {n_train:,} training, {n_val:,} validation ({_held_out(prov, loaded.seed)}), "
               f"{len(arrays.x_test):,} test; model input {loaded.input_shape()}")


def _held_out(provenance: dict, seed: int) -> str:
    """How the validation images were chosen: drawn per class from image files (folders.py), the split a
    folder or file holds, else the last training images (pipeline.py)."""
    if "validation" in provenance.get("held_out", {}):
        return f"drawn per class with seed {seed}"
    if "validation" in provenance.get("counts", {}):
        return "the dataset's own validation split"
    return "the last training images"
