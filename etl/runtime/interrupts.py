"""SIGINT and SIGTERM during the writes: stop sending, finish what is in flight, then stop.

A KeyboardInterrupt raised at a random point of the apply loses what it interrupts: the rest
of a batch of answers, a journal flush. During ``DirectoryWriter.apply`` the two signals are
deferred instead: the first one only sets ``requested`` (the writer sends nothing more, takes
the answers of what it sent, the stage journals them and then raises ``KeyboardInterrupt``);
a second one raises at once. Outside the main thread (signals are delivered there only) it does
nothing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    #: the signal received (SIGINT, SIGTERM), None while none was
    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def describe(self) -> str:
        return f"interrupted ({signal.Signals(self.signum).name})" if self.signum else ""

    def raise_if_requested(self) -> None:
        """The deferred interrupt, raised where it loses nothing (the CLI's exit: 130 for
        SIGINT, 143 for SIGTERM)."""
        if self.signum is not None:
            raise interrupt(self.signum)


def interrupt(signum: int) -> KeyboardInterrupt:
    """SIGTERM's KeyboardInterrupt says so in its args (the CLI exits 143), SIGINT's has none
    (130)."""
    return KeyboardInterrupt(f"signal {signum}") if signum == signal.SIGTERM \
        else KeyboardInterrupt()


@contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.requested:  # the second one: now
            raise interrupt(signum)
        stop.signum = signum

    before: dict[int, Any] = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, on_signal)
    try:
        yield stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
