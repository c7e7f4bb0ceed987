"""The `backbone` layer: a pretrained network (keras.applications) or an earlier run's layers, and how much of
it trains."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from .applications import APPLICATIONS, Described, input_problem
from .applications import describe as describe_application
from .fields import MAX_INT, PositiveInt, StrictModel
from .layer_base import Layer, Shape, ShapeError, required
from .messages import did_you_mean


class Unfreeze(StrictModel):
    """Train only the backbone's last layers."""

    last: PositiveInt = required("how many of the backbone's last layers with weights train (counted from its "
                                 "output; its BatchNorm layers stay frozen)")


Trainable = Annotated[Union[bool, Unfreeze], Field(union_mode="left_to_right")]


def _known_application(name: str) -> str:
    if name not in APPLICATIONS:
        raise ValueError(f"unknown backbone '{name}'{did_you_mean(name, APPLICATIONS)}; known: "
                         + ", ".join(APPLICATIONS))
    return name


class Backbone(Layer):
    """A pretrained network, first in the layer list (only augmentation may come before it).

    A `keras.applications` network by name, without its top, or an earlier run's model up to one of its
    layers. It takes the pixels as the data gives them and applies its own preprocessing inside the model
    (`preprocess_input`, or the run's)."""

    kind = "backbone"
    keras_class = "Sequential"
    shorthand = "name"
    name: Annotated[str, AfterValidator(_known_application)] | None = Field(
        None, description="a keras.applications network: " + ", ".join(APPLICATIONS))
    weights: str | None = Field(None, description="imagenet (Keras' file, downloaded once; the default), none "
                                "(random), or the path of a .keras, .h5 or .weights.h5 file of the same network")
    pooling: Literal["avg", "max", "none"] | None = Field(None, description="how the network's last feature map "
                                                          "becomes a vector: avg (the default), max, or none (keep "
                                                          "the map)")
    run: str | None = Field(  # absolute once the spec is validated (Spec._resolve), so in the run's spec.yaml
        None, description="an earlier run directory whose best model (else its final one) is the backbone")
    until: str | Annotated[int, Field(ge=0, le=MAX_INT)] | None = Field(
        None, description="with run: the last layer taken, by name or index (default: the one before its "
        "output layer)")
    trainable: Trainable = Field(False, description="false: frozen (its BatchNorm layers in inference mode); "
                                 "true: all of it trains; {last: N}: only its last N layers with weights")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.run is None):
            raise ValueError("a backbone is either `name: NETWORK` (keras.applications) or `run: RUN_DIR`")
        if self.run is not None:
            extra = [f for f in ("weights", "pooling") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"{' and '.join(extra)} belong to a keras.applications backbone, not to `run:`")
        elif self.until is not None:
            raise ValueError("`until` picks a layer of an earlier run (`run:`), not of a keras.applications network")
        return self

    def weights_file(self) -> str | None:
        """The weights file path, if `weights` names one."""
        return None if self.weights in (None, "imagenet", "none") else self.weights

    def pretrained(self) -> bool:
        """True for Keras' ImageNet weights."""
        return self.weights in (None, "imagenet")

    def pool(self) -> str:
        return self.pooling or "avg"

    def describe(self, shape: Shape) -> Described:
        """The network for this input shape (a keras.applications one; a run's is described by the Spec)."""
        problem = input_problem(self.name, shape)
        if problem:
            raise ShapeError(problem)
        return describe_application(self.name, tuple(shape), self.pool())
