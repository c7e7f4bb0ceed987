"""Specs: the schema, the layer vocabulary, and reading spec files with locations and limits."""

from .loader import dump_spec, json_schema, load_spec, validate_spec
from .overrides import Override, parse_override
from .data_section import Data, Preprocess
from .runtime_section import Runtime
from .schema import Model, Spec
from .train_section import Train
from .yamlfile import dotted

__all__ = ["Data", "Model", "Override", "Preprocess", "Runtime", "Spec", "Train", "dotted", "dump_spec", "json_schema",
           "load_spec", "parse_override", "validate_spec"]
