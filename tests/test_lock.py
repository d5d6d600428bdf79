"""One writing run per academy at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from etl import pipeline
from etl.config import Settings
from etl.errors import RunLocked
from etl.state.db import session_factory
from etl.state.models import AcademyLock


def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path),
                              "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"})


def test_second_run_of_an_academy_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    st = settings(tmp_path)
    first = pipeline.start_run(st, "ac-reims")
    with pytest.raises(RunLocked, match=first):
        pipeline.start_run(st, "ac-reims")
    other = pipeline.start_run(st, "ac-strasbourg")  # another academy is free
    dry = pipeline.start_run(st, "ac-reims", dry_run=True)  # a dry run writes no directory
    assert other and dry
    pipeline.fail_run(st, first, "test")
    second = pipeline.start_run(st, "ac-reims")
    pipeline.finish_run(st, "ac-reims", second, {}, [], None, None)
    pipeline.start_run(st, "ac-reims")


def test_stale_lock_is_taken_over(tmp_path: Path) -> None:
    st = settings(tmp_path)
    first = pipeline.start_run(st, "ac-reims")
    with session_factory(st.state_url)() as s, s.begin():
        lock = s.get(AcademyLock, "ac-reims")
        assert lock is not None and lock.run_id == first
        lock.acquired_at -= dt.timedelta(hours=13)
    pipeline.start_run(st, "ac-reims")
