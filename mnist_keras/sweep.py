"""Sweeps: `--grid PATH=V1,V2,...` options -> the `--set` overrides of each run, and the ranked table."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from .runs.table import format_table, summarize
from .errors import UserError
from .spec import parse_override


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


def parse_grid(option: str) -> list[str]:
    """'train.epochs=1,2' -> ['train.epochs=1', 'train.epochs=2'] (each checked as a --set value)."""
    key, sep, raw = option.partition("=")
    values = split_values(raw) if sep else []
    if not key.strip() or not values or "" in values:
        raise UserError(f"--grid {option}: expected PATH=V1,V2,..., e.g. --grid train.optimizer.learning_rate=0.1,0.01")
    for value in values:
        parse_override(f"{key.strip()}={value}")  # a malformed path or value fails here, named
    return [f"{key.strip()}={value}" for value in values]


def combinations(grids: list[str] | tuple[str, ...], sample: int | None = None, seed: int = 0) -> list[list[str]]:
    """Every combination of the grids' values (the last grid varies fastest), or `sample` of them drawn
    without repeats by a generator seeded with `seed`."""
    axes = [parse_grid(option) for option in grids]
    keys = [axis[0].partition("=")[0] for axis in axes]
    repeated = {key for key in keys if keys.count(key) > 1}
    if repeated:
        raise UserError(f"--grid: {', '.join(sorted(repeated))} is given more than once; list all its values in one --grid")
    combos = [list(combo) for combo in itertools.product(*axes)]
    if sample is not None and sample < len(combos):
        combos = random.Random(seed).sample(combos, sample)
    return combos


def ranked_table(results: list[tuple[list[str], Path]]) -> str:
    """The sweep's runs, best validation accuracy first (runs without one last)."""
    keys = [text.partition("=")[0] for text in results[0][0]] if results else []
    rows = []
    for combo, run in results:
        summary = summarize(run)
        rows.append({**summary, **{text.partition("=")[0]: text.partition("=")[2] for text in combo}})
    rows.sort(key=lambda row: -(row["best val acc"] if row["best val acc"] is not None else -1))
    for rank, row in enumerate(rows, 1):
        row["#"] = rank
    return format_table(rows, ["#", *keys, "best val acc", "test acc", "state", "directory"])
