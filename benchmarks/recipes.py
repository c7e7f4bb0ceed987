"""The training recipes on model_specs/zoo/best.yaml, on the full MNIST: as it is, with each recipe added alone, and
with all of them together, each over several seeds.

    python benchmarks/recipes.py --data-dir /work/shared/data/mnist [--seeds 3] [--epochs N]
        [--rows best,ema,...] [--max-train N] [--out results.json]

Every run is `mk.fit` of best.yaml with the row's `--set` overrides, `seed=1..N` and the dashboards off. A Keras
callback passed to fit evaluates the test set after each epoch (with the averaged weights where the row has EMA);
its seconds fall outside the run's epoch times. Per row: the final test accuracy (the run's own evaluation), mean
and min over the seeds; seconds per epoch (median over the epochs after the first); the time to 99.5% test
accuracy (the run's epoch seconds summed to the end of the first epoch that reaches it, mean over the seeds that
reach it). --max-train N trains on N images and holds out N // 10 (a smoke run); --out writes every run's
per-epoch figures as JSON, rewritten after each run. A run already in --out with the same overrides is kept,
not trained again, and so are its other rows, so the table (about 12 hours of a 2-core CPU) can be filled over
several sittings; each run records its own date and machine, and the table says when they are more than one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from common import machine  # noqa: E402

BEST = ROOT / "model_specs/zoo/best.yaml"
TARGET = 0.995
SETTINGS = {  # the recipes that are spec values
    "ema": ["train.optimizer.ema=0.999"],
    "one_cycle": ["train.lr_schedule={type: one_cycle}"],
    "mixup": ["data.augment={mixup: 0.2}"],
    "cutmix": ["data.augment={cutmix: 1.0}"],
    "mixup_cutmix": ["data.augment={mixup: 0.2, cutmix: 1.0}"],
}
LAYERS = {  # the recipes that are layers: rand_augment first, random_erasing after best's own augmentation layers
    "rand_augment": {"rand_augment": {"num_ops": 2, "factor": 0.5}},
    "random_erasing": {"random_erasing": 0.25},
}
ROWS = {"best": [], **{name: [name] for name in [*SETTINGS, *LAYERS]},
        "all": ["ema", "one_cycle", "mixup_cutmix", "rand_augment", "random_erasing"]}


def row_overrides(recipes: list[str]) -> list[str]:
    """best.yaml's `--set` overrides that add `recipes`."""
    overrides = [value for name in recipes for value in SETTINGS.get(name, [])]
    layers = yaml.safe_load(BEST.read_text())["model"]["layers"]
    augmenting = sum(1 for entry in layers if isinstance(entry, dict) and next(iter(entry)).startswith("random_"))
    if "random_erasing" in recipes:
        layers.insert(augmenting, LAYERS["random_erasing"])
    if "rand_augment" in recipes:
        layers.insert(0, LAYERS["rand_augment"])
    if any(name in LAYERS for name in recipes):
        overrides.append(f"model.layers={json.dumps(layers)}")
    return overrides


def legend(rows: list[str]) -> str:
    """What each of `rows` adds to best.yaml, a line each."""
    what = {**{name: ", ".join(values) for name, values in SETTINGS.items()},
            "rand_augment": f"{json.dumps(LAYERS['rand_augment'])} as the first layer",
            "random_erasing": f"{json.dumps(LAYERS['random_erasing'])} after best's augmentation layers"}
    return "\n".join(f"  {name:15}" + (" + ".join(what[r] for r in recipes) if recipes else "best.yaml as it is")
                     for name, recipes in ROWS.items() if name in rows)


def test_probe(spec, data_dir: str):
    """A Keras callback: the test accuracy after each epoch (argmax against the label) and the epoch's seconds."""
    import numpy as np

    from mnist_keras.backend import keras
    from mnist_keras.data import load_arrays
    from mnist_keras.data.pipeline import preprocess_images

    arrays = load_arrays(spec.data, data_dir, seed=spec.seed)
    images, labels = preprocess_images(spec, arrays.x_test), np.asarray(arrays.y_test)

    class TestProbe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            logits = self.model.predict(images, batch_size=1000, verbose=0)
            self.epochs.append({"epoch": epoch + 1, "epoch_seconds": logs["epoch_seconds"],
                                "test_accuracy": float(np.mean(np.argmax(logits, -1) == labels))})

    return TestProbe()


def to_target(epochs: list[dict]) -> dict | None:
    """The first epoch at TARGET test accuracy and the epoch seconds summed to its end; None if none reaches it."""
    seconds = 0.0
    for epoch in epochs:
        seconds += epoch["epoch_seconds"]
        if epoch["test_accuracy"] >= TARGET:
            return {"epoch": epoch["epoch"], "seconds": seconds}
    return None


def train(overrides: list[str], data_dir: str, runs: Path) -> dict:
    import mnist_keras as mk

    from mnist_keras.data.pipeline import split_sizes

    spec = mk.load_spec(BEST, overrides)
    probe = test_probe(spec, data_dir)
    run = mk.fit(spec, runs=runs, data_dir=data_dir, callbacks=[probe])
    seconds = [e["epoch_seconds"] for e in probe.epochs]
    return {"seed": spec.seed, "split": split_sizes(spec.data, run.metrics.data.counts["train"]),
            "test_accuracy": run.metrics.test.accuracy, "epochs": probe.epochs,
            "seconds_per_epoch": statistics.median(seconds[1:] or seconds), "to_target": to_target(probe.epochs),
            "probe_agrees": abs(probe.epochs[-1]["test_accuracy"] - run.metrics.test.accuracy) <= 1e-4,
            "versions": run.metrics.versions, "data": run.metrics.data.model_dump(), "device": run.metrics.device}


def summary(name: str, runs: list[dict]) -> str:
    accuracies = [r["test_accuracy"] for r in runs]
    reached = [r["to_target"] for r in runs if r["to_target"]]
    target = (f"{statistics.mean(t['seconds'] for t in reached):8.0f} s (ep {statistics.mean(t['epoch'] for t in reached):.1f})"
              if reached else f"{'not reached':>17}")
    return (f"{name:15}{len(runs):6}{statistics.mean(accuracies):10.2%}{min(accuracies):9.2%}"
            f"{statistics.mean(r['seconds_per_epoch'] for r in runs):9.1f}{target}  {len(reached)}/{len(runs)}")


def recorded(out: str | None) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """The rows an earlier invocation wrote to `out` (none without the file) and their runs by overrides; exit 2 if
    the file is not such JSON."""
    from mnist_keras.errors import UserError
    from mnist_keras.runs.files import read_json

    if not out or not Path(out).exists():
        return {}, {}
    try:
        rows = read_json(Path(out))["rows"]
        return rows, {json.dumps(run["overrides"]): run for runs in rows.values() for run in runs}
    except (UserError, KeyError, TypeError, AttributeError) as err:
        reason = err.messages[0] if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        print(f"error: {out}: not the runs of an earlier benchmarks/recipes.py ({reason}); move it away or name "
              "another --out", file=sys.stderr)
        sys.exit(2)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with the four MNIST IDX files")
    parser.add_argument("--seeds", type=int, default=3, help="runs per row, seeds 1..N (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: best.yaml's)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"a comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--max-train", type=int, help="train on this many images, N // 10 held out (a smoke run)")
    parser.add_argument("--out", help="write every run's figures here (JSON)")
    args = parser.parse_args()
    args.rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in args.rows if name not in ROWS]
    if unknown or not args.rows:
        parser.error(f"--rows: unknown row {', '.join(unknown) or '(none given)'}; known: {', '.join(ROWS)}")
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1) or (args.max_train or 1) < 1:
        parser.error("--seeds, --epochs and --max-train take positive numbers")
    return args


def main() -> None:
    args = arguments()
    import mnist_keras as mk
    from mnist_keras.runs.files import write_text

    common = ["train.tensorboard.enabled=false", *([f"train.epochs={args.epochs}"] if args.epochs else []),
              *([f"data.max_train={args.max_train}", f"data.validation={args.max_train // 10}"] if args.max_train else [])]
    plan = {name: [[*common, *row_overrides(ROWS[name]), f"seed={seed}"] for seed in range(1, args.seeds + 1)]
            for name in args.rows}
    try:  # every row's spec checked before anything trains
        for overrides in plan.values():
            mk.load_spec(BEST, overrides[0])
    except mk.UserError as err:
        print("\n".join(f"error: {message}" for message in err.messages), file=sys.stderr)
        sys.exit(2)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\nmachine: {machine()}\ncommand: {command}\n"
          f"test accuracy per epoch: a Keras callback passed to mk.fit (callbacks=) predicts the test set after each "
          f"epoch, outside the epoch's seconds; dashboards off in every run\n{legend(args.rows)}", flush=True)
    rows, before = recorded(args.out)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                     "command": command, "target": TARGET,
                     "rows": {name: runs for name, runs in rows.items() if name not in plan}}  # other rows kept
    with tempfile.TemporaryDirectory(prefix="mnist-keras-recipes-") as work:
        for name, seeded in plan.items():
            runs = results["rows"][name] = []
            for overrides in seeded:
                run = before.get(json.dumps(overrides))
                kept = f" (kept from {args.out}: {run['date']}, {run['machine']})" if run else ""
                if not run:
                    run = {"overrides": overrides, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "machine": machine(), **train(overrides, args.data_dir, Path(work))}
                runs.append(run)
                reached = run["to_target"]
                print(f"  {name} seed {run['seed']}: {run['test_accuracy']:.2%} after {len(run['epochs'])} epochs, "
                      f"{run['seconds_per_epoch']:.1f} s/epoch, {TARGET:.1%} "
                      f"{'at epoch %d (%.0f s)' % (reached['epoch'], reached['seconds']) if reached else 'not reached'}"
                      f"{kept}", flush=True)
                if args.out:  # whole or not at all, so a sitting stopped while it writes loses nothing
                    write_text(Path(args.out), json.dumps(results, indent=1))
    first = next(iter(results["rows"].values()))[0]
    data, versions = first["data"], first["versions"]
    (n_train, n_val), counts = first["split"], data["counts"]
    print(f"{data['dataset']} from {data['source']} {data['path']} ({counts['train']:,} training and "
          f"{counts['test']:,} test images): {n_train:,} trained on, {n_val:,} held out; {first['device']}; "
          f"TensorFlow {versions['tensorflow']}, Keras {versions['keras']}")
    print(f"{'row':15}{'seeds':>6}{'test acc':>10}{'min':>9}{'s/epoch':>9}{'to ' + format(TARGET, '.1%'):>17}  reached")
    for name, runs in results["rows"].items():
        print(summary(name, runs))
    done = [run for runs in results["rows"].values() for run in runs]
    machines = sorted({run["machine"] for run in done})
    if len(machines) > 1:
        print(f"the runs come from {len(machines)} machines, so seconds compare only within one: " + "; ".join(
            f"{sum(run['machine'] == m for run in done)} on {m}" for m in machines))
    print(f"the probe's last epoch matches the run's own test evaluation (within 1e-4) in "
          f"{sum(run['probe_agrees'] for run in done)} of {len(done)} runs")


if __name__ == "__main__":
    main()
