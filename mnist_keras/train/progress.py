"""The live progress display of `fit`: Keras' ProgbarLogger drawing a bar that fits the terminal, the figures of
each epoch as the progress line shows them."""

from __future__ import annotations

import shutil
import sys
import threading
import time

from ..backend import keras

TIMING = ("epoch_seconds", "images_per_second")


def shown(name: str, value) -> str:
    """One logged value as the progress line shows it: seconds to 0.1 s, images/s a whole number with thousands
    separators, the learning rate to 3 significant digits, the rest as Keras shows them."""
    value = float(value)
    if name == "epoch_seconds":
        return f"{value:.1f} s"
    if name == "images_per_second":
        return f"{value:,.0f} images/s"
    if name == "stage":
        return f"stage {value:.0f}"
    if name == "learning_rate":
        return f"learning_rate: {value:.3g}"
    return f"{name}: {value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{name}: {value:.3e}"


def _order(name: str) -> int:
    """Timing first, then the training metrics (loss first), the validation ones, the learning rate and stage."""
    if name in TIMING:
        return 0
    if name in ("learning_rate", "stage"):
        return 5
    return 1 + 2 * name.startswith("val_") + (name not in ("loss", "val_loss"))


class FittedBar:
    """Keras' Progbar interface (`update(current, values, finalize)`), drawn within the terminal's width
    (COLUMNS, else the terminal's own; `width` fixes it). verbose 1: a bar redrawn in place, the metrics that
    fit beside it, and at the epoch's end every figure, wrapped at ` - `; verbose 2: one line per epoch."""

    def __init__(self, target: int | None, verbose: int, title: str, width: int | None = None, stream=None,
                 interval: float = 0.05):
        self.target, self.verbose, self.title, self.width = target, verbose, title, width
        self.stream, self.interval = stream, interval
        self.values: dict[str, float] = {}
        self.start, self.first_step, self.last_drawn = time.perf_counter(), None, 0.0

    def columns(self) -> int:
        return (self.width or shutil.get_terminal_size().columns) - 1  # the last column would wrap on some

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text)
        stream.flush()

    def _items(self) -> list[str]:
        return [shown(name, self.values[name]) for name in sorted(self.values, key=_order)]

    def line(self, current: int) -> str:
        """The in-place line: title, count, bar, time left, then the metrics that fit."""
        target, now, columns = self.target, time.perf_counter(), self.columns()
        count = f"{current:>{len(str(target))}}/{target}" if target else f"{current}"
        left = ""
        if target and self.first_step and current > 1:
            step = (now - self.first_step[1]) / max(1, current - self.first_step[0])
            left = f" {_duration(step * (target - current))} left"
        head, tail = f"{self.title} {count} ", left
        for item in self._items():  # the metrics that leave room for a bar of at least 8
            if len(head) + 8 + len(tail) + 3 + len(item) > columns:
                break
            tail += " - " + item
        bar = min(20, columns - len(head) - len(tail))
        if target and bar >= 5:
            done = min(bar, bar * current // target)
            head += "\u2501" * done + "\u2500" * (bar - done)
        return (head.rstrip() + tail)[:columns]

    def summary(self, wrap: bool) -> str:
        """The epoch's figures: one line, or (wrap) lines within the width, continued with an indent."""
        items = [self.title, *self._items()]
        if not wrap:
            return " - ".join(items)
        lines, columns = [items[0]], self.columns()
        for item in items[1:]:
            if len(lines[-1]) + 3 + len(item) <= columns:
                lines[-1] += " - " + item
            else:
                lines.append("  " + item)
        return "\n".join(line[:columns] for line in lines)

    def update(self, current: int, values=None, finalize: bool | None = None) -> None:
        self.values.update({name: value for name, value in values or [] if name != "size"})
        if self.first_step is None and current:
            self.first_step = (current, time.perf_counter())
        finalize = bool(self.target and current >= self.target) if finalize is None else finalize
        if "epoch_seconds" not in self.values and finalize:
            self.values["epoch_seconds"] = time.perf_counter() - self.start
        if self.verbose == 1:
            now = time.perf_counter()
            if finalize:
                self._write("\r\x1b[K" + self.summary(wrap=True) + "\n")
            elif now - self.last_drawn >= self.interval:
                self._write("\r\x1b[K" + self.line(current))
                self.last_drawn = now
        elif self.verbose == 2 and finalize:
            self._write(self.summary(wrap=False) + "\n")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class LiveProgbar(keras.callbacks.ProgbarLogger):
    """The progress display of `fit` (Keras' ProgbarLogger, drawing a FittedBar): `epoch N/epochs` counted over
    the whole run, within the terminal's width. With `poll` (runtime.steps_per_execution above 1, or epoch), the
    bar moves while one call into TensorFlow runs several steps: a thread reads the optimizer's step counter every
    `every` seconds (Keras moves it only when a call returns). The read is one variable, so it costs nothing
    measurable."""

    def __init__(self, every: float = 0.25, poll: bool = True, epochs: int | None = None):
        super().__init__()
        self.every, self.poll, self.total = every, poll, epochs
        self.stop, self.poller, self.epoch = threading.Event(), None, 0

    def _maybe_init_progbar(self):
        if self.progbar is None:
            self.progbar = FittedBar(self.target, self.verbose, f"epoch {self.epoch + 1}/{self.total or self.epochs}")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._reset_progbar()  # Keras' own also prints "Epoch N/M" on a line of its own: the bar's title says it
        self._maybe_init_progbar()
        self.first = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        if self.poll and self.verbose == 1 and self.target:
            self.stop.clear()
            self.poller = threading.Thread(target=self._poll, daemon=True, name="mnist-keras-progress")
            self.poller.start()

    def _poll(self):
        while not self.stop.wait(self.every):
            try:
                done = int(self.model.optimizer.iterations.numpy()) - self.first
            except Exception:  # noqa: BLE001 - a display must never break training
                return
            if not self.stop.is_set() and 0 < done < self.target:
                self.progbar.update(done, finalize=False)

    def _stop_polling(self):
        if self.poller:
            self.stop.set()
            self.poller.join()
            self.poller = None

    def on_train_batch_end(self, batch, logs=None):
        self._stop_polling()
        super().on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        self._stop_polling()
