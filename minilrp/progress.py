"""A progress bar on stderr, without a dependency."""
from __future__ import annotations

import sys
import time


class Progress:
    """A plain stderr progress bar (no dependency): ``[#####-----]  45%  12345/27000 images  3.2 s``.
    Redrawn in place (a carriage return) at most five times a second; works in a terminal and in
    a Jupyter cell's output."""

    def __init__(self, total, enabled=True, width=30, stream=None, unit="images"):
        self.total, self.done, self.width, self.unit = max(1, int(total)), 0, width, unit
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.label = ""

    def advance(self, n, label=None):
        self.done += n
        if label is not None:
            self.label = label
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.2 or self.done >= self.total):
            self.last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
            self.stream.write(f"\r[{bar}] {100 * frac:5.1f}%  {self.done}/{self.total} {self.unit}  "
                              f"{now - self.start:6.1f} s  {self.label:40.40s}")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
