"""Throughput and latency of `mnist-keras serve`, with dynamic batching on and off.

    python benchmarks/serving.py [--run RUN_DIR] [--clients 32] [--requests 6000] [--seconds 30]

Without --run, trains LeNet-5 (model_specs/lenet5.yaml) for one epoch on the bundled MNIST sample first.
Each mode starts a server on loopback (`mnist-keras serve RUN --port 0`), then --clients concurrent
clients (asyncio, each on its own keep-alive HTTP/1.1 connection) post single-image :predict requests (test images of the bundled sample, in
TensorFlow Serving's row format) until --requests are answered or --seconds pass; the first 5% are a
warm-up left out of the figures. Prints predictions per second, p50 and p99 latency, and the server's mean
batch (from /v1/stats).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from common import cpu_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "mnist_keras" / "data" / "mnist_sample.npz"
MODES = {"batching on": [], "batching off": ["--no-batching"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run directory (default: train lenet5 for one epoch)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=6000, help="predictions per mode")
    parser.add_argument("--seconds", type=float, default=30, help="at most this long per mode")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train_lenet5(Path(scratch), env)
        model = args.run or "lenet5 (model_specs/lenet5.yaml, 1 epoch on the bundled sample)"
        bodies = request_bodies(200)
        print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU cores "
              f"({cpu_model()}), python {platform.python_version()}")
        print(f"{model}: {args.clients} clients, single-image :predict requests, up to {args.requests:,} per mode "
              f"or {args.seconds:g} s")
        print(f"  {'':14}{'predictions/s':>14}{'p50 ms':>9}{'p99 ms':>9}{'mean batch':>12}{'answered':>10}")
        for mode, flags in MODES.items():
            with server(run, flags, env) as port:
                figures = load(port, get(port, "/v1/stats")["model"], bodies, args.clients, args.requests, args.seconds)
                stats = get(port, "/v1/stats")
            print(f"  {mode:14}{figures['rate']:>14,.0f}{figures['p50']:>9.1f}{figures['p99']:>9.1f}"
                  f"{stats['mean_batch']:>12.1f}{figures['answered']:>10,}")


def train_lenet5(runs: Path, env: dict) -> str:
    subprocess.run([sys.executable, "-m", "mnist_keras", "fit", "model_specs/lenet5.yaml", "--epochs", "1",
                    "--set", "data.source=bundled", "--runs", str(runs)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    (run,) = [p for p in runs.glob("lenet5/*") if p.is_dir()]
    return str(run)


def request_bodies(count: int) -> list[bytes]:
    """:predict bodies of one test image each, in the row format."""
    with np.load(SAMPLE) as sample:
        images = sample["x_test"][:count]
    return [json.dumps({"instances": [image.tolist()]}).encode() for image in images]


class server:
    """`mnist-keras serve RUN --port 0` as a subprocess; entering gives its port, leaving stops it with Ctrl-C."""

    def __init__(self, run: str, flags: list[str], env: dict):
        self.process = subprocess.Popen([sys.executable, "-m", "mnist_keras", "serve", run, "--port", "0", *flags],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> int:
        line = self.process.stdout.readline()  # "serving NAME ... at http://127.0.0.1:PORT/ ..."
        if "http://" not in line:
            raise SystemExit(f"the server did not start: {line}{self.process.communicate()[1]}")
        return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def __exit__(self, *_):
        self.process.send_signal(signal.SIGINT)
        self.process.communicate(timeout=30)


def get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def load(port: int, name: str, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """Post bodies from `clients` concurrent connections; throughput and latency after a 5% warm-up."""
    return asyncio.run(_load(port, name, bodies, clients, requests, seconds))


async def _load(port: int, name: str, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    warmup, timings, sent = requests // 20, [], [0]
    deadline = time.perf_counter() + seconds
    posts = [b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (quote(name, safe="").encode(), len(body), body) for body in bodies]

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline and sent[0] < requests:
            number, sent[0] = sent[0], sent[0] + 1
            started = time.perf_counter()
            writer.write(posts[number % len(posts)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            answer = json.loads(await reader.readexactly(length))
            if not head.startswith(b"HTTP/1.1 200") or len(answer["predictions"]) != 1:
                raise SystemExit(f"bad answer: {head[:40]!r} {answer}")
            if number >= warmup:
                timings.append((started, time.perf_counter()))
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    starts, ends = np.array(timings).T
    milliseconds = (ends - starts) * 1000
    return {"rate": len(ends) / (ends.max() - starts.min()), "p50": np.percentile(milliseconds, 50),
            "p99": np.percentile(milliseconds, 99), "answered": len(ends) + warmup}


if __name__ == "__main__":
    main()
