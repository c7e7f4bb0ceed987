"""Generate the spec reference page, docs/reference/spec.md, from the schema itself (run with --check in the tests)."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mnist_keras.spec import fields, layer_registry
from mnist_keras.spec import data_section, runtime_section, schema, train_section

PAGE = Path(__file__).resolve().parents[1] / "docs/reference/spec.md"
BEGIN, END = "<!-- spec-reference:begin -->", "<!-- spec-reference:end -->"


def type_name(annotation) -> str:
    """A short, readable name for a field's type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        names = list(dict.fromkeys(type_name(a) for a in args if a is not type(None)))
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def table(cls: type[BaseModel], title: str) -> list[str]:
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"## `{title}`", ""] + ([doc[0], ""] if doc and cls.__doc__ != BaseModel.__doc__ else [])
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if field.default is PydanticUndefined:
            default = "**required**"
        elif isinstance(field.default, BaseModel):
            default = "(see its table)"
        else:
            default = f"`{json.dumps(field.default)}`"
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {type_name(field.annotation)} | {default} | {meaning} |")
    return lines + [""]


def reference() -> str:
    sections = [
        (schema.Spec, "top level"), (data_section.Data, "data"), (data_section.Preprocess, "data.preprocess"),
        (data_section.Normalize, "data.preprocess.normalize"), (data_section.Augment, "data.augment"), (schema.Model, "model"), (train_section.Train, "train"),
    ]
    sections += [(cls, f"train.optimizer: {cls.model_fields['type'].default}") for cls in
                 typing.get_args(typing.get_args(train_section.Optimizer)[0])]
    sections += [(cls, f"train.lr_schedule: {cls.model_fields['type'].default}") for cls in
                 typing.get_args(typing.get_args(train_section.LRSchedule)[0])]
    sections += [(train_section.Checkpoint, "train.checkpoint"), (train_section.TensorBoard, "train.tensorboard"),
                 (train_section.EarlyStopping, "train.early_stopping"), (runtime_section.Runtime, "runtime"),
                 (runtime_section.Threads, "runtime.threads")]
    sections += [(cls, f"layer: {name}") for name, cls in layer_registry.ENTRIES.items()]
    sections += [(cls, f"template: {name}") for name, cls in layer_registry.TEMPLATES.items()]
    sections += [(cls, f"initializer: {cls.model_fields['type'].default} (or just its name)")
                 for cls in fields.INITIALIZERS]
    sections += [(fields.Regularizer, "regularizer")]
    out = []
    for cls, title in sections:
        out += table(typing.get_args(cls)[0] if typing.get_origin(cls) is typing.Annotated else cls, title)
    return "\n".join(out)


def main() -> int:
    text = PAGE.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    updated = f"{head}{BEGIN}\n{reference()}\n{END}{tail}"
    if "--check" in sys.argv:
        if updated != text:
            print("docs/reference/spec.md is out of date: run python scripts/spec_reference.py")
            return 1
        return 0
    PAGE.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
