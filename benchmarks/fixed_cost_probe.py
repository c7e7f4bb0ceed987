"""`mnist-keras fit ARGS...` as the CLI runs it, timing each phase of its fixed cost (benchmarks/startup.py --fit).

    python benchmarks/fixed_cost_probe.py OUT.json fit model_specs/lenet5.yaml --epochs 2 ...

Wraps the functions a run goes through and writes, as JSON, the wall-clock time (time.time()) at which each
phase began and ended; the parent turns them into a breakdown.
"""

import json
import os
import sys
import time

marks = [("python started", None, time.time())]
from mnist_keras import cli  # noqa: E402

marks.append(("cli imported", None, time.time()))
import mnist_keras.data  # noqa: E402
from mnist_keras.train import loop  # noqa: E402  (imports TensorFlow)

marks.append(("tensorflow and keras imported", None, time.time()))
from mnist_keras import api  # noqa: E402
from mnist_keras.backend import keras  # noqa: E402

out, argv = sys.argv[1], sys.argv[2:]


def timed(name, function):
    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            marks.append((name, start, time.time()))
    return wrapper


mnist_keras.data.load_data = timed("read the data files", mnist_keras.data.load_data)
mnist_keras.data.make_pipelines = timed("preprocess, build the tf.data pipelines", mnist_keras.data.make_pipelines)
api.load_spec = timed("load the spec", api.load_spec)
loop.configure = timed("configure the device", loop.configure)
loop.build_model = timed("build the model", loop.build_model)
loop.compile_model = timed("compile", loop.compile_model)
loop.atomic_write = timed("save model.keras", loop.atomic_write)
from mnist_keras.runs.run import Run  # noqa: E402

Run.finish = timed("write metrics.json", Run.finish)


class Epochs(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_test_begin(self, logs=None):
        self.val = time.time()
        marks.append((f"epoch {len([m for m in marks if m[0].startswith('epoch')]) + 1} training", self.start,
                      self.val))

    def on_epoch_end(self, epoch, logs=None):
        marks.append(("validation", self.val, time.time()))


original_make_callbacks = loop.make_callbacks


def make_callbacks(*args, **kwargs):
    callbacks, guard = original_make_callbacks(*args, **kwargs)
    return [Epochs(), *callbacks], guard


loop.make_callbacks = make_callbacks
fit, evaluate = keras.Model.fit, keras.Model.evaluate
keras.Model.fit = timed("model.fit", fit)


def evaluate_outside_fit(self, *args, **kwargs):
    if any(name == "model.fit" for name, _, _ in marks):  # not a validation inside fit
        return timed("test evaluation", evaluate)(self, *args, **kwargs)
    return evaluate(self, *args, **kwargs)


keras.Model.evaluate = evaluate_outside_fit
import mnist_keras.reports.dashboards as dashboards  # noqa: E402

dashboards.write_test_metrics = timed("write the dashboard's test metrics", dashboards.write_test_metrics)
dashboards.dashboard_callbacks = timed("set up the dashboard", dashboards.dashboard_callbacks)
from mnist_keras.train import callbacks as run_callbacks  # noqa: E402

for owner, name in ((run_callbacks.RunRecorder, "checkpoints and state.json"),
                    (dashboards.ValidationImages, "dashboard images"), (run_callbacks.Board, "TensorBoard scalars")):
    owner.on_epoch_end = timed(f"{name}, epoch end", owner.on_epoch_end)
for owner, name in ((dashboards.ValidationImages, "dashboard images"), (run_callbacks.Board, "TensorBoard scalars"),
                    (run_callbacks.GraphWriter, "model graph"), (dashboards.RunDescription, "spec and hparams")):
    for hook in ("on_train_begin", "on_train_end"):
        if hook in vars(owner) or hook in vars(owner.__mro__[1]):
            setattr(owner, hook, timed(f"{name}, {hook}", getattr(owner, hook)))
try:
    cli.main(argv, prog_name="mnist-keras", standalone_mode=False)
finally:
    marks.append(("command done", None, time.time()))
    with open(out, "w") as file:
        json.dump(marks, file)
if hasattr(cli, "run"):  # the console script's own exit, without Python's teardown of TensorFlow
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
