"""Transfer learning, measured: pretrain a small CNN on MNIST digits 0-4 (their whole training set), then
learn digits 5-9 from only N images per class (a) from scratch, (b) with the pretrained run as a frozen
backbone and a new head, (c) the same followed by a fine-tuning stage at a 10x lower learning rate.
Test accuracy is on all the test images of 5-9. Every model is an ordinary spec trained by `mnist_keras.fit`.

    python benchmarks/transfer.py --data-dir ../shared/data/mnist [--per-class 100] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import load_mnist

CNN = [{"conv2d": {"filters": 32, "kernel_size": 3, "activation": "relu"}}, {"max_pool2d": 2},
       {"conv2d": {"filters": 64, "kernel_size": 3, "activation": "relu"}}, {"max_pool2d": 2},
       "flatten", {"dense": {"units": 128, "activation": "relu"}}, {"dropout": 0.3}]
HEAD = [{"dense": 5}]
NEW_HEAD = [{"dense": {"units": 128, "activation": "relu"}}, {"dropout": 0.3}, {"dense": 5}]  # after flatten_1


def subsets(mnist: dict, folder: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    """digits 0-4 (all of them) and digits 5-9 (`per_class` training images each, all test images) as .npz
    files, labels 0-4."""
    rng = np.random.default_rng(seed)
    low, high = folder / "digits0-4.npz", folder / f"digits5-9-{per_class}.npz"
    keep = mnist["y_train"] < 5
    np.savez(low, x_train=mnist["x_train"][keep], y_train=mnist["y_train"][keep],
             x_test=mnist["x_test"][mnist["y_test"] < 5], y_test=mnist["y_test"][mnist["y_test"] < 5])
    picked = np.concatenate([rng.choice(np.flatnonzero(mnist["y_train"] == d), per_class, replace=False)
                             for d in range(5, 10)])
    picked = rng.permutation(picked)
    test = mnist["y_test"] >= 5
    np.savez(high, x_train=mnist["x_train"][picked], y_train=mnist["y_train"][picked] - 5,
             x_test=mnist["x_test"][test], y_test=mnist["y_test"][test] - 5)
    return low, high


def spec(name: str, dataset: Path, layers: list, train: dict, validation) -> dict:
    return {"name": name, "seed": 1, "data": {"dataset": str(dataset), "num_classes": 5, "validation": validation,
                                             "batch_size": 64, "preprocess": {"normalize": {"mean": 0.1307,
                                                                                            "std": 0.3081}}},
            "model": {"layers": layers}, "train": {**train, "tensorboard": {"enabled": False}},
            "runtime": {"deterministic": True}}


def train(body: dict, folder: Path, runs: Path):
    import mnist_keras as mk

    path = folder / f"{body['name']}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    started = time.perf_counter()
    run = mk.fit(mk.load_spec(path), runs=runs)
    return run, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with the four MNIST IDX files")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each 5-9 model")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until", default="flatten_1", help="the last pretrained layer kept (flatten_1: the conv features)")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--pretrained", help="reuse this earlier pretraining run instead of training one")
    args = parser.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="transfer-"))
    folder.mkdir(parents=True, exist_ok=True)
    low, high = subsets(load_mnist(args.data_dir), folder, args.per_class, args.seed)
    runs = folder / "runs"
    adam = {"optimizer": {"type": "adam", "learning_rate": 0.001}}
    if args.pretrained:
        import mnist_keras as mk

        pre, pre_s = mk.open_run(args.pretrained), sum(h.epoch_seconds for h in mk.open_run(args.pretrained).state.history)
    else:
        pre, pre_s = train(spec("pretrain-0-4", low, CNN + HEAD, {"epochs": args.pretrain_epochs, **adam}, 0.1),
                           folder, runs)
    backbone = {"backbone": {"run": str(pre.path), "until": args.until}}
    half = args.epochs // 2
    fine = {"stages": [{"epochs": half}, {"epochs": args.epochs - half, "trainable": True,
                                          "optimizer": {"type": "adam", "learning_rate": 0.0001}}]}
    cases = [("(a) from scratch", spec("scratch-5-9", high, CNN + HEAD, {"epochs": args.epochs, **adam}, 50)),
             ("(b) frozen backbone, new head", spec("frozen-5-9", high, [backbone] + (NEW_HEAD if args.until == "flatten_1" else HEAD),
                                                    {"epochs": args.epochs, **adam}, 50)),
             ("(c) (b), then fine-tuning", spec("finetune-5-9", high, [backbone] + (NEW_HEAD if args.until == "flatten_1" else HEAD), {**adam, **fine}, 50))]
    rows = []
    for label, body in cases:
        run, seconds = train(body, folder, runs)
        rows.append({"model": label, "test_accuracy": run.metrics.test.accuracy, "seconds": seconds,
                     "run": str(run.path)})
    print(f"pretrained on digits 0-4: {len(np.load(low)['y_train']):,} images, {args.pretrain_epochs} epochs, "
          f"test accuracy on 0-4 {pre.metrics.test.accuracy:.2%} ({pre_s:.0f} s)")
    print(f"digits 5-9: {args.per_class} training images per class ({5 * args.per_class - 50} train, 50 "
          f"validation), {args.epochs} epochs; test: all {len(np.load(high)['y_test']):,} test images of 5-9")
    print(f"{'model':34} {'test accuracy':>13} {'seconds':>8}")
    for row in rows:
        print(f"{row['model']:34} {row['test_accuracy']:>13.2%} {row['seconds']:>8.0f}")
    gain = rows[1]["test_accuracy"] - rows[0]["test_accuracy"]
    print(f"transfer vs scratch: {gain * 100:+.1f} points (frozen), "
          f"{(rows[2]['test_accuracy'] - rows[0]['test_accuracy']) * 100:+.1f} points (fine-tuned)")
    (folder / "transfer.json").write_text(json.dumps({"pretrain": pre.metrics.test.model_dump(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
