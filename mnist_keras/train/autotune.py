"""`runtime.autotune`: the runtime chosen by measurement on the user's own model and machine, before the first epoch.

Float32 without XLA, one step per call, is the reference. Then one field at a time (mixed precision where the
hardware computes in it, then jit_compile, then steps_per_execution), each alternative trains the same STEPS batches
from the same initial weights; it is kept when it is faster and its loss after those steps is the reference's
within TOLERANCE (relative). The fields the spec sets are never measured. A run keeps its choice: resumes apply the
recorded one, and the seeds are set again afterwards, so the run trains as if the chosen values were written in the
spec. steps_per_execution's alternative is measured as GROUP steps per call and chosen as `epoch`.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Callable

from ..runs.record import RuntimeChoice, Timing
from ..spec import Spec

TUNED = ("mixed_precision", "jit_compile", "steps_per_execution")
STEPS = 48  # training steps per candidate: a first call of one group (tracing it), then the rest timed
GROUP = 8  # steps per call standing for steps_per_execution: epoch
TOLERANCE = 0.05  # the loss after STEPS steps may differ from float32's by this much, relative
BUDGET_S = 60  # the measurement stops trying alternatives after this long


def pinned_fields(spec: Spec) -> list[str]:
    """The tuned fields the spec (or a --set) gives a value: kept as they are."""
    return sorted(spec.runtime.model_fields_set & set(TUNED))


def with_runtime(spec: Spec, **values) -> Spec:
    """The spec with these runtime values (chosen from the candidates below, so nothing to validate again)."""
    return spec.model_copy(update={"runtime": spec.runtime.model_copy(update=values)})


def applied(spec: Spec, choice: RuntimeChoice | None) -> Spec:
    """The spec with a recorded choice's values (those it chose; pinned fields stay the spec's)."""
    if choice is None:
        return spec
    return with_runtime(spec, **{name: getattr(choice, name) for name in TUNED if name not in choice.pinned})


def _alternatives(spec: Spec, on_gpu: bool, without_xla: list[str]) -> dict[str, list]:
    """The values tried besides the reference's: XLA neither under runtime.deterministic nor for a model with layers
    XLA cannot compile (`without_xla`), both of which Keras runs without it."""
    from .distribute import cpu_has_bfloat16, gpu_has_bfloat16

    precisions = (["float16"] + (["bfloat16"] if gpu_has_bfloat16() else [])) if on_gpu else \
        (["bfloat16"] if cpu_has_bfloat16() else [])
    xla = not spec.runtime.deterministic and not without_xla
    return {"mixed_precision": precisions, "jit_compile": [True] if xla else [], "steps_per_execution": ["epoch"]}


def _label(values: dict) -> str:
    precision = values["mixed_precision"]
    return (f"{'float32' if precision is False else 'mixed ' + precision}, XLA {'on' if values['jit_compile'] else 'off'}, "
            f"steps_per_execution {values['steps_per_execution']}")


def measure(spec: Spec, batches, class_weight, on_gpu: bool) -> tuple[float, float | None]:
    """Images per second of `spec`'s model training on `batches` (STEPS of them, cached), and its loss after them on
    the first."""
    from ..backend import keras
    from ..model.build import build_model
    from .compile import compile_model
    from .distribute import precision_policy

    runtime = spec.runtime
    group = GROUP if runtime.steps_per_execution == "epoch" else runtime.steps_per_execution
    keras.mixed_precision.set_global_policy(precision_policy(runtime, SimpleNamespace(on_gpu=on_gpu)))
    keras.utils.set_random_seed(spec.seed)
    model = build_model(spec)
    compile_model(model, with_runtime(spec, steps_per_execution=group), STEPS)
    timed = (STEPS - group) // group * group
    fit = {"epochs": 1, "verbose": 0, "class_weight": class_weight, "shuffle": False}
    model.fit(batches.take(group).repeat(), steps_per_epoch=group, **fit)  # traces
    started = time.perf_counter()
    model.fit(batches.skip(group).take(timed).repeat(), steps_per_epoch=timed, **fit)
    seconds = time.perf_counter() - started
    loss = model.evaluate(batches.take(1), verbose=0, return_dict=True)["loss"]
    return timed * spec.data.batch_size / seconds, (float(loss) if math.isfinite(loss) else None)


def tune(spec: Spec, pinned: list[str], on_gpu: bool, train, class_weight,
         notify: Callable[[str], None]) -> RuntimeChoice:
    """Measure the unpinned fields, one at a time, and return the choice with every timing."""
    from ..backend import keras
    from ..model.build import build_model
    from .compile import layers_without_xla

    policy = keras.mixed_precision.global_policy().name
    train = train.repeat().take(STEPS).cache()  # the same batches for every candidate, read once
    for _ in train:
        pass
    reference = {"mixed_precision": False, "jit_compile": False, "steps_per_execution": 1}
    best = {name: getattr(spec.runtime, name) if name in pinned else reference[name] for name in TUNED}
    timings, started = [], time.perf_counter()
    speed, reference_loss = measure(with_runtime(spec, **reference), train, class_weight, on_gpu)
    timings.append(Timing(choice=_label(reference), images_per_second=speed, loss=reference_loss, agrees=True))
    if best != reference:
        speed, loss = measure(with_runtime(spec, **best), train, class_weight, on_gpu)
        timings.append(Timing(choice=_label(best), images_per_second=speed, loss=loss, agrees=True))
    without_xla = [] if "jit_compile" in pinned else layers_without_xla(build_model(spec))
    if without_xla:
        notify(f"note: XLA not tried: Keras cannot compile {', '.join(without_xla)} with it")
    for name, values in _alternatives(spec, on_gpu, without_xla).items():
        if name in pinned:
            continue
        for value in values:
            if time.perf_counter() - started > BUDGET_S:
                break
            candidate = {**best, name: value}
            rate, loss = measure(with_runtime(spec, **candidate), train, class_weight, on_gpu)
            agrees = loss is not None and reference_loss is not None and \
                abs(loss - reference_loss) <= TOLERANCE * abs(reference_loss)
            timings.append(Timing(choice=_label(candidate), images_per_second=rate, loss=loss, agrees=agrees))
            if agrees and rate > speed:
                best, speed = candidate, rate
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(spec.seed)  # the run starts from the weights it would have without the measurement
    choice = RuntimeChoice(pinned=sorted(pinned), timings=timings, **best)
    notify(f"runtime chosen by measurement over {len(timings)} candidates ({time.perf_counter() - started:.1f} s): "
           f"{_label(best)}, {speed:,.0f} images/s against float32's {timings[0].images_per_second:,.0f}")
    for timing in timings[1:]:
        if not timing.agrees:
            loss = "nan" if timing.loss is None else f"{timing.loss:.4g}"
            notify(f"note: {timing.choice} rejected: its loss after {STEPS} steps, {loss}, is not float32's "
                   f"{reference_loss:.4g} within {TOLERANCE:.0%}")
    return choice
