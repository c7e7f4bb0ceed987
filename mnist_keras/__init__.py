"""mnist-keras: declarative YAML model specs compiled into keras.Sequential models.

The Python API (see mnist_keras.api); names load on first use, so `import mnist_keras` stays light:

    import mnist_keras as mk
    spec = mk.load_spec("model_specs/lenet5.yaml", overrides=["train.epochs=1"])
    run = mk.fit(spec, runs="runs")
"""

from importlib import import_module

__version__ = "0.1.0"

_HOMES = {
    "load_spec": "api", "build_model": "api", "fit": "api", "resume": "api", "open_run": "api", "evaluate": "api",
    "predict": "api", "sweep": "api", "export": "api", "export_all": "api", "Exports": "api", "summary": "api",
    "keras_summary": "api", "schema": "api", "list_runs": "api", "validate": "api", "Checked": "api",
    "load_model": "api", "report": "api", "devices": "api", "serve": "api", "data_info": "api", "DataInfo": "api",
    "data_preview": "api", "DataPreview": "api", "data_check": "api", "DataCheck": "api", "lr_find": "api",
    "LRFinding": "api",
    "Reporter": "api", "Run": "api", "Spec": "spec", "Error": "errors", "UserError": "errors",
    "TrainingFailed": "errors", "ExportFailed": "errors", "Interrupted": "errors",
}
__all__ = [*_HOMES, "__version__"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
