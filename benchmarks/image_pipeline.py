"""Streaming image files: the pipeline's images/s next to a small CNN's training step, and its peak memory.

    python benchmarks/image_pipeline.py [throughput] [--images 400] [--batch 32]
    python benchmarks/image_pipeline.py rss N

throughput writes --images JPEGs of 256 to 400 pixels a side into a temporary folder and prints, for
one epoch at 224x224x3: the pipeline iterated alone with each data.cache choice; model.fit of a
small CNN on one batch repeated from memory (the training step with no input cost); and model.fit
on the streamed pipeline. rss writes N 96x96 RGB PNGs, iterates one epoch with cache: none, and
prints the process's peak RSS (VmHWM): it should not grow with N.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CNN = [{"conv2d": {"filters": 16, "kernel_size": 3, "strides": 2, "activation": "relu"}}, {"max_pool2d": 2},
       {"conv2d": {"filters": 32, "kernel_size": 3, "strides": 2, "activation": "relu"}},
       {"max_pool2d": 4}, "flatten", {"dense": {"units": 10}}]


def write_files(folder: Path, n: int, side, suffix: str):
    """n random images (smooth colour gradients plus noise, like photos compress) and labels, as a Files-like
    object (train = test) for make_pipelines."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = side(rng)
        ramp = np.linspace(0, 255, w)[None, :, None] * rng.random(3)
        ramp = ramp + np.linspace(0, 255, h)[:, None, None] * rng.random(3)
        image = np.clip(ramp / 2 + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(str(folder / f"{i:05d}{suffix}"))
        Image.fromarray(image).save(paths[-1])
    split = SimpleNamespace(paths=paths, labels=rng.integers(0, 10, n))
    return SimpleNamespace(train=split, validation=None, test=split, class_names=[], provenance={})


def spec_of(raw: dict):
    """A Spec from a dict, with data.cache (memory, disk or none) and data.preprocess.fit set unchecked where the
    schema does not take them yet."""
    from mnist_keras.spec import Spec

    data = dict(raw.get("data", {}))
    preprocess = dict(data.get("preprocess", {}))
    late = {key: data.pop(key) for key in ("cache", "cache_dir") if isinstance(data.get(key), str)}
    fit = preprocess.pop("fit", None)
    spec = Spec.model_validate({**raw, "data": {**data, "preprocess": preprocess}})
    if fit:
        late["preprocess"] = spec.data.preprocess.model_copy(update={"fit": fit})
    return spec.model_copy(update={"data": spec.data.model_copy(update=late)})


def make_spec(shape, batch, cache, layers):
    return spec_of({"data": {"image_shape": shape, "batch_size": batch, "validation": 0, "cache": cache},
                    "model": {"layers": layers}, "train": {"epochs": 1}})


def peak_rss() -> int:
    """This process's peak resident memory, in MB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def rss(n: int) -> None:
    from mnist_keras.data import make_pipelines

    with tempfile.TemporaryDirectory() as folder:
        files = write_files(Path(folder), n, lambda rng: (96, 96), ".png")
        pipes = make_pipelines(make_spec([96, 96, 3], 64, "none", ["flatten", {"dense": 10}]), files)
        seen = sum(int(x.shape[0]) for x, _ in pipes.train)
    print(f"{seen:,} images 96x96x3 streamed with cache: none: peak RSS {peak_rss()} MB")


def throughput(n: int, batch: int) -> None:
    from mnist_keras.backend import tf
    from mnist_keras.model.build import build_model
    from mnist_keras.data import make_pipelines
    from mnist_keras.train.compile import compile_model

    def timed(run) -> float:
        run()  # warm-up: tracing, the disk cache, autotuning
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    def rate(what: str, seconds: float) -> None:
        print(f"  {what:<52} {n / seconds:>8,.0f} images/s  ({n:,} in {seconds:.2f} s)")

    with tempfile.TemporaryDirectory() as folder:
        files = write_files(Path(folder), n, lambda rng: rng.integers(256, 401, 2), ".jpg")
        size = sum(os.path.getsize(p) for p in files.train.paths) / n / 1024
        print(f"{n:,} JPEGs of 256-400 px a side ({size:.0f} KB each) -> 224x224x3, batch {batch}; "
              f"{os.cpu_count()} CPU cores, {len(tf.config.list_physical_devices('GPU'))} GPU")
        for cache in ("none", "disk", "memory"):
            spec = make_spec([224, 224, 3], batch, cache, CNN)
            pipes = make_pipelines(spec, files, cache_dir=os.path.join(folder, "cache"))
            rate(f"pipeline alone, cache: {cache}", timed(lambda: sum(1 for _ in pipes.train)))
        spec = make_spec([224, 224, 3], batch, "none", CNN)
        pipes = make_pipelines(spec, files)
        model = build_model(spec)
        compile_model(model, spec, pipes.steps_per_epoch)
        one = tf.data.Dataset.from_tensors(next(iter(pipes.train))).repeat()

        def fit(dataset):
            return lambda: model.fit(dataset, epochs=1, steps_per_epoch=pipes.steps_per_epoch, verbose=0, shuffle=False)

        rate("training step alone (one batch repeated, small CNN)", timed(fit(one)))
        rate("model.fit on the streamed pipeline, cache: none", timed(fit(pipes.train)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="throughput", choices=["throughput", "rss"])
    parser.add_argument("count", nargs="?", type=int, help="rss: how many images")
    parser.add_argument("--images", type=int, default=400, help="throughput: how many JPEGs")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    rss(args.count) if args.mode == "rss" else throughput(args.images, args.batch)


if __name__ == "__main__":
    main()
