"""The data layer: where images come from (numpy only) and the tf.data pipelines that feed the model.

The names load on first use, so that importing the API (data/inspection.py's types) loads no numpy.
"""

from importlib import import_module

_HOMES = {"Arrays": "sources", "load_arrays": "loading", "load_data": "loading", "Files": "folders",
          "ImageList": "folders", "load_files": "folders", "to_arrays": "folders", "class_weights": "folders",
          "cache_mode": "streaming", "Pipelines": "pipeline", "make_pipelines": "pipeline"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
