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
from typing import Callable

import numpy as np

from ..errors import UserError
from ..runs.files import write_json, write_text
from ..runs.run import Run, open_run
from ..spec import dump_spec
from ..spec.targets import shown_target
from .plots import confusion_figure, confusion_matrix, curves_figure, misclassified_figure, per_class_figure, \
    save_figure

MISCLASSIFIED_SHOWN = 40


def test_predictions(run: Run, data_dir: str | None, notify: Callable[[str], None]):
    """(test images, labels, predicted classes, model file, class names) of the run's model on its test set."""
    from ..data import load_arrays, make_pipelines
    from ..model.objects import load_run_model

    spec, model_file = run.spec, run.model_file()
    arrays = load_arrays(spec.data, data_dir or run.state.data_dir, notify, spec.seed)
    outputs = load_run_model(run).predict(make_pipelines(spec, arrays).test, verbose=0)
    if spec.loss() == "mse":  # a regression on the digit value: its rounded prediction is its class
        predicted = np.clip(np.round(outputs[:, 0]), 0, spec.data.num_classes - 1).astype(np.int64)
    else:
        predicted = outputs.argmax(axis=-1)
    names = run.class_names
    return arrays.x_test, arrays.y_test.astype(np.int64), predicted, model_file, names


def _legend(label: str, run: Run) -> str:
    """'tiny/20261125-105842 (learning_rate=0.01)': the run and the last part of each overridden path."""
    sets = [f"{path.rpartition('.')[2]}={value}" for path, value in run.state.overrides.items()]
    return f"{label} ({', '.join(sets)})" if sets else label


def _metrics_rows(run: Run) -> list[tuple[str, str]]:
    state, metrics = run.state, run.metrics
    test = metrics.test if metrics else None
    best = state.best_validation_accuracy()
    rows = [
        ("state", state.shown_status(run.path)),
        ("--set", " ".join(f"{path}={value}" for path, value in state.overrides.items()) or "-"),
        ("epochs", f"{state.epochs_done} of {run.spec.train.epochs}"),
        ("best validation accuracy", f"{best:.2%}" if best is not None else "-"),
        ("test accuracy (metrics.json)", f"{test.accuracy:.2%}" if test and test.accuracy is not None else "-"),
        ("test loss", f"{test.loss:.4f}" if test and test.loss is not None else "-"),
    ]
    if state.range_test:
        rows.append(("learning rate", f"{state.range_test.rate:.3g}, found by a range test ({state.range_test.rule})"))
    reached = state.time_to_target()
    if reached:
        targets = ", ".join(shown_target(metric, target) for metric, target in (run.spec.train.stop_at or {}).items())
        rows.append(("time to target", f"{reached.seconds:.1f} s of training, epoch {reached.epoch} ({targets})"))
    elif state.stopped:
        rows.append(("stopped", f"after epoch {state.stopped.epoch} ({state.stopped.reason()})"))
    if metrics:
        rows += [("seconds per epoch", f"{np.mean(metrics.seconds_per_epoch):.1f}"),
                 ("images per second", f"{metrics.images_per_second:,.0f}"),
                 ("device", metrics.device),
                 ("data", f"{metrics.data.dataset or ''} ({metrics.data.source or ''})")]
    return rows


def build_report(run_dirs: list[str], out: Path, data_dir: str | None = None,
                 notify: Callable[[str], None] = lambda message: None) -> Path:
    """Write the report of these runs into `out`; return index.html's path."""
    runs = [open_run(path) for path in run_dirs]
    if out.is_symlink():
        raise UserError(f"{out}: a symbolic link; the report is written into a real folder only")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the report folder ({err.strerror})") from None
    labels = [f"{run.path.parent.name}/{run.path.name}" for run in runs]
    curves = save_figure(curves_figure({_legend(label, run): [h.logged() for h in run.state.history]
                                  for label, run in zip(labels, runs)}),
                   out / "curves.png")
    sections, numbers = [], []
    for index, (run, label) in enumerate(zip(runs, labels), 1):
        stem = f"{index}-{run.path.parent.name}"
        images, true, predicted, model_file, names = test_predictions(run, data_dir, notify)
        counts = confusion_matrix(true, predicted, len(names))
        wrong = np.flatnonzero(predicted != true)[:MISCLASSIFIED_SHOWN]
        figures = [
            save_figure(confusion_figure(counts, f"{label}: test set ({model_file.name})", names), out / f"{stem}-confusion.png"),
            save_figure(per_class_figure(counts, f"{label}: test accuracy per class", names), out / f"{stem}-per-class.png"),
            save_figure(misclassified_figure(images[wrong], true[wrong], predicted[wrong],
                                       f"{label}: first {len(wrong)} misclassified test images (true \u2192 predicted)",
                                       names=names),
                  out / f"{stem}-misclassified.png"),
        ]
        totals = counts.sum(axis=1)
        per_class = (np.diag(counts) / np.maximum(totals, 1)).tolist()
        numbers.append({"run": str(run.path), "model": str(model_file), "test_images": int(counts.sum()),
                        "test_accuracy": float(np.trace(counts) / counts.sum()),
                        "classes": names, "confusion": counts.tolist(), "per_class_accuracy": per_class})
        rows = _metrics_rows(run)
        rows.append(("test accuracy (this report)", f"{numbers[-1]['test_accuracy']:.2%} of {counts.sum():,} images"))
        sections.append(_section(label, run.path, rows, figures, dump_spec(run.spec)))
    write_json(out / "report.json", {"runs": numbers})
    index = out / "index.html"
    write_text(index, _page(labels, curves, sections))
    return index


def _section(label: str, run_dir: Path, rows: list[tuple[str, str]], figures: list[str], spec_text: str) -> str:
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    images = "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in figures)
    return (f"<section><h2>{html.escape(label)}</h2><p><code>{html.escape(str(run_dir))}</code></p>"
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
