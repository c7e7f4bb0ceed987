"""Grid sweeps: `--grid PATH=V1,V2,...` options -> the `--set` overrides of each run, and the ranked table."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from ..runs.table import format_table, summarize
from ..errors import UserError
from ..spec import Override, parse_override
from ..spec.loader import clip

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


def ranked_table(results: list[tuple[list[str], Path]]) -> str:
    """The sweep's runs, best validation accuracy first (runs without one last)."""
    keys = [text.partition("=")[0] for text in results[0][0]] if results else []
    rows = []
    for combo, run in results:
        rows.append({**summarize(run).columns(), **{text.partition("=")[0]: text.partition("=")[2] for text in combo}})
    rows.sort(key=lambda row: -(row["best val acc"] if row["best val acc"] is not None else -1))
    for rank, row in enumerate(rows, 1):
        row["#"] = rank
    return format_table(rows, ["#", *keys, "best val acc", "test acc", "state", "directory"])
