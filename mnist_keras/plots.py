"""Figures for people: confusion matrix, misclassified digits, learning curves, per-class accuracy.

numpy and matplotlib only (the object-oriented Figure API with the Agg canvas, no pyplot state), so
TensorBoard callbacks and `mnist-keras report` draw the very same pictures.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

TRAIN_STYLE, VALIDATION_STYLE = "-", "--"


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[i, j]: images of class i predicted as class j."""
    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    return np.bincount(true * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_figure(counts: np.ndarray, title: str) -> Figure:
    """The confusion matrix with every count written in its cell; the diagonal is the correct ones."""
    classes = len(counts)
    figure = Figure(figsize=(6.4, 5.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    shown = axes.imshow(counts, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=max(1, counts.max())))
    for i in range(classes):
        for j in range(classes):
            if counts[i, j]:
                dark = counts[i, j] > 0.35 * counts.max()
                axes.text(j, i, f"{counts[i, j]:,}", ha="center", va="center", fontsize=8,
                          color="white" if dark else ("black" if i == j else "firebrick"))
    axes.set_xticks(range(classes))
    axes.set_yticks(range(classes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    correct = np.trace(counts)
    axes.set_title(f"{title}\n{correct:,} of {counts.sum():,} correct ({correct / max(1, counts.sum()):.2%})",
                   fontsize=10)
    figure.colorbar(shown, ax=axes, shrink=0.8, label="images (square-root colour scale)")
    return figure


def misclassified_figure(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, title: str,
                         columns: int = 8) -> Figure:
    """A grid of (N, H, W[, 1]) images titled 'true -> predicted'."""
    images = images[..., 0] if images.ndim == 4 else images
    count = len(images)
    columns = min(columns, max(1, count))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(1.2 * columns, 1.35 * rows + 0.5), dpi=100, layout="constrained")
    figure.suptitle(title, fontsize=10)
    for i, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axes.axis("off")
        if i < count:
            axes.imshow(images[i], cmap="gray", interpolation="nearest")
            axes.set_title(f"{true[i]} \u2192 {predicted[i]}", fontsize=10, color="firebrick")
    if not count:
        figure.text(0.5, 0.4, "no misclassified images", ha="center")
    return figure


def per_class_figure(counts: np.ndarray, title: str) -> Figure:
    """Accuracy of each true class (recall), with the count of images of that class."""
    totals = counts.sum(axis=1)
    accuracy = np.divide(np.diag(counts), totals, out=np.zeros(len(counts)), where=totals > 0)
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    bars = axes.bar(range(len(counts)), accuracy, color="steelblue")
    axes.bar_label(bars, [f"{a:.1%}\n({n:,})" for a, n in zip(accuracy, totals)], fontsize=7, padding=2)
    axes.set_xticks(range(len(counts)))
    axes.set_xlabel("true class (images of it)")
    axes.set_ylabel("accuracy")
    low = max(0.0, min(accuracy.min() - 0.1, 0.9))
    axes.set_ylim(math.floor(low * 10) / 10, 1.08)
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
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
    accuracy_axes.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    figure.legend(*loss_axes.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=9)
    return figure
