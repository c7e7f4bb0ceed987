"""Baseline A: `mnist-keras fit ARGS...` exactly as the CLI runs it, plus test accuracy per epoch.

    python benchmarks/fit_probe.py OUT.json fit model_specs/lenet5.yaml --data-dir DIR ...

Runs mnist_keras.cli.main with one extra callback, appended after the run's own, that evaluates the
model on the test set after each epoch. The run's epoch_seconds and images_per_second are taken
before it; its own seconds are reported as excluded_seconds so time-to-accuracy leaves them out.
"""

import sys
import time

import mnist_keras.data
from common import Report
from mnist_keras import cli
from mnist_keras.backend import keras
from mnist_keras.train import loop

out, argv = sys.argv[1], sys.argv[2:]
test_sets = []


def make_pipelines(*args, **kwargs):
    pipes = original_make_pipelines(*args, **kwargs)
    test_sets.append(pipes.test)
    return pipes


class TestProbe(keras.callbacks.Callback):
    def __init__(self, images_per_epoch):
        super().__init__()
        self.report = Report(out, images_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        accuracy = self.model.evaluate(test_sets[-1], verbose=0, return_dict=True)["accuracy"]
        train_seconds = self.report.images / logs["images_per_second"]
        self.report.epoch(train_seconds, logs["epoch_seconds"], accuracy, time.perf_counter() - start)


def make_callbacks(run, images_per_epoch):
    callbacks, guard = original_make_callbacks(run, images_per_epoch)
    return [*callbacks, TestProbe(images_per_epoch)], guard


original_make_pipelines, mnist_keras.data.make_pipelines = mnist_keras.data.make_pipelines, make_pipelines
original_make_callbacks, loop.make_callbacks = loop.make_callbacks, make_callbacks
cli.main(argv, prog_name="mnist-keras")
