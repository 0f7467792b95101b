"""One status line on stderr: rewritten in place on a terminal, printed every ``every`` seconds
otherwise (CI logs). Owns nothing but the time of its last print."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=sys.stderr, every: float = 15.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            self.stream.flush()
        elif force or now - self._last >= self.every:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = now

    def say(self, text: str) -> None:
        """A line of its own (the status line is redrawn after it)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(f"[flood] {text}\n")
        self.stream.flush()


def bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"
