"""The Python API: the steps of the command line as functions that return values and raise typed errors
(UserError, TrainingFailed, Interrupted), printing nothing unless given a Reporter.

    import mnist_keras as mk
    spec = mk.load_spec("model_specs/lenet5.yaml", overrides=["train.epochs=1"])
    model = mk.build_model(spec)          # the keras.Sequential, not yet compiled
    run = mk.fit(spec, runs="runs")       # an mk.Run: run.path, run.metrics["test"]["accuracy"], run.load_model()
    run = mk.resume(mk.open_run(run.path), epochs=2)
"""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import Interrupted, TrainingFailed, UserError
from .runs.files import create_run_dir, remove_partial_files, write_text
from .runs.record import RunState, write_state
from .runs.run import Run, model_target, open_run
from .spec import Spec, dotted, dump_spec, parse_override
from .spec import load_spec as _load_spec
from .spec.schema import absolute


@dataclass
class Reporter:
    """Where progress goes: `echo` takes each message line (None: silent, the default in Python) and
    `verbose` is Keras' progress display (0 none, 1 a bar, 2 a line per epoch)."""

    echo: Callable[[str], None] | None = None
    verbose: int = 0

    def __call__(self, message: str) -> None:
        if self.echo:
            self.echo(message)


def load_spec(path: str | Path, overrides: Sequence[Any] = (), data_dir: str | None = None) -> Spec:
    """Read and validate a spec file with `--set`-style overrides ("train.epochs=3"); UserError lists every
    problem at file:line:col. The overrides are remembered (spec.overrides) for the run record. Relative paths
    in the file are inside its folder, those of overrides inside the current folder; a relative data.dataset is
    inside `data_dir` (--data-dir) when one is given."""
    spec = _load_spec(path, overrides, data_dir)
    spec._overrides = {dotted(key): value for key, value in
                       (parse_override(text) for text in overrides)}
    return spec


def build_model(spec: Spec):
    """The uncompiled keras.Sequential the spec describes."""
    from .builder import build_model as build

    return build(spec)


def _with(spec: Spec, overrides: Sequence[str] = (), **values: Any) -> Spec:
    """The spec with `--set` overrides and spec-path values (None leaves a value as it is), validated again."""
    from .spec import validate_spec

    flags = [*overrides, *(f"{path}={json.dumps(value)}" for path, value in values.items() if value is not None)]
    if not flags:
        return spec
    changed = validate_spec(spec.model_dump(mode="json"), f"spec {spec.name}", {}, flags)
    changed._overrides = dict(spec.overrides)
    changed.data._places = spec.data._places  # messages about the data still name the spec file's lines
    return changed


def fit(spec: Spec, runs: str | Path = "runs", *, data_dir: str | None = None, device: str | None = None,
        distribute: str | None = None, cluster: dict | None = None, reporter: Reporter | None = None) -> Run:
    """Train `spec` in a new run directory under `runs`, evaluate it on the test set, and return the Run.
    `device` and `distribute` override the spec's runtime; `cluster` is a TF_CONFIG mapping for multi_worker."""
    spec = _with(spec, **{"runtime.device": device, "runtime.distribute": distribute})
    state = RunState(status="running", epochs_done=0, data_dir=data_dir and absolute(data_dir),
                     overrides=spec.overrides)
    return _train(spec, None, runs, state, reporter or Reporter(), cluster)


def resume(run: Run | str | Path, epochs: int | None = None, *, data_dir: str | None = None,
           device: str | None = None, distribute: str | None = None, overrides: Sequence[str] = (),
           spec: Spec | None = None,
           cluster: dict | None = None, reporter: Reporter | None = None, callbacks: Sequence = ()) -> Run:
    """Continue a run from its last checkpoint, to `epochs` epochs in all (default: the spec's). Only the
    epochs and where it runs may change: `overrides` or a `spec` that change anything else are refused.
    `callbacks`: Keras callbacks run after the run's own each epoch (a sweep's pruning)."""
    run = run if isinstance(run, Run) else open_run(run)
    if run.path is None:
        raise UserError("this worker wrote no run: resume the chief's run directory")
    state, current = run.state, run.spec
    if state.status == "running" and state.process_alive():
        raise UserError(f"{run.path}: process {state.pid} on this machine is still training this run; stop it "
                        "first (Ctrl-C keeps its last epoch), or wait for it to finish")
    if epochs is not None and epochs < state.epochs_done:
        raise UserError(f"{run.path}: {state.epochs_done} epochs are done already; --epochs must be at least that")
    where = {"train.epochs": epochs, "runtime.device": device, "runtime.distribute": distribute}
    new = _with(current, **where)
    if overrides or spec is not None:
        asked = _with(spec or current, overrides, name=current.name, **where)
        if asked.model_dump() != new.model_dump():
            raise UserError(f"{run.path}: refusing to resume with a different spec (only --epochs, --device and "
                            f"--distribute may change):\n{_diff(dump_spec(new), dump_spec(asked))}")
    if state.status == "finished" and state.epochs_done >= new.train.epochs:
        raise UserError(f"{run.path}: the run finished after {state.epochs_done} epochs; pass --epochs N "
                        f"(more than {state.epochs_done}) to train further")
    state.data_dir = absolute(data_dir) if data_dir else state.data_dir
    remove_partial_files(run.path)
    grows = current.train.epochs if new.train.epochs > current.train.epochs else None
    return _train(new, run.path, None, state, reporter or Reporter(), cluster, grows, tuple(callbacks))


def _diff(old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "run's spec", "new spec", n=0, lineterm="")
    return "\n".join(line for line in lines if not line.startswith("@@"))


def _train(spec: Spec, run: Path | None, runs: str | Path | None, state: RunState, reporter: Reporter,
           cluster: dict | None, grows: int | None = None, callbacks: tuple = ()) -> Run:
    """Prepare, then train in `run` (a new directory under `runs` when None); the typed errors on failure."""
    from .train.loop import prepare, train_run

    try:
        prepared = prepare(spec, state.data_dir, cluster, reporter)
    except KeyboardInterrupt:
        raise Interrupted("interrupted before training began; nothing was written") from None
    if not prepared.placement.is_chief:
        return _train_worker(spec, run, prepared, state, reporter)
    new, run = run is None, run or create_run_dir(runs, spec.name)
    try:
        write_text(run / "spec.yaml", dump_spec(spec))
        metrics = train_run(spec, run, prepared, state, reporter, reporter.verbose, grows, callbacks)
    except UserError:  # refused before the first epoch began (a backbone's weights, the data's batches)
        if new and not (run / "state.json").exists():
            shutil.rmtree(run, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        _mark(run, state, "interrupted")
        raise Interrupted(f"interrupted after epoch {state.epochs_done}; resume with: "
                          f"mnist-keras fit --resume {run}") from None
    except OSError as err:  # a full disk, a folder made read-only, a removed run directory
        _mark(run, state, "failed")
        raise TrainingFailed(f"cannot write {err.filename or run}: {err.strerror or err}; training stopped after "
                             f"epoch {state.epochs_done}, whose checkpoint is kept. Free some space (or fix the "
                             f"folder), then resume with: mnist-keras fit --resume {run}") from None
    return Run(run, spec, state, metrics.model_dump(mode="json"))


def _mark(run: Path, state: RunState, status: str) -> None:
    """Record why the run stopped, if the disk still allows (state.json already names the last epoch)."""
    if state.epochs_done or (run / "state.json").exists():
        state.status = status
        try:
            write_state(run, state)
        except OSError:
            pass


def _train_worker(spec: Spec, chief_run: Path | None, prepared, state: RunState, reporter: Reporter) -> Run:
    """Train as a multi_worker worker other than the chief: in step with it, in a scratch copy of its run."""
    from .train.distribute import scratch_run_dir
    from .train.loop import train_run

    with scratch_run_dir(chief_run) as scratch:
        try:
            metrics = train_run(spec, scratch, prepared, state, reporter, reporter.verbose)
        except TrainingFailed:
            raise TrainingFailed(f"{prepared.placement.described}: the loss became NaN; the chief's run keeps the "
                                 "last good checkpoint") from None
        except KeyboardInterrupt:
            raise Interrupted(f"{prepared.placement.described}: interrupted") from None
    return Run(None, spec, state, metrics.model_dump(mode="json"))


def evaluate(target: str | Path, *, data_dir: str | None = None, spec_file: str | None = None,
             reporter: Reporter | None = None) -> dict[str, Any]:
    """Test-set metrics of a run's model (or a .keras file): accuracy, loss, per_class (name -> images and
    accuracy), images, dataset, source, model."""
    from .data import load_arrays, make_pipelines
    from .train.objects import load_model

    spec, model_file, run = model_target(target, spec_file)
    arrays = load_arrays(spec.data, data_dir or (run and run.state.data_dir), reporter or Reporter(), spec.seed)
    model = load_model(model_file, spec)
    test = make_pipelines(spec, arrays).test
    result = {k: float(v) for k, v in model.evaluate(test, verbose=0, return_dict=True).items()}
    if spec.loss() != "mse":  # accuracy of each true class, by name
        names = (run and run.state.classes) or arrays.class_names or [str(i) for i in range(spec.data.num_classes)]
        predicted = model.predict(test, verbose=0).argmax(axis=-1)
        result["per_class"] = {name: {"images": int((arrays.y_test == i).sum()), "accuracy":
                                      float((predicted[arrays.y_test == i] == i).mean()) if (arrays.y_test == i).any()
                                      else None} for i, name in enumerate(names)}
    return {**result, "images": len(arrays.x_test), "model": str(model_file),
            "dataset": arrays.provenance["dataset"], "source": arrays.provenance["source"]}


def predict(target: str | Path, images: Sequence[str], *, spec_file: str | None = None
            ) -> tuple[list[dict[str, Any]], list[str]]:
    """Classify image files with a run's model: ([{file, class (its name), probability} or {file, value} for a
    regression], [a message per unreadable file]). Images are decoded as the run's data set was (MNIST-like
    for digit data, else to data.image_shape by data.preprocess.fit); missing files are found before
    TensorFlow loads."""
    import numpy as np

    from .data.images import check_image_files, decoding_fit, read_images

    missing = check_image_files(list(images))
    if len(missing) == len(images):
        raise UserError(*missing)
    spec, model_file, run = model_target(target, spec_file)
    fit = decoding_fit(spec.data, run and (run.state.data or {}).get("source"))  # as the data set's own images
    pixels, files, problems = read_images(list(images), spec.data.image_shape, fit)
    if not files:
        return [], problems
    from .data.pipeline import preprocess_images
    from .train.objects import load_model

    outputs = load_model(model_file, spec).predict(preprocess_images(spec, pixels), verbose=0)
    if spec.loss() == "mse":
        return [{"file": f, "value": float(out[0])} for f, out in zip(files, outputs)], problems
    probabilities = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = (run and run.state.classes) or [str(i) for i in range(outputs.shape[1])]
    if len(names) != outputs.shape[1]:
        raise UserError(f"{model_file}: the model gives {outputs.shape[1]} classes, the run's class list "
                        f"{len(names)}")
    return [{"file": f, "class": names[int(p.argmax())], "probability": float(p.max())}
            for f, p in zip(files, probabilities)], problems


def export(run: Run | str | Path, fmt: str = "savedmodel", quantize: str | None = None, *,
           out: str | Path | None = None, data_dir: str | None = None, reporter: Reporter | None = None):
    """Export a run's model for deployment ("savedmodel", "litert" with quantize None/"float16"/"int8", or
    "onnx") into OUT/NAME (default RUN_DIR/export/NAME) and check it against the Keras model on the test set;
    returns a deploy.export.Exported (path, parity figures). UserError for bad input, ExportFailed (exit 1)
    when the export misses its parity bar."""
    from .deploy.export import export_run

    return export_run(run.path if isinstance(run, Run) else run, fmt, quantize, out=out, data_dir=data_dir,
                      notify=reporter or Reporter())


def sweep(spec_file: str | Path, grids: Sequence[str], overrides: Sequence[str] = (), *, sample: int | None = None,
          seed: int = 0, runs: str | Path = "runs", data_dir: str | None = None,
          reporter: Reporter | None = None) -> Iterator[tuple[list[str], Run]]:
    """Train the spec once per combination of `--grid` values ("PATH=V1,V2,..."), or `sample` of them drawn
    with `seed`, one run after another; yield (the combination's overrides, its Run). Every combination is
    checked before the first one trains."""
    from .sweeps.grid import combinations

    reporter = reporter or Reporter()
    combos = combinations(grids, sample, seed)
    loaded, problems = [], []
    for combo in combos:
        try:
            loaded.append(load_spec(spec_file, [*overrides, *combo], data_dir))
        except UserError as err:
            problems += [m for m in err.messages if m not in problems]
    if problems:
        raise UserError(*problems)
    for number, (combo, spec) in enumerate(zip(combos, loaded), 1):
        reporter(f"sweep {number}/{len(combos)}: {' '.join(combo)}")
        yield combo, fit(spec, runs, data_dir=data_dir, reporter=reporter)


__all__ = ["Reporter", "Run", "build_model", "evaluate", "export", "fit", "load_spec", "open_run", "predict", "resume", "sweep"]
