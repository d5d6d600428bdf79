"""The read-ahead process of a streamed night (etl.runtime.ahead): what it reads comes back as
the schools' results, an error in it is raised in the sync, and closing it ends it at once.
That it reads what the sync would (the same directory) is tests/integration/test_stream.py's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from etl.config import Settings
from etl.runtime.ahead import ReadAhead


def settings(tmp: Path, state_url: str) -> Settings:
    return Settings.from_env({"ENTSYNC_LANDING": str(tmp / "landing"),
                              "ENTSYNC_WORKDIR": str(tmp / "work"),
                              "ENTSYNC_STATE_URL": state_url})


def test_an_error_in_the_reader_is_raised_in_the_sync(tmp_path: Path) -> None:
    # a run the state DB does not know: the school is read (its file is missing: the school
    # is an error), then the reader's write of its metrics fails and that is raised here
    bad = settings(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    with ReadAhead(bad, "ac-reims", "no-such-run") as ahead:
        ahead.submit({"0510001A": [{"path": str(tmp_path / "missing.xml"), "member": None,
                                    "sha256": "0" * 64, "kind": "siecle"}]})
        with pytest.raises(Exception, match="FOREIGN KEY constraint failed"):
            ahead.result()


def test_one_group_at_a_time(tmp_path: Path) -> None:
    with ReadAhead(settings(tmp_path, "sqlite://"), "ac-reims", "run-1") as ahead:
        with pytest.raises(RuntimeError, match="no group"):
            ahead.result()
        ahead.submit({})
        with pytest.raises(RuntimeError, match="already"):
            ahead.submit({})


def test_closing_ends_a_read_in_progress(tmp_path: Path) -> None:
    ahead = ReadAhead(settings(tmp_path, "sqlite://"), "ac-reims", "run-1")
    ahead.submit({})
    pool = ahead._pool
    assert pool is not None
    procs = list(pool._pool)  # type: ignore[attr-defined]
    t0 = time.monotonic()
    ahead.close()
    assert time.monotonic() - t0 < 10
    assert procs and not any(p.is_alive() for p in procs)
    with pytest.raises(RuntimeError, match="no group"):
        ahead.result()


def test_the_reader_waits_for_the_syncs_planning_to_commit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # planning holds the SQLite state DB's write lock for tens of seconds at region scale: the
    # reader ahead waits minutes for it, not the 30 s an operator's command waits
    import logging
    import signal

    from etl.runtime import ahead
    from etl.store import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 30_000)
    before = signal.getsignal(signal.SIGINT)
    try:
        ahead._child_init(logging.INFO)
        assert db.SQLITE_BUSY_TIMEOUT_MS == ahead.READER_BUSY_TIMEOUT_MS >= 300_000
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
