"""The layer vocabulary: one registry from spec names to layer and template classes, and the pydantic type
of an entry, `- name: {arguments}` (also `- name` and `- name: scalar`)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, create_model
from pydantic_core import PydanticCustomError

from .backbone_layer import Backbone
from .core_layers import Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Reshape
from .fields import StrictModel
from .layer_base import Layer
from .macros import ConvPoolStack, DenseStack, LeNet5, Macro
from .messages import did_you_mean
from .preprocessing_layers import (
    AugMix,
    RandAugment,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomRotation,
    RandomTranslation,
    RandomZoom,
    Rescaling,
    Resizing,
)


LAYERS: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Dropout, BatchNorm, Activation, Reshape, Resizing,
                Rescaling, RandomTranslation, RandomRotation, RandomZoom, RandomFlip, RandomCrop,
                RandomBrightness, RandomContrast, RandAugment, AugMix, RandomErasing, Backbone)
}
MACROS: dict[str, type[Macro]] = {cls.kind: cls for cls in (DenseStack, ConvPoolStack, LeNet5)}
TEMPLATES: dict[str, type[Macro]] = {"lenet5": LeNet5}
ENTRIES: dict[str, type[Layer] | type[Macro]] = {**LAYERS, **MACROS}


def normalize_entry(value: Any, registry: dict[str, type], what: str) -> dict:
    """`name`, `name: scalar` and `name: null` entries as `{name: {arguments}}`."""
    if isinstance(value, str):
        value = {value: None}
    if not isinstance(value, dict) or len(value) != 1:
        raise PydanticCustomError(
            "entry_shape", f"a {what} is written as `name: {{arguments}}` or `name` (a mapping with one key)"
        )
    (name, args), = value.items()
    if name not in registry:
        raise PydanticCustomError(
            "unknown_entry", f"unknown {what} '{name}'{did_you_mean(name, registry)}; known: {', '.join(registry)}"
        )
    shorthand = registry[name].shorthand
    if args is None:
        args = {}
    elif not isinstance(args, dict) and shorthand:
        args = {shorthand: args}
    return {name: args}


def entry_description(name: str, cls: type) -> str:
    """What an editor shows on hover over `name:`: the class's first paragraph, and its short form."""
    text = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
    if issubclass(cls, Layer) and cls is not Backbone:
        text += f" Built as {cls.keras_module}.{cls.keras_class}."
    if cls.shorthand:
        text += f" `{name}: VALUE` is short for `{name}: {{{cls.shorthand}: VALUE}}`."
    return text


def _entry_union(registry: dict[str, type], what: str):
    """A pydantic type for `- name: {args}` entries (also `- name` and `- name: scalar`)."""

    def normalize(value: Any) -> Any:
        return normalize_entry(value, registry, what)

    def tag(value: Any) -> str:
        return next(iter(value)) if isinstance(value, dict) else next(iter(type(value).model_fields))

    members = tuple(
        Annotated[create_model(f"{cls.__name__}Entry", __base__=StrictModel,
                               **{name: (cls, Field(description=entry_description(name, cls)))}), Tag(name)]
        for name, cls in registry.items()
    )
    return Annotated[Union[members], Discriminator(tag), BeforeValidator(normalize)]


LayerEntry = _entry_union(ENTRIES, "layer")
TemplateEntry = _entry_union(TEMPLATES, "template")


def entry_content(entry) -> tuple[str, Layer | Macro]:
    """(name, arguments) of a validated layer or template entry."""
    name = next(iter(type(entry).model_fields))
    return name, getattr(entry, name)
