"""The one reader of YAML files: every YAML file the tool reads (a spec, a sweep file, a run's spec.yaml) goes
through `read_yaml_file`, with the same limits.

Only plain YAML is accepted (mappings, lists, strings, numbers, booleans, null): no Python tags, no anchors
that expand beyond a node budget, no nesting beyond a depth, no file beyond a size, no duplicate keys.
Every problem is a UserError at `FILE:LINE:COL: path: what is wrong`.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..errors import UserError

MAX_BYTES = 1_000_000  # a spec is a few kilobytes; refuse anything near a megabyte
MAX_NODES = 20_000  # YAML nodes after expanding aliases (stops "billion laughs")
MAX_DEPTH = 32  # nesting levels
MAX_DIGITS = 40  # far beyond any limit of the schema; Python refuses to parse over 4,300 digits
MAX_ECHO = 60  # characters of the user's input quoted in a message
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """`text`, or its start and end around '...' when longer than `limit` characters."""
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"


def dotted(path: tuple) -> str:
    """('model', 'layers', 2, 'conv2d') -> 'model.layers[2].conv2d' (a long key clipped)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{clip(str(part))}" if out else clip(str(part)))
    return out or "(top level)"


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



def read_yaml_file(path: Path) -> tuple[Any, dict[tuple, tuple[int, int]], str]:
    """A YAML file of plain data within the limits: (its data, the location of every path, its name for messages)."""
    where = clip(str(path), 4 * MAX_ECHO)
    return (*parse_yaml(_read_text(path, where), where), where)


