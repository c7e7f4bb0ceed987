"""mnist-keras fit against a hand-written Keras script and a hand-written PyTorch loop, side by side.

    python benchmarks/throughput.py --data-dir DIR [--models lenet5 dense] [--repeats N] [--epochs N]

For each model, runs A B C D A B C D ... as subprocesses on the full MNIST, each with the shipped spec's
batch size, optimizer, learning-rate schedule, epochs and held-out validation images:
  A  mnist-keras fit model_specs/MODEL.yaml (benchmarks/fit_probe.py: the CLI plus a test-set probe)
  B  benchmarks/keras_baseline.py  (Keras-tutorial style tf.data + compile + fit)
  C  benchmarks/torch_baseline.py  (PyTorch CPU loop on preprocessed tensors)
  D  benchmarks/keras_baseline.py --tuned  (Keras by hand, tuned: preprocessed tensors, prefetch,
     steps_per_execution 16)
and prints medians over repeats: seconds per epoch and images/s (epochs after the first), test
accuracy after the last epoch, time from the command's start to the first epoch at the target test
accuracy (test evaluation itself excluded), the whole command's wall time (likewise), peak resident memory,
the load average around the runs, and the ratios of A to the others.
`fast` (model_specs/fast.yaml, made for time to 99%) runs A and D (and E). With --onednn-column, a column E runs D
with TF_ENABLE_ONEDNN_OPTS=1 (mnist-keras sets it; TensorFlow turns oneDNN on by itself only on some CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_ACCURACY = {"lenet5": 0.99, "dense": 0.98, "fast": 0.99}
COLUMNS = {"lenet5": "ABCD", "dense": "ABCD", "fast": "AD"}


def baseline_args(spec, epochs: int) -> list[str]:
    """The shipped spec's hyperparameters as arguments for the hand-written baselines."""
    from mnist_keras.data.pipeline import split_sizes

    data, train = spec.data, spec.train
    assert train.optimizer.type == "adam" and train.lr_schedule.type == "cosine", "baselines implement adam + cosine"
    n_train, n_val = split_sizes(data, 60000)
    norm = data.preprocess.normalize
    return ["--epochs", str(epochs), "--batch-size", str(data.batch_size),
            "--learning-rate", str(train.optimizer.learning_rate), "--warmup-epochs", str(train.lr_schedule.warmup),
            "--validation", str(n_val), "--mean", str(norm.mean), "--std", str(norm.std)]


def _bfloat16(spec) -> bool:
    """Whether mnist-keras trains the spec in mixed bfloat16 on this CPU (so the Keras baselines do too)."""
    from mnist_keras.train.distribute import cpu_has_bfloat16

    choice = spec.runtime.mixed_precision
    return choice in (True, "bfloat16") or (choice == "auto" and cpu_has_bfloat16())


def run(command: list[str], log: Path, extra_env: dict | None = None) -> tuple[float, float, float]:
    """Run `command`; return (start time, end time, peak resident memory in MiB). Exits if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")]), **(extra_env or {})}
    with open(log, "w") as out:
        started = time.time()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        ended = time.time()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: {' '.join(command)}\n{log.read_text()[-3000:]}")
    return started, ended, usage.ru_maxrss / 1024


def measure(who: str, model: str, args, spec, epochs: int, work: Path) -> dict:
    """One run of A, B or C: its per-epoch figures, final test accuracy, time to target, peak RSS."""
    report, python = work / f"{who}.json", sys.executable
    if who == "A":
        command = [python, "benchmarks/fit_probe.py", str(report), "fit", f"model_specs/{model}.yaml",
                   "--data-dir", args.data_dir, "--runs", str(work / "runs"), "--epochs", str(epochs)]
    else:
        script = {"B": "benchmarks/keras_baseline.py", "C": "benchmarks/torch_baseline.py",
                  "D": "benchmarks/keras_baseline.py", "E": "benchmarks/keras_baseline.py"}[who]
        command = [python, script, "--model", model, "--data-dir", args.data_dir, "--out", str(report),
                   *baseline_args(spec, epochs), *(["--threads", str(args.torch_threads)] if who == "C" else []),
                   *(["--tuned"] if who in "DE" else []),
                   *(["--mixed-bfloat16"] if who in "BDE" and _bfloat16(spec) else [])]
    load = os.getloadavg()[0]
    started, ended, rss = run(command, work / f"{who}.log", {"TF_ENABLE_ONEDNN_OPTS": "1"} if who == "E" else None)
    epochs_seen = json.loads(report.read_text())["epochs"]
    if who == "A":  # the run's own figures, from its metrics.json
        metrics = json.loads(next((work / "runs").glob("*/*/metrics.json")).read_text())
        seconds, rates = metrics["seconds_per_epoch"], [h["images_per_second"] for h in metrics["history"]]
        final = metrics["test"]["accuracy"]
    else:
        seconds, rates = [e["epoch_seconds"] for e in epochs_seen], [e["images_per_second"] for e in epochs_seen]
        final = epochs_seen[-1]["test_accuracy"]
    reached = [e for e in epochs_seen if e["test_accuracy"] >= TARGET_ACCURACY[model]]
    to_target = (reached[0]["end_time"] - started - reached[0]["excluded_seconds"], reached[0]["epoch"]) \
        if reached else None
    excluded = sum(e["eval_seconds"] for e in epochs_seen)  # the per-epoch test probes
    return {"seconds": seconds[1:] or seconds, "rates": rates[1:] or rates, "accuracy": final,
            "to_target": to_target, "rss": rss, "wall": ended - started - excluded,
            "load": (load, os.getloadavg()[0])}


def summarize(model: str, spec, epochs: int, results: dict[str, list[dict]], torch_threads: int) -> str:
    names = {"A": "A mnist-keras fit", "B": "B Keras tutorial", "C": f"C PyTorch ({torch_threads} thread)",
             "D": "D Keras tuned", "E": "E D + oneDNN"}
    rate = {}
    precision = "mixed bfloat16" if _bfloat16(spec) else "float32"
    lines = [f"{model}: batch {spec.data.batch_size}, {epochs} epochs, {len(results['A'])} repeats (medians), "
             f"{precision} in every column but C",
             f"  {'':22}{'s/epoch':>8}{'images/s':>10}{'test acc':>10}"
             f"{'to ' + format(TARGET_ACCURACY[model], '.1%'):>16}{'command':>9}{'peak RSS':>10}"]
    for who, runs in results.items():
        rate[who] = statistics.median(r for run in runs for r in run["rates"])
        seconds = statistics.median(s for run in runs for s in run["seconds"])
        reached = [run["to_target"] for run in runs if run["to_target"]]
        to_target = "not reached" if len(reached) < len(runs) else \
            f"{statistics.median(t for t, _ in reached):.1f} s (ep {statistics.median(e for _, e in reached):g})"
        lines.append(f"  {names[who]:22}{seconds:8.2f}{rate[who]:10,.0f}"
                     f"{statistics.median(r['accuracy'] for r in runs):10.2%}{to_target:>16}"
                     f"{statistics.median(r['wall'] for r in runs):7.1f} s"
                     f"{statistics.median(r['rss'] for r in runs):7,.0f} MiB")
    loads = [x for runs in results.values() for run in runs for x in run["load"]]
    lines.append(f"  1-minute load average {min(loads):.1f}-{max(loads):.1f} at the starts and ends of the runs")
    lines.append("  images/s ratios: " + ", ".join(f"A/{who} {rate['A'] / rate[who]:.2f}x" for who in rate if who != "A"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with the four MNIST IDX files")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the spec's train.epochs)")
    parser.add_argument("--onednn-column", action="store_true",
                        help="add column E: D with TF_ENABLE_ONEDNN_OPTS=1, as mnist-keras runs")
    parser.add_argument("--models", nargs="+", choices=sorted(TARGET_ACCURACY), default=["lenet5", "dense", "fast"])
    parser.add_argument("--without-torch", action="store_true", help="leave out column C (PyTorch not installed)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch.set_num_threads for C (on a shared 2-core machine 1 is far faster than 2)")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    sys.path.insert(0, str(ROOT))
    from mnist_keras.spec.loader import load_spec

    from common import machine

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, python {sys.version.split()[0]}", flush=True)
    for model in args.models:
        spec = load_spec(ROOT / "model_specs" / f"{model}.yaml")
        epochs = args.epochs or spec.train.epochs
        columns = COLUMNS[model].replace("C", "" if args.without_torch else "C") + ("E" if args.onednn_column else "")
        results: dict[str, list[dict]] = {who: [] for who in columns}
        for _ in range(args.repeats):
            for who in results:
                with tempfile.TemporaryDirectory(prefix="mnist-keras-bench-") as work:
                    results[who].append(measure(who, model, args, spec, epochs, Path(work)))
        print(summarize(model, spec, epochs, results, args.torch_threads), flush=True)


if __name__ == "__main__":
    main()
