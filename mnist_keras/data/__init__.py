"""The data layer: where images come from (numpy only) and the tf.data pipelines that feed the model."""

from .pipeline import Pipelines, make_pipelines
from .sources import Arrays, load_arrays

__all__ = ["Arrays", "Pipelines", "load_arrays", "make_pipelines"]
