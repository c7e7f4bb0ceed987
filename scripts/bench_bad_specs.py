"""Time and measure `mnist-keras validate` on every hostile spec, each in its own process.

    python scripts/bench_bad_specs.py

Prints, per file: exit code, wall seconds and peak resident memory; then the worst of each. The bar
(docs/reliability.md): exit code 2, under 2 seconds, bounded memory, for every one of them.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile import generated_specs  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        files = sorted((ROOT / "tests/bad_specs").glob("*.yaml"))
        for name, data, _ in generated_specs():
            files.append(Path(folder) / name)
            files[-1].write_bytes(data)
        rows = []
        for path in files:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "mnist_keras", "validate", str(path)], cwd=folder,
                                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            seconds = time.perf_counter() - started
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
            rows.append((path.name, result.returncode, seconds, peak / 1024, "Traceback" in result.stderr))
            print(f"{path.name:32s} exit {result.returncode}  {seconds:5.2f} s  {path.stat().st_size:>9,} bytes"
                  f"{'  (new peak %.0f MiB)' % (peak / 1024) if peak > before else ''}")
        bad = [r for r in rows if r[1] != 2 or r[4]]
        print(f"\n{len(rows)} hostile specs: {len(rows) - len(bad)} refused with exit code 2 and no traceback; "
              f"slowest {max(r[2] for r in rows):.2f} s (whole process, Python start-up included); "
              f"peak resident memory {max(r[3] for r in rows):.0f} MiB")
        if bad:
            sys.exit(f"failed: {bad}")


if __name__ == "__main__":
    main()
