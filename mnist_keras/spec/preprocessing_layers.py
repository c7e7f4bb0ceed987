"""The image layers of preprocessing (resizing, rescaling) and of augmentation, random only while training."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from .fields import Side
from .layer_base import Layer, ShapeError, need_image, required


class Resizing(Layer):
    """Resizes images to height x width."""

    kind = "resizing"
    keras_class = "Resizing"
    height: Side = required("output height in pixels (at most 8192)")
    width: Side = required("output width in pixels (at most 8192)")
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian"] = Field(
        "bilinear", description="how new pixels are computed")
    crop_to_aspect_ratio: bool = Field(False, description="crop to the output's aspect ratio instead of distorting")

    def output_shape(self, shape):
        need_image(self.kind, shape)
        return (self.height, self.width, shape[2])


class Rescaling(Layer):
    """x * scale + offset."""

    kind = "rescaling"
    keras_class = "Rescaling"
    shorthand = "scale"
    scale: float = required("multiplies every value")
    offset: float = Field(0.0, description="added after scaling")


FillMode = Literal["constant", "nearest", "reflect", "wrap"]
Factor = Annotated[float, Field(ge=0, le=1)]


class ImageAugmentation(Layer):
    """A random image transform, active only while training (data augmentation inside the model)."""

    def output_shape(self, shape):
        need_image(self.kind, shape)
        return shape


class Augmentation(ImageAugmentation):
    """A random geometric transform, active only while training."""

    fill_mode: FillMode = Field("reflect", description="how pixels moved in from outside the image are filled")
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="how moved pixels are computed")


class RandomTranslation(Augmentation):
    """Shifts images randomly while training."""

    kind = "random_translation"
    keras_class = "RandomTranslation"
    shorthand = "height_factor"
    height_factor: Factor = required("shift up or down by up to this fraction of the height")
    width_factor: Factor | None = Field(None, description="shift sideways by up to this fraction of the width "
                                        "(default: height_factor; Keras requires it)")

    def keras_arguments(self):
        return {"width_factor": self.height_factor, **super().keras_arguments()}


class RandomRotation(Augmentation):
    """Rotates images randomly while training."""

    kind = "random_rotation"
    keras_class = "RandomRotation"
    shorthand = "factor"
    factor: Factor = required("rotate by up to factor * 360 degrees either way")


class RandomZoom(Augmentation):
    """Zooms images randomly while training."""

    kind = "random_zoom"
    keras_class = "RandomZoom"
    shorthand = "height_factor"
    height_factor: Factor = required("zoom in or out by up to this fraction of the height")
    width_factor: Factor | None = Field(None, description="the same for the width (default: None, Keras zooms "
                                        "both sides alike)")


class RandomFlip(ImageAugmentation):
    """Mirrors images randomly while training."""

    kind = "random_flip"
    keras_class = "RandomFlip"
    shorthand = "mode"
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = Field(
        "horizontal_and_vertical", description="horizontal: left-right; vertical: upside down; or either")


class RandomCrop(ImageAugmentation):
    """Crops a random height x width window while training, the centre one at inference."""

    kind = "random_crop"
    keras_class = "RandomCrop"
    height: Side = required("output height in pixels, at most the input's")
    width: Side = required("output width in pixels, at most the input's")

    def output_shape(self, shape):
        need_image(self.kind, shape)
        for field, want, have in (("height", self.height, shape[0]), ("width", self.width, shape[1])):
            if want > have:
                raise ShapeError(f"random_crop {field} {want} is larger than the input's {have}", field)
        return (self.height, self.width, shape[2])


def _ordered(value: list[float]) -> list[float]:
    if value[0] >= value[1]:
        raise ValueError(f"value_range is [low, high] with low < high, got {value}")
    return value


class ValueAugmentation(ImageAugmentation):
    """A random change of pixel values within `value_range`."""

    shorthand = "factor"
    factor: Factor = required("the strength of the change, 0 to 1")
    value_range: Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_ordered)] = Field(
        [0.0, 1.0], description="[low, high] of the pixels it sees (default: 0 to 1, as after scale 1/255); "
        "results are clipped to it")


class RandomBrightness(ValueAugmentation):
    """Adds a random brightness shift, up to factor * the value range, while training."""

    kind = "random_brightness"
    keras_class = "RandomBrightness"


class RandomContrast(ValueAugmentation):
    """Scales each image's contrast about its mean by a random 1 +- factor while training."""

    kind = "random_contrast"
    keras_class = "RandomContrast"
