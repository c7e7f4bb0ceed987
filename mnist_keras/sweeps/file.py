"""Sweep files: the search (spec, objective, trials, sampler, pruner, space) as a checked model, read like a
spec (file:line:col, did-you-mean), and every point of the space tried as a spec before any trial trains."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from ..errors import UserError
from ..spec import Override, Spec, load_spec, parse_override
from ..spec.loader import validate_data
from ..spec.yamlfile import clip, read_yaml_file

MAX_TRIALS = 10_000
MAX_CHECKED = 256  # combinations of the space's ends tried as specs before the first trial
Number = StrictInt | StrictFloat
Value = StrictInt | StrictFloat | StrictStr | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _range(ends: list, log: bool = False) -> list:
    low, high = ends
    if not low < high:
        raise ValueError(f"the low end must be below the high end, got [{low}, {high}]")
    if log and low <= 0:
        raise ValueError(f"a log range needs ends above 0, got [{low}, {high}]")
    if not all(math.isfinite(end) for end in ends):
        raise ValueError("expected finite ends")
    return ends


def _values(values: list) -> list:
    if len(values) < 2:
        raise ValueError(f"expected at least 2 values to choose from, got {len(values)}; set a single value with --set")
    if len({json.dumps(v) for v in values}) < len(values):
        raise ValueError("a value is listed twice")
    return values


class Distribution(_Strict):
    """One spec path's values: exactly one of the five kinds."""

    uniform: list[Number] | None = Field(None, min_length=2, max_length=2, description="[low, high], floats")
    loguniform: list[Number] | None = Field(None, min_length=2, max_length=2,
                                            description="[low, high], floats drawn on a log scale; both above 0")
    int: list[StrictInt] | None = Field(None, min_length=2, max_length=2, description="[low, high], both included")
    choice: list[Value] | None = Field(None, description="values to choose from")
    grid: list[Value] | None = Field(None, description="values to try (each one, with sampler: grid)")

    @field_validator("uniform", "int")
    @classmethod
    def _linear_range(cls, ends: list | None) -> list | None:
        return ends and _range(ends)

    @field_validator("loguniform")
    @classmethod
    def _log_range(cls, ends: list | None) -> list | None:
        return ends and _range(ends, log=True)

    @field_validator("choice", "grid")
    @classmethod
    def _listed(cls, values: list | None) -> list | None:
        return values if values is None else _values(values)

    @model_validator(mode="after")
    def _one_kind(self):
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of: {', '.join(type(self).model_fields)}"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def values(self) -> list:
        """The listed values, or the two ends of a range."""
        return getattr(self, self.kind)


class Objective(_Strict):
    metric: Literal["val_accuracy", "val_loss", "accuracy", "loss"] = Field(
        "val_accuracy", description="the per-epoch metric the search optimizes (its best epoch is the trial's value)")
    direction: Literal["maximize", "minimize"] = "maximize"


class SweepFile(_Strict):
    """A hyperparameter search over one spec."""

    spec: StrictStr = Field(description="the spec file, relative to the sweep file")
    objective: Objective = Objective()
    trials: int = Field(20, ge=1, le=MAX_TRIALS, description="trials of the study in all (every worker and machine)")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "successive_halving", "none"] = "median"
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="the sampler's seed (default: random)")
    space: dict[StrictStr, Distribution] = Field(min_length=1, description="spec path -> its values")

    @model_validator(mode="after")
    def _grid_lists_values(self):
        ranges = [path for path, d in self.space.items() if d.kind not in ("grid", "choice")]
        if self.sampler == "grid" and ranges:
            raise ValueError(f"sampler: grid tries listed values only; give {', '.join(ranges)} as {{grid: [...]}}")
        return self


@dataclass
class Sweep:
    """A loaded sweep file, or the sweep of `--grid` flags (grid.py): its model, the spec file it searches, and
    where each space entry is written."""

    file: Path
    where: str
    config: SweepFile
    spec_file: Path
    places: dict[str, str]  # space path -> "sweep.yaml:LINE:COL: space.PATH" (or "--grid PATH")
    flags: dict[str, dict[str, Override]] = field(default_factory=dict)  # --grid: path -> value as typed -> flag
    points: list[dict[str, str]] | None = None  # --grid: every combination to train, checked before the first

    @property
    def drawn(self) -> bool:
        """True for a `--random N` draw of fewer combinations than the grid has (enqueued, not sampled)."""
        return self.points is not None and len(self.points) < grid_size(self)

    @property
    def space(self) -> dict[str, Distribution]:
        return self.config.space

    def space_record(self) -> str:
        """The space and objective as canonical JSON: what a study remembers to refuse another space."""
        return json.dumps({"objective": self.config.objective.model_dump(),
                           "space": {k: v.model_dump(exclude_none=True) for k, v in sorted(self.space.items())}},
                          sort_keys=True)

    def point_overrides(self, params: dict[str, Any]) -> list[Override]:
        """The `--set`-style overrides of one point, each named by its place in the sweep file (or its --grid flag)."""
        return [self.flags[path][value] if path in self.flags else
                Override(f"{path}={json.dumps(value)}", f"{self.places[path]} = {clip(repr(value))}")
                for path, value in params.items()]

    def load_point(self, params: dict[str, Any], overrides: list[str]) -> Spec:
        """The spec at one point of the space; a problem a space value causes is placed in the sweep file."""

        try:
            return load_spec(self.spec_file, [*overrides, *self.point_overrides(params)])
        except UserError as err:
            raise UserError(*(_from_space(message, self) for message in err.messages)) from None


def grid_size(sweep: Sweep) -> int:
    """The number of combinations of the listed values (the points a grid sampler tries)."""
    return math.prod(len(d.values) for d in sweep.space.values())


def _from_space(message: str, sweep: Sweep) -> str:
    """`spec.yaml: sweep.yaml:7:3: ...` (a problem a space value causes) -> `sweep.yaml:7:3: ...`."""
    prefix = f"{clip(str(sweep.spec_file), 240)}: "
    return message.removeprefix(prefix) if not sweep.flags and message.startswith(f"{prefix}{sweep.where}:") \
        else message


def read_sweep(file: str | Path) -> Sweep:
    """Read and check a sweep file (not yet its points: see check_points)."""
    path = Path(file)
    data, locations, where = read_yaml_file(path)
    if not isinstance(data, dict):
        raise UserError(f"{where}:1:1: (top level): a sweep file is a mapping with spec, space, ... at the top level")
    config = validate_data(SweepFile, data, where, locations)
    places = {key: "{}:{}:{}: space.{}".format(where, *locations.get(("space", key), (1, 1)), clip(key))
              for key in config.space}
    spec_file = path.parent / config.spec
    if not spec_file.is_file():
        line, col = locations.get(("spec",), (1, 1))
        raise UserError(f"{where}:{line}:{col}: spec: no spec file {clip(str(spec_file), 240)}")
    return Sweep(path, where, config, spec_file, places)


def is_sweep_file(file: str | Path) -> bool:
    """True for a YAML file whose top level has `space:` (a spec never has); UserError for a file the one YAML
    reader refuses (its limits hold for sweep files and specs alike)."""
    data, _, _ = read_yaml_file(Path(file))
    return isinstance(data, dict) and "space" in data


def _replaced(path: tuple, value, searched: tuple) -> bool:
    """True when a `--set` of `value` at `path` would be replaced by the space's value at `searched`: it sets
    that path, a part of it, or a mapping or list that holds it."""
    if path[: len(searched)] == searched:
        return True
    if searched[: len(path)] != path:
        return False
    for key in searched[len(path):]:
        if isinstance(key, int) and isinstance(value, list) and key < len(value) or \
                isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return False
    return True


def refuse_searched_overrides(sweep: Sweep, overrides: list[str]) -> None:
    """UserError for every `--set` that sets a path the space searches (each trial's value would replace it)."""
    problems = []
    for override in overrides:
        path, value = parse_override(override)
        for space_path in sweep.space:
            try:
                searched, _ = parse_override(f"{space_path}=0")
            except UserError:
                continue  # a malformed space path: check_points names it
            if _replaced(path, value, searched):
                problems.append(f"{Override(override).flag}: {sweep.places[space_path]} searches this path, so "
                                "each trial's value would replace it; drop the --set, or take the path out of the "
                                + ("--grid flags" if sweep.flags else "space"))
    if problems:
        raise UserError(*problems)


def check_points(sweep: Sweep, overrides: list[str]) -> None:
    """Refuse a `--set` of a searched path, then load the spec at every listed value and both ends of every
    range, each alone and then in combination (up to MAX_CHECKED combinations); a `--grid` sweep at every
    combination it trains. UserError with every problem."""
    refuse_searched_overrides(sweep, overrides)
    problems: list[str] = []
    if sweep.points is not None:
        for point in sweep.points:
            try:
                sweep.load_point(point, overrides)
            except UserError as err:
                problems += [m for m in err.messages if m not in problems]
        if problems:
            raise UserError(*problems)
        return
    for path, distribution in sweep.space.items():
        for value in distribution.values:
            try:
                sweep.load_point({path: value}, overrides)
            except UserError as err:
                problems += [m for m in err.messages if m not in problems]
                break  # one message per space entry
    if problems:
        raise UserError(*problems)
    corners = itertools.product(*(d.values for d in sweep.space.values()))
    for point in itertools.islice(corners, MAX_CHECKED):
        sweep.load_point(dict(zip(sweep.space, point)), overrides)
    spec = sweep.load_point({}, overrides)
    if sweep.config.objective.metric.startswith("val_") and not spec.data.validation:
        raise UserError(f"{sweep.where}: objective.metric: {sweep.config.objective.metric} needs validation "
                        f"images, and {sweep.spec_file} sets data.validation to 0")
