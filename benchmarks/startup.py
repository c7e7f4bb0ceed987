"""How fast the commands that never train answer: `mnist-keras --help` and `mnist-keras validate`.

    python benchmarks/startup.py [--runs N]

Prints the median and slowest wall-clock time of N runs of each (as subprocesses, like a user's
shell), and checks that neither imports TensorFlow.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
