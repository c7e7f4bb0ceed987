"""How close `mnist-keras fit` trains to this CPU's peak: the model's arithmetic per image, the machine's measured
GEMM peak, and the share of it that training reaches.

    python benchmarks/ceiling.py --data-dir DIR [--spec model_specs/lenet5.yaml] [--epochs 4] [--repeats 3]
                                 [--set k=v ...]

The arithmetic comes from the shape planner (no TensorFlow): a weighted layer's multiply-adds per image are its
kernel's weights (its parameters less one bias per output channel) times its output positions; training costs
about 6 FLOP per multiply-add (2 forward, 4 backward). The peak is float32 `tf.matmul` of 2048x2048 matrices on
all cores (and bfloat16 where the CPU computes in it), the best of 5 timings of 1 s. Training is `mnist-keras
fit SPEC --epochs N` on the full MNIST, --repeats times; its images/s is the median over the repeats of the
median of the epochs after the first, as fit reports them (training and validation steps of the epoch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def multiply_adds(spec) -> list[tuple[str, int]]:
    """(layer name, multiply-adds per image) of every weighted layer of the spec's plan."""
    found = []
    for planned in spec.plan():
        weights = planned.trainable + planned.non_trainable
        if not weights or len(planned.output_shape) < 1:
            continue
        channels = planned.output_shape[-1]
        kernel = weights - (channels if getattr(planned.layer, "use_bias", True) else 0)
        if planned.name.startswith(("batch_norm", "layer_norm")):
            kernel = weights  # a scale and an offset per channel, at every position
        found.append((planned.name, kernel * math.prod(planned.output_shape[:-1])))
    return found


def gemm_peak(dtype: str, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of n x n matrix products in `dtype`, the best of 5 timings of `seconds` each."""
    from mnist_keras.backend import tf

    a = tf.random.stateless_uniform([n, n], seed=[1, 2], dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda x: tf.matmul(x, x))
    product(a).numpy()
    best = 0.0
    for _ in range(5):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            out = product(a)
            count += 1
        out.numpy()
        best = max(best, 2 * n**3 * count / (time.perf_counter() - started) / 1e9)
    return best


def fit_images_per_second(spec_file: str, data_dir: str, epochs: int, sets: list[str]) -> tuple[float, dict]:
    """The median images/s of the epochs after the first of `mnist-keras fit`, and its metrics.json."""
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "mnist_keras", "fit", spec_file, "--epochs", str(epochs), "--data-dir",
                   data_dir, "--runs", runs, *(arg for text in sets for arg in ("--set", text))]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        (metrics,) = Path(runs).glob("*/*/metrics.json")
        recorded = json.loads(metrics.read_text())
    rates = [epoch["images_per_second"] for epoch in recorded["history"][1:]]
    return statistics.median(rates), recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with the four MNIST IDX files")
    parser.add_argument("--spec", default="model_specs/lenet5.yaml")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE")
    args = parser.parse_args()
    import mnist_keras as mk

    spec = mk.load_spec(ROOT / args.spec, args.sets)
    layers = multiply_adds(spec)
    macs = sum(count for _, count in layers)
    training_flop = 6 * macs
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU cores "
          f"({cpu_model()}), python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print(f"{args.spec}{' ' + ' '.join(args.sets) if args.sets else ''}: multiply-adds per image, by layer: "
          + ", ".join(f"{name} {count:,}" for name, count in layers))
    print(f"  forward {2 * macs / 1e6:.2f} MFLOP, training about {training_flop / 1e6:.2f} MFLOP per image")
    fits = [fit_images_per_second(args.spec, args.data_dir, args.epochs, args.sets) for _ in range(args.repeats)]
    rates = sorted(rate for rate, _ in fits)
    rate, recorded = statistics.median(rates), fits[0][1]
    precision = "bfloat16" if "bfloat16" in str(recorded.get("device", "")) else "float32"
    peaks = {"float32": gemm_peak("float32")}
    if precision == "bfloat16":
        peaks["bfloat16"] = gemm_peak("bfloat16")
    achieved = rate * training_flop / 1e9
    print(f"  fit: {rate:,.0f} images/s (median of {args.repeats} fits: {', '.join(f'{r:,.0f}' for r in rates)}; "
          f"epochs 2-{args.epochs}; {recorded['device']}), {achieved:.1f} GFLOP/s")
    for name, peak in peaks.items():
        print(f"  peak: {peak:.1f} GFLOP/s ({name} tf.matmul 2048x2048, all cores): training reaches "
              f"{achieved / peak:.0%} of it")


if __name__ == "__main__":
    main()
