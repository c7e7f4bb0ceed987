"""multi_worker on 1, 2 and 3 hosts of this machine (network namespaces, tests/hosts.py; needs root), then a host lost
mid-epoch and the same command started again.

    sudo python benchmarks/hosts.py --data-dir ../shared/data/mnist [--spec model_specs/lenet5.yaml] [--epochs 3]

Per host count: the chief's seconds per epoch (median of epochs 2 on) and test accuracy; 1 host is a plain `fit`, on
no cluster. Then on 3 hosts: worker 1 killed -9 in epoch 2; the seconds from the kill until every other worker has
exited, and, with the same command started again on all three, the seconds until the chief trains again (every
worker started, the cluster formed, the chief's checkpoint sent) and until the run ends. The hosts share this
machine's cores, so more hosts cannot be faster here: the figures show what the cluster costs, not what it gains.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import machine  # noqa: E402
from hosts import Hosts, skip_reason  # noqa: E402

PORT = 12345


def command(args, hosts, index: int) -> list[str]:
    base = [sys.executable, "-m", "mnist_keras", "fit", args.spec, "--epochs", str(args.epochs), "--runs", "runs"]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    if len(hosts) == 1:
        return base
    return base + ["--distribute", "multi_worker", "--workers", ",".join(f"{h.address}:{PORT}" for h in hosts),
                   "--worker-index", str(index)]


def start(args, hosts, folder: Path, tag: str) -> list[tuple[subprocess.Popen, Path]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = []
    for host in hosts:
        (folder / f"host-{host.index}").mkdir(exist_ok=True)
        log = folder / f"host-{host.index}" / f"{tag}.log"
        with open(log, "w") as out:
            started.append((host.popen(command(args, hosts, host.index), cwd=folder / f"host-{host.index}", env=env,
                                       stdout=out, stderr=subprocess.STDOUT), log))
    return started


def until(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{log}: no {pattern!r}:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)
    return time.monotonic()


def chief_metrics(folder: Path) -> dict:
    (metrics,) = (folder / "host-0" / "runs").glob("*/*/metrics.json")
    return json.loads(metrics.read_text())


def scaling(args, count: int) -> str:
    with tempfile.TemporaryDirectory(prefix="mnist-keras-hosts-") as folder, Hosts(count) as hosts:
        folder = Path(folder)
        for proc, log in start(args, hosts, folder, "fit"):
            if proc.wait() != 0:
                raise SystemExit(f"{log}:\n{log.read_text()[-2000:]}")
        metrics = chief_metrics(folder)
    steady = statistics.median(metrics["seconds_per_epoch"][1:] or metrics["seconds_per_epoch"])
    return f"  {count} host{'s' if count > 1 else ' '}   {steady:10.2f}   {metrics['test']['accuracy']:13.2%}   {metrics['device']}"


def loss_and_resume(args) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="mnist-keras-hosts-") as folder, Hosts(3) as hosts:
        folder = Path(folder)
        workers = start(args, hosts, folder, "first")
        until(workers[0][1], r"epoch 1/", workers[0][0])
        time.sleep(1.0)  # into epoch 2
        killed = time.monotonic()
        hosts[1].kill()
        ends = []
        for proc, log in (workers[0], workers[2]):
            code = proc.wait(timeout=300)
            ends.append(time.monotonic() - killed)
            if code != 1:
                raise SystemExit(f"{log}: exit {code}, not 1:\n{log.read_text()[-2000:]}")
        message = next(line for line in workers[0][1].read_text().splitlines() if line.startswith("error:"))
        again = time.monotonic()
        workers = start(args, hosts, folder, "again")
        trains = until(workers[0][1], r"mnist-keras: training ", workers[0][0]) - again
        for proc, log in workers:
            if proc.wait() != 0:
                raise SystemExit(f"{log}:\n{log.read_text()[-2000:]}")
        total = time.monotonic() - again
        history = [epoch["epoch"] for epoch in chief_metrics(folder)["history"]]
    return [f"  worker 1 of 3 killed -9 in epoch 2: the chief exited 1 after {ends[0]:.1f} s, worker 2 after {ends[1]:.1f} s",
            f"  the chief said: {message}",
            f"  the same command again on all 3: the chief trained again after {trains:.1f} s, the run ended after "
            f"{total:.1f} s, epochs {history}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="model_specs/lenet5.yaml")
    parser.add_argument("--data-dir", help="MNIST's files (default: the bundled sample)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hosts", default="1,2,3", help="the host counts to measure")
    args = parser.parse_args()
    if reason := skip_reason():
        raise SystemExit(f"cannot make hosts here: {reason}")
    args.spec = str(Path(args.spec).resolve())
    args.data_dir = args.data_dir and str(Path(args.data_dir).resolve())
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, load average {load:.2f}")
    print(f"{Path(args.spec).name}, {args.epochs} epochs, {'data ' + args.data_dir if args.data_dir else 'the bundled sample'}")
    print("  hosts     s/epoch   test accuracy   device")
    for count in map(int, args.hosts.split(",")):
        print(scaling(args, count), flush=True)
    for line in loss_and_resume(args):
        print(line, flush=True)


if __name__ == "__main__":
    main()
