"""The fit progress display (issue 23): within the terminal's width, with rounded figures, on a terminal and off."""

import io
import os
import pty
import re
import struct
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from mnist_keras.train.progress import FittedBar

EPOCH_END = [("accuracy", 0.97812), ("loss", 0.07123), ("val_accuracy", 0.98121), ("val_loss", 0.06312),
             ("learning_rate", 0.002), ("epoch_seconds", 1.8237), ("images_per_second", 5682.175)]


def _screen_lines(text: str) -> list[str]:
    """What a terminal shows of `text`, line by line: each redraw (after \\r) and each line (after \\n)."""
    return [part for part in re.split(r"[\r\n]", text.replace("\x1b[K", "")) if part]


@pytest.mark.parametrize("columns", [80, 50, 120])
def test_terminal_bar_stays_within_the_width(columns):
    out = io.StringIO()
    bar = FittedBar(422, 1, "epoch 3/10", width=columns, stream=out, interval=0)
    for step in (1, 100, 300):
        bar.update(step, [("accuracy", 0.97812), ("loss", 0.07123)])
    bar.update(422, EPOCH_END, finalize=True)
    lines = _screen_lines(out.getvalue())
    assert all(len(line) < columns for line in lines), lines
    assert lines[1].startswith("epoch 3/10 100/422 ") and "\u2501" in lines[1]
    summary = " ".join(lines[3:])
    for figure in ("1.8 s", "5,682 images/s", "loss: 0.0712", "val_accuracy: 0.9812", "learning_rate: 0.002"):
        assert figure in summary, summary
    assert "epoch_seconds" not in summary and "images_per_second" not in summary


def test_line_per_epoch_off_a_terminal():
    out = io.StringIO()
    bar = FittedBar(422, 2, "epoch 3/10", stream=out)
    bar.update(100, [("loss", 0.5)])
    bar.update(422, EPOCH_END, finalize=True)
    assert out.getvalue() == ("epoch 3/10 - 1.8 s - 5,682 images/s - loss: 0.0712 - accuracy: 0.9781 - "
                              "val_loss: 0.0631 - val_accuracy: 0.9812 - learning_rate: 0.002\n")


def test_fit_on_an_80_column_terminal(write_spec, tmp_path):
    """A real `mnist-keras fit` with its stdout on a pseudo-terminal of 80 columns: no line wraps."""
    import fcntl
    import termios

    spec = write_spec("name: tiny\ndata: {source: bundled, max_train: 1024, validation: 256, batch_size: 32}\n"
                      "model: {layers: [flatten, {dense: 10}]}\ntrain: {epochs: 2}\n")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    process = subprocess.Popen([sys.executable, "-m", "mnist_keras", "fit", str(spec), "--runs", str(tmp_path)],
                               stdout=follower, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0, process.stderr.read().decode()
    lines = [line for line in _screen_lines(shown.decode()) if line.startswith(("epoch ", "  "))]  # the progress
    epochs = [line for line in lines if line.startswith("epoch 2/2 - ")]
    assert epochs and all(len(line) < 80 for line in lines), lines
    assert re.search(r" - \d+\.\d s - [\d,]+ images/s - loss: \d\.\d{4}", epochs[0]), epochs
