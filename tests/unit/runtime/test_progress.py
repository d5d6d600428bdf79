"""Progress lines: rewritten in place on a terminal, plain log lines elsewhere, counts only."""

from __future__ import annotations

import io
import logging

import pytest

from etl.runtime import progress as progress_mod
from etl.runtime.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_rewritten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "TTY_EVERY_S", 0.0)
    out = _Tty()
    p = Progress("apply ac-reims", 200, "changes", stream=out)
    for _ in range(50):
        p.add()
    p.close()
    text = out.getvalue()
    assert text.count("\r") >= 50 and text.endswith("\n") and text.count("\n") == 1
    last = text.rsplit("\r\x1b[K", 1)[-1]
    assert last.startswith("apply ac-reims: 50/200 changes (25 %)") and "/s" in last
    assert "ETA" in text


def test_elsewhere_a_log_line_now_and_then(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ENTSYNC_PROGRESS_EVERY", "0")
    caplog.set_level(logging.INFO, logger="etl.progress")
    quiet = Progress("read ac-reims", 10, "schools", stream=io.StringIO())
    for _ in range(10):
        quiet.add()
    assert not caplog.records  # 0: never
    monkeypatch.setenv("ENTSYNC_PROGRESS_EVERY", "0.000001")
    out = io.StringIO()
    p = Progress("read ac-reims", 10, "schools", stream=out)
    for _ in range(3):
        p.add()
    p.close()
    assert out.getvalue() == ""  # nothing written raw to a non-terminal
    assert caplog.records and caplog.records[-1].getMessage().startswith(
        "read ac-reims: 3/10 schools (30 %)")
