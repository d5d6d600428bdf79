"""One writing run per academy at a time; a dead holder's lock is taken over at once, its run
closed ``abandoned`` with what it had applied; ``entsync unlock``; no run row stays
``running`` once its process is gone. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import Discovery, RunRef
from etl.errors import RunLocked
from etl.store import locks
from etl.store.db import session_factory
from etl.store.locks import RunAbandoned
from etl.store.models import AcademyLock, Run
from tests.paths import REPO


@pytest.fixture
def st(tmp_path: Path, each_state_url: str) -> Iterator[Settings]:
    yield Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path),
                             "ENTSYNC_STATE_URL": each_state_url})
    locks._stop_all()



def _finish(st: Settings, run_id: str) -> dict[str, Any]:
    """Close a run that discovered nothing (``finish_run`` with empty stages)."""
    return pipeline.finish_run(st, RunRef(academy="ac-reims", run_id=run_id),
                               Discovery(run_id=run_id, rejected=[], held={},
                                         already_applied=[]), [])

def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path),
                              "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"})


#: a process that opens a run, journals ``n`` changes under it, then dies (SIGKILL) or ends
#: without closing it (an Airflow task between tasks); prints the run id
CHILD = r"""
import os, signal, sys
from etl import run as pipeline
from etl.config import Settings
from etl.store.db import session_factory
from etl.store.models import JournalEntry
workdir, url, academy, dry, trigger, n, end = sys.argv[1:]
st = Settings.from_env({"ENTSYNC_WORKDIR": workdir, "ENTSYNC_STATE_URL": url})
rid = pipeline.start_run(st, academy, dry_run=dry == "dry", trigger=trigger)
with session_factory(url)() as s, s.begin():
    for i in range(int(n)):
        s.add(JournalEntry(run_id=rid, seq=i + 1, dn=f"uid=x{i},ou=people", op="add",
                           after={"uid": [f"x{i}"]}))
print(rid, flush=True)
if end == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
os._exit(0)
"""


def child(st: Settings, *, end: str = "kill", trigger: str = "cli", n: int = 3,
          dry: bool = False, academy: str = "ac-reims") -> str:
    p = subprocess.run([sys.executable, "-c", CHILD, str(st.workdir), st.state_url, academy,
                        "dry" if dry else "wet", trigger, str(n), end],
                       capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.strip(), p.stderr[-2000:]
    return p.stdout.strip()


def entsync(st: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etl.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "ENTSYNC_WORKDIR": str(st.workdir),
                               "ENTSYNC_STATE_URL": st.state_url})


def run_row(st: Settings, rid: str) -> Run:
    with session_factory(st.state_url)() as s:
        run = s.get(Run, rid)
        assert run is not None
        return run


def lock_of(st: Settings, academy: str = "ac-reims") -> AcademyLock | None:
    with session_factory(st.state_url)() as s:
        return s.get(AcademyLock, academy)


def age(st: Settings, rid: str, seconds: int, host: str | None = None) -> None:
    """Make the run's (and its lock's) last heartbeat ``seconds`` old; ``host``: as if its
    holder ran on another machine (no pid to look at)."""
    with session_factory(st.state_url)() as s, s.begin():
        then = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=seconds)
        rows: list[Any] = [s.get(Run, rid)]
        lock = s.get(AcademyLock, "ac-reims")
        if lock is not None and lock.run_id == rid:
            rows.append(lock)
        for row in rows:
            row.heartbeat_at = then
            if host is not None:
                row.holder = {**(row.holder or {}), "host": host, "boot_id": "other"}


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
    _finish(st, second)
    pipeline.start_run(st, "ac-reims")


def test_a_run_refused_by_the_lock_is_closed_not_left_running(st: Settings) -> None:
    holder = pipeline.start_run(st, "ac-reims")
    with pytest.raises(RunLocked, match=holder):
        pipeline.start_run(st, "ac-reims", run_id="ac-reims-refused")
    refused = run_row(st, "ac-reims-refused")
    assert refused.status == "refused" and refused.ended_at is not None
    assert holder in str((refused.summary or {}).get("error"))
    assert run_row(st, holder).status == "running"  # the live holder is untouched


def test_a_killed_sync_is_taken_over_at_once_and_its_run_abandoned(st: Settings) -> None:
    dead = child(st, n=3)  # SIGKILLed while holding the lock, 3 changes journaled
    lock = lock_of(st)
    assert lock is not None and lock.run_id == dead
    assert (lock.holder or {}).get("pid") and (lock.holder or {}).get("host")
    rerun = pipeline.start_run(st, "ac-reims")  # no wait: its pid is gone
    lock = lock_of(st)
    assert lock is not None and lock.run_id == rerun
    run = run_row(st, dead)
    assert run.status == "abandoned" and run.ended_at is not None
    gone = (run.summary or {})["abandoned"]
    assert gone["applied"] == 3 and gone["journal"] == {"add": 3}
    assert "gone" in gone["reason"] and rerun in gone["by"]
    with pytest.raises(RunAbandoned):  # a run declared dead never writes again
        pipeline.heartbeat(st, "ac-reims", dead)


def test_a_holder_elsewhere_is_dead_once_its_heartbeat_stops(st: Settings) -> None:
    far = pipeline.start_run(st, "ac-reims")
    locks.stop_beating(st.state_url, far)
    age(st, far, 60, host="another-host")  # fresh enough: alive
    with pytest.raises(RunLocked, match=far):
        pipeline.start_run(st, "ac-reims")
    age(st, far, st.lock_stale_after + 5, host="another-host")
    pipeline.start_run(st, "ac-reims")
    assert run_row(st, far).status == "abandoned"


def test_a_run_taken_over_that_ends_late_stays_abandoned(st: Settings) -> None:
    """A holder judged dead (its heartbeat stopped) that comes back and finishes neither
    reopens its run nor frees the lock of the run that took over."""
    late = pipeline.start_run(st, "ac-reims")
    locks.stop_beating(st.state_url, late)
    age(st, late, st.lock_stale_after + 5, host="another-host")
    taker = pipeline.start_run(st, "ac-reims")
    _finish(st, late)
    run = run_row(st, late)
    assert run.status == "abandoned"
    assert (run.summary or {}).get("finished_after_abandoned") and (run.summary or {})["abandoned"]
    lock = lock_of(st)
    assert lock is not None and lock.run_id == taker


def test_a_dag_run_between_tasks_holds_the_lock_while_its_heartbeat_is_fresh(
        st: Settings) -> None:
    """An Airflow task's process ends and the DAG run goes on: its pid says nothing."""
    dag = child(st, end="exit", trigger="airflow", n=0)
    with pytest.raises(RunLocked, match=dag):
        pipeline.start_run(st, "ac-reims")
    assert run_row(st, dag).status == "running"
    pipeline.heartbeat(st, "ac-reims", dag)  # the next task, another process
    locks.stop_beating(st.state_url, dag)
    age(st, dag, st.lock_stale_after + 5)  # a long retry delay: still alive
    with pytest.raises(RunLocked, match=dag):
        pipeline.start_run(st, "ac-reims")
    age(st, dag, st.lock_dag_stale_after + 5)
    pipeline.start_run(st, "ac-reims")
    assert run_row(st, dag).status == "abandoned"


def test_a_killed_dry_run_is_closed_by_the_next_run_and_shown_abandoned(
        st: Settings) -> None:
    dry = child(st, dry=True, n=0)
    out = entsync(st, "status", "--academy", "ac-reims", "--json")
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout)["academies"][0]["last_run"]
    assert last["run_id"] == dry and last["status"] == "abandoned", last
    assert run_row(st, dry).status == "running"  # status only shows it
    pipeline.start_run(st, "ac-reims", dry_run=True)
    assert run_row(st, dry).status == "abandoned"


def test_status_shows_the_lock_and_a_killed_writer_abandoned(st: Settings) -> None:
    dead = child(st, n=2)
    out = entsync(st, "status", "--academy", "ac-reims", "--json")
    assert out.returncode == 0, out.stderr
    a = json.loads(out.stdout)["academies"][0]
    assert a["last_run"]["status"] == "abandoned"
    assert a["lock"]["run_id"] == dead and a["lock"]["alive"] is False
    text = entsync(st, "status", "--academy", "ac-reims").stdout
    assert "abandoned" in text and "holder dead" in text


def test_unlock_is_refused_while_the_holder_lives(st: Settings) -> None:
    live = pipeline.start_run(st, "ac-reims")  # this test's process: alive
    out = entsync(st, "unlock", "--academy", "ac-reims")
    assert out.returncode == 1, out
    assert live in out.stderr and "alive" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    forced = entsync(st, "unlock", "--academy", "ac-reims", "--force")
    assert forced.returncode == 1  # a process seen alive here is never forced
    lock = lock_of(st)
    assert lock is not None and lock.run_id == live
    assert run_row(st, live).status == "running"


def test_unlock_releases_a_dead_holder_and_journals_it(st: Settings) -> None:
    dead = child(st, n=4)
    out = entsync(st, "unlock", "--academy", "ac-reims", "--by", "ops-jane", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["released"]["run_id"] == dead and res["abandoned"] == [dead]
    assert lock_of(st) is None
    run = run_row(st, dead)
    assert run.status == "abandoned" and (run.summary or {})["abandoned"]["applied"] == 4
    assert "ops-jane" in (run.summary or {})["abandoned"]["by"]
    journal = run_row(st, res["run_id"])
    assert journal.trigger == "unlock" and journal.status == "success"
    assert (journal.summary or {})["released"]["run_id"] == dead
    again = entsync(st, "unlock", "--academy", "ac-reims")
    assert again.returncode == 0 and "not locked" in again.stdout
    pipeline.start_run(st, "ac-reims")


def test_unlock_force_releases_a_holder_judged_by_its_heartbeat_only(st: Settings) -> None:
    dag = child(st, end="exit", trigger="airflow", n=0)
    assert entsync(st, "unlock", "--academy", "ac-reims").returncode == 1
    out = entsync(st, "unlock", "--academy", "ac-reims", "--force", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["forced"] is True
    assert lock_of(st) is None and run_row(st, dag).status == "abandoned"


def test_the_holder_beats_from_a_thread_until_it_releases(st: Settings) -> None:
    """Reading, planning and writing run for minutes in one call: a thread of the holding
    process beats, every 15 s (at most 30 s), and stops with the run."""
    assert st.heartbeat_every <= 30
    rid = pipeline.start_run(st, "ac-reims")
    beater = locks._beaters[(st.state_url, rid)]
    assert beater.is_alive() and beater.every <= 30
    assert locks.beat(st.state_url, "ac-reims", rid)
    _finish(st, rid)
    assert (st.state_url, rid) not in locks._beaters and beater.stopped.is_set()
    assert not locks.beat(st.state_url, "ac-reims", rid)  # nothing left to keep alive
    with session_factory(st.state_url)() as s:
        assert s.scalars(select(Run).where(Run.status == "running")).all() == []


def test_the_heartbeat_goes_on_while_the_holder_is_busy_elsewhere(
        st: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing but the thread refreshes the heartbeat while a stage works: the age set back
    here comes back to now (beats made quicker for the test)."""
    import time

    monkeypatch.setattr(Settings, "heartbeat_every", property(lambda self: 0.05))
    rid = pipeline.start_run(st, "ac-reims")
    age(st, rid, 3600)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lock = lock_of(st)
        assert lock is not None and lock.heartbeat_at is not None
        if (dt.datetime.now(dt.UTC).replace(tzinfo=None) - lock.heartbeat_at
                < dt.timedelta(minutes=5)) and run_row(st, rid).heartbeat_at == lock.heartbeat_at:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no heartbeat from the holder's thread")
    pipeline.fail_run(st, rid, "test")
