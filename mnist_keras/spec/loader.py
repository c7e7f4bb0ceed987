"""Reading spec files: safe YAML with line numbers, `--set` overrides, and errors that name the place.

Every problem is reported as `FILE:LINE:COL: spec.path: what is wrong and what was expected`.
Only plain YAML is accepted (mappings, lists, strings, numbers, booleans, null): no Python tags,
no anchors that expand beyond a node budget, no duplicate keys.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterator, Sequence, get_args

import yaml
from pydantic import BaseModel, ValidationError

from pydantic_core import PydanticCustomError

from ..errors import UserError
from .layers import ENTRIES, TEMPLATES, did_you_mean, entry_description, normalize_entry
from .schema import Spec

MAX_BYTES = 1_000_000  # a spec is a few kilobytes; refuse anything near a megabyte
MAX_NODES = 20_000  # YAML nodes after expanding aliases (stops "billion laughs")
MAX_DEPTH = 32  # nesting levels
MAX_DIGITS = 40  # far beyond any limit of the schema; Python refuses to parse over 4,300 digits
MAX_ECHO = 60  # characters of the user's input quoted in a message
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """`text`, or its start and end around '...' when longer than `limit` characters."""
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"


def dotted(path: tuple) -> str:
    """('model', 'layers', 2, 'conv2d') -> 'model.layers[2].conv2d' (a long key clipped)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{clip(str(part))}" if out else clip(str(part)))
    return out or "(top level)"


class Override(str):
    """One override, `PATH=VALUE`, remembering the option the user typed for messages:
    `Override("train.epochs=0", "--epochs 0")`; a plain string is a `--set`."""

    flag: str

    def __new__(cls, text: str, flag: str | None = None):
        override = super().__new__(cls, text)
        override.flag = clip(flag or getattr(text, "flag", None) or f"--set {text}", 2 * MAX_ECHO)
        return override


# ------------------------------------------------------------------------------------ YAML


class _Loader(yaml.SafeLoader):
    """The safe loader, also reading YAML 1.2 floats that have an exponent but no dot or no exponent sign
    (`1e-3`, `1E5`, `+1e4`, `1.0e5`), which YAML 1.1 leaves as strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def _place(raw: bytes, offset: int) -> str:
    """`line:col` of a byte offset."""
    newline = b"\n"
    return f"{raw.count(newline, 0, offset) + 1}:{offset - raw.rfind(newline, 0, offset)}"


_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device",
          stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}


def _read_text(path: Path, where: str) -> str:
    """The text of a regular file of at most MAX_BYTES; anything else (a FIFO or a device would block or
    never end, a directory, a broken link, an unreadable file) is refused with a message."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            kind = next((name for test, name in _KINDS.items() if test(status.st_mode)), "not a regular file")
            raise UserError(f"{where}: {kind}, not a spec file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # no hang if it became a FIFO since
        with os.fdopen(fd, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        broken = f" (a broken symbolic link to {clip(os.readlink(path))})" if path.is_symlink() else ""
        raise UserError(f"{where}: no such file{broken}") from None
    except OSError as err:
        raise UserError(f"{where}: cannot read it: {err.strerror or err}") from None
    if len(raw) > MAX_BYTES:
        size = f"{status.st_size:,} bytes" if status.st_size > MAX_BYTES else f"over {MAX_BYTES:,} bytes"
        raise UserError(f"{where}:1:1: (top level): {size} is too large for a spec (limit {MAX_BYTES:,})")
    nul = raw.find(b"\0")
    if nul >= 0:
        raise UserError(f"{where}:{_place(raw, nul)}: (top level): a binary file, not a YAML spec")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{where}:{_place(raw, err.start)}: (top level): not UTF-8 text "
                        f"(byte 0x{raw[err.start]:02x} at offset {err.start})") from None


_AWAITING_KEY = object()


def _scan(text: str, where: str) -> None:
    """Stream the YAML events once, before any node is built, and stop at the node budget or the nesting
    limit: composing nodes is recursive and would run out of stack, time or memory first. A syntax
    error gets the spec path where it happened (as `spec_path`)."""
    open_collections: list[list] = []  # [path, next list index or the mapping's current key]
    anchors, nodes = set(), 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                open_collections.pop()
            if not isinstance(event, yaml.NodeEvent):
                continue
            path: tuple = ()
            if open_collections:
                parent = open_collections[-1]
                if isinstance(parent[1], int):
                    path, parent[1] = parent[0] + (parent[1],), parent[1] + 1
                elif parent[1] is _AWAITING_KEY:
                    path, parent[1] = parent[0], getattr(event, "value", "?")
                else:
                    path, parent[1] = parent[0] + (parent[1],), _AWAITING_KEY
            nodes += 1
            place = f"{where}:{event.start_mark.line + 1}:{event.start_mark.column + 1}: {dotted(path)}"
            if nodes > MAX_NODES:
                raise UserError(f"{place}: the spec has over {MAX_NODES:,} YAML nodes; a spec needs a few hundred")
            if isinstance(event, yaml.AliasEvent) and event.anchor not in anchors:
                anchor = clip(event.anchor)
                raise UserError(f"{place}: the alias *{anchor} names no anchor (&{anchor}) before it")
            anchors.add(event.anchor)
            if isinstance(event, yaml.CollectionStartEvent):
                open_collections.append([path, 0 if isinstance(event, yaml.SequenceStartEvent) else _AWAITING_KEY])
                if len(open_collections) > MAX_DEPTH:
                    raise UserError(f"{place}: nested more than {MAX_DEPTH} levels deep")
    except yaml.MarkedYAMLError as err:
        path, slot = open_collections[-1] if open_collections else ((), 0)
        err.spec_path = path if isinstance(slot, int) or slot is _AWAITING_KEY else path + (slot,)
        raise


def _short_tag(node: yaml.Node) -> str:
    """'tag:yaml.org,2002:int' -> '!!int' (clipped)."""
    return clip(node.tag.replace("tag:yaml.org,2002:", "!!"))


_KEY_KINDS = {"!!int": "a number", "!!float": "a number", "!!bool": "true or false", "!!null": "null",
              "!!seq": "a list", "!!map": "a mapping"}


def _written(node: yaml.Node) -> Iterator[str]:
    """The pieces of a key as written, on one line and without spaces: `1`, `null`, `[a,b]`, `{a:1}`
    (a generator, so an alias bomb as a key is only expanded as far as it is shown)."""
    if isinstance(node, yaml.ScalarNode):
        yield node.value
        return
    yield "[" if isinstance(node, yaml.SequenceNode) else "{"
    for i, item in enumerate(node.value):
        yield "," if i else ""
        if isinstance(item, tuple):
            yield from _written(item[0])
            yield ":"
            item = item[1]
        yield from _written(item)
    yield "]" if isinstance(node, yaml.SequenceNode) else "}"


def _index(root: yaml.Node, where: str) -> dict[tuple, tuple[int, int]]:
    """Map each spec path to its (line, column); check tags, keys, duplicate keys, size and depth."""
    locations: dict[tuple, tuple[int, int]] = {}
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    visited = 0

    def fail(node: yaml.Node, message: str):
        raise UserError(f"{where}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: {message}")

    while stack:
        node, path = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            fail(node, f"{dotted(path)}: the spec expands to over {MAX_NODES:,} YAML nodes (an alias/anchor bomb?)")
        if len(path) > MAX_DEPTH:
            fail(node, f"{dotted(path)}: nested more than {MAX_DEPTH} levels deep")
        if node.tag not in _PLAIN_TAGS:
            tag = _short_tag(node)
            fail(node, f"{dotted(path)}: the YAML tag '{tag}' is not allowed: a spec holds plain data only "
                       "(mappings, lists, strings, numbers, booleans, null); quote the value if it is text")
        if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_DIGITS:
            fail(node, f"{dotted(path)}: a number of {len(node.value):,} characters is out of range")
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                tag = _short_tag(key_node)
                if tag not in ("!!str", "!!merge"):
                    written = "".join(itertools.islice(_written(key_node), MAX_ECHO)) or "(empty)"
                    fail(key_node, f"{dotted(path + (written,))}: a key is a name (text), not "
                                   f"{_KEY_KINDS.get(tag, f'a {tag} value')}; quote it if it is text")
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                if key == "<<" and not all(isinstance(m, yaml.MappingNode) for m in merged):
                    fail(value_node, f"{dotted(path)}: `<<` merges a mapping (or a list of mappings) into this one")
                if key in seen and key != "<<":
                    fail(key_node, f"{dotted(path + (key,))}: duplicate key '{clip(key)}' (first given on line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
                locations.setdefault(path + (key,), (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
                stack.append((value_node, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                locations.setdefault(path + (i,), (item.start_mark.line + 1, item.start_mark.column + 1))
                stack.append((item, path + (i,)))
    return locations


def parse_yaml(text: str, where: str) -> tuple[Any, dict[tuple, tuple[int, int]]]:
    """Safe-load one YAML document; return the data and the location of every path in it."""
    try:
        _scan(text, where)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None, {}
            locations = _index(root, where)
            return loader.construct_document(root), locations
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = " ".join(str(x) for x in (err.context, err.problem) if x)
        path = dotted(getattr(err, "spec_path", ()))
        raise UserError(f"{where}:{mark.line + 1}:{mark.column + 1}: {path}: YAML syntax error: {what}") from None
    except yaml.reader.ReaderError as err:  # a control character
        before = text[: err.position]
        place = f"{before.count(chr(10)) + 1}:{err.position - before.rfind(chr(10))}"
        raise UserError(f"{where}:{place}: (top level): the control character U+{err.character:04X} is not allowed in "
                        "a YAML spec") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where}: YAML error: {err}") from None


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


def read_yaml_file(path: Path) -> tuple[Any, dict[tuple, tuple[int, int]], str]:
    """A YAML file of plain data within the limits: (its data, the location of every path, its name for messages)."""
    where = clip(str(path), 4 * MAX_ECHO)
    return (*parse_yaml(_read_text(path, where), where), where)


def load_spec(file: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read, override and validate a spec file; raise UserError listing every problem. Each override is
    a `--set` text or an Override naming the flag it came from."""
    path = Path(file)
    data, locations, where = read_yaml_file(path)
    if data is None:
        raise UserError(f"{where}:1:1: (top level): the file is empty; a spec needs at least a `model` section")
    if not isinstance(data, dict):
        raise UserError(f"{where}:1:1: (top level): a spec is a mapping (key: value) at the top level, "
                        f"not a {type(data).__name__}")
    data.setdefault("name", re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:64] or "model")
    spec = validate_spec(data, where, locations, overrides)
    spec._overrides = {dotted(key): value for key, value in (parse_override(text) for text in overrides)}
    return spec


def validate_spec(data: dict, where: str, locations: dict, overrides: Sequence[str] = ()) -> Spec:
    """Apply overrides (`--set` texts or Overrides) to raw spec data and validate it; UserError names
    `where` and the line, or the override's flag."""
    overridden = {}
    if overrides:
        _spell_out_entries(data)
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value, text)
        overridden[key] = Override(text).flag
    return validate_data(Spec, data, where, locations, overridden)


def validate_data(model: type[BaseModel], data: Any, where: str, locations: dict, overridden: dict | None = None):
    """`data` as a `model` (the Spec, or another file's schema); UserError lists every problem as
    `where:line:col: path: message`, with did-you-mean for unknown keys and the override's flag where one set it."""
    try:
        return model.model_validate(data)
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
