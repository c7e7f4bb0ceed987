"""Optuna sweeps on the bundled sample: two processes sharing one SQLite study, a kill -9 in the middle of a
trial, and what the median pruner saves.

    python benchmarks/sweep.py [--trials 8] [--search-trials 20] [--parts abc]

(a) one `mnist-keras sweep` process, then two processes on one fresh study, `--trials` 1-epoch trials each
time: wall times, and the trials (distinct, all finished, none repeated); (b) the two processes again with
2-epoch trials, one killed with SIGKILL after a trial checkpointed an epoch, then its command rerun: every
trial finished once; (c) a `--search-trials` learning-rate search (random sampler, fixed seed, 4 epochs),
with the median pruner and without: epochs trained, and the best trial of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from mnist_keras.sweeps.study import retry_of

ROOT = Path(__file__).resolve().parent.parent
SPEC = """name: tiny
seed: 7
data: {source: bundled, max_train: 1280, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers: [flatten, {dense: {units: 32, activation: relu}}, {dense: 10}]
train:
  epochs: EPOCHS
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""
SWEEP = """spec: tiny.yaml
trials: TRIALS
sampler: random
seed: 3
pruner: PRUNER
space:
  train.optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
  data.batch_size: {choice: [32, 64, 128]}
"""


def folder_with(trials: int, epochs: int, pruner: str = "none") -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mnist-keras-sweep-"))
    (folder / "tiny.yaml").write_text(SPEC.replace("EPOCHS", str(epochs)))
    (folder / "sweep.yaml").write_text(SWEEP.replace("TRIALS", str(trials)).replace("PRUNER", pruner))
    return folder


def start(folder: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnist_keras", "sweep", "sweep.yaml", *args], cwd=folder,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(*processes: subprocess.Popen) -> None:
    for process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"sweep failed with exit code {process.returncode}:\n{out}")


def study_trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{folder / 'runs' / 'sweeps.db'}").trials


def describe(folder: Path) -> str:
    """'8 trials: 8 finished, 0 pruned, 1 crashed and retried; 8 run directories, none trained twice'."""
    trials = study_trials(folder)
    states = [t.state for t in trials]
    runs = [t.user_attrs.get("run_dir") for t in trials if t.state != optuna.trial.TrialState.FAIL]
    dirs = len(list((folder / "runs" / "sweep").glob("*/state.json")))
    statuses = {json.loads((folder / run / "state.json").read_text())["status"] for run in runs}
    twice = "none trained twice" if len(set(runs)) == len(runs) == dirs else "SOME TRAINED TWICE"
    return (f"{len(trials)} trials: {states.count(optuna.trial.TrialState.COMPLETE)} finished, "
            f"{states.count(optuna.trial.TrialState.PRUNED)} pruned, {states.count(optuna.trial.TrialState.FAIL)} "
            f"crashed and retried; {dirs} run directories ({', '.join(sorted(statuses))}), {twice}")


def timed(folder: Path, processes: int) -> float:
    started = time.perf_counter()
    first = start(folder)
    time.sleep(1)
    finish(first, *(start(folder) for _ in range(processes - 1)))
    return time.perf_counter() - started


def sharing(trials: int) -> None:
    alone, shared = folder_with(trials, 1), folder_with(trials, 1)
    one, two = timed(alone, 1), timed(shared, 2)
    print(f"(a) {trials} trials of 1 epoch, one process:     {one:6.1f} s  {describe(alone)}")
    print(f"    {trials} trials of 1 epoch, two processes:  {two:6.1f} s  {describe(shared)}")


def killed(trials: int) -> None:
    folder = folder_with(trials, 2)
    victim = start(folder)
    time.sleep(1)
    other = start(folder)
    while victim.poll() is None:  # until a trial of the victim has checkpointed its first epoch
        states = [json.loads(p.read_text()) for p in (folder / "runs" / "sweep").glob("*/state.json")]
        if any(s["status"] == "running" and s["epochs_done"] >= 1 and s.get("pid") == victim.pid for s in states):
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"the process to kill ended first:\n{victim.communicate()[0]}")
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    finish(other, start(folder))
    retried = [t for t in study_trials(folder) if retry_of(t) is not None]
    how = ", ".join(f"#{t.number} retries #{retry_of(t)} in the same run directory "
                    f"({t.user_attrs['run_dir']})" for t in retried)
    print(f"(b) {trials} trials of 2 epochs, two processes, one killed with SIGKILL mid-trial, its command rerun:")
    print(f"    {describe(folder)}; {how}")


def pruning(trials: int) -> None:
    results = {}
    for pruner in ("none", "median"):
        folder = folder_with(trials, 4, pruner)
        started = time.perf_counter()
        finish(start(folder))
        seconds = time.perf_counter() - started
        done = study_trials(folder)
        epochs = sum(t.user_attrs["epochs"] for t in done)
        best = max((t for t in done if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
        results[pruner] = best.number
        print(f"(c) {trials}-trial learning-rate search, 4 epochs, pruner {pruner:6}: {epochs:3} epochs trained, "
              f"{seconds:6.1f} s; best trial #{best.number} (learning rate "
              f"{best.params['train.optimizer.learning_rate']:.3g}, batch {best.params['data.batch_size']}, "
              f"val_accuracy {best.value:.4f})")
    print(f"    the best trial is the same with and without pruning: {results['none'] == results['median']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--search-trials", type=int, default=20)
    parser.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run, e.g. --parts c")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else ""
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores ({cpu}), "
          f"python {platform.python_version()}, "
          f"optuna {optuna.__version__}")
    parts = {"a": lambda: sharing(args.trials), "b": lambda: killed(args.trials), "c": lambda: pruning(args.search_trials)}
    for part in args.parts:
        parts[part]()


if __name__ == "__main__":
    main()
