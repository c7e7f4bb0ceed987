"""What the TensorBoard validation images cost per epoch, beside the epoch itself.

    python scripts/bench_dashboards.py [SPEC] [--data-dir DIR] [--repeat N]

Trains SPEC (default model_specs/dense.yaml) for one epoch, then times ValidationImages.on_epoch_end
(a prediction pass over the validation set, the confusion matrix and the misclassified grid drawn and
written as summaries) N times, and one more training epoch for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "model_specs/dense.yaml"))
    parser.add_argument("--data-dir")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from mnist_keras.model.build import build_model
    from mnist_keras.reports.dashboards import dashboard_callbacks
    from mnist_keras.data import make_pipelines
    from mnist_keras.spec.loader import load_spec
    from mnist_keras.train.compile import compile_model
    from mnist_keras.runs.record import RunState
    from mnist_keras.train.loop import prepare

    spec = load_spec(args.spec, ["train.epochs=2"])
    prepared = prepare(spec, args.data_dir, None, print)
    described, arrays = prepared.placement.described, prepared.data
    pipes = make_pipelines(spec, arrays)
    model = build_model(spec)
    compile_model(model, spec, pipes.steps_per_epoch)
    model.fit(pipes.train, epochs=1, steps_per_epoch=pipes.steps_per_epoch, verbose=0, shuffle=False)
    started = time.perf_counter()
    model.fit(pipes.train, epochs=2, initial_epoch=1, steps_per_epoch=pipes.steps_per_epoch, verbose=0, shuffle=False)
    epoch = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as logs:
        (images,) = dashboard_callbacks(spec, Path(logs), RunState(epochs_done=1), arrays, pipes.validation)[1:]
        images.set_model(model)
        images.every = 1  # the cost of one drawing, whatever the spec's train.tensorboard.images_every
        images.on_train_begin()
        times = []
        for step in range(args.repeat + 1):  # the first call traces the predict function
            started = time.perf_counter()
            images.on_epoch_end(step)
            times.append(time.perf_counter() - started)
        images.on_train_end()
    print(f"{spec.name} on {described}: {pipes.n_train:,} training images, {pipes.n_val:,} validation images")
    print(f"training epoch: {epoch:.2f} s; validation images: first call {times[0]:.2f} s, then median "
          f"{statistics.median(times[1:]):.2f} s (min {min(times[1:]):.2f}, max {max(times[1:]):.2f}) per epoch")


if __name__ == "__main__":
    main()
