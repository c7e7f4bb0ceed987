"""The spec schema: the model section and the whole spec (the data, train and runtime sections are modules of
their own), with defaults and cross-checks.

Structure is checked by pydantic field by field; `Spec`'s own validator then checks what needs the
whole spec (shapes, the output layer against the loss, labels against the loss, monitored metrics,
the parameter and memory budgets), so no way of making a `Spec` gives an invalid one.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, Iterator

from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails

from .layout import class_names  # standard library only: validation counts classes without numpy or TensorFlow
from ..errors import UserError
from .fields import PositiveInt, Seed, StrictModel
from .applications import Described, LayerWeights
from .backbone_layer import Backbone
from .layer_base import ShapeError
from .layer_plan import PlannedLayer, frozen_counts, plan_layers, with_value_ranges
from .layer_registry import LayerEntry, TemplateEntry
from .data_section import TRAIN_SIZES, Data, absolute, augment_problems, missing_dataset
from .runtime_section import Runtime
from .targets import target_problems
from .train_section import Train, recipe_problems
from .yamlfile import read_yaml_file

Path = tuple

# ---------------------------------------------------------------------------------------- model


class Model(StrictModel):
    """The layers, either listed or from a template (`template: lenet5`)."""

    input_shape: Annotated[list[PositiveInt], Field(min_length=1)] | None = Field(
        None, description="the model's input shape without the batch axis (default: from data)")
    template: TemplateEntry | None = Field(None, description="a named model, e.g. `template: lenet5`")
    layers: Annotated[list[LayerEntry], Field(min_length=1)] | None = Field(
        None, description="the layers, in order: `- name: {arguments}`, `- name: value` or `- name`")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.template is None) == (self.layers is None):
            raise ValueError("give either `layers` (a list) or `template` (e.g. `template: lenet5`), not both")
        return self

    def entries(self) -> list[tuple[Path, Any]]:
        """(spec path, entry) of every entry, for planning and error messages."""
        if self.template is not None:
            return [(("model", "template"), self.template)]
        return [(("model", "layers", i), entry) for i, entry in enumerate(self.layers)]


# ----------------------------------------------------------------------------------------- spec


def check_run_name(value: str) -> str:
    """A name that becomes a folder (a run's, a study's): ValueError unless it is a plain name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(f"a name is 1-64 letters, digits, '_', '.' or '-' (it names run directories), got {value!r}")
    return value


@dataclass(frozen=True)
class StagePlan:
    """One stage: its number (from 1), its epochs [first, end) counted from 0, the spec as it trains in it (its
    optimizer, schedule and train.epochs), and the backbone's trainable setting (None without a backbone)."""

    number: int
    first: int
    end: int
    spec: "Spec"
    trainable: Any


_RECORDED: ContextVar[dict[str, Described]] = ContextVar("backbone runs as a run's record keeps them", default={})
_OPENING: ContextVar[tuple[str, ...]] = ContextVar("backbone runs being described", default=())


@contextmanager
def recorded_backbones(described: dict[str, Described]) -> Iterator[None]:
    """Within this, a backbone `run:` named here (by absolute path) is described as given, without reading
    it: a finished run's spec is checked against its own record, so it no longer needs the earlier run."""
    token = _RECORDED.set({**_RECORDED.get(), **described})
    try:
        yield
    finally:
        _RECORDED.reset(token)


class BackboneCycle(UserError):
    """Runs that name each other (or themselves) as backbones: reported as it is from however deep it is found."""


def _described_run(backbone: Backbone, shape: tuple) -> Described:
    """The earlier run's backbone, from a record (recorded_backbones) or its own spec; UserError naming the
    chain when runs name each other (or themselves) as backbones."""
    key = os.path.abspath(backbone.run)
    if key in _RECORDED.get():
        return _RECORDED.get()[key]
    chain = _OPENING.get()
    if key in chain:
        cycle = " -> ".join([*chain[chain.index(key):], key])
        raise BackboneCycle(f"backbone runs form a cycle: {cycle} (each one's spec.yaml names the next as its "
                            "backbone run); a backbone run must be an earlier run")
    token = _OPENING.set((*chain, key))
    try:
        return _run_backbone(backbone, shape)
    finally:
        _OPENING.reset(token)


def _run_backbone(backbone: Backbone, shape: tuple) -> Described:
    """An earlier run's model up to `until`, described from the run's own spec (no TensorFlow)."""
    run_dir = FilePath(backbone.run)
    spec_file = run_dir / "spec.yaml"
    if not (spec_file.is_file() and (run_dir / "state.json").is_file()):
        raise ShapeError(f"{run_dir} is not a run directory (a run has spec.yaml and state.json)", "run")
    try:
        source = Spec.model_validate(read_yaml_file(spec_file)[0], context={"base": str(run_dir)})
    except BackboneCycle:
        raise
    except (UserError, ValueError) as err:
        first = (err.messages[0] if isinstance(err, UserError) else str(err).splitlines()[0])[:300]
        raise ShapeError(f"{spec_file} cannot be read as a spec ({first})", "run") from None
    planned = source.plan()
    names = [p.name for p in planned]
    until = backbone.until if backbone.until is not None else max(0, len(planned) - 2)
    index = names.index(until) if until in names else until if isinstance(until, int) else None
    if index is None or index >= len(planned):
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(names))
        raise ShapeError(f"the run {run_dir} has no layer {until!r}; its layers are {listed}", "until")
    if tuple(source.input_shape()) != tuple(shape):
        raise ShapeError(f"the run's model takes images of shape {list(source.input_shape())}, but this spec gives "
                         f"{list(shape)}; match data.image_shape and data.preprocess.resize to the run's", "run")
    layers = tuple(LayerWeights(p.name, p.trainable, p.non_trainable, p.layer.kind == "batch_norm")
                   for p in planned[:index + 1] if p.trainable + p.non_trainable)
    return Described(planned[index].output_shape, layers, index)


class SpecProblems(ValueError):
    """What is wrong with a spec as a whole: `problems` lists (spec path, message) pairs."""

    def __init__(self, problems: list[tuple[Path, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems




def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


class Spec(StrictModel):
    """A whole spec file."""

    name: Annotated[str, AfterValidator(check_run_name)] = Field("model", description="names the run directories "
                                                            "(default: the file's name)")
    description: str | None = Field(None, description="free text, shown in listings")
    seed: Seed = Field(42, description="seeds weights, shuffling, dropout and augmentation; 0 to 4,294,967,295")
    data: Data = Field(Data(), description="the dataset and its input pipeline")
    model: Model = Field(description="the layers")
    train: Train = Field(Train(), description="loss, optimizer, schedule and callbacks")
    runtime: Runtime = Field(Runtime(), description="device, distribution, precision and limits")
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)  # spec path -> value of each --set

    @property
    def overrides(self) -> dict[str, Any]:
        """The values set over the file (`--set`, sweep values), by spec path, as the run record keeps them."""
        return self._overrides

    @model_validator(mode="after")
    def _whole_spec(self, info: ValidationInfo):
        """Make the paths absolute and infer data.num_classes (see _resolve), then raise every problem of the
        whole spec, each at its own spec path (a pydantic `value_error` whose `ctx["error"]` is a SpecProblems
        holding that one problem)."""
        problems, classes = self._resolve(info.context or {})
        problems = problems or self.problems(classes)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type="value_error", loc=path, input=None, ctx={"error": SpecProblems([(path, msg)])})
                for path, msg in problems
            ])
        return self

    def _resolve(self, context: dict) -> tuple[list[tuple[Path, str]], list[str] | None]:
        """Every path made absolute, and data.num_classes, when the spec leaves it out, inferred from the class
        folders or CSV labels of the dataset: (the problems found on the way, the classes inferred from).

        A relative path is inside context["base"] (the spec file's folder), or the current folder when there is
        none or context["overridden"] holds its spec path (a `--set`); a relative data.dataset is inside the data
        folder when there is one (context["data_dir"], from --data-dir, else data.data_dir)."""
        base, overridden = context.get("base"), set(context.get("overridden", ()))

        def resolved(path: Path, value: str, folder: str | None = None) -> str:
            set_here = any(path[:n] in overridden for n in range(len(path) + 1))
            return absolute(value, folder or (None if set_here else base))

        data, update, classes = self.data, {}, None
        for name in ("data_dir", "cache_dir"):
            if getattr(data, name):
                update[name] = resolved(("data", name), getattr(data, name))
        if data.dataset not in TRAIN_SIZES:
            folder = absolute(context["data_dir"]) if context.get("data_dir") else update.get("data_dir")
            update["dataset"] = resolved(("data", "dataset"), data.dataset, folder)
            if "num_classes" not in data.model_fields_set:
                if data.source in ("auto", "files") and not FilePath(update["dataset"]).exists():
                    return [(("data", "dataset"), missing_dataset(update["dataset"]))], None  # classes unknown
                try:
                    classes = class_names(FilePath(update["dataset"]))
                except (UserError, OSError) as err:
                    return [(("data", "dataset"), err.messages[0] if isinstance(err, UserError) else str(err))], None
                if classes:
                    update["num_classes"] = len(classes)
        object.__setattr__(self, "data", data.model_copy(update=update))
        layers = list(self.model.layers or [])
        for i, entry in enumerate(layers):
            backbone = getattr(entry, "backbone", None)
            if isinstance(backbone, Backbone) and (backbone.run or backbone.weights_file()):
                name = "run" if backbone.run else "weights"
                path = ("model", "layers", i, "backbone", name)
                layers[i] = entry.model_copy(update={"backbone": backbone.model_copy(
                    update={name: resolved(path, getattr(backbone, name))})})
        layers = with_value_ranges(layers, data.preprocess.pixel_range())
        if self.model.layers:
            object.__setattr__(self, "model", self.model.model_copy(update={"layers": layers}))
        return [], classes

    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape: `model.input_shape`, else the dataset's after preprocessing."""
        if self.model.input_shape:
            return tuple(self.model.input_shape)
        prep = self.data.preprocess
        height, width = prep.resize or self.data.image_shape[:2]
        channels = self.data.image_shape[2] if len(self.data.image_shape) == 3 else 1
        return (height, width, channels) if prep.channel_axis else (height, width)

    def loss(self) -> str:
        """The resolved loss name (`auto` follows data.preprocess.one_hot)."""
        if self.train.loss != "auto":
            return self.train.loss
        return "categorical_crossentropy" if self.data.preprocess.one_hot else "sparse_categorical_crossentropy"

    def plan(self) -> list[PlannedLayer]:
        """Every Keras layer with its output shape and parameter counts; raises ShapeError."""
        return plan_layers(self.model.entries(), self.input_shape(), self.data.num_classes, _described_run)

    def backbone(self) -> Backbone | None:
        """The model's backbone layer, if it has one."""
        return next((e.backbone for _, e in self.model.entries() if isinstance(getattr(e, "backbone", None),
                                                                               Backbone)), None)

    def stages(self) -> list[StagePlan]:
        """The stages up to train.epochs (one, the whole run, without train.stages)."""
        backbone = self.backbone()
        default = backbone.trainable if backbone else None
        if not self.train.stages:
            return [StagePlan(1, 0, self.train.epochs, self, default)]
        plans, first = [], 0
        for number, stage in enumerate(self.train.stages, 1):
            if first >= self.train.epochs:
                break
            train = self.train.model_copy(update={"epochs": stage.epochs, "stages": None,
                                                  "optimizer": stage.optimizer or self.train.optimizer,
                                                  "lr_schedule": stage.lr_schedule or self.train.lr_schedule})
            trainable = default if stage.trainable is None or not backbone else stage.trainable
            plans.append(StagePlan(number, first, first + stage.epochs, self.model_copy(update={"train": train}),
                                   trainable))
            first += stage.epochs
        return plans

    def keeps_batch_norm_frozen(self) -> bool:
        """True when the backbone is frozen (wholly or in part) at any stage: its BatchNorm layers then stay in
        inference mode throughout, as Keras' transfer-learning guide prescribes."""
        return any(stage.trainable is not True for stage in self.stages()) if self.backbone() else False

    def stage_weights(self, planned: list[PlannedLayer], stage: StagePlan) -> list[tuple[int, int]]:
        """(trainable, frozen) weights of each planned layer in a stage."""
        return [frozen_counts(p.backbone.layers, stage.trainable, self.keeps_batch_norm_frozen()) if p.backbone
                else (p.trainable, p.non_trainable) for p in planned]

    def problems(self, classes: list[str] | None = None) -> list[tuple[Path, str]]:
        """What is wrong with the spec as a whole, as (spec path, message) pairs; `classes`: the class names
        data.num_classes was inferred from, for the message of an output layer that does not fit them."""
        problems = self._label_problems() + self._train_problems() + self._runtime_problems()
        problems += augment_problems(self.data, self.loss()) + target_problems(self)
        try:
            planned = self.plan()
        except ShapeError as err:
            return problems + [(err.path, str(err))]
        return problems + self._output_problems(planned, classes) + self._budget_problems(planned)

    def largest_batch(self) -> int:
        """The most images one batch can hold: data.batch_size, but no more than max_train or the training set
        of a named dataset (a larger batch is one batch of the whole split)."""
        known = self.data.max_train or TRAIN_SIZES.get(self.data.dataset, self.data.batch_size)
        return min(self.data.batch_size, known)

    def _budget_problems(self, planned: list[PlannedLayer]) -> list[tuple[Path, str]]:
        runtime, problems = self.runtime, []
        total = sum(p.trainable + p.non_trainable for p in planned)
        if total > runtime.max_params:
            problems.append((("model",), f"the model has {total:,} parameters, over runtime.max_params = "
                             f"{runtime.max_params:,}; raise runtime.max_params if you mean it"))
        batch = self.largest_batch()
        sizes = [math.prod(p.output_shape) * batch * 4 for p in planned]
        used = math.prod(self.input_shape()) * batch * 4 + sum(sizes)
        if used > runtime.max_activation_bytes:
            largest = planned[sizes.index(max(sizes))]
            problems.append((("model",), f"one batch of {batch:,} images needs {_gib(used)} of layer outputs, "
                             f"over runtime.max_activation_bytes = {_gib(runtime.max_activation_bytes)}; the largest "
                             f"is {largest.name}, output {largest.output_shape} ({_gib(max(sizes))}); use smaller "
                             "layers or images, a smaller data.batch_size, or raise runtime.max_activation_bytes"))
        return problems

    def _runtime_problems(self) -> list[tuple[Path, str]]:
        runtime = self.runtime
        if runtime.distribute == "none" and runtime.gpus is not None:
            return [(("runtime", "gpus"), "only distribute: mirrored or multi_worker takes a list of GPUs; "
                     "to train on one GPU, use device: gpu:N")]
        if runtime.distribute != "none" and runtime.device.startswith("gpu:"):
            return [(("runtime", "device"), f"'{runtime.device}' picks one GPU, but distribute is "
                     f"{runtime.distribute}; list its GPUs in runtime.gpus instead")]
        return []

    def _stage_problems(self) -> list[tuple[Path, str]]:
        stages, problems = self.train.stages or [], []
        total = sum(stage.epochs for stage in stages)
        if stages and self.train.epochs > total:
            problems.append((("train", "epochs"), f"{self.train.epochs} epochs, but the stages cover {total}; "
                             "leave train.epochs out (it is their total) or lengthen a stage"))
        problems += [(("train", "stages", i, "lr_schedule"), "plateau watches the whole run: set it as "
                      "train.lr_schedule, not in a stage") for i, stage in enumerate(stages)
                     if stage.lr_schedule and stage.lr_schedule.type == "plateau"]
        if not self.backbone():
            problems += [(("train", "stages", i, "trainable"), "there is no backbone to freeze or unfreeze; "
                          "add a `backbone` as the first layer or leave trainable out")
                         for i, stage in enumerate(stages) if stage.trainable is not None]
        return problems

    def _train_problems(self) -> list[tuple[Path, str]]:
        train, problems = self.train, self._stage_problems() + recipe_problems(self.train)
        watched = [(("train", "lr_schedule", "monitor"), getattr(train.lr_schedule, "monitor", None)),
                   (("train", "early_stopping", "monitor"), train.early_stopping and train.early_stopping.monitor)]
        if "monitor" in train.checkpoint.model_fields_set and train.checkpoint.save_best:
            watched.append((("train", "checkpoint", "monitor"), train.checkpoint.monitor))
        if self.data.validation == 0:
            problems += [(path, f"'{metric}' is measured on validation images, but data.validation is 0; "
                          f"monitor '{metric.removeprefix('val_')}' or hold out validation images")
                         for path, metric in watched if metric and metric.startswith("val_")]
        batches = train.tensorboard.profile_batches
        if batches and batches[0] > batches[1]:
            problems.append((("train", "tensorboard", "profile_batches"), f"profile_batches is [first, last], "
                             f"but {batches[0]} > {batches[1]}"))
        return problems

    def _label_problems(self) -> list[tuple[Path, str]]:
        loss, one_hot = self.train.loss, self.data.preprocess.one_hot
        if loss == "sparse_categorical_crossentropy" and one_hot:
            return [(("train", "loss"), "sparse_categorical_crossentropy takes integer labels, but "
                     "data.preprocess.one_hot is true; set one_hot: false or use categorical_crossentropy")]
        if loss == "categorical_crossentropy" and not one_hot:
            return [(("train", "loss"), "categorical_crossentropy takes one-hot labels, but "
                     "data.preprocess.one_hot is false; set one_hot: true or use sparse_categorical_crossentropy")]
        if loss == "mse" and one_hot:
            return [(("data", "preprocess", "one_hot"), "a regression spec (loss: mse) predicts the label "
                     "value itself: set one_hot: false")]
        return []

    def _output_problems(self, planned: list[PlannedLayer], classes: list[str] | None) -> list[tuple[Path, str]]:
        last = planned[-1]
        act = getattr(last.layer, "activation", None)
        if act in ("softmax", "log_softmax", "sigmoid"):
            return [(last.origin, f"the model ends in {act}, but the loss is computed from logits; "
                     "remove the final activation (the last layer must output raw scores)")]
        expected = 1 if self.loss() == "mse" else self.data.num_classes
        units = last.output_shape[-1]
        if len(last.output_shape) != 1 or units != expected:
            what = "1 value (regression, loss: mse)" if expected == 1 else f"{expected} logits, one per class"
            if classes and expected != 1:
                what += f" (data.num_classes is left out, and {self.data.dataset} has {expected} classes: " \
                        f"{', '.join(classes[:20])}{', ...' if expected > 20 else ''})"
            return [(last.origin, f"the model outputs shape {last.output_shape}, but it must output {what}; "
                     f"end with `dense: {{units: {expected}}}`")]
        return []
