"""Messages that name the place: pydantic's errors as `FILE:LINE:COL: spec.path: what is wrong`, and the
did-you-mean of a near miss."""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from .yamlfile import MAX_ECHO, clip


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for a near miss, else ''; case is ignored, so 'ReLU' -> 'relu'."""
    import difflib

    lowered = {str(choice).lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


def _candidates(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Annotated, Optional, Union, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _candidates(arg)
    return found


def _accepted_keys(raw_loc: tuple, root: type[BaseModel]) -> list[str]:
    """The keys the schema (`root`) accepts at the mapping where `raw_loc` (a pydantic loc) ends."""
    models: list[type[BaseModel]] = [root]
    for part in raw_loc[:-1]:
        if isinstance(part, int):
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if fields:
            models = [c for f in fields for c in _candidates(f.annotation)]
        else:  # a union tag: keep the member it names
            models = [m for m in models if set(m.model_fields) == {part}
                      or getattr(m.model_fields.get("type"), "default", None) == part] or models
    return sorted({k for m in models for k in m.model_fields})


def _spec_path(err: dict, data: Any) -> tuple:
    """Drop pydantic's union labels from an error's loc, keeping the keys that are in the file."""
    path, node, loc = [], data, err["loc"]
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif i < len(loc) - 1 or err["type"] != "missing":
            continue  # a union member's label, not a key of the file
        path.append(part)
    return tuple(path)


_EXPECTED = {
    "model_type": "expected a mapping (key: value)",
    "dict_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "finite_number": "expected a finite number (not NaN or infinity)",
}


def _message(err: dict, root: type[BaseModel]) -> tuple[str, str]:
    """(what is wrong or expected, what was given) for one pydantic error."""
    kind, value = err["type"], err.get("input")
    msg, got = _clip_quoted(err["msg"]), clip(repr(value))
    if kind == "extra_forbidden":
        key = err["loc"][-1]
        accepted = _accepted_keys(err["loc"], root)
        return f"unknown key '{clip(key)}'{did_you_mean(key, accepted)}; expected one of: {', '.join(accepted)}", ""
    if kind == "missing":
        return f"required key '{err['loc'][-1]}' is missing", ""
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", err["ctx"]["expected_tags"])
        tag = err["ctx"]["tag"]
        return f"unknown type '{clip(tag)}'{did_you_mean(tag, tags)}; expected one of: {', '.join(tags)}", ""
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", err["ctx"]["expected"])
        return f"expected one of: {', '.join(options)}{did_you_mean(value, options)}", got
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, "), ""
    if kind in ("unknown_entry", "entry_shape"):
        return msg, ""
    if kind in _EXPECTED:
        return _EXPECTED[kind], got
    return re.sub(r"^Input should be (?=greater|less)", "expected a value ", msg).replace("Input should be", "expected"), got


def _clip_quoted(message: str) -> str:
    """A message with each long quoted text in it (a value echoed by the schema) clipped."""
    return re.sub(r"'(?:[^'\\]|\\.){%d,}'|\"(?:[^\"\\]|\\.){%d,}\"" % (MAX_ECHO, MAX_ECHO),
                  lambda quoted: clip(quoted.group()), message)


def problems_from(error: ValidationError, data: Any, root: type[BaseModel]) -> list[tuple[tuple, str]]:
    """(spec path, message) pairs of pydantic's errors, one per path, and one per problem the schema's
    cross-field check raised as an exception with a `problems` list (SpecProblems)."""
    merged: dict[tuple, tuple[list[str], str]] = {}
    for err in error.errors():
        path = _spec_path(err, data)
        if err["type"] == "union_tag_invalid":
            path += ("type",)
        found = getattr(err.get("ctx", {}).get("error"), "problems", None)  # SpecProblems from Spec's check
        placed = [(p, m, "") for p, m in found] if found else [(path, *_message(err, root))]
        for where, what, got in placed:
            whats, _ = merged.setdefault(where, ([], got))
            if what not in whats:
                whats.append(what)
    return [(path, _join(whats) + (f", got {got}" if got else "")) for path, (whats, got) in merged.items()]


def _join(alternatives: list[str]) -> str:
    """['expected an integer', 'expected a number'] -> 'expected an integer or a number'."""
    if len(alternatives) > 1 and all(a.startswith("expected ") for a in alternatives):
        return "expected " + " or ".join(a.removeprefix("expected ") for a in alternatives)
    return " or ".join(alternatives)


def place_of(path: tuple, file: str, locations: dict, overridden: dict) -> str:
    """`file:line:col` of a spec path, or the override (its flag) that put it there."""
    for n in range(len(path), -1, -1):
        if path[:n] in overridden:
            return f"{file}: {overridden[path[:n]]}"
        if path[:n] in locations:
            line, col = locations[path[:n]]
            inside = [flag for key, flag in overridden.items() if key[: len(path)] == path]
            return f"{file}:{line}:{col}" + "".join(f" (with {flag})" for flag in inside)
    return f"{file}:1:1"
