"""The image layers of preprocessing (resizing, rescaling) and of augmentation, random only while training."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

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


ValueRange = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_ordered)]


class ValueAugmentation(ImageAugmentation):
    """A random change of pixel values within `value_range`."""

    shorthand = "factor"
    factor: Factor = required("the strength of the change, 0 to 1")
    value_range: ValueRange = Field([0.0, 1.0], description="[low, high] of the pixels it sees (default: 0 to 1, as "
                                    "after scale 1/255); results are clipped to it")


class RandomBrightness(ValueAugmentation):
    """Adds a random brightness shift, up to factor * the value range, while training."""

    kind = "random_brightness"
    keras_class = "RandomBrightness"


class RandomContrast(ValueAugmentation):
    """Scales each image's contrast about its mean by a random 1 +- factor while training."""

    kind = "random_contrast"
    keras_class = "RandomContrast"


class RangedAugmentation(ImageAugmentation):
    """A random transform whose results are clipped to (or filled from) the pixels' `value_range`; left out, the
    spec sets it to the range data.preprocess gives them (layer_plan.with_value_ranges)."""

    value_range: ValueRange | None = Field(None, description="[low, high] of the pixels it sees; results are clipped "
                                           "to it (default: the range data.preprocess gives, 0 to 1 with its "
                                           "defaults, through any rescaling before it; Keras' is 0 to 255)")

    def output_shape(self, shape):
        shape = super().output_shape(shape)
        if self.value_range is None:
            raise ShapeError(f"{self.kind} clips its results to the range of its pixels, which is unknown after a "
                             "layer other than rescaling, resizing or augmentation; give value_range: [low, high]",
                             "value_range")
        return shape


Interpolation = Literal["bilinear", "nearest"]


class ColourAugmentation(RangedAugmentation):
    """A random transform with colour operations: gray (1 channel) or RGB (3) images only."""

    def output_shape(self, shape):
        need_image(self.kind, shape)
        if shape[2] not in (1, 3):
            raise ShapeError(f"{self.kind} takes gray (1 channel) or RGB (3 channels) images, got {shape[2]} "
                             "channels; place it before the layers that make more")
        return super().output_shape(shape)


class RandAugment(ColourAugmentation):
    """Applies num_ops random operations to each batch while training (RandAugment).

    They are drawn per batch from 11: shear, translation, rotation, brightness, colour (none on gray images),
    contrast, sharpness, posterization, solarization, auto-contrast and equalization."""

    kind = "rand_augment"
    keras_class = "RandAugment"
    shorthand = "factor"
    num_ops: Annotated[int, Field(ge=1, le=32)] = Field(2, description="operations applied one after the other")
    factor: Factor = Field(0.5, description="the strength of each operation, drawn from 0 to it (at most 1)")
    interpolation: Interpolation = Field("bilinear", description="how moved pixels are computed")


class AugMix(ColourAugmentation):
    """Mixes chains of random operations into the images while training (AugMix).

    Each chain's operations are drawn per batch from rand_augment's 11, or without all_ops from the 7 that
    leave brightness, colour, contrast and sharpness alone."""

    kind = "aug_mix"
    keras_module = "mnist_keras.model.objects"  # keras.layers.AugMix, its operations drawn per batch
    keras_class = "AugMix"
    num_chains: Annotated[int, Field(ge=1, le=16)] = Field(3, description="chains of operations mixed")
    chain_depth: Annotated[int, Field(ge=1, le=16)] = Field(3, description="the most operations of a chain (each "
                                                           "step picks one of them or none)")
    factor: Factor = Field(0.3, description="the strength of each operation, drawn from 0 to it (at most 1)")
    alpha: Annotated[float, Field(gt=0, le=100)] = Field(1.0, description="the concentration of the Dirichlet "
                                                         "weights of the chains and of the Beta share of the image")
    all_ops: bool = Field(True, description="also brightness, colour, contrast and sharpness")
    interpolation: Interpolation = Field("bilinear", description="how moved pixels are computed")


class RandomErasing(RangedAugmentation):
    """Erases a random box of an image (filled with noise or fill_value) while training."""

    kind = "random_erasing"
    keras_class = "RandomErasing"
    shorthand = "factor"
    factor: Factor = Field(1.0, description="each image is erased with a chance drawn from 0 to factor")
    scale: ValueRange = Field([0.02, 0.33], description="[low, high] the box's area is drawn from, as a fraction "
                              "of the image's (each side sqrt of a U(low, high) draw)")
    fill_value: float | None = Field(None, description="the erased pixels' value (default: None, noise: a normal "
                                     "draw times value_range's high, clipped to value_range)")

    def keras_arguments(self):
        """Computed in float32: Keras' RandomErasing fails in float16 (mixed precision), on a float16 range."""
        return {**super().keras_arguments(), "dtype": "float32"}

    @field_validator("scale")
    @classmethod
    def _fraction(cls, scale: list[float]) -> list[float]:
        if not 0 <= scale[0] < scale[1] <= 1:
            raise ValueError(f"scale is [low, high] with 0 <= low < high <= 1, got {scale}")
        return scale
