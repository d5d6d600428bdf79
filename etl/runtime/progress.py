"""Progress of a long stage (reading schools, writing changes): count, rate, ETA.

On a terminal (stderr is a TTY: someone runs ``entsync sync`` by hand) one line is rewritten
in place a few times a second; anywhere else (Airflow task logs, a cron mail, a pipe) a plain
log line every ``ENTSYNC_PROGRESS_EVERY`` seconds (30 by default; 0: never), so that a
35-second apply is no longer silent and a log is not flooded. Counts only: never a name."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TextIO

log = logging.getLogger("etl.progress")

TTY_EVERY_S = 0.25


def _every() -> float:
    try:
        return float(os.environ.get("ENTSYNC_PROGRESS_EVERY", "30"))
    except ValueError:
        return 30.0


class Progress:
    def __init__(self, what: str, total: int | None, unit: str,
                 stream: TextIO | None = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.every = TTY_EVERY_S if self.tty else _every()
        self.done = 0
        self.started = time.monotonic()
        self._shown_at = self.started
        self._shown = False
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if (self.tty or self.every > 0) and now - self._shown_at >= self.every:
                self._shown_at = now
                self._show(now)

    def line(self, now: float | None = None) -> str:
        spent = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / spent
        text = f"{self.what}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.0f}/s" if rate >= 1 else f", {rate:.2f}/s"
        if self.total and rate > 0 and self.done < self.total:
            left = (self.total - self.done) / rate
            text += f", ETA {int(left // 60)}:{int(left % 60):02d}"
        return text

    def _show(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(now))
            self.stream.flush()
            self._shown = True
        else:
            log.info("%s", self.line(now))

    def close(self) -> None:
        """End the line on a terminal (the stage's own summary line follows)."""
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\r\x1b[K" + self.line() + "\n")
                self.stream.flush()
                self._shown = False
