"""Using a trained model: find it and its spec, evaluate it, classify image files."""

from __future__ import annotations

import warnings
from pathlib import Path


from .errors import UserError
from .runs import read_json
from .spec import Spec
from .spec import load_spec


def find_model(target: str | Path, spec_file: str | None = None) -> tuple[Spec, Path, dict]:
    """(spec, model file, run state) for a run directory or a .keras file inside one."""
    path = Path(target)
    if path.is_dir():
        run = path
        model = run / "model.keras"
        state = read_json(run / "state.json") if (run / "state.json").is_file() else {}
        if not model.is_file() and state.get("checkpoint"):
            model = run / state["checkpoint"]  # an unfinished run: its last checkpoint
    elif path.is_file():
        model, run = path, next((p for p in (path.parent, path.parent.parent) if (p / "spec.yaml").is_file()), None)
        state = read_json(run / "state.json") if run and (run / "state.json").is_file() else {}
    else:
        raise UserError(f"{path}: no such run directory or model file")
    if not model.is_file():
        raise UserError(f"{path}: no model.keras or checkpoint in this run directory")
    if spec_file is None and run is None:
        raise UserError(f"{model}: no spec.yaml beside this model; pass --spec SPEC (the spec it was trained with)")
    return load_spec(spec_file or run / "spec.yaml"), model, state


def load_model(path: Path):
    from .backend import keras

    from . import train  # noqa: F401  (registers the custom schedule and metric for loading)

    try:
        with warnings.catch_warnings():  # a mixed_float16 model's loss-scale variables: unused here
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            return keras.models.load_model(path)
    except Exception as err:  # Keras raises many types for a damaged archive
        raise UserError(f"{path}: cannot load this model ({type(err).__name__}: {err})") from None
