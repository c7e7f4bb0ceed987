"""How fast the commands that never train answer (`mnist-keras --help`, `validate`), and where the fixed cost of
`mnist-keras fit` goes.

    python benchmarks/startup.py [--runs N]
    python benchmarks/startup.py --fit --data-dir DIR [--spec model_specs/lenet5.yaml] [--runs N]

The first prints the median and slowest wall-clock time of N runs of each (as subprocesses, like a user's
shell), and checks that neither imports TensorFlow. With --fit it runs `fit SPEC --epochs 2` N times through
benchmarks/fixed_cost_probe.py and prints, as medians, the fixed cost phase by phase: the command's wall time
less two steady epochs (the second epoch's training, validation, checkpoints and dashboard, counted twice),
which is what `--epochs 1` costs beyond one epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"mnist-keras --help": ["--help"], "mnist-keras validate model_specs/lenet5.yaml":
            ["validate", "model_specs/lenet5.yaml"]}
CHECK = ("import sys; from mnist_keras.cli import main\ntry: main({args}, prog_name='mnist-keras')\n"
         "except SystemExit: pass\nprint('tensorflow' in sys.modules, 'keras' in sys.modules)")


def fixed_cost(spec: str, data_dir: str, env: dict) -> dict[str, float]:
    """One `fit SPEC --epochs 2` through the probe: seconds per phase of its fixed cost."""
    with tempfile.TemporaryDirectory(prefix="mnist-keras-startup-") as work:
        out = Path(work) / "marks.json"
        started = time.time()
        subprocess.run([sys.executable, "benchmarks/fixed_cost_probe.py", str(out), "fit", spec, "--epochs", "2",
                        "--data-dir", data_dir, "--runs", work], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ended = time.time()
        marks = json.loads(out.read_text())
    at, seen = {}, {}
    for name, start, end in marks:  # the first of each name; the second epoch's under "NAME 2"
        seen[name] = seen.get(name, 0) + 1
        at[name if seen[name] == 1 else f"{name} {seen[name]}"] = (start, end)

    def span(name):
        return at[name][1] - at[name][0] if name in at and at[name][0] is not None else 0.0

    epoch_end = ("checkpoints and state.json, epoch end", "TensorBoard scalars, epoch end", "dashboard images, epoch end")
    steady = span("epoch 2 training") + span("validation 2") + sum(span(f"{n} 2") for n in epoch_end)
    phases = {"python start, mnist_keras and the CLI imported": at["cli imported"][1] - started,
              "TensorFlow and Keras imported": at["tensorflow and keras imported"][1] - at["cli imported"][1]}
    for name in ("load the spec", "configure the device", "read the data files",
                 "preprocess, build the tf.data pipelines", "build the model", "set up the dashboard", "compile"):
        phases[name] = span(name)
    phases["model.fit's set-up before epoch 1 (Keras' build, graph and hparams writers)"] = \
        at["epoch 1 training"][0] - at["model.fit"][0]
    phases["tracing the training step (epoch 1 less epoch 2)"] = span("epoch 1 training") - span("epoch 2 training")
    phases["tracing the validation step (validation 1 less 2)"] = span("validation") - span("validation 2")
    phases["first epoch's checkpoints and dashboard images, less the second's"] = \
        sum(span(n) - span(f"{n} 2") for n in epoch_end)
    last_hook = max(end for name, start, end in marks if name.endswith("on_train_end"))
    phases["model.fit returning after its last callback"] = at["model.fit"][1] - last_hook
    for name in ("test evaluation", "save model.keras", "write the dashboard's test metrics", "write metrics.json"):
        phases[name] = span(name)
    phases["exit"] = ended - at["command done"][1]
    total = ended - started - 2 * steady  # what `--epochs 2` costs beyond its two epochs' steady work
    phases["between the marks above (Python's own work, unattributed)"] = total - sum(phases.values())
    phases["fixed cost in all"] = total
    phases["one steady epoch (training, validation, checkpoints, dashboard)"] = steady
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fit", action="store_true", help="break down the fixed cost of fit instead")
    parser.add_argument("--spec", default="model_specs/lenet5.yaml")
    parser.add_argument("--data-dir", help="with --fit: a folder with the four MNIST IDX files")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
    if args.fit:
        if not args.data_dir:
            parser.error("--fit needs --data-dir")
        runs = [fixed_cost(args.spec, str(Path(args.data_dir).resolve()), env) for _ in range(args.runs)]
        print(f"mnist-keras fit {args.spec} --epochs 1: fixed cost by phase, medians of {args.runs} runs")
        for name in runs[0]:
            print(f"  {name:76} {statistics.median(run[name] for run in runs):6.2f} s")
        return
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mnist_keras", *argv], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        imported = subprocess.run([sys.executable, "-c", CHECK.format(args=argv)], cwd=ROOT, env=env, check=True,
                                  capture_output=True, text=True).stdout.split()[-2:]
        print(f"{name:48} median {statistics.median(times):.3f} s, slowest {max(times):.3f} s "
              f"({args.runs} runs); imports tensorflow: {imported[0]}, keras: {imported[1]}")


if __name__ == "__main__":
    main()
