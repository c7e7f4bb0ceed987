"""What `mnist-keras data info | preview | check` report, as typed results: the facts of a spec's dataset, a grid
of images as the model sees them, and what is wrong with image files before training.

numpy, matplotlib and TensorFlow load inside the functions, so that importing the API stays light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UserError
from ..spec import Override, Spec, load_spec, validate_spec


def data_spec(spec_file: str | Path | None, dataset: str | Path | None, overrides: Sequence[str],
              data_dir: str | None) -> Spec:
    """The spec file, or a default spec for `dataset` whose output layer fits its classes, with the overrides
    applied (relative paths as `fit` takes them: see load_spec)."""
    extra = (Override(f"data.dataset={json.dumps(str(dataset))}", f"--dataset {dataset}"),) if dataset else ()
    overrides = (*overrides, *extra)
    if spec_file:
        return load_spec(spec_file, overrides, data_dir)

    def default(units: int, **sections):
        return validate_spec({"name": "data", "model": {"layers": ["flatten", {"dense": units}]}, **sections},
                             "(default spec)", {}, overrides, data_dir=data_dir)

    try:  # the classes the data has (data.num_classes, given or inferred): a regression head fits any
        units = default(1, train={"loss": "mse"}, data={"preprocess": {"one_hot": False}}).data.num_classes
    except UserError:
        units = 10  # the second validation says what is wrong
    return default(units)


@dataclass
class SplitFacts:
    """One split as stored: the dtype and shape of its images and labels, and its images per class name."""

    name: str
    images_dtype: str
    images_shape: tuple[int, ...]
    labels_dtype: str
    labels_shape: tuple[int, ...]
    per_class: dict[str, int]


@dataclass
class PixelStats:
    """Minimum, maximum, mean and standard deviation of the training images' pixels."""

    min: float
    max: float
    mean: float
    std: float


@dataclass
class DataInfo:
    """What `data info` shows: where the data comes from (`path` None: keras.datasets; the sha256 of each file
    read), each split as stored, the training pixels as stored and as fed to the model (`fed_before_resize`:
    measured before data.preprocess.resize), the images the spec trains, validates and tests on, how its
    validation images were chosen (`held_out`, in words) and the model's input shape."""

    dataset: str
    source: str
    path: str | None
    sha256: dict[str, str]
    splits: list[SplitFacts]
    stored: PixelStats
    fed: PixelStats
    fed_before_resize: bool
    training: int
    validation: int
    test: int
    held_out: str
    input_shape: tuple[int, ...]


def dataset_info(spec: Spec, data_dir: str | None, notify: Callable[[str], None]) -> DataInfo:
    """The facts of the dataset `spec` reads (loaded into memory; `notify` gets the notes of loading)."""
    import numpy as np

    from .loading import load_arrays
    from .pipeline import data_splits, pixels

    arrays = load_arrays(spec.data, data_dir, notify, spec.seed)
    provenance, prep = arrays.provenance, spec.data.preprocess
    train, validation, _ = data_splits(spec.data, arrays)
    splits = []
    for split, x, y in (("train", arrays.x_train, arrays.y_train), ("validation", arrays.x_val, arrays.y_val),
                        ("test", arrays.x_test, arrays.y_test)):
        if x is not None:
            counts = np.bincount(y, minlength=spec.data.num_classes)
            splits.append(SplitFacts(split, str(x.dtype), x.shape, str(y.dtype), y.shape,
                                     {str(c): int(n) for c, n in zip(arrays.class_names, counts)}))
    x = arrays.x_train.reshape(len(arrays.x_train), -1, arrays.x_train.shape[3] if arrays.x_train.ndim == 4 else 1)
    # a histogram per channel, in slices: exact statistics without large temporary arrays
    hist = sum(np.stack([np.bincount(c.ravel(), minlength=256) for c in np.moveaxis(x[i:i + 4096], -1, 0)], -1)
               for i in range(0, len(x), 4096))
    stored = np.arange(256.0)[:, np.newaxis]
    stats = []
    for values in (stored, pixels(stored, prep)):
        values = np.broadcast_to(values, hist.shape)
        mean = (hist * values).sum() / hist.sum()
        present = values[hist > 0]
        stats.append(PixelStats(float(present.min()), float(present.max()), float(mean),
                                math.sqrt((hist * (values - mean) ** 2).sum() / hist.sum())))
    held_out = "the file's own split" if arrays.x_val is not None else _held_out(provenance, spec.seed)
    return DataInfo(provenance["dataset"], provenance["source"], provenance["path"], provenance.get("sha256", {}),
                    splits, *stats, bool(prep.resize), len(train[1]), len(validation[1]) if validation else 0,
                    len(arrays.x_test), held_out, spec.input_shape())


def _held_out(provenance: dict, seed: int) -> str:
    """How the validation images were chosen: drawn per class from image files (folders.py), the split a
    folder or file holds, else the last training images (pipeline.py)."""
    if "validation" in provenance.get("held_out", {}):
        return f"drawn per class with seed {seed}"
    if "validation" in provenance.get("counts", {}):
        return "the dataset's own validation split"
    return "the last training images"


@dataclass
class DataPreview:
    """What `data preview` wrote: the PNG file, the split its images come from, each image's title (its class
    name, or its value for a regression) in order, the model's input shape, and the values shown black to white."""

    path: Path
    split: str
    titles: list[str]
    input_shape: tuple[int, ...]
    low: float
    high: float


def preview_grid(spec: Spec, out: str | Path, count: int, split: str, data_dir: str | None,
                 notify: Callable[[str], None]) -> DataPreview:
    """Write a PNG grid of the first `count` images of `split` ("train": epoch 0 in training order, or "test")
    as they enter the model, each titled with its label."""
    import numpy as np
    from matplotlib.figure import Figure

    from .loading import load_arrays
    from .pipeline import make_pipelines

    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"{out}: the folder {out.parent} does not exist")
    arrays = load_arrays(spec.data, data_dir, notify, spec.seed)
    pipes = make_pipelines(spec, arrays)
    shown = list((pipes.train if split == "train" else pipes.test).unbatch().take(count).as_numpy_iterator())
    images = np.stack([x for x, _ in shown])
    labels = [y.argmax() if spec.data.preprocess.one_hot else y.item() for _, y in shown]
    titles = [arrays.class_names[int(label)] if spec.loss() != "mse" else f"{label:g}" for label in labels]
    low, high = float(images.min()), float(images.max())
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    figure = Figure(figsize=(1.3 * cols, 1.3 * rows + 0.7), dpi=100, layout="constrained")
    figure.suptitle(f"{spec.data.dataset} {split}: {len(images)} images as the model sees them\n"
                    f"shape {pipes.input_shape}, values {low:.3g} to {high:.3g}", fontsize=10)
    for i, axes in enumerate(figure.subplots(rows, cols, squeeze=False).flat):
        axes.axis("off")
        if i < len(images):
            shown_image = np.clip((images[i] - low) / (high - low or 1), 0, 1) if images.ndim == 4 else images[i]
            axes.imshow(shown_image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axes.set_title(titles[i], fontsize=10)
    try:
        figure.savefig(out)
    except OSError as err:
        raise UserError(f"{out}: cannot write: {err.strerror or err}") from None
    return DataPreview(out, split, titles, pipes.input_shape, low, high)


@dataclass
class DataCheck:
    """What `data check` found. Image files (`decoded`: each decoded whole) give their images per split and class
    (`counts`), the files left out because they do not decode (`skipped`, with data.on_bad_file: skip), a message
    per set of identical images in several splits naming its files (`shared`) and the notes of loading; array
    files are checked on loading and give only their images per split."""

    dataset: str
    source: str
    path: str | None
    decoded: bool
    images: dict[str, int]
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    skipped: list[str]
    shared: list[str]
    notes: list[str]


def check_dataset(spec: Spec, data_dir: str | None) -> DataCheck:
    """Check the dataset `spec` reads: image files decode (each whole), every class has images and training
    images, and which images several splits share; UserError for a problem that stops training."""
    from .loading import load_data
    from .sources import Arrays

    notes: list[str] = []
    found = load_data(spec.data, data_dir, notes.append, spec.seed, decode=True)
    provenance = found.provenance
    if isinstance(found, Arrays):
        images = {split: len(x) for split, x in (("train", found.x_train), ("validation", found.x_val),
                                                 ("test", found.x_test)) if x is not None}
        return DataCheck(spec.data.dataset, provenance["source"], provenance["path"], False, images,
                         found.class_names, {}, [], [], notes)
    counts = provenance["counts"]
    return DataCheck(spec.data.dataset, provenance["source"], provenance["path"], True,
                     {split: sum(c.values()) for split, c in counts.items()}, found.class_names, counts,
                     provenance["skipped"], provenance["shared"], notes)
