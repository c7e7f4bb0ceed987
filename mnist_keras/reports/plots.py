"""Figures for people: confusion matrix, misclassified digits, learning curves, per-class accuracy, the
learning-rate range test.

numpy and matplotlib only (the object-oriented Figure API with the Agg canvas, no pyplot state), so
TensorBoard callbacks and `mnist-keras report` draw the very same pictures.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ..errors import UserError
from ..runs.files import atomic_write

TRAIN_STYLE, VALIDATION_STYLE = "-", "--"
GRAY = colormaps["gray"].with_extremes(bad="white")  # the gaps between tiles


def save_figure(figure: Figure, path: Path) -> str:
    """Write `figure` to `path` (its suffix names the format), atomically; its file name. UserError when the file
    cannot be written."""
    try:
        atomic_write(path, figure.savefig)
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror or err}") from None
    return path.name


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[i, j]: images of class i predicted as class j."""
    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    return np.bincount(true * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def rgba(figure: Figure) -> np.ndarray:
    """The figure drawn into an (H, W, 4) uint8 array."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def _class_ticks(axes, names: list[str] | None, classes: int, y: bool = True) -> None:
    """Class names (else indices) on the x axis, and on the y axis too when `y`."""
    labels = [name[:14] for name in names] if names else [str(i) for i in range(classes)]
    rotation = 45 if max(map(len, labels)) > 2 else 0
    size = 11 if classes <= 10 else 7  # readable at the size of a TensorBoard image card
    axes.set_xticks(range(classes), labels, rotation=rotation, ha="right" if rotation else "center", fontsize=size)
    if y:
        axes.set_yticks(range(classes), labels, fontsize=size)


def confusion_figure(counts: np.ndarray, title: str, names: list[str] | None = None) -> Figure:
    """The confusion matrix with every count written in its cell; the diagonal is the correct ones."""
    classes = len(counts)
    figure = Figure(figsize=(6.4, 5.6), dpi=100)
    figure.subplots_adjust(left=0.14, right=0.98, bottom=0.15, top=0.9)  # room for class names
    axes = figure.subplots()
    shown = axes.imshow(counts, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=max(1, counts.max())))
    for i in range(classes):
        for j in range(classes):
            if counts[i, j]:
                dark = counts[i, j] > 0.35 * counts.max()
                axes.text(j, i, f"{counts[i, j]:,}", ha="center", va="center", fontsize=11 if classes <= 10 else 7,
                          color="white" if dark else ("black" if i == j else "firebrick"))
    _class_ticks(axes, names, classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    correct = np.trace(counts)
    axes.set_title(f"{title}\n{correct:,} of {counts.sum():,} correct ({correct / max(1, counts.sum()):.2%})",
                   fontsize=10)
    figure.colorbar(shown, ax=axes, shrink=0.8, label="images (square-root colour scale)")
    return figure


def misclassified_figure(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, title: str,
                         columns: int = 8, names: list[str] | None = None) -> Figure:
    """(N, H, W[, 1 or 3]) images tiled in one picture, each captioned 'true -> predicted' (one axes: fast)."""
    if images.ndim == 4 and images.shape[-1] == 3:
        images = images.mean(axis=-1)  # shown in gray: the captions carry the classes
    images = images[..., 0] if images.ndim == 4 else images
    label = (lambda i: names[i][:10]) if names else str
    count = len(images)
    columns = min(columns, max(1, count))
    rows = max(1, math.ceil(count / columns))
    height, width = images.shape[1:3] if count else (28, 28)
    caption, gap = height // 2, max(2, width // 7)
    cell_height, cell_width = height + caption, width + gap
    mosaic = np.full((rows * cell_height, columns * cell_width - gap), np.nan)
    for i, image in enumerate(images):
        top, left = (i // columns) * cell_height + caption, (i % columns) * cell_width
        mosaic[top:top + height, left:left + width] = image
    tile_inches = 1.1
    figure = Figure(figsize=(tile_inches * columns + 0.2, tile_inches * rows * cell_height / cell_width + 0.6), dpi=100)
    axes = figure.add_axes((0.01, 0.01, 0.98, 1 - 0.5 / figure.get_figheight()))
    axes.imshow(mosaic, cmap=GRAY, interpolation="nearest", vmin=images.min() if count else 0,
                vmax=images.max() if count else 1)
    for i in range(count):
        axes.text((i % columns) * cell_width + width / 2, (i // columns) * cell_height + caption * 0.55,
                  f"{label(true[i])} \u2192 {label(predicted[i])}", ha="center", va="center", fontsize=12,
                  color="firebrick")
    if not count:
        axes.text(mosaic.shape[1] / 2, mosaic.shape[0] / 2, "no misclassified images", ha="center")
    axes.axis("off")
    figure.suptitle(title, fontsize=10)
    return figure


def per_class_figure(counts: np.ndarray, title: str, names: list[str] | None = None) -> Figure:
    """Accuracy of each true class (recall), with the count of images of that class."""
    totals = counts.sum(axis=1)
    accuracy = np.divide(np.diag(counts), totals, out=np.zeros(len(counts)), where=totals > 0)
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    bars = axes.bar(range(len(counts)), accuracy, color="steelblue")
    axes.bar_label(bars, [f"{a:.1%}\n({n:,})" for a, n in zip(accuracy, totals)], fontsize=7, padding=2)
    _class_ticks(axes, names, len(counts), y=False)
    axes.set_xlabel("true class (images of it)")
    axes.set_ylabel("accuracy")
    bottom = math.floor(max(0.0, min(accuracy.min() - 0.1, 0.9)) * 10) / 10
    axes.set_ylim(bottom, 1.08)  # room above 100% for the labels
    axes.set_yticks(np.linspace(bottom, 1.0, round((1.0 - bottom) * 10) + 1))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_title(title, fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    return figure


def curves_figure(histories: dict[str, list[dict]]) -> Figure:
    """Loss and accuracy per epoch, train solid and validation dashed, one colour per run."""
    figure = Figure(figsize=(11, 4.4 + 0.25 * len(histories)), dpi=100, layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for (label, history), colour in zip(histories.items(), colours):
        epochs = [h["epoch"] for h in history]
        for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            for prefix, style, split in (("", TRAIN_STYLE, "train"), ("val_", VALIDATION_STYLE, "validation")):
                points = [(e, h[prefix + metric]) for e, h in zip(epochs, history) if prefix + metric in h]
                if points:
                    x, y = zip(*points)
                    axes.plot(x, y, style, color=colour, marker="o", markersize=3, label=f"{label} ({split})")
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric}: train (solid) and validation (dashed)", fontsize=10)
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    figure.legend(*loss_axes.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=9)
    return figure


def lr_find_figure(rates: list[float], losses: list[float], smoothed: list[float], suggestion: float,
                   rule: str) -> Figure:
    """The range test: each step's loss (faint) and the smoothed loss against the learning rate on a log axis, the
    suggested rate marked; the loss axis ends a little above the smoothed loss, so a diverging step cannot flatten
    the curve."""
    figure = Figure(figsize=(7, 4.4), dpi=100, layout="constrained")
    axes = figure.subplots()
    axes.plot(rates, losses, color="C0", alpha=0.3, linewidth=1, label="loss of each step")
    axes.plot(rates, smoothed, color="C0", linewidth=2, label="smoothed loss")
    axes.axvline(suggestion, color="firebrick", linestyle="--", label=f"suggested {suggestion:.3g}")
    low = min(value for value in [*losses, *smoothed] if math.isfinite(value))
    top = max(value for value in smoothed if math.isfinite(value))
    span = top - low or abs(top) or 1.0
    axes.set_ylim(low - 0.05 * span, top + 0.1 * span)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(f"learning-rate range test: suggested {suggestion:.3g}\n({rule})", fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=9)
    return figure
