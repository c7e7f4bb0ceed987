"""Specs: the schema, the layer vocabulary, and reading spec files with locations and limits."""

from .loader import Override, dotted, dump_spec, json_schema, load_spec, parse_override, validate_spec
from .schema import Data, Model, Preprocess, Runtime, Spec, Train

__all__ = ["Data", "Model", "Override", "Preprocess", "Runtime", "Spec", "Train", "dotted", "dump_spec", "json_schema",
           "load_spec", "parse_override", "validate_spec"]
