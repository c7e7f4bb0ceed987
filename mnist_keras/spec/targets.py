"""train.stop_at's rule (the metrics a run logs, and which way each must go to reach its target) and the whole-spec
checks of stop_at and `learning_rate: auto`, each a problem at its spec path."""

from __future__ import annotations

from .messages import did_you_mean

METRICS = ("loss", "accuracy")  # what every epoch logs; each also as val_* on an epoch that validates


def rises(metric: str) -> bool:
    """True for an accuracy-like metric (its name holds `acc`), which should rise; any other (a loss) should fall."""
    return "acc" in metric


def reaches(metric: str, value: float, target: float) -> bool:
    """True when `value` of `metric` reaches `target`: at least it for an accuracy, at most it for a loss."""
    return value >= target if rises(metric) else value <= target


def shown_target(metric: str, target: float) -> str:
    """'val_accuracy >= 0.99', as summaries and listings show a target."""
    return f"{metric} {'>=' if rises(metric) else '<='} {target:g}"


def _stop_at_problems(spec) -> list[tuple[tuple, str]]:
    logged = [*METRICS, *(f"val_{name}" for name in METRICS)]
    problems = []
    for metric, target in (spec.train.stop_at or {}).items():
        path = ("train", "stop_at", metric)
        if metric not in logged:
            problems.append((path, f"unknown metric '{metric}'{did_you_mean(metric, logged)}; a run logs "
                             f"{', '.join(logged)}"))
        elif metric.startswith("val_") and spec.data.validation == 0:
            problems.append((path, f"'{metric}' is measured on validation images, but data.validation is 0; stop at "
                             f"'{metric.removeprefix('val_')}' or hold out validation images"))
        elif metric.startswith("val_") and spec.train.validation_freq > spec.train.epochs:
            problems.append((path, f"'{metric}' is measured every {spec.train.validation_freq} epochs, so never in "
                             f"{spec.train.epochs}; lower train.validation_freq"))
        elif rises(metric) and not 0 < target <= 1:
            hint = f" (did you mean {target / 100:g}?)" if 1 < target <= 100 else ""
            problems.append((path, f"an accuracy is a fraction of the images, so its target is above 0 and at "
                             f"most 1, got {target:g}{hint}"))
        elif not rises(metric) and target <= 0:
            problems.append((path, f"a loss target is above 0 (a loss is never below 0), got {target:g}"))
    return problems


def _auto_rate_problems(spec) -> list[tuple[tuple, str]]:
    problems = [(("train", "stages", i, "optimizer", "learning_rate"), "auto is found once, before the first "
                 "epoch: set it in train.optimizer (a stage without an optimizer of its own trains with that one) or "
                 "give this stage a rate") for i, stage in enumerate(spec.train.stages or [])
                if stage.optimizer and stage.optimizer.learning_rate == "auto"]
    if spec.train.optimizer.learning_rate == "auto" and spec.runtime.distribute == "multi_worker":
        problems.append((("train", "optimizer", "learning_rate"), "auto runs a range test on one machine before "
                         "training, which the workers of distribute: multi_worker cannot share; run `mnist-keras "
                         "lr-find` on the spec and set the rate it suggests"))
    return problems


def target_problems(spec) -> list[tuple[tuple, str]]:
    """What is wrong with train.stop_at and `learning_rate: auto` in `spec` (a Spec), as (spec path, message) pairs."""
    return _stop_at_problems(spec) + _auto_rate_problems(spec)
