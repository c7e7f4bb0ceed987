"""Throughput and latency of `mnist-keras serve`: TF Serving's V1 predict (pixels and b64 PNG files), KServe's V2
infer, batching on and off, and a model swap under load.

    python benchmarks/serving.py [--run RUN_DIR] [--clients 32] [--requests 6000] [--seconds 30] [--modes ...]
                                 [--repeat 3] [--profile DIR]

Without --run, trains LeNet-5 (model_specs/lenet5.yaml) for one epoch on the bundled MNIST sample first; the
run is exported (SavedModel) and the export folder served. Each mode starts a server on loopback (`mnist-keras
serve EXPORT --port 0`, access log on, as users get it), then --clients concurrent clients (asyncio, each on
its own keep-alive HTTP/1.1 connection) send single-image requests (test images of the bundled sample) until
--requests are answered or --seconds pass; the first 5% are a warm-up left out of the figures. Prints
predictions per second, p50 and p99 latency and the server's mean batch of the median of --repeat runs (by
predictions per second), and the failed requests of all of them. The swap mode
moves a version 2 into the export folder when a fifth of the requests are sent and counts the answers of each
version.
--profile samples each server with py-spy while the clients run (pip install py-spy; give --seconds and a
--requests that lasts that long), keeps the samples in DIR/MODE.txt (collapsed stacks) and prints where the
server's CPU time went: per thread, its busy seconds and the share of each part of a request.
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
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (a fresh server each)")
    parser.add_argument("--profile", metavar="DIR", help="sample the server with py-spy, into DIR")
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
        print(f"{model}, exported: {args.clients} clients, single-image requests, up to {args.requests:,} per run "
              f"or {args.seconds:g} s, the median of {args.repeat} runs per mode")
        print(f"  {'':16}{'predictions/s':>14}{'p50 ms':>9}{'p99 ms':>9}{'mean batch':>12}{'answered':>10}"
              f"{'failed':>8}")
        for mode in args.modes.split(","):
            runs = sorted((run_mode(mode, folder, Path(scratch), env, args) for _ in range(args.repeat)),
                          key=lambda figures: figures["rate"])
            figures = runs[len(runs) // 2]
            failed = sum(run["failed"] for run in runs)
            print(f"  {mode:16}{figures['rate']:>14,.0f}{figures['p50']:>9.1f}{figures['p99']:>9.1f}"
                  f"{figures['mean batch']:>12.1f}{figures['answered']:>10,}{failed:>8,}")
            if "swap" in mode:
                print(f"  {'':16}answers by version: " + ", ".join(f"{v}: {n:,}" for v, n in
                                                                   sorted(figures["versions"].items())))
            if args.profile:
                for line in profile_summary(Path(args.profile, f"{mode}.txt")):
                    print(f"  {'':16}{line}")


def run_mode(mode: str, folder: Path, scratch: Path, env: dict, args) -> dict:
    """One run of a mode on a fresh server: its figures."""
    kind, flags = MODES[mode]
    shutil.rmtree(folder / "2", ignore_errors=True)
    shutil.rmtree(scratch / "2", ignore_errors=True)
    swap = (lambda: shutil.copytree(folder / "1", scratch / "2").rename(folder / "2")) if "swap" in mode else None
    profile = Path(args.profile, f"{mode}.txt") if args.profile else None
    with server(str(folder), flags, env) as served:
        spy = profile and subprocess.Popen(
            ["py-spy", "record", "--pid", str(served.process.pid), "--duration", f"{args.seconds:.0f}",
             "--rate", str(RATE), "--format", "raw", "--threads", "--nonblocking", "--output", str(profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        figures = load(served.port, requests_of(kind, folder.name), args.clients, args.requests, args.seconds, swap)
        if spy:
            spy.wait()
        stats = get(served.port, "/v1/stats")["models"][folder.name]
    calls = sum(s["model_calls"] for s in stats.values())
    return {**figures, "mean batch": sum(s["predictions"] for s in stats.values()) / max(calls, 1)}


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
    """`mnist-keras serve TARGET --port 0` as a subprocess; entering gives it with its .port, leaving stops it with
    SIGTERM."""

    def __init__(self, target: str, flags: list[str], env: dict):
        self.process = subprocess.Popen([sys.executable, "-m", "mnist_keras", "serve", target, "--port", "0", *flags],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "server":
        line = ""
        while "http://" not in line:  # "serving NAME ... at http://127.0.0.1:PORT/ ..."
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit(f"the server did not start: {self.process.communicate()[1]}")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # the access log, read as written
        self.port = int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return self

    def __exit__(self, *_):
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


RATE = 250  # py-spy's samples per second
PARTS = [  # (part of a request, a frame that marks it), the first that matches a sample's stack wins
    ("model call", "predict (mnist_keras/deploy/served.py"), ("decoding image files", "decoded (mnist_keras"),
    ("reading the body", "infer_request ("), ("reading the body", "predict_images ("),
    ("writing the answer", "infer_response ("), ("writing the answer", "json_response ("),
    ("batching", "mnist_keras/deploy/batching.py"), ("metrics and access log", "mnist_keras/deploy/metrics.py"),
    ("routing and middleware (Starlette)", "starlette/"), ("HTTP (uvicorn, httptools)", "uvicorn/protocols"),
]


def profile_summary(profile: Path) -> list[str]:
    """py-spy's samples of the server (collapsed stacks), as the share of each part of a request per thread."""
    threads: dict[str, dict[str, int]] = {}
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        thread = stack.split(";")[0]
        part = next((name for name, frame in PARTS if frame in stack), "other")
        threads.setdefault(thread, {}).setdefault(part, 0)
        threads[thread][part] += int(count)
    lines = []
    for thread, parts in sorted(threads.items(), key=lambda item: -sum(item[1].values()))[:3]:
        total = sum(parts.values())
        shares = ", ".join(f"{name} {n / total:.0%}" for name, n in sorted(parts.items(), key=lambda i: -i[1])
                           if n / total >= 0.02)
        lines.append(f"{thread.split(': ')[-1]} ({total / RATE:.1f} s busy): {shares}")
    return lines


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
            if swap and number == count // 5:
                await asyncio.to_thread(swap)
            started = time.perf_counter()
            writer.write(requests[number % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
            answer = await reader.readexactly(int(fields[b"content-length"]))
            if not head.startswith(b"HTTP/1.1 200"):
                failed[0] += 1
                if failed[0] <= 3:
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
