"""Reading spec files: YAML through the one reader (yamlfile.py), `--set` overrides (overrides.py), and errors
that name the place (messages.py).

Every problem is reported as `FILE:LINE:COL: spec.path: what is wrong and what was expected`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import UserError
from .data_section import Places
from .layer_registry import ENTRIES, TEMPLATES, entry_description
from .messages import place_of, problems_from
from .overrides import apply_overrides, parse_override
from .schema import Spec
from .yamlfile import dotted, read_yaml_file

__all__ = ["dump_spec", "json_schema", "load_spec", "validate_data", "validate_spec"]


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
    overridden = apply_overrides(data, overrides)
    context = {"base": base, "overridden": set(overridden), "data_dir": data_dir}
    spec = validate_data(Spec, data, where, locations, overridden, context)
    spec.data._places = Places({name: place_of(("data", name), where, locations, overridden)
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
        problems = problems_from(err, data, model)
    placed = [(place_of(p, where, locations, overridden or {}), dotted(p), m) for p, m in problems]
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
