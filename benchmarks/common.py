"""What the hand-written baselines share: the MNIST IDX reader, their command line and their report.

Kept free of TensorFlow and PyTorch so each baseline imports only its own framework.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or raw) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(data_dir: str) -> dict[str, np.ndarray]:
    """The four MNIST arrays from a folder of IDX files (uint8 images, int64 labels)."""
    folder, out = Path(data_dir), {}
    for key, name in FILES.items():
        path = folder / f"{name}.gz" if (folder / f"{name}.gz").exists() else folder / name
        out[key] = read_idx(path) if key.startswith("x") else read_idx(path).astype(np.int64)
    return out


def arguments(description: str, threads: bool = False, tuned: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=["lenet5", "dense", "fast"] if tuned else ["lenet5", "dense"], required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--learning-rate", type=float, required=True)
    parser.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up before the cosine decay")
    parser.add_argument("--validation", type=int, default=6000, help="hold out the last N training images")
    parser.add_argument("--mean", type=float, default=0.1307)
    parser.add_argument("--std", type=float, default=0.3081)
    parser.add_argument("--out", required=True, help="write the per-epoch report (JSON) here")
    parser.add_argument("--mixed-bfloat16", action="store_true", help="Keras' mixed_bfloat16 policy")
    if threads:
        parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    if tuned:
        parser.add_argument("--tuned", action="store_true",
                            help="hand-tuned: images preprocessed once, shuffle+batch+prefetch, steps_per_execution 16")
    return parser.parse_args()


def learning_rate(args, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up to the learning rate, then cosine decay to 0 at the last step (Keras' CosineDecay)."""
    warmup, total = round(args.warmup_epochs * steps_per_epoch), args.epochs * steps_per_epoch
    if step < warmup:
        return args.learning_rate * step / warmup
    done = min(step - warmup, total - warmup) / max(1, total - warmup)
    return args.learning_rate * 0.5 * (1 + math.cos(math.pi * done))


class Report:
    """Per-epoch timings and test accuracy. Test evaluation happens outside the timed path: its
    seconds are added up in `excluded_seconds` so the harness can take them out of wall-clock times."""

    def __init__(self, path: str, images_per_epoch: int):
        self.path, self.images, self.epochs, self.excluded = path, images_per_epoch, [], 0.0

    def epoch(self, train_seconds: float, epoch_seconds: float, test_accuracy: float, eval_seconds: float):
        self.epochs.append({
            "epoch": len(self.epochs) + 1, "train_seconds": train_seconds, "epoch_seconds": epoch_seconds,
            "images_per_second": self.images / train_seconds, "test_accuracy": test_accuracy,
            "end_time": time.time() - eval_seconds, "excluded_seconds": self.excluded, "eval_seconds": eval_seconds,
        })
        self.excluded += eval_seconds
        Path(self.path).write_text(json.dumps({"epochs": self.epochs}, indent=1))


def cpu_model() -> str:
    """The CPU's model name, for the benchmarks' headers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """'MODEL, N cores, AVX-512: avx512f avx512bw ..., AMX: none': the CPU's model and its AVX-512 and AMX flags."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    listed = {kind: " ".join(f for f in flags if f.startswith(prefix)) or "none"
              for kind, prefix in (("AVX-512", "avx512"), ("AMX", "amx"))}
    return f"{cpu_model()}, {os.cpu_count()} cores, " + ", ".join(f"{k}: {v}" for k, v in listed.items())
