"""Training sessions: a new run (fit_run) or an earlier one continued (resume_run), prepared, trained and
recorded, and the range test of `lr-find` (find_learning_rate); the typed errors on failure. The API and the sweeps' trials both train through here."""

from __future__ import annotations

import difflib
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import Interrupted, TrainingFailed, UserError
from ..reporter import Reporter
from ..runs.files import check_no_links, check_not_training, remove_partial_files, training_lock
from ..runs.record import BackboneRun, RunState, RuntimeChoice, read_state
from ..runs.run import Run, RunObserver, open_run, unfinished_cluster_run
from ..spec import Spec, dump_spec
from ..spec.data_section import absolute
from .cluster import addresses, agree, cluster_from_environment, from_chief, is_chief, lost_worker, me, \
    scratch_run_dir
from .autotune import pinned_fields
from .lr_find import LRFinding, check_range, range_test, write_figure


def _with(spec: Spec, overrides: Sequence[str] = (), **values: Any) -> Spec:
    """The spec with `--set` overrides and spec-path values (None leaves a value as it is), validated again."""
    from ..spec import validate_spec

    flags = [*overrides, *(f"{path}={json.dumps(value)}" for path, value in values.items() if value is not None)]
    if not flags:
        return spec
    changed = validate_spec(spec.model_dump(mode="json"), f"spec {spec.name}", {}, flags)
    changed._overrides = dict(spec.overrides)
    changed.data._places = spec.data._places  # messages about the data still name the spec file's lines
    return changed


def fit_run(spec: Spec, runs: str | Path = "runs", *, data_dir: str | None = None, device: str | None = None,
        distribute: str | None = None, cluster: dict | None = None, reporter: Reporter | None = None,
        callbacks: Sequence = (), observer: RunObserver | None = None) -> Run:
    """Train `spec` in a new run directory under `runs`, evaluate it on the test set, and return the Run.
    `device` and `distribute` override the spec's runtime; `cluster` is a TF_CONFIG mapping for multi_worker;
    `callbacks`: Keras callbacks run after the run's own each epoch (a benchmark's test-set probe); `observer` is
    told of the run's lifecycle (an experiment tracker)."""
    pinned = pinned_fields(spec)  # before _with, which sets every field
    spec = _with(spec, **{"runtime.device": device, "runtime.distribute": distribute})
    if spec.runtime.distribute == "multi_worker":
        cluster = cluster or cluster_from_environment()
        earlier = unfinished_cluster_run(runs, spec, addresses(cluster)) if is_chief(cluster) else None
        if earlier:
            (reporter or Reporter())(f"mnist-keras: resuming {earlier}, which these workers began and did not finish")
            return resume_run(earlier, data_dir=data_dir, cluster=cluster, reporter=reporter, callbacks=callbacks,
                              observer=observer)
    state = RunState(status="running", epochs_done=0, data_dir=data_dir and absolute(data_dir), overrides=spec.overrides,
                     backbone=BackboneRun.of(spec), autotune=RuntimeChoice(pinned=pinned) if spec.runtime.autotune else None)
    return _train(spec, None, runs, state, reporter or Reporter(), cluster, callbacks=tuple(callbacks),
                  observer=observer)


def resume_run(run: Run | str | Path, epochs: int | None = None, *, data_dir: str | None = None,
           device: str | None = None, distribute: str | None = None, overrides: Sequence[str] = (),
           spec: Spec | None = None,
           cluster: dict | None = None, reporter: Reporter | None = None, callbacks: Sequence = (),
           observer: RunObserver | None = None) -> Run:
    """Continue a run from its last checkpoint, to `epochs` epochs in all (default: the spec's). Only the
    epochs and where it runs may change: `overrides` or a `spec` that change anything else are refused.
    `callbacks`: Keras callbacks run after the run's own each epoch (a sweep's pruning); `observer` as fit_run's."""
    run = run if isinstance(run, Run) else open_run(run)
    if run.path is None:
        raise UserError("this worker wrote no run: resume the chief's run directory")
    with run.state.recorded_backbone():  # a finished run no longer needs the run it started from
        state, current = run.state, run.spec
        check_not_training(run.path)  # early; _train takes the run's lock before it writes anything
        if epochs is not None and epochs < state.epochs_done:
            raise UserError(f"{run.path}: {state.epochs_done} epochs are done already; --epochs must be at least that")
        where = {"train.epochs": epochs, "runtime.device": device, "runtime.distribute": distribute}
        new = _with(current, **where)
        if overrides or spec is not None:
            asked = _with(spec or current, overrides, name=current.name, **where)
            if asked.model_dump() != new.model_dump():
                raise UserError(f"{run.path}: refusing to resume with a different spec (only --epochs, --device and "
                                f"--distribute may change):\n{_diff(dump_spec(new), dump_spec(asked))}")
        if state.status == "finished" and state.stopped:
            raise UserError(f"{run.path}: the run stopped itself after epoch {state.stopped.epoch} ("
                            f"{state.stopped.reason()}) and trains no further")
        if state.status == "finished" and state.epochs_done >= new.train.epochs:
            raise UserError(f"{run.path}: the run finished after {state.epochs_done} epochs; pass --epochs N "
                            f"(more than {state.epochs_done}) to train further")
        state.data_dir = absolute(data_dir) if data_dir else state.data_dir
        check_no_links(run.path)
        grows = current.train.epochs if new.train.epochs > current.train.epochs else None
        return _train(new, run.path, None, state, reporter or Reporter(), cluster, grows, tuple(callbacks), observer)


def _diff(old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "run's spec", "new spec", n=0, lineterm="")
    return "\n".join(line for line in lines if not line.startswith("@@"))


@contextmanager
def _ctrl_c_kept():
    """A Ctrl-C stays a KeyboardInterrupt: landing while TensorFlow traces a function, it can come out of
    TensorFlow's cleanup as another error (an AssertionError of its graph stack) whose cause it is."""
    try:
        yield
    except Exception as err:
        cause, seen = err, set()
        while cause is not None and id(cause) not in seen and not isinstance(cause, KeyboardInterrupt):
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from err
        raise


def _train(spec: Spec, run_dir: Path | None, runs: str | Path | None, state: RunState, reporter: Reporter,
           cluster: dict | None, grows: int | None = None, callbacks: tuple = (),
           observer: RunObserver | None = None) -> Run:
    """Prepare, then train in `run_dir` (a new run under `runs` when None); the typed errors on failure."""
    from .loop import prepare, train_run

    try:
        with _ctrl_c_kept():
            prepared = prepare(spec, state.data_dir, cluster, reporter)
    except KeyboardInterrupt:
        raise Interrupted("interrupted before training began; nothing was written") from None
    if prepared.placement.cluster:
        shared = _start_together(prepared.placement, spec, run_dir, state)
        if not prepared.placement.is_chief:
            return _train_worker(spec, shared, prepared, reporter)
    new = run_dir is None
    run = Run.create(runs, spec.name, spec, state) if new else Run(run_dir, spec, state)
    run.observer = observer
    with training_lock(run.path):  # held until training ends, however it ends
        if not new:
            _check_untouched(run.path, state)
        try:
            if not new:
                remove_partial_files(run.path)
            run.write_spec()
            with _ctrl_c_kept():
                train_run(run, prepared, reporter, reporter.verbose, grows, callbacks)
        except UserError:  # refused before the first epoch began (a backbone's weights, the data's batches)
            if new:
                run.discard_if_unrecorded()
            raise
        except KeyboardInterrupt:
            run.stop("interrupted")
            raise Interrupted(f"interrupted after epoch {state.epochs_done}; resume with: "
                              f"mnist-keras fit --resume {run.path}") from None
        except OSError as err:  # a full disk, a folder made read-only, a removed run directory
            run.stop("failed")
            raise TrainingFailed(f"cannot write {err.filename or run.path}: {err.strerror or err}; training stopped "
                                 f"after epoch {state.epochs_done}, whose checkpoint is kept. Free some space (or "
                                 f"fix the folder), then resume with: mnist-keras fit --resume {run.path}") from None
        except Exception as err:
            lost = _lost_worker(err, prepared.placement, state)
            if lost is None:
                raise
            run.stop("failed")
            raise lost from None
    return run


def _start_together(placement, spec: Spec, run_dir: Path | None, state: RunState) -> dict[str, bytes]:
    """Before the first step of a multi_worker run: every worker's spec compared with the chief's, and the chief's
    record and checkpoint, when it resumes a run, given to the other workers (what they return)."""
    agree(placement.strategy, placement.cluster, json.dumps(spec.model_dump(mode="json", exclude={"runtime"}),
                                                            sort_keys=True))
    files = None
    if placement.is_chief:
        state.cluster, files = addresses(placement.cluster), {}
        if run_dir is not None and state.checkpoint:
            files["state.json"] = json.dumps(state.model_dump(mode="json")).encode()
            for name in {state.checkpoint, state.best and state.best.file} - {None}:
                if (run_dir / name).is_file():
                    files[name] = (run_dir / name).read_bytes()
    return from_chief(placement.strategy, files)


def _lost_worker(err: Exception, placement, state: RunState) -> TrainingFailed | None:
    """The error to stop with when `err` is TensorFlow's for a worker that stopped answering, else None."""
    lost = lost_worker(err, placement.cluster, placement.peers) if placement.cluster else None
    if lost is None:
        return None
    kept = f"after epoch {state.epochs_done}, which the chief's run keeps" if state.epochs_done else \
        "before the first epoch ended"
    return TrainingFailed(f"{me(placement.cluster)}: lost {lost} in epoch {state.epochs_done + 1}; training stopped "
                          f"{kept}. Run the same command on every worker again to go on from there")


def _check_untouched(run_dir: Path, state: RunState) -> None:
    """UserError if another process trained the run between this one reading its record and taking its lock."""
    now = read_state(run_dir)
    if (now.epochs_done, now.checkpoint) != (state.epochs_done, state.checkpoint):
        raise UserError(f"{run_dir}: another process trained this run while this command was starting (it is now "
                        f"{now.status} after epoch {now.epochs_done}); run the command again to go on from there")


def _train_worker(spec: Spec, shared: dict[str, bytes], prepared, reporter: Reporter) -> Run:
    """Train as a multi_worker worker other than the chief: in step with it, in a scratch folder that holds the
    chief's record and checkpoint (`shared`) when it resumes a run."""
    from .loop import train_run

    with scratch_run_dir(shared) as scratch:
        state = read_state(scratch) if "state.json" in shared else \
            RunState(status="running", epochs_done=0, overrides=spec.overrides, backbone=BackboneRun.of(spec))
        run = Run(scratch, spec, state)
        try:
            with _ctrl_c_kept():
                train_run(run, prepared, reporter, reporter.verbose)
        except TrainingFailed:
            raise TrainingFailed(f"{prepared.placement.described}: the loss became NaN; the chief's run keeps the "
                                 "last good checkpoint") from None
        except KeyboardInterrupt:
            raise Interrupted(f"{prepared.placement.described}: interrupted") from None
        except Exception as err:
            lost = _lost_worker(err, prepared.placement, state)
            if lost is None:
                raise
            raise lost from None
    return Run(None, spec, state, run.metrics)


def tune_runtime(spec: Spec, data_dir: str | None, notify: Callable[[str], None]):
    """`mnist-keras tune-runtime`: runtime.autotune's measurement on the spec's device and training data, without
    training a run; the RuntimeChoice (nothing left behind: a disk cache, without data.cache_dir, in a scratch
    folder)."""
    from ..data import make_pipelines
    from .autotune import tune
    from .loop import class_weight_of, prepare

    if spec.runtime.distribute != "none":
        raise UserError("runtime.distribute: tune-runtime measures on one device; --set runtime.distribute=none")
    pinned = pinned_fields(spec)
    prepared = prepare(spec, data_dir, None, notify)
    with tempfile.TemporaryDirectory(prefix="mnist-keras-tune-") as scratch, prepared.placement.scope():
        pipes = make_pipelines(spec, prepared.data, cache_dir=scratch, notify=notify)
        return tune(spec, pinned, prepared.placement.on_gpu, pipes.train, class_weight_of(spec, prepared.data, pipes),
                    notify)


def find_learning_rate(spec: Spec, data_dir: str | None, steps: int, min_lr: float, max_lr: float,
                       out: Path | None, notify: Callable[[str], None]) -> LRFinding:
    """`mnist-keras lr-find`: the range test on the spec's device and training data, its figure written to `out`
    (when given), nothing else left behind (a disk cache, without data.cache_dir, in a scratch folder)."""
    from ..data import make_pipelines
    from .loop import class_weight_of, prepare

    check_range(steps, min_lr, max_lr)
    if spec.runtime.distribute == "multi_worker":
        raise UserError("runtime.distribute: lr-find runs on this machine alone; --set runtime.distribute=none "
                        "(or mirrored)")
    if out is not None and not Path(out).parent.is_dir():
        raise UserError(f"{out}: the folder {Path(out).parent} does not exist")
    prepared = prepare(spec, data_dir, None, notify)
    with tempfile.TemporaryDirectory(prefix="mnist-keras-lr-find-") as scratch, prepared.placement.scope():
        pipes = make_pipelines(spec, prepared.data, cache_dir=scratch, notify=notify)
        notify(f"mnist-keras: range test of {spec.name} on {prepared.placement.described}: up to {steps} steps "
               f"of {spec.data.batch_size} images, learning rate {min_lr:g} to {max_lr:g}")
        finding = range_test(spec, pipes.train, class_weight_of(spec, prepared.data, pipes), steps, min_lr, max_lr)
    if out is not None:
        write_figure(finding, Path(out))
    return finding
