"""Streaming image files: the pipeline's images/s next to a small CNN's training step, next to Keras' and
torchvision's pipelines, and its peak memory.

    python benchmarks/image_pipeline.py [throughput] [--images 400] [--batch 32]
    python benchmarks/image_pipeline.py compare [--images 2000] [--batch 32] [--repeats 3]
    python benchmarks/image_pipeline.py rss N

throughput writes --images JPEGs of 256 to 400 pixels a side into a temporary folder and prints, for
one epoch at 224x224x3: the pipeline iterated alone with each data.cache choice; model.fit of a
small CNN on one batch repeated from memory (the training step with no input cost); and model.fit
on the streamed pipeline. rss writes N 96x96 RGB PNGs, iterates one epoch with cache: none, and
prints the process's peak RSS (VmHWM): it should not grow with N.

compare writes --images JPEGs of 256 to 400 pixels a side into 10 class folders and times, each in a fresh
process and alternating the programs in every repeat, one steady epoch (the second of two, so a disk cache is
filled in the first) at 224x224x3 of: mnist-keras' pipeline for that folder with data.cache none and disk;
keras.utils.image_dataset_from_directory with prefetch, and with .cache(file) for disk, as Keras' guide writes
it; torchvision's ImageFolder (Resize, PILToTensor) with a DataLoader of 2 workers, where torch is installed.
It prints the median images/s of each, the ratios, and one image's decode-and-resize cost on one thread
(Pillow's and TensorFlow's), so what the cores allow.
"""

from __future__ import annotations

import argparse
import json
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


PROGRAMS = ("mnist-keras none", "mnist-keras disk", "keras none", "keras disk", "torchvision none")


def class_folders(folder: Path, n: int) -> None:
    """n JPEGs of 256-400 px a side (as write_files makes them) in 10 class folders."""
    files = write_files(folder, n, lambda rng: rng.integers(256, 401, 2), ".jpg")
    for path, label in zip(files.train.paths, files.train.labels):
        (folder / f"class{label}").mkdir(exist_ok=True)
        os.rename(path, folder / f"class{label}" / Path(path).name)


def epochs_of(program: str, folder: str, batch: int, work: str):
    """A callable iterating one epoch of `program`'s pipeline over `folder`, returning the images it saw."""
    tool, cache = program.split()
    if tool == "mnist-keras":
        from mnist_keras.data import load_data, make_pipelines

        spec = spec_of({"data": {"dataset": folder, "image_shape": [224, 224, 3], "batch_size": batch,
                                 "validation": 0, "test_split": 0.01, "cache": cache, "cache_dir": work},
                        "model": {"layers": ["flatten", {"dense": 10}]}, "train": {"epochs": 2}})
        pipes = make_pipelines(spec, load_data(spec.data, seed=spec.seed), cache_dir=work)
        return lambda: sum(int(x.shape[0]) for x, _ in pipes.train.take(pipes.steps_per_epoch))
    if tool == "keras":
        from mnist_keras.backend import keras, tf

        dataset = keras.utils.image_dataset_from_directory(folder, image_size=(224, 224), batch_size=batch,
                                                           shuffle=True, seed=1, verbose=False)
        dataset = (dataset.cache(os.path.join(work, "keras-cache")) if cache == "disk" else dataset)
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        return lambda: sum(int(x.shape[0]) for x, _ in dataset)
    import torch.utils.data
    import torchvision

    images = torchvision.datasets.ImageFolder(folder, transform=torchvision.transforms.Compose(
        [torchvision.transforms.Resize((224, 224)), torchvision.transforms.PILToTensor()]))
    loader = torch.utils.data.DataLoader(images, batch_size=batch, shuffle=True, num_workers=2, persistent_workers=True)
    return lambda: sum(int(x.shape[0]) for x, _ in loader)


def one(program: str, folder: str, batch: int) -> None:
    """Print `program`'s images/s over its second epoch (the first traces, autotunes, starts workers, fills caches)."""
    with tempfile.TemporaryDirectory() as work:
        epoch = epochs_of(program, folder, batch, work)
        epoch()
        started = time.perf_counter()
        seen = epoch()
        print(json.dumps({"images_per_second": seen / (time.perf_counter() - started), "images": seen}))


def decode_costs(folder: Path) -> dict[str, float]:
    """Seconds to decode one JPEG and make it 224x224 on one thread: mnist-keras' decoder (Pillow, bilinear with
    Pillow's antialiasing), then what image_dataset_from_directory does (TensorFlow's decode_image and resize,
    bilinear without antialiasing), in a tf.data map of one thread."""
    from mnist_keras.backend import tf
    from mnist_keras.data.images import image_array

    paths = [str(path) for path in sorted(folder.glob("*/*.jpg"))[:400]]
    started = time.perf_counter()
    for path in paths:
        image_array(path, [224, 224, 3], "stretch")
    pillow = (time.perf_counter() - started) / len(paths)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(lambda path: tf.image.resize(tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False), (224, 224))).with_options(options)
    sum(1 for _ in dataset.take(8))
    started = time.perf_counter()
    sum(1 for _ in dataset)
    return {"Pillow": pillow, "TensorFlow": (time.perf_counter() - started) / len(paths)}


def compare(n: int, batch: int, repeats: int) -> None:
    import importlib.util
    import statistics
    import subprocess

    from common import machine

    programs = [p for p in PROGRAMS if not p.startswith("torchvision") or importlib.util.find_spec("torchvision")]
    rates: dict[str, list[float]] = {p: [] for p in programs}
    with tempfile.TemporaryDirectory() as folder:
        class_folders(Path(folder), n)
        size = sum(p.stat().st_size for p in Path(folder).glob("*/*.jpg")) / n / 1024
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"{n:,} JPEGs of 256-400 px a side ({size:.0f} KB each) in 10 class folders -> 224x224x3, batch "
              f"{batch}; one steady epoch (the second of two), each program in a fresh process, {repeats} repeats "
              "alternating the programs")
        for repeat in range(repeats):
            for program in programs if repeat % 2 == 0 else programs[::-1]:
                out = subprocess.run([sys.executable, __file__, "one", program, folder, "--batch", str(batch)],
                                     capture_output=True, text=True, check=True).stdout
                rates[program].append(json.loads(out.splitlines()[-1])["images_per_second"])
        costs = decode_costs(Path(folder))
    median = {p: statistics.median(r) for p, r in rates.items()}
    for program, runs in rates.items():
        print(f"  {program:<18} {median[program]:>7,.0f} images/s  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")
    for cache in ("none", "disk"):
        ours = median[f"mnist-keras {cache}"]
        others = [p for p in programs if p.endswith(cache) and not p.startswith("mnist-keras")]
        print(f"  cache {cache}: mnist-keras " + ", ".join(f"{ours / median[p]:.2f}x {p}" for p in others))
    cores = os.cpu_count()
    print("  one image decoded and resized on one thread: " + ", ".join(
        f"{name} {seconds * 1000:.2f} ms" for name, seconds in costs.items()) +
        f"; {cores} cores allow at most {cores / costs['Pillow']:,.0f} images/s with Pillow, "
        f"{cores / costs['TensorFlow']:,.0f} with TensorFlow's decoder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="throughput", choices=["throughput", "compare", "rss", "one"])
    parser.add_argument("count", nargs="?", help="rss: how many images; one: the program (compare runs it)")
    parser.add_argument("folder", nargs="?", help="one: the class folders")
    parser.add_argument("--images", type=int, help="throughput and compare: how many JPEGs (400 and 2,000)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="compare: runs of each program")
    args = parser.parse_args()
    if args.mode == "rss":
        rss(int(args.count))
    elif args.mode == "one":
        one(args.count, args.folder, args.batch)
    elif args.mode == "compare":
        compare(args.images or 2000, args.batch, args.repeats)
    else:
        throughput(args.images or 400, args.batch)


if __name__ == "__main__":
    main()
