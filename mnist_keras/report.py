"""`mnist-keras report`: PNG figures and an HTML page for one or several runs, without TensorBoard.

The test predictions are computed here from each run's model (model.keras, else its last checkpoint)
and its data, so a report works for any run, finished or not.

Files written to the output folder:
  curves.png                 loss and accuracy per epoch of every run, overlaid
  N-NAME-confusion.png       run N's test confusion matrix
  N-NAME-per-class.png       its accuracy per class
  N-NAME-misclassified.png   its first misclassified test images
  report.json                the confusion matrices and per-class accuracies as numbers
  index.html                 everything above with each run's spec and metrics
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .catalog import best_validation_accuracy, run_status
from .errors import UserError
from .plots import confusion_figure, confusion_matrix, curves_figure, misclassified_figure, per_class_figure
from .runs import open_run_dir, read_json, write_json, write_text

MISCLASSIFIED_SHOWN = 40


def test_predictions(run: Path, data_dir: str | None):
    """(test images, labels, predicted classes, model file) of the run's model on its test set."""
    from .data import load_arrays, make_pipelines
    from .inference import find_model, load_model

    spec, model_file, state = find_model(run)
    arrays = load_arrays(spec.data, data_dir or state.get("data_dir"))
    outputs = load_model(model_file).predict(make_pipelines(spec, arrays).test, verbose=0)
    if spec.loss() == "mse":  # a regression on the digit value: its rounded prediction is its class
        predicted = np.clip(np.round(outputs[:, 0]), 0, spec.data.num_classes - 1).astype(np.int64)
    else:
        predicted = outputs.argmax(axis=-1)
    return arrays.x_test, arrays.y_test.astype(np.int64), predicted, model_file, spec.data.num_classes


def _save(figure, path: Path) -> str:
    try:
        figure.savefig(path)
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror or err}") from None
    return path.name


def _legend(label: str, state: dict) -> str:
    """'tiny/20261125-105842 (learning_rate=0.01)': the run and the last part of each `--set` path."""
    sets = [f"{key.rpartition('.')[2]}={value}" for key, _, value in
            (text.partition("=") for text in state.get("overrides", []))]
    return f"{label} ({', '.join(sets)})" if sets else label


def _metrics_rows(state: dict, metrics: dict, spec_epochs: int | None) -> list[tuple[str, str]]:
    test = metrics.get("test", {})
    best = best_validation_accuracy(state.get("history", []))
    rows = [
        ("state", run_status(state)),
        ("--set", " ".join(state.get("overrides", [])) or "-"),
        ("epochs", f"{state.get('epochs_done', 0)} of {spec_epochs}"),
        ("best validation accuracy", f"{best:.2%}" if best is not None else "-"),
        ("test accuracy (metrics.json)", f"{test['accuracy']:.2%}" if "accuracy" in test else "-"),
        ("test loss", f"{test['loss']:.4f}" if "loss" in test else "-"),
    ]
    if metrics:
        rows += [("seconds per epoch", f"{np.mean(metrics['seconds_per_epoch']):.1f}"),
                 ("images per second", f"{metrics['images_per_second']:,.0f}"),
                 ("device", metrics["device"]),
                 ("data", f"{metrics['data'].get('dataset', '')} ({metrics['data'].get('source', '')})")]
    return rows


def build_report(run_dirs: list[str], out: Path, data_dir: str | None = None) -> Path:
    """Write the report of these runs into `out`; return index.html's path."""
    import yaml

    runs = [open_run_dir(path) for path in run_dirs]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the report folder ({err.strerror})") from None
    labels = [f"{run.parent.name}/{run.name}" for run in runs]
    states = [read_json(run / "state.json") for run in runs]
    curves = _save(curves_figure({_legend(label, s): s.get("history", []) for label, s in zip(labels, states)}),
                   out / "curves.png")
    sections, numbers = [], []
    for index, (run, label, state) in enumerate(zip(runs, labels, states), 1):
        stem = f"{index}-{run.parent.name}"
        images, true, predicted, model_file, classes = test_predictions(run, data_dir)
        counts = confusion_matrix(true, predicted, classes)
        wrong = np.flatnonzero(predicted != true)[:MISCLASSIFIED_SHOWN]
        figures = [
            _save(confusion_figure(counts, f"{label}: test set ({model_file.name})"), out / f"{stem}-confusion.png"),
            _save(per_class_figure(counts, f"{label}: test accuracy per class"), out / f"{stem}-per-class.png"),
            _save(misclassified_figure(images[wrong], true[wrong], predicted[wrong],
                                       f"{label}: first {len(wrong)} misclassified test images (true \u2192 predicted)"),
                  out / f"{stem}-misclassified.png"),
        ]
        totals = counts.sum(axis=1)
        per_class = (np.diag(counts) / np.maximum(totals, 1)).tolist()
        numbers.append({"run": str(run), "model": str(model_file), "test_images": int(counts.sum()),
                        "test_accuracy": float(np.trace(counts) / counts.sum()),
                        "confusion": counts.tolist(), "per_class_accuracy": per_class})
        metrics = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
        spec_text = (run / "spec.yaml").read_text()
        rows = _metrics_rows(state, metrics, yaml.safe_load(spec_text)["train"]["epochs"])
        rows.append(("test accuracy (this report)", f"{numbers[-1]['test_accuracy']:.2%} of {counts.sum():,} images"))
        sections.append(_section(label, run, rows, figures, spec_text))
    write_json(out / "report.json", {"runs": numbers})
    index = out / "index.html"
    write_text(index, _page(labels, curves, sections))
    return index


def _section(label: str, run: Path, rows: list[tuple[str, str]], figures: list[str], spec_text: str) -> str:
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    images = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in figures)
    return (f"<section><h2>{html.escape(label)}</h2><p><code>{html.escape(str(run))}</code></p>"
            f"<table>{table}</table>{images}"
            f"<details><summary>spec.yaml (resolved)</summary><pre>{html.escape(spec_text)}</pre></details></section>")


def _page(labels: list[str], curves: str, sections: list[str]) -> str:
    title = "mnist-keras report: " + ", ".join(labels)
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%;margin:.5em 0;"
             "display:block}table{border-collapse:collapse;margin:.5em 0}th,td{padding:.2em .8em;text-align:left;"
             "border-bottom:1px solid #ddd}pre{background:#f6f6f6;padding:1em;overflow:auto}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<h2>Learning curves</h2><img src=\"{curves}\" alt=\"learning curves\">{''.join(sections)}"
            f"</body></html>\n")
