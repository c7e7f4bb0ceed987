"""Latency per image of each export format beside Keras' `model.predict` and a direct `model(x)` call.

    python benchmarks/export_latency.py [RUN_DIR] [--repeats N]

Without RUN_DIR it trains model_specs/lenet5.yaml for 1 epoch on the bundled sample in a temporary folder.
Every format missing from RUN_DIR/export is exported first (mnist_keras.deploy.export). Each runtime is
timed on the run's test images, one image per call and 256 per call, after warm-up calls; the table gives
the median milliseconds per image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnist_keras import open_run  # noqa: E402
from mnist_keras.deploy.export import export_run  # noqa: E402
from mnist_keras.deploy.parity import PREDICTORS, size_bytes  # noqa: E402
from mnist_keras.runs.exports import EVERY_EXPORT, artifact_key, artifact_name  # noqa: E402

BATCHES = (1, 256)


def trained_lenet5(folder: Path) -> Path:
    import mnist_keras as mk

    spec = mk.load_spec(ROOT / "model_specs/lenet5.yaml", ["train.epochs=1", "data.source=bundled"])
    return mk.fit(spec, runs=folder).path


def ms_per_image(predict, images: np.ndarray, batch: int, repeats: int) -> float:
    """Median milliseconds per image of `repeats` calls on `batch` images each (after 3 warm-up calls)."""
    starts = [(i * batch) % (len(images) - batch + 1) for i in range(repeats + 3)]
    calls = [images[start:start + batch] for start in starts]
    times = []
    for i, x in enumerate(calls):
        started = time.perf_counter()
        predict(x)
        if i >= 3:
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a trained run (default: LeNet-5, 1 epoch on the bundled sample)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per batch size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = open_run(args.run_dir or trained_lenet5(Path(scratch)))
        exported = {}
        for fmt, quantize in EVERY_EXPORT:
            path = run.path / "export" / run.spec.name / artifact_name(fmt, quantize)
            exported[artifact_key(fmt, quantize)] = (fmt, path if path.exists() else
                                                     export_run(run.path, fmt, quantize).path)
        table(run, exported, args.repeats)


def table(run, exported: dict, repeats: int) -> None:
    from mnist_keras.backend import tf
    from mnist_keras.data import load_arrays
    from mnist_keras.deploy.serving import serving_model
    from mnist_keras.model.objects import load_run_model

    model = serving_model(run.spec, load_run_model(run), run.class_names).model
    arrays = load_arrays(run.spec.data, run.state.data_dir, seed=run.spec.seed)
    images = arrays.x_test.reshape((len(arrays.x_test), *model.input_shape[1:]))
    runtimes = {"keras model.predict": (lambda x: model.predict(x, batch_size=len(x), verbose=0), None),
                "keras model(x)": (lambda x: model(tf.constant(x), training=False).numpy(), None)}
    for key, (fmt, path) in exported.items():
        runtimes[key] = (PREDICTORS[fmt](path), size_bytes(path))
    print(f"{run.spec.name}: {len(images):,} test images of {images.shape[1:]}, median of {repeats} calls; "
          f"TensorFlow {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")
    print(f"{'runtime':22} {'file KiB':>9} {'ms/image, batch 1':>18} {'ms/image, batch 256':>20} {'images/s, 256':>14}")
    for name, (predict, size) in runtimes.items():
        one, many = (ms_per_image(predict, images, batch, repeats) for batch in BATCHES)
        print(f"{name:22} {'-' if size is None else f'{size / 1024:,.1f}':>9} {one:>18.3f} {many:>20.4f} "
              f"{1000 / many:>14,.0f}")


if __name__ == "__main__":
    main()
