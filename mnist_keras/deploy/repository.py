"""The models one server serves, by name, each with its versions: from the folders given to `serve` or from a
models config file (TensorFlow Serving's --model_config_file, in YAML), kept current by polling the export
folders, as TensorFlow Serving's file system source does.

A models config file:

    models:
      - name: digits                # the name in URLs (default: the export's or the run's own name)
        path: exports/lenet5        # an export folder OUT/NAME or a run directory, relative to this file
        versions: [1, 2]            # serve only these (default: every version folder)
        allow_label_change: false   # true: a new version may bring other class names

Every version found is loaded and served, each with its own batcher; a request without a version gets the
highest. A version folder that appears is loaded while the others serve (copy it in whole, or move it in); one
that cannot be loaded, or whose class names differ from the served highest version's, is reported once and
skipped until its files change. A version folder that disappears is unloaded once its requests are answered,
unless it is the model's last. Nothing here takes a served version down for a bad new one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..errors import UserError, first_line
from ..runs.exports import read_export_record
from ..spec.loader import validate_data
from ..spec.yamlfile import read_yaml_file
from .batching import Batcher
from .payloads import BadRequest, Instances
from .served import ServedModel, load_served, locate, versions_of

RETIRE_AFTER = 2.0  # seconds a replaced version keeps answering requests that found it before it went
log = logging.getLogger("mnist_keras.serve")

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class ModelEntry(BaseModel):
    """One model of a models config file."""

    model_config = ConfigDict(extra="forbid")
    name: ModelName | None = None
    path: str
    versions: Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], Field(min_length=1, max_length=1024)] \
        | None = None
    allow_label_change: bool = False

    @field_validator("versions")
    @classmethod
    def _distinct(cls, versions: list[int] | None) -> list[int] | None:
        if versions and len(set(versions)) != len(versions):
            raise ValueError("each version once")
        return versions


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: Annotated[list[ModelEntry], Field(min_length=1, max_length=256)]


@dataclass(frozen=True)
class ModelSource:
    """A model to serve: its name, what locate() found for it, the versions it may serve (None: every one), and
    whether a new version may change the class names."""

    name: str
    found: object  # an export folder's Path, or a Run
    versions: frozenset[int] | None = None
    allow_label_change: bool = False

    @property
    def polled(self) -> bool:
        return isinstance(self.found, Path)

    @property
    def where(self) -> Path:
        """The export folder or run directory it is served from."""
        return self.found if isinstance(self.found, Path) else self.found.path


def model_sources(targets: list[str], config: str | None = None) -> list[ModelSource]:
    """The models named by `serve`'s folders or its models config file, checked without TensorFlow; UserError
    for a bad folder or file, or for two models under one name."""
    if bool(targets) == bool(config):
        raise UserError("serve: give the run directories or export folders to serve, or --models-config FILE, "
                        "not both" if targets else "serve: give a run directory or export folder to serve")
    if targets:
        sources = [_source(target) for target in targets]
    else:
        path = Path(config)
        data, locations, where = read_yaml_file(path)
        if not isinstance(data, dict):
            raise UserError(f"{where}:1:1: (top level): a models config is a mapping with models: [...]")
        entries = validate_data(ModelsConfig, data, where, locations).models
        sources = [_source(path.parent / entry.path, entry) for entry in entries]
    seen: dict[str, ModelSource] = {}
    for source in sources:
        if source.name in seen:
            raise UserError(f"{source.where}: serves as {source.name!r}, as {seen[source.name].where} does; "
                            "give one of them another name in a models config (name: ...)")
        seen[source.name] = source
    return sources


def _source(target, entry: ModelEntry | None = None) -> ModelSource:
    found = locate(target)
    own = read_export_record(found).name if isinstance(found, Path) else found.spec.name
    if entry is None:
        return ModelSource(own, found)
    versions = frozenset(entry.versions) if entry.versions else None
    if versions and not isinstance(found, Path) and versions != {1}:
        raise UserError(f"{found.path}: a run directory is served as version 1 only, not versions "
                        f"{sorted(versions)}")
    return ModelSource(entry.name or own, found, versions, entry.allow_label_change)


@dataclass
class Servable:
    """One version of one model, being served: the model and the batcher its requests queue in."""

    model: ServedModel
    batcher: Batcher

    async def predict(self, instances: Instances) -> np.ndarray:
        """Probabilities (N, classes) of a request's images; encoded files are decoded off the event loop first."""
        images = instances.images
        if images is None:
            images = await asyncio.to_thread(self.decoded, instances.files, instances.places)
        return await self.batcher.predict(images)

    def decoded(self, files: list[bytes], names: list[str | None]) -> np.ndarray:
        """Encoded image files as uint8 images (N, H, W, C), decoded as the run's data set was; 400 naming the
        first that is no image."""
        try:
            return np.stack([self.model.decode(data, name) for data, name in zip(files, names)])
        except UserError as err:
            raise BadRequest(" ".join(err.messages)) from None


class Repository:
    """What the server serves now. `find` gives a request its servable; `start` loads every model (in the
    background: the server answers meanwhile, not ready) and then polls export folders every `poll` seconds
    (0: never); `stop` answers what is queued and stops."""

    def __init__(self, sources: list[ModelSource], make_batcher: Callable[[ServedModel], Batcher], poll: float,
                 announce: Callable[[str], None], prepare: Callable[[], None] = lambda: None):
        self.sources, self.make_batcher, self.poll, self.announce = sources, make_batcher, poll, announce
        self.prepare = prepare  # run on the loading thread before the first model loads
        self.served: dict[str, dict[int, Servable]] = {source.name: {} for source in sources}
        self.loading, self.draining = True, False
        self.failure: UserError | None = None  # why the first load failed: the server then stops
        self._skipped: dict[tuple[str, int], tuple] = {}  # versions refused, by the state of their files then
        self._reported: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def ready(self) -> bool:
        return not (self.loading or self.draining or self.failure)

    def find(self, name: str, version: str | None = None) -> Servable:
        """The servable a request names (the highest version when it names none); TensorFlow Serving's 404
        otherwise, or 503 while the models load."""
        versions = self.served.get(name)
        if versions is not None and self.loading:
            raise BadRequest(f"{name} is loading; ask again once /v2/health/ready answers 200", 503)
        if versions and version is None:
            return versions[max(versions)]
        if versions and version.isascii() and version.isdigit() and int(version) in versions:
            return versions[int(version)]
        wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise BadRequest(f"Servable not found for request: {wanted}", 404)

    def servables(self) -> list[tuple[str, Servable]]:
        return [(name, servable) for name, versions in self.served.items() for _, servable in sorted(versions.items())]

    async def start(self, on_loaded: Callable[[], None], on_failure: Callable[[], None]) -> None:
        self._spawn(self._keep_current(on_loaded, on_failure))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(servable.batcher.stop() for _, servable in self.servables()))

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_current(self, on_loaded: Callable[[], None], on_failure: Callable[[], None]) -> None:
        try:
            await asyncio.to_thread(self.prepare)
            for source in self.sources:
                versions = self._wanted(source)
                if not versions:
                    raise UserError(f"{source.where}: none of versions {sorted(source.versions)} is there "
                                    f"(found: {sorted(versions_of(source.found)) or 'none'})")
                for version in sorted(versions):
                    await self._add(source, await asyncio.to_thread(self._load, source, version))
        except UserError as err:
            self.failure = err
            on_failure()
            return
        self.loading = False
        gc.collect()
        gc.freeze()  # TensorFlow's millions of objects are never garbage: collections skip them from here on
        on_loaded()
        while self.poll:
            await asyncio.sleep(self.poll)
            for source in filter(lambda s: s.polled, self.sources):
                await self._refresh(source)

    def _wanted(self, source: ModelSource) -> dict[int, Path]:
        found = versions_of(source.found)
        if not found and source.versions is None:
            raise UserError(f"{source.found}: no SavedModel version folder (1/, 2/, ...) with a saved_model.pb")
        return {v: path for v, path in found.items() if source.versions is None or v in source.versions}

    def _load(self, source: ModelSource, version: int) -> ServedModel:
        """One version, loaded and checked against the class names of the version it would replace."""
        model = replace(load_served(source.found, version), name=source.name)
        served = self.served[source.name]
        if served and not source.allow_label_change:
            current = served[max(served)].model
            difference = _label_difference(model.class_names, current.class_names)
            if difference:
                raise UserError(f"{source.where / str(version)}: its class names differ from those of version "
                                f"{current.version}, which it would replace ({difference}); allow_label_change: true "
                                "for this model in a models config serves it")
        return model

    async def _add(self, source: ModelSource, model: ServedModel) -> None:
        batcher = self.make_batcher(model)
        await batcher.start()
        self.served[source.name][model.version] = Servable(model, batcher)

    async def _refresh(self, source: ModelSource) -> None:
        """Load the versions that appeared, retire those whose folders went; report each problem once."""
        try:
            wanted = self._wanted(source)
        except UserError as err:
            return self._report(" ".join(err.messages))
        served = self.served[source.name]
        for version in sorted(set(wanted) - set(served)):
            state = _files_state(wanted[version])
            if self._skipped.get((source.name, version)) == state:
                continue
            try:
                model = await asyncio.to_thread(self._load, source, version)
            except UserError as err:
                self._skipped[(source.name, version)] = state
                log.warning("%s version %s: not served: %s", source.name, version, " ".join(err.messages))
                continue
            await self._add(source, model)
            self.announce(f"{source.name}: serving version {version} too, from {wanted[version]}")
        for version in sorted(set(served) - set(wanted)):
            if len(served) == 1:
                self._report(f"{source.name} version {version}: its folder is gone; it is the model's last version, "
                             "so it is served on")
                continue
            self._spawn(self._retire(served.pop(version)))
            self.announce(f"{source.name}: version {version} unloaded (its folder is gone)")

    async def _retire(self, servable: Servable) -> None:
        await asyncio.sleep(RETIRE_AFTER)  # requests that found it just before it went still queue in it
        await servable.batcher.stop()

    def _report(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            log.warning("%s", message)


def _label_difference(new: list[str], old: list[str]) -> str | None:
    """How the class names of a new version differ from the served ones, or None."""
    if len(new) != len(old):
        return f"{len(new)} classes, not {len(old)}"
    for index, (a, b) in enumerate(zip(new, old)):
        if a != b:
            return f"class {index} is {a[:60]!r}, not {b[:60]!r}"
    return None


def _files_state(folder: Path) -> tuple:
    """The names, sizes and modification times of a version folder's files: a version refused is tried again
    when they change (a copy that was still being written, say)."""
    state = []
    try:
        for root, _, files in os.walk(folder):
            for name in files:
                info = os.stat(os.path.join(root, name), follow_symlinks=False)
                state.append((root, name, info.st_size, info.st_mtime_ns))
    except OSError as err:
        return ("unreadable", first_line(err))
    return tuple(sorted(state))
