"""Grid sweeps: `--grid PATH=V1,V2,...` options (and `--random N --seed S`) -> the in-memory Sweep a sweep file
with `sampler: grid` would be, run through the same Optuna path (search.py)."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from ..errors import UserError
from ..spec import Override, parse_override
from ..spec.yamlfile import clip
from .file import Distribution, Objective, Sweep, SweepFile, check_points

MAX_RUNS = 10_000  # a sweep trains one run after another; beyond this, draw a sample


def split_values(text: str) -> list[str]:
    """'0.1,0.01' -> ['0.1', '0.01']; commas inside [...] or {...} stay: '[32,64],[128]' -> two values."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return values + [current.strip()]


def parse_grid(option: str) -> list[Override]:
    """'train.epochs=1,2' -> ['train.epochs=1', 'train.epochs=2'], each an Override checked as a value and
    named `--grid train.epochs=2` in messages."""
    key, sep, raw = option.partition("=")
    values = split_values(raw) if sep else []
    if not key.strip() or not values or "" in values:
        raise UserError(f"--grid {clip(option)}: expected PATH=V1,V2,..., e.g. --grid train.optimizer.learning_rate=0.1,0.01")
    overrides = [Override(f"{key.strip()}={value}", f"--grid {key.strip()}={value}") for value in values]
    for override in overrides:
        parse_override(override)  # a malformed path or value fails here, named
    return overrides


def combinations(grids: list[str] | tuple[str, ...], sample: int | None = None, seed: int = 0) -> list[list[str]]:
    """Every combination of the grids' values (the last grid varies fastest), or `sample` of them drawn
    without repeats by a generator seeded with `seed`: drawn as indices, so the product is never built."""
    axes = [parse_grid(option) for option in grids]
    keys = [axis[0].partition("=")[0] for axis in axes]
    repeated = {key for key in keys if keys.count(key) > 1}
    if repeated:
        raise UserError(f"--grid: {', '.join(sorted(repeated))} is given more than once; list all its values in one --grid")
    total = math.prod(len(axis) for axis in axes)
    runs = total if sample is None else min(sample, total)
    if total > sys.maxsize:
        raise UserError(f"--grid: {total:,} combinations are too many to draw from; give fewer values")
    if runs > MAX_RUNS:
        asked = f"{total:,} combinations" if sample is None else f"--random {sample:,}"
        raise UserError(f"--grid: {asked}: a sweep trains at most {MAX_RUNS:,} runs; draw fewer with --random N")
    indices = range(total) if runs == total else random.Random(seed).sample(range(total), runs)
    return [_combination(axes, index) for index in indices]


def _combination(axes: list[list[Override]], index: int) -> list[Override]:
    """The `index`-th combination of the product of `axes`, read as a mixed-radix number."""
    combo = []
    for axis in reversed(axes):
        index, digit = divmod(index, len(axis))
        combo.append(axis[digit])
    return combo[::-1]


def grid_sweep(spec_file: str | Path, grids: list[str] | tuple[str, ...], overrides: list[str], sample: int | None = None,
               seed: int = 0) -> Sweep:
    """The checked Sweep of `--grid` flags: each path's values as typed (a `grid` choice named by its flag), every
    combination to train (or `sample` of them drawn with `seed`) loaded as a spec before the first trains, and
    the objective the best validation accuracy (the training accuracy for a spec without validation images)."""
    spec_file = Path(spec_file)
    points = [dict(str(o).split("=", 1) for o in combo) for combo in combinations(grids, sample, seed)]
    flags: dict[str, dict[str, Override]] = {}
    for option in grids:
        for override in parse_grid(option):
            path, _, value = str(override).partition("=")
            flags.setdefault(path, {})[value] = override
    space = {path: Distribution.model_construct(grid=list(values)) for path, values in flags.items()}  # one value too
    config = SweepFile(spec=str(spec_file), trials=len(points), sampler="grid", pruner="none",
                       seed=seed % 2**32, space=space)
    sweep = Sweep(spec_file, str(spec_file), config, spec_file, {path: f"--grid {clip(path)}" for path in flags},
                  flags, points)
    check_points(sweep, overrides)
    if not sweep.load_point(points[0], overrides).data.validation:
        config.objective = Objective(metric="accuracy")
    return sweep
