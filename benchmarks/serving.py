"""Throughput and latency of `mnist-keras serve`: TF Serving's V1 predict (pixels and b64 PNG files), KServe's V2
infer, batching on and off, and a model swap under load.

    python benchmarks/serving.py [--run RUN_DIR] [--clients 32] [--requests 6000] [--seconds 30] [--modes ...]

Without --run, trains LeNet-5 (model_specs/lenet5.yaml) for one epoch on the bundled MNIST sample first; the
run is exported (SavedModel) and the export folder served. Each mode starts a server on loopback (`mnist-keras
serve EXPORT --port 0`, access log on, as users get it), then --clients concurrent clients (asyncio, each on
its own keep-alive HTTP/1.1 connection) send single-image requests (test images of the bundled sample) until
--requests are answered or --seconds pass; the first 5% are a warm-up left out of the figures. Prints
predictions per second, p50 and p99 latency, the server's mean batch and the failed requests. The swap mode
moves a version 2 into the export folder when half the requests are sent and counts the answers of each version.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import http.client
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import cpu_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "mnist_keras" / "data" / "mnist_sample.npz"
MODES = {  # name: (request kind, serve flags)
    "V1 pixels": ("v1", []), "V1 b64 PNG": ("b64", []), "V2 binary": ("v2", []), "V2 JSON": ("v2json", []),
    "V1 no batching": ("v1", ["--no-batching"]), "V2 no batching": ("v2", ["--no-batching"]),
    "V2 swap to v2": ("v2", ["--poll", "0.5"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run directory (default: train lenet5 for one epoch)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=6000, help="predictions per mode")
    parser.add_argument("--seconds", type=float, default=30, help="at most this long per mode")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train_lenet5(Path(scratch), env)
        model = args.run or "lenet5 (model_specs/lenet5.yaml, 1 epoch on the bundled sample)"
        subprocess.run([sys.executable, "-m", "mnist_keras", "export", run, "--out", f"{scratch}/export"], cwd=ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        (folder,) = Path(scratch, "export").iterdir()
        print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU cores "
              f"({cpu_model()}), python {platform.python_version()}")
        print(f"{model}, exported: {args.clients} clients, single-image requests, up to {args.requests:,} per mode "
              f"or {args.seconds:g} s")
        print(f"  {'':16}{'predictions/s':>14}{'p50 ms':>9}{'p99 ms':>9}{'mean batch':>12}{'answered':>10}"
              f"{'failed':>8}")
        for mode in args.modes.split(","):
            kind, flags = MODES[mode]
            shutil.rmtree(folder / "2", ignore_errors=True)
            swap = (lambda: shutil.copytree(folder / "1", Path(scratch, "2")).rename(folder / "2")) \
                if "swap" in mode else None
            with server(str(folder), flags, env) as port:
                figures = load(port, requests_of(kind, folder.name), args.clients, args.requests, args.seconds, swap)
                stats = get(port, "/v1/stats")["models"][folder.name]
            calls = sum(s["model_calls"] for s in stats.values())
            mean = sum(s["predictions"] for s in stats.values()) / max(calls, 1)
            print(f"  {mode:16}{figures['rate']:>14,.0f}{figures['p50']:>9.1f}{figures['p99']:>9.1f}{mean:>12.1f}"
                  f"{figures['answered']:>10,}{figures['failed']:>8,}")
            if swap:
                print(f"  {'':16}answers by version: " + ", ".join(f"{v}: {n:,}" for v, n in
                                                                   sorted(figures["versions"].items())))


def train_lenet5(runs: Path, env: dict) -> str:
    subprocess.run([sys.executable, "-m", "mnist_keras", "fit", "model_specs/lenet5.yaml", "--epochs", "1",
                    "--set", "data.source=bundled", "--runs", str(runs)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    (run,) = [p for p in runs.glob("lenet5/*") if p.is_dir()]
    return str(run)


def requests_of(kind: str, name: str, count: int = 200) -> list[bytes]:
    """Whole HTTP requests of one test image each: V1 :predict (pixels, or a b64 PNG file) or V2 infer (the UINT8
    tensor as binary data, as tritonclient sends it, or as JSON)."""
    from PIL import Image

    with np.load(SAMPLE) as sample:
        images = sample["x_test"][:count]
    requests = []
    for image in images:
        path, extra = f"/v1/models/{name}:predict", ""
        if kind == "v1":
            body = json.dumps({"instances": [image.tolist()]}).encode()
        elif kind == "b64":
            png = io.BytesIO()
            Image.fromarray(image).save(png, "PNG")
            body = json.dumps({"instances": [{"b64": base64.b64encode(png.getvalue()).decode()}]}).encode()
        else:
            path, tensor = f"/v2/models/{name}/infer", {"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8"}
            if kind == "v2json":
                body = json.dumps({"inputs": [{**tensor, "data": image.reshape(-1).tolist()}]}).encode()
            else:
                header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": image.size}}],
                                     "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]})
                body, extra = header.encode() + image.tobytes(), f"Inference-Header-Content-Length: {len(header)}\r\n"
        requests.append(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return requests


class server:
    """`mnist-keras serve TARGET --port 0` as a subprocess; entering gives its port, leaving stops it with SIGTERM."""

    def __init__(self, target: str, flags: list[str], env: dict):
        self.process = subprocess.Popen([sys.executable, "-m", "mnist_keras", "serve", target, "--port", "0", *flags],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> int:
        line = self.process.stdout.readline()  # "serving NAME ... at http://127.0.0.1:PORT/ ..."
        if "http://" not in line:
            raise SystemExit(f"the server did not start: {line}{self.process.communicate()[1]}")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # the access log, read as written
        return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def __exit__(self, *_):
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


def get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def load(port: int, requests: list[bytes], clients: int, count: int, seconds: float, swap=None) -> dict:
    """Send requests from `clients` concurrent connections; throughput and latency after a 5% warm-up. `swap` is
    called once half the requests are sent."""
    return asyncio.run(_load(port, requests, clients, count, seconds, swap))


async def _load(port: int, requests: list[bytes], clients: int, count: int, seconds: float, swap) -> dict:
    warmup, timings, sent, failed, versions = count // 20, [], [0], [0], {}
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline and sent[0] < count:
            number, sent[0] = sent[0], sent[0] + 1
            if swap and number == count // 2:
                await asyncio.to_thread(swap)
            started = time.perf_counter()
            writer.write(requests[number % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            answer = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                failed[0] += 1
                print(f"  failed: {head[:40]!r} {answer[:200]!r}")
            elif b'"model_version":"' in answer:
                version = answer.split(b'"model_version":"')[1].split(b'"')[0].decode()
                versions[version] = versions.get(version, 0) + 1
            if number >= warmup:
                timings.append((started, time.perf_counter()))
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    starts, ends = np.array(timings).T
    milliseconds = (ends - starts) * 1000
    return {"rate": len(ends) / (ends.max() - starts.min()), "p50": np.percentile(milliseconds, 50),
            "p99": np.percentile(milliseconds, 99), "answered": len(ends) + warmup, "failed": failed[0],
            "versions": versions}


if __name__ == "__main__":
    main()
