"""Is the input pipeline the bottleneck? Images/s of the pipeline alone next to the model's training step.

    python benchmarks/pipeline.py [--spec model_specs/lenet5.yaml] [--data-dir DIR] [--steps N]

Prints three figures for one epoch (or N steps), each the best of --repeat runs: the pipeline
iterated alone; model.fit on one batch repeated from memory (the training step with no input
cost); model.fit on the pipeline. When the last is close to the second, the pipeline keeps up.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="model_specs/lenet5.yaml")
    parser.add_argument("--data-dir", help="a folder with the MNIST IDX files (default: the spec's sources)")
    parser.add_argument("--steps", type=int, help="training steps to time (default: one epoch)")
    parser.add_argument("--repeat", type=int, default=3, help="time each figure this many times, keep the best")
    args = parser.parse_args()

    from mnist_keras.model.build import build_model
    from mnist_keras.data import load_arrays, make_pipelines
    from mnist_keras.backend import tf
    from mnist_keras.spec.loader import load_spec
    from mnist_keras.train.compile import compile_model


    spec = load_spec(args.spec)
    arrays = load_arrays(spec.data, args.data_dir)
    started = time.perf_counter()
    pipes = make_pipelines(spec, arrays)
    built = time.perf_counter() - started
    steps = args.steps or pipes.steps_per_epoch
    batch = spec.data.batch_size
    source = arrays.provenance
    print(f"{spec.name}: {source['dataset']} from {source['source']} ({source['path']}), {pipes.n_train:,} training "
          f"images {pipes.input_shape}, batch {batch}, {steps} steps; {os.cpu_count()} CPU cores, "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU")
    print(f"  pipeline set-up (load excluded, preprocessing included): {built:.2f} s")

    def best(run) -> float:
        """The shortest of `args.repeat` timings of run()."""
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times)

    def rate(seconds: float, images: int) -> str:
        return f"{images / seconds:>10,.0f} images/s  ({images:,} images in {seconds:.2f} s)"

    def iterate():
        for _ in pipes.train.take(steps):
            pass

    images = sum(int(x.shape[0]) for x, _ in pipes.train.take(steps))  # also warms up
    seconds = best(iterate)
    print(f"  pipeline alone:               {rate(seconds, images)}")

    model = build_model(spec)
    compile_model(model, spec, pipes.steps_per_epoch)
    one_batch = tf.data.Dataset.from_tensors(next(iter(pipes.train))).cache().repeat()
    for name, dataset, count in (("training step, batch in memory:", one_batch, steps * batch),
                                 ("model.fit on the pipeline:   ", pipes.train, images)):
        model.fit(dataset, epochs=1, steps_per_epoch=10, verbose=0, shuffle=False)  # trace and warm up
        seconds = best(lambda: model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False))
        print(f"  {name} {rate(seconds, count)}")


if __name__ == "__main__":
    main()
