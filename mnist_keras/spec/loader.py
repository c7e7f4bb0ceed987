"""Reading spec files: YAML through the one reader (yamlfile.py), `--set` overrides, and errors that name the place.

Every problem is reported as `FILE:LINE:COL: spec.path: what is wrong and what was expected`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence, get_args

import yaml
from pydantic import BaseModel, ValidationError

from pydantic_core import PydanticCustomError

from ..errors import UserError
from .layers import ENTRIES, TEMPLATES, did_you_mean, entry_description, normalize_entry
from .data_section import Places
from .schema import Spec
from .yamlfile import MAX_BYTES, MAX_ECHO, clip, dotted, parse_yaml, read_yaml_file

__all__ = ["MAX_BYTES", "Override", "clip", "dotted", "dump_spec", "json_schema", "load_spec", "parse_override",
           "parse_yaml", "read_yaml_file", "validate_data", "validate_spec"]
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class Override(str):
    """One override, `PATH=VALUE`, remembering the option the user typed for messages:
    `Override("train.epochs=0", "--epochs 0")`; a plain string is a `--set`."""

    flag: str

    def __new__(cls, text: str, flag: str | None = None):
        override = super().__new__(cls, text)
        override.flag = clip(flag or getattr(text, "flag", None) or f"--set {text}", 2 * MAX_ECHO)
        return override


# ------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[tuple, Any]:
    """'model.layers[0].conv2d.filters=8' -> (('model', 'layers', 0, 'conv2d', 'filters'), 8); `text` is a
    `--set` text or an Override, whose flag names it in messages."""
    flag = Override(text).flag
    key, sep, raw = text.partition("=")
    path: list = []
    for part in key.strip().split("."):
        match = _PART.fullmatch(part)
        if not sep or not match:
            raise UserError(f"{flag}: expected PATH=VALUE, e.g. train.epochs=3 or model.layers[0].conv2d.filters=8")
        path.append(match.group(1))
        path += [int(i) for i in re.findall(r"\d+", match.group(2))]
    value, _ = parse_yaml(raw, flag)
    return tuple(path), value


def _spell_out_entries(data: dict) -> None:
    """Write shorthand layer entries (`- flatten`, `- dense: 10`) in full, so overrides can reach into them."""
    model = data.get("model")
    if not isinstance(model, dict):
        return
    for key, registry, what in (("layers", ENTRIES, "layer"), ("template", TEMPLATES, "template")):
        entries = model.get(key)
        items = entries if isinstance(entries, list) else [entries]
        for i, entry in enumerate(items):
            try:
                items[i] = normalize_entry(entry, registry, what)
            except PydanticCustomError:
                continue  # left for validation to report
        if not isinstance(entries, list) and entries is not None:
            model[key] = items[0]


def apply_override(data: dict, path: tuple, value: Any, text: str) -> None:
    """Set `path` in `data` to `value`, creating missing mappings on the way; `text` names the override."""
    flag = Override(text).flag
    node: Any = data
    for depth, key in enumerate(path):
        here = dotted(path[:depth]) if depth else "the spec"
        if isinstance(key, int):
            if not isinstance(node, list):
                raise UserError(f"{flag}: {here} is not a list")
            if key >= len(node):
                raise UserError(f"{flag}: {here} has {len(node)} items, so [{key}] does not exist")
        elif not isinstance(node, dict):
            raise UserError(f"{flag}: {here} is {clip(repr(node))}, not a mapping")
        if depth == len(path) - 1:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


# ---------------------------------------------------------------------------- pydantic errors


def _candidates(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Annotated, Optional, Union, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _candidates(arg)
    return found


def _accepted_keys(raw_loc: tuple, root: type[BaseModel] = Spec) -> list[str]:
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


def _message(err: dict, root: type[BaseModel] = Spec) -> tuple[str, str]:
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


def _problems_from(error: ValidationError, data: Any, root: type[BaseModel] = Spec) -> list[tuple[tuple, str]]:
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


# ------------------------------------------------------------------------------------ load


def _where(path: tuple, file: str, locations: dict, overridden: dict) -> str:
    """`file:line:col` of a spec path, or the override (its flag) that put it there."""
    for n in range(len(path), -1, -1):
        if path[:n] in overridden:
            return f"{file}: {overridden[path[:n]]}"
        if path[:n] in locations:
            line, col = locations[path[:n]]
            inside = [flag for key, flag in overridden.items() if key[: len(path)] == path]
            return f"{file}:{line}:{col}" + "".join(f" (with {flag})" for flag in inside)
    return f"{file}:1:1"


def load_spec(file: str | Path, overrides: Sequence[str] = (), data_dir: str | None = None) -> Spec:
    """Read, override and validate a spec file; raise UserError listing every problem. Each override is
    a `--set` text or an Override naming the flag it came from. A relative path in the file is inside the
    file's folder, one from an override inside the current folder; a relative data.dataset is inside
    `data_dir` (--data-dir) when one is given (see Spec._resolve)."""
    path = Path(file)
    data, locations, where = read_yaml_file(path)
    if data is None:
        raise UserError(f"{where}:1:1: (top level): the file is empty; a spec needs at least a `model` section")
    if not isinstance(data, dict):
        raise UserError(f"{where}:1:1: (top level): a spec is a mapping (key: value) at the top level, "
                        f"not a {type(data).__name__}")
    data.setdefault("name", re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:64] or "model")
    spec = validate_spec(data, where, locations, overrides, base=os.path.abspath(path.parent), data_dir=data_dir)
    spec._overrides = {dotted(key): value for key, value in (parse_override(text) for text in overrides)}
    return spec


def validate_spec(data: dict, where: str, locations: dict, overrides: Sequence[str] = (), base: str | None = None,
                  data_dir: str | None = None) -> Spec:
    """Apply overrides (`--set` texts or Overrides) to raw spec data and validate it; UserError names
    `where` and the line, or the override's flag. Relative paths are inside `base` (the spec file's folder;
    default and for overridden values: the current folder), a relative dataset inside `data_dir` if given."""
    overridden = {}
    if overrides:
        _spell_out_entries(data)
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value, text)
        overridden[key] = Override(text).flag
    context = {"base": base, "overridden": set(overridden), "data_dir": data_dir}
    spec = validate_data(Spec, data, where, locations, overridden, context)
    spec.data._places = Places({name: _where(("data", name), where, locations, overridden)
                                for name in type(spec.data).model_fields if ("data", name) in locations
                                or any(key == ("data", name)[:len(key)] for key in overridden)})
    return spec


def validate_data(model: type[BaseModel], data: Any, where: str, locations: dict, overridden: dict | None = None,
                  context: dict | None = None):
    """`data` as a `model` (the Spec, or another file's schema; `context` goes to its validators); UserError lists
    every problem as `where:line:col: path: message`, with did-you-mean for unknown keys and the override's flag
    where one set it."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        problems = _problems_from(err, data, model)
    placed = [(_where(p, where, locations, overridden or {}), dotted(p), m) for p, m in problems]
    placed.sort(key=lambda w: [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", w[0])])
    raise UserError(*(f"{place}: {spec_path}: {message}" for place, spec_path, message in placed))


def dump_spec(spec: Spec) -> str:
    """The resolved spec (every default filled in) as YAML, as saved in a run directory."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=100)


def json_schema() -> dict:
    """The JSON Schema of spec files, for editors, with the short forms the loader accepts:
    `- flatten`, `- dense: 10`, `optimizer: sgd`."""
    schema = Spec.model_json_schema()
    defs = schema["$defs"]
    for name, cls in {**ENTRIES, **TEMPLATES}.items():
        args = {"$ref": f"#/$defs/{cls.__name__}"}
        short = [defs[cls.__name__]["properties"][cls.shorthand]] if cls.shorthand else []
        defs[f"{cls.__name__}Entry"]["properties"][name] = {"anyOf": [args, *short, {"type": "null"}],
                                                            "description": entry_description(name, cls)}

    def bare_names(node: Any) -> None:
        if isinstance(node, dict):
            members = [m.get("$ref", "").rsplit("/", 1)[-1] for m in node.get("oneOf", [])]
            if members and all(members):
                names = [next(iter(defs[m]["properties"])) if m.endswith("Entry")
                         else defs[m]["properties"]["type"].get("const", defs[m]["properties"]["type"].get("default"))
                         for m in members]
                node["oneOf"].append({"type": "string", "enum": names})
            for value in list(node.values()):
                bare_names(value)
        elif isinstance(node, list):
            for value in node:
                bare_names(value)

    bare_names({k: v for k, v in schema.items() if k != "$defs"})
    bare_names(defs)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mnist-keras spec"
    return schema
