"""What the live progress bar costs: LeNet-5 images/s with it and with Keras' own bar, alternating.

    python benchmarks/progress_bar.py --data-dir DIR [--repeats 2]

Each run trains model_specs/lenet5.yaml (steps_per_execution: epoch) for 3 epochs on 25,600 images with
verbose=1, its output captured; prints the images/s of epochs 2-3 of each and the medians.
"""

import argparse
import contextlib
import io
import statistics

import mnist_keras as mk
from mnist_keras.backend import keras
from mnist_keras.train import loop

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", required=True)
parser.add_argument("--repeats", type=int, default=2)
args = parser.parse_args()
live, results = loop.LiveProgbar, {"live bar": [], "Keras' bar": []}
for _ in range(args.repeats):
    for name in results:
        loop.LiveProgbar = live if name == "live bar" else lambda **_: keras.callbacks.ProgbarLogger()
        spec = mk.load_spec("model_specs/lenet5.yaml", overrides=[
            "train.epochs=3", "data.max_train=25600", "train.tensorboard.enabled=false"])
        with contextlib.redirect_stdout(io.StringIO()) as out:
            run = mk.fit(spec, runs="/tmp/mnist-keras-progress-bar", data_dir=args.data_dir,
                         reporter=mk.Reporter(verbose=1))
        rates = [h.images_per_second for h in run.metrics.history[1:]]
        results[name] += rates
        print(f"{name:11} images/s {', '.join(f'{r:,.0f}' for r in rates)}; bar redrawn "
              f"{out.getvalue().count(chr(13))} times", flush=True)
for name, rates in results.items():
    print(f"{name:11} median {statistics.median(rates):,.0f} images/s over {len(rates)} epochs")
