"""Where an API call's progress goes: silent by default, lines and Keras' progress display when asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Reporter:
    """Where progress goes: `echo` takes each message line (None: silent, the default in Python) and
    `verbose` is Keras' progress display (0 none, 1 a bar, 2 a line per epoch)."""

    echo: Callable[[str], None] | None = None
    verbose: int = 0

    def __call__(self, message: str) -> None:
        if self.echo:
            self.echo(message)
