"""`mnist-keras serve` as a real subprocess on 127.0.0.1, for test_serve.py and test_page.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m mnist_keras ARGS` to its end."""
    return subprocess.run([sys.executable, "-m", "mnist_keras", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


class Server:
    """`mnist-keras serve TARGET --port FREE_PORT ARGS...`: entering waits until it is ready (/v2/health/ready) and
    gives its base URL; leaving stops it with Ctrl-C (SIGINT) and checks it ended cleanly (exit 0 or 130, no
    traceback). TARGET may be a list of folders, or None when ARGS name a --models-config."""

    def __init__(self, target, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        targets = [] if target is None else [str(t) for t in target] if isinstance(target, list) else [str(target)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnist_keras", "serve", *targets, "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self._lines = {"stdout": [], "stderr": []}  # read as they come: a full pipe would stop the server
        self._readers = [threading.Thread(target=self._lines[name].extend, args=(getattr(self.process, name),),
                                          daemon=True) for name in self._lines]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise AssertionError(f"the server ended with {self.process.returncode}: {self.stderr}")
            try:
                urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5).read()
                return self
            except (urllib.error.URLError, ConnectionError):  # HTTPError 503 too: not ready yet
                time.sleep(0.2)
        raise AssertionError("the server did not answer within 120 s")

    def __exit__(self, *_):
        returncode = self.stop()
        assert returncode in (0, 130), self.stderr
        assert "Traceback" not in self.stderr, self.stderr

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Send `sig` (unless it has ended), wait for the end, and keep what it wrote as .stdout and .stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        returncode = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        self.stdout, self.stderr = ("".join(self._lines[name]) for name in ("stdout", "stderr"))
        return returncode

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict | None = None) -> tuple[int, dict]:
        """(status, JSON answer) of one request; a dict body is sent as JSON."""
        if isinstance(body, dict):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
