"""The fit loop: one run from its record to its metrics.

Resume is exact: checkpoints hold the model and the optimizer (whose step counter drives every
step-based schedule), the run record holds the epoch counter, the stateful callbacks' own state and
the dropout/augmentation seed states, and the data pipeline's order depends only on (seed, epoch).
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..backend import keras, tf
from ..model.backbones import set_trainable
from ..model.build import build_model
from ..errors import TrainingFailed, UserError
from ..runs.files import atomic_write, run_file
from ..runs.record import RangeTest, RunMetrics, RunState, TestMetrics
from ..runs.run import Run
from ..spec import Spec
from .callbacks import finite_or_none, make_callbacks, restore_best_weights, restore_rng_state
from .compile import compile_model, current_lr, cycle_momentum, layers_without_xla, make_schedule, spans_the_run
from .distribute import Placement, configure
from .ema import with_averaged_weights
from .progress import LiveProgbar
from ..model.objects import load_model


@dataclass
class Prepared:
    """What training needs before a run directory exists: where it runs and the data (an Arrays in memory,
    or a Files list that streams from disk)."""

    placement: Placement
    data: Any


def prepare(spec: Spec, data_dir: str | None, cluster: dict | None, notify: Callable[[str], None]) -> Prepared:
    """Set up the device or strategy and load the data (UserError for a missing device or bad data)."""
    from ..data import Files, cache_mode, load_data, to_arrays

    placement = configure(spec.runtime, spec.seed, cluster, notify)
    data = load_data(spec.data, data_dir, notify, spec.seed)
    if isinstance(data, Files) and cache_mode(spec.data) == "memory":
        data = to_arrays(data, spec.data, notify)  # decoded once, as predict decodes a file
    return Prepared(placement, data)


def weights_digest(model) -> str:
    """A short fingerprint of the model's weights (every worker of a cluster ends with the same one)."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.tobytes())
    return digest.hexdigest()[:16]


def versions() -> dict[str, str]:
    return {"mnist_keras": __version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def class_weight_of(spec: Spec, data, pipes) -> dict[int, float] | None:
    """Keras' class_weight for the spec's training images (data.class_weight), None without one."""
    from ..data import Arrays, class_weights

    labels = data.y_train[:pipes.n_train] if isinstance(data, Arrays) else data.train.labels
    return class_weights(spec.data, data.class_names, labels)


def _find_rate(run: Run, pipes, class_weight, notify: Callable[[str], None]) -> None:
    """`learning_rate: auto`: the range test before the first epoch, its rate recorded in the run (run.begin saves
    it, and no resume tests again) and its figure beside it; then the seeds as they were, so the model starts from
    the weights it has with that rate written in the spec."""
    from .lr_find import range_test, write_figure

    finding = range_test(run.spec, pipes.train, class_weight)
    keras.utils.set_random_seed(run.spec.seed)
    run.state.range_test = RangeTest(rate=finding.suggestion, rule=finding.rule, steps=len(finding.rates))
    write_figure(finding, run.path / "lr-find.png")
    notify(f"learning rate {finding.suggestion:.3g}, found by a range test over {len(finding.rates)} steps "
           f"({finding.rule}): {run.path / 'lr-find.png'}")
    for note in finding.notes:
        notify(f"note: {note}")


def _resumed_model(spec: Spec, run_dir: Path, state: RunState, steps_per_epoch: int, extended_from: int | None,
                   notify: Callable[[str], None]):
    """The last checkpoint, with its seed states and the spec's schedule (stretched when the run grows)."""
    if not state.checkpoint:
        raise UserError(f"{run_dir}: no checkpoint was saved (train.checkpoint.enabled is false); cannot resume")
    model = load_model(run_file(run_dir, state.checkpoint), spec)
    restore_rng_state(model, state.rng)
    schedule = make_schedule(spec, steps_per_epoch, state.found_learning_rate())
    if not isinstance(schedule, float):
        ended = current_lr(model)
        model.optimizer.learning_rate = schedule
        if extended_from:
            how = (f"now spans {spec.train.epochs} epochs" if spans_the_run(spec) else "goes on as before")
            notify(f"note: the run grows from {extended_from} to {spec.train.epochs} epochs; the "
                   f"{spec.train.lr_schedule.type} schedule {how}: epoch {state.epochs_done + 1} starts at learning "
                   f"rate {current_lr(model):.3g} (the last epoch ended at {ended:.3g})")
    return model


def _tuned_runtime(run: Run, placement: Placement, pipes, class_weight, notify: Callable[[str], None]) -> Spec:
    """The spec to train with: under runtime.autotune, with the runtime measured before the first epoch (recorded in
    the run, which run.begin saves, and never measured again) and its precision policy set."""
    from ..runs.record import RuntimeChoice
    from .autotune import applied, pinned_fields, tune
    from .distribute import precision_policy

    spec, state = run.spec, run.state
    if not spec.runtime.autotune:
        return spec
    if placement.cluster or placement.strategy:
        notify("note: runtime.autotune measures on one device; under a strategy the spec's runtime is kept")
        return spec
    if state.autotune is None:  # a run made elsewhere (a sweep's trial)
        state.autotune = RuntimeChoice(pinned=pinned_fields(spec))
    if not state.autotune.timings:
        with placement.scope():
            state.autotune = tune(spec, state.autotune.pinned, placement.on_gpu, pipes.train, class_weight, notify)
    tuned = applied(spec, state.autotune)
    policy = precision_policy(tuned.runtime, placement)
    keras.mixed_precision.set_global_policy(policy)
    placement.described = placement.described.split(", mixed_")[0] + ("" if policy == "float32" else f", {policy}")
    return tuned


def _ended(state: RunState) -> str:
    """Why a session has no epoch to train: the run stopped itself, or every epoch is done."""
    return f"stopped after epoch {state.stopped.epoch} ({state.stopped.reason()})" if state.stopped else \
        "all epochs done"


def _nan_message(spec: Spec, run_dir: Path, state: RunState, guard) -> str:
    epoch, step = guard.where
    where = f"at epoch {epoch}, step {step}" if spec.runtime.steps_per_execution == 1 else \
        f"in epoch {epoch}, by step {step}"
    kept = (f"the last good checkpoint (epoch {state.epochs_done}) is kept in {run_dir / state.checkpoint}"
            if state.checkpoint else "no epoch finished, so there is no good checkpoint yet")
    rate = spec.train.optimizer.resolved_learning_rate(state.found_learning_rate())
    rates = f"the spec sets {rate:.3g}"
    if not math.isclose(guard.lr, rate, rel_tol=1e-6):
        rates += f", and it was {guard.lr:.3g} when the loss became NaN"
    return f"the loss became NaN {where}; {kept}. Try a lower learning rate ({rates}) or gradient clipping"


def train_run(run: Run, prepared: Prepared, notify: Callable[[str], None], verbose: int = 0,
              extended_from: int | None = None, extra_callbacks: tuple = ()) -> None:
    """Train `run` from its record (a new run's, or an earlier one's to resume) to its end, then finish it
    with its metrics. TrainingFailed for a NaN loss (the run is kept, marked failed). `extra_callbacks` (Keras
    callbacks, e.g. a sweep's pruning) run after the run's own, so an epoch is saved before they see it."""
    from ..data import make_pipelines
    from ..reports.dashboards import dashboard_callbacks, write_test_metrics

    spec, state, run_dir = run.spec, run.state, run.path
    placement, data = prepared.placement, prepared.data
    start = state.epochs_done
    pipes = make_pipelines(spec, data, start_epoch=start, cache_dir=run_dir / "cache", notify=notify)
    class_weight = class_weight_of(spec, data, pipes)
    spec = _tuned_runtime(run, placement, pipes, class_weight, notify)
    stages = spec.stages()
    current = next((s for s in stages if s.first <= start < s.end), stages[-1])
    todo = [] if state.stopped else [s for s in stages if s.end > start]  # a run that stopped itself trains no more
    with placement.scope():
        if start:
            staged = bool(spec.train.stages)
            model = _resumed_model(current.spec, run_dir, state, pipes.steps_per_epoch,
                                   None if staged else extended_from, notify)
            compiled = current if start > current.first or not staged else None  # the checkpoint's optimizer
            if compiled:
                cycle_momentum(model.optimizer, current.spec, pipes.steps_per_epoch)
        else:
            if spec.train.optimizer.learning_rate == "auto" and state.range_test is None:
                _find_rate(run, pipes, class_weight, notify)
            model, compiled = build_model(spec), None
        images_per_epoch = pipes.steps_per_epoch * spec.data.batch_size
        callbacks, guard = make_callbacks(run, min(images_per_epoch, pipes.n_train))
        if spec.train.tensorboard.enabled:
            callbacks += dashboard_callbacks(spec, run_dir / "logs", state, data, pipes.validation)
        callbacks += list(extra_callbacks)
        if verbose:
            callbacks.append(LiveProgbar(poll=spec.runtime.steps_per_execution != 1, epochs=spec.train.epochs))
        callbacks = with_averaged_weights(callbacks, spec, resumed=compiled is not None)
        if spec.runtime.jit_compile and (without := layers_without_xla(model)):
            notify(f"note: runtime.jit_compile: true runs without XLA: Keras cannot compile {', '.join(without)} with it")
        run.begin(placement.described, data.provenance, data.class_names)
        notify(f"mnist-keras: training {spec.name} on {placement.described}, {pipes.n_train:,} train / "
               f"{pipes.n_val:,} validation / {pipes.n_test:,} test images, " +
               (f"epochs {start + 1}-{spec.train.epochs}" if todo else f"{_ended(state)}: evaluating"))
        started = time.perf_counter()
        try:
            for stage in todo:
                first = max(start, stage.first)
                if stage is not compiled:
                    set_trainable(model, spec, stage.trainable)
                    compile_model(model, stage.spec, pipes.steps_per_epoch, state.found_learning_rate())
                if len(stages) > 1:
                    notify(f"stage {stage.number}: epochs {first + 1}-{min(stage.end, spec.train.epochs)}, "
                           f"{sum(math.prod(w.shape) for w in model.trainable_weights):,} trainable parameters, "
                           f"{stage.spec.train.optimizer.type} at learning rate {current_lr(model):.3g}")
                if placement.cluster:  # Keras 3's multi-step loop fails under MultiWorkerMirroredStrategy
                    model.steps_per_execution = 1
                model.fit(
                    pipes.train if first == start else pipes.train_from(first), epochs=min(stage.end, spec.train.epochs),
                    initial_epoch=first, steps_per_epoch=pipes.steps_per_epoch,
                    validation_data=pipes.validation, validation_freq=spec.train.validation_freq,
                    callbacks=callbacks, verbose=verbose, shuffle=False,
                    class_weight=class_weight,
                )
                if model.stop_training:  # stop_at, early stopping or the NaN stop ends the run, not just the stage
                    break
            if not todo:
                restore_best_weights(model, callbacks)
            wall = time.perf_counter() - started
            if guard and guard.where:
                run.stop("failed")
                raise TrainingFailed(_nan_message(spec, run_dir, state, guard))
            test = model.evaluate(pipes.test, verbose=0, return_dict=True)
        except tf.errors.OpError:  # a streamed file that fails to decode (changed after the data was checked?)
            failed = pipes.failure()
            if not failed:
                raise
            run.stop("failed")
            kept = (f"the checkpoint of epoch {state.epochs_done} is kept" if state.checkpoint
                    else "no epoch finished")
            raise TrainingFailed(f"{failed} (changed since the data was checked?); training stopped after epoch "
                                 f"{state.epochs_done}, {kept}. Fix or remove the file, then resume with: "
                                 f"mnist-keras fit --resume {run_dir}") from None
        if spec.train.tensorboard.enabled:
            write_test_metrics(run_dir / "logs", test, len(state.history) - 1)
    atomic_write(run_dir / "model.keras", model.save)
    history = state.history
    run.finish(RunMetrics(
        name=spec.name, run_dir=str(run_dir), seed=spec.seed, epochs_done=len(history), device=placement.described,
        versions=versions(), data=state.data, history=history, test=TestMetrics(**finite_or_none(test)),
        seconds_per_epoch=[h.epoch_seconds for h in history], wall_seconds_this_session=wall,
        images_per_second=sum(h.images_per_second for h in history) / max(1, len(history)),
        weights_sha256=weights_digest(model), stopped=state.stopped,
    ))
