"""`--set PATH=VALUE` overrides: parsed, and applied to a spec's raw data before it is validated."""

from __future__ import annotations

import re
from typing import Any, Sequence

from pydantic_core import PydanticCustomError

from ..errors import UserError
from .layer_registry import ENTRIES, TEMPLATES, normalize_entry
from .yamlfile import MAX_ECHO, clip, dotted, parse_yaml

_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class Override(str):
    """One override, `PATH=VALUE`, remembering the option the user typed for messages:
    `Override("train.epochs=0", "--epochs 0")`; a plain string is a `--set`."""

    flag: str

    def __new__(cls, text: str, flag: str | None = None):
        override = super().__new__(cls, text)
        override.flag = clip(flag or getattr(text, "flag", None) or f"--set {text}", 2 * MAX_ECHO)
        return override


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


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict[tuple, str]:
    """Apply overrides (`--set` texts or Overrides) to raw spec data; the flag that set each path."""
    overridden = {}
    if overrides:
        _spell_out_entries(data)
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value, text)
        overridden[key] = Override(text).flag
    return overridden
