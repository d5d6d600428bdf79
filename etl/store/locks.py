"""Who is working on a run, whether it is still alive, and the academy's run lock.

A run (``runs``) and the academy's lock (``academy_locks``) record their holder: its kind,
host, pid, the process's start time (``/proc/<pid>/stat``: a reused pid is another process),
the kernel's boot id and pid namespace (a pid means something only there), and a heartbeat
refreshed every ``heartbeat_every`` seconds by a thread of the holding process.

- ``process`` holder (``entsync sync``, an approval, undo, merge, lifecycle): on the same
  host it is alive while its process is; elsewhere while its heartbeat is younger than
  ``settings.lock_stale_after`` (``ENTSYNC_LOCK_STALE_AFTER``, 300 s).
- ``dag`` holder (an Airflow DAG run): each task is a process of its own and the run lives
  between them (queued tasks, retry delays), so no pid says it died; it is alive while its
  heartbeat, beaten by every task while it runs, is younger than
  ``settings.lock_dag_stale_after`` (``ENTSYNC_LOCK_DAG_STALE_AFTER``, 1800 s). A task that
  dies is Airflow's to retry, or to close through the failure callback.

A lock whose holder is dead is taken over at once; its run, and any other ``running`` run of
the academy whose holder is dead, is closed ``abandoned`` with what it had journaled.
``entsync unlock`` does the same on an operator's word, and is refused while the holder is
alive.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import secrets
import socket
import threading
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from etl.config import Settings, get_academy
from etl.errors import EntsyncError, RunLocked
from etl.store.db import on_dispose, session_factory
from etl.store.models import AcademyLock, JournalEntry, Run, utcnow

log = logging.getLogger(__name__)

#: the holder kinds: a process for the lock's whole life, or an Airflow DAG run
PROCESS, DAG = "process", "dag"
#: statuses of a run that still holds, or may take again, the academy's lock
OPEN = ("running", "awaiting_approval")


class RunAbandoned(EntsyncError):
    """This run was declared dead (its lock taken over, or released by ``entsync unlock``):
    it must not write any more."""


# --------------------------------------------------------------------------------------------
# The holder: who we are, and whether someone else is alive
# --------------------------------------------------------------------------------------------


def new_run_id(academy: str) -> str:
    """``<academy>-<UTC time>-<4 hex>``: sorts by start, unique across workers."""
    return f"{academy}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw or ")" not in raw:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _pid_ns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def holder_info(kind: str) -> dict[str, Any]:
    """This process as a holder."""
    pid = os.getpid()
    st = _stat(pid)
    return {"kind": kind, "host": socket.gethostname(), "pid": pid,
            "pid_start": st[1] if st else None,
            "boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": _pid_ns()}


def _same_machine(holder: dict[str, Any]) -> bool:
    """Whether the holder's pid can be looked up here: same host name, kernel boot and pid
    namespace (a container of the same name elsewhere, or a reboot, is not the same)."""
    me = holder_info(PROCESS)
    return all(holder.get(k) == me[k] for k in ("host", "boot_id", "pid_ns"))


def _pid_alive(pid: int, started: str | None) -> bool:
    st = _stat(pid)
    if st is not None:
        return st[0] not in ("Z", "X") and (started is None or st[1] == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None  # no /proc to tell a reused pid: alive, by its heartbeat then


def _age(since: dt.datetime | None, now: dt.datetime) -> str:
    if since is None:
        return "never"
    return f"{int((now - since).total_seconds())} s ago"


def verdict(settings: Settings, holder: dict[str, Any] | None, heartbeat_at: dt.datetime | None,
            since: dt.datetime | None, now: dt.datetime | None = None) -> tuple[bool, str]:
    """(alive, why) for a holder. A holder recorded before holders were (no kind) is judged as
    a DAG run, by its heartbeat or ``since``."""
    now = now or utcnow()
    kind = (holder or {}).get("kind")
    if kind == PROCESS and holder and holder.get("pid") and _same_machine(holder):
        pid = int(holder["pid"])
        if _pid_alive(pid, holder.get("pid_start")):
            return True, f"process {pid} on {holder['host']} is running"
        return False, f"its process {pid} on {holder['host']} is gone"
    limit = settings.lock_stale_after if kind == PROCESS else settings.lock_dag_stale_after
    last = heartbeat_at or since
    who = (f"process {holder.get('pid')} on {holder.get('host')}" if kind == PROCESS and holder
           else "Airflow DAG run" if kind == DAG else "holder")
    if last is None or (now - last).total_seconds() > limit:
        return False, f"{who}: no heartbeat for more than {limit} s (last {_age(last, now)})"
    return True, f"{who}, last heartbeat {_age(last, now)}"


def _kind_for(trigger: str | None) -> str:
    return DAG if trigger == "airflow" else PROCESS


# --------------------------------------------------------------------------------------------
# Heartbeats: a thread of the holding process
# --------------------------------------------------------------------------------------------


class _Beater(threading.Thread):
    def __init__(self, url: str, academy: str, run_id: str, every: float) -> None:
        super().__init__(name=f"entsync-heartbeat-{run_id}", daemon=True)
        self.url, self.academy, self.run_id, self.every = url, academy, run_id, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                if not beat(self.url, self.academy, self.run_id):
                    return  # the run ended and the lock is not its own: nothing to keep alive
            except Exception as e:  # noqa: BLE001 - a missed beat is retried at the next one
                log.debug("heartbeat of %s missed: %s", self.run_id, type(e).__name__)


_beaters: dict[tuple[str, str], _Beater] = {}
_beaters_lock = threading.Lock()


def beat(url: str, academy: str, run_id: str) -> bool:
    """Refresh the run's and its lock's heartbeat; whether either is still there to beat."""
    now = utcnow()
    with session_factory(url)() as s, s.begin():
        runs: Any = s.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                              .values(heartbeat_at=now))
        locks: Any = s.execute(update(AcademyLock).where(AcademyLock.academy == academy,
                                                         AcademyLock.run_id == run_id)
                               .values(heartbeat_at=now))
    return bool(runs.rowcount or locks.rowcount)


def keep_alive(settings: Settings, academy: str, run_id: str) -> None:
    """Beat the run's heartbeat from a thread of this process until ``stop_beating`` or the
    run ends (also during a long stage: reading, planning, writing)."""
    key = (settings.state_url, run_id)
    with _beaters_lock:
        b = _beaters.get(key)
        if b is not None and b.is_alive() and not b.stopped.is_set():
            return
        b = _Beater(settings.state_url, academy, run_id, settings.heartbeat_every)
        _beaters[key] = b
        b.start()


def stop_beating(url: str, run_id: str) -> None:
    with _beaters_lock:
        b = _beaters.pop((url, run_id), None)
    if b is not None:
        b.stopped.set()


def _stop_all(url: str | None = None) -> None:
    with _beaters_lock:
        keys = [k for k in _beaters if url is None or k[0] == url]
        for k in keys:
            _beaters.pop(k).stopped.set()


on_dispose(_stop_all)


# --------------------------------------------------------------------------------------------
# Runs and the lock
# --------------------------------------------------------------------------------------------


def register_run(settings: Settings, academy: str, run_id: str, dry_run: bool,
                 trigger: str) -> None:
    """The run's row, with this process as its holder (``start_run``)."""
    now = utcnow()
    with session_factory(settings.state_url)() as s, s.begin():
        close_dead_runs(settings, s, academy, by=run_id, now=now)
        if s.get(Run, run_id) is None:
            s.add(Run(id=run_id, academy=academy, dry_run=dry_run, trigger=trigger,
                      status="running", holder=holder_info(_kind_for(trigger)),
                      heartbeat_at=now))
    keep_alive(settings, academy, run_id)


def refuse_run(settings: Settings, run_id: str, reason: str) -> None:
    """Close a run the academy's lock refused (``refused``, ended now): it wrote nothing."""
    from etl.report import metrics

    academy = None
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None and run.status == "running":
            run.status, run.ended_at = "refused", utcnow()
            run.summary = {**(run.summary or {}), "status": "refused", "error": reason[:2000]}
            academy = run.academy
    stop_beating(settings.state_url, run_id)
    if academy:
        metrics.count_run(settings, academy, "refused")


def _journaled(s: Any, run_id: str) -> dict[str, int]:
    return {str(op): int(n) for op, n in s.execute(
        select(JournalEntry.op, func.count()).where(JournalEntry.run_id == run_id)
        .group_by(JournalEntry.op))}


def abandon(s: Any, run: Run, why: str, by: str, now: dt.datetime | None = None) -> None:
    """Close a run whose holder is dead: ``abandoned``, with what it had journaled (its
    changes applied to the directory; a rerun finds them there and converges)."""
    now = now or utcnow()
    done = _journaled(s, run.id)
    applied = sum(done.values())
    run.status, run.ended_at = "abandoned", now
    run.summary = {**(run.summary or {}), "status": "abandoned", "applied": applied,
                   "error": f"abandoned: {why}",
                   "abandoned": {"reason": why, "by": by, "at": now.isoformat(timespec="seconds"),
                                 "applied": applied, "journal": done}}
    log.warning("run %s abandoned (%s; %s): %d changes it had applied are journaled", run.id,
                why, by, applied)


def close_dead_runs(settings: Settings, s: Any, academy: str, by: str,
                    now: dt.datetime | None = None, skip: str | None = None) -> list[str]:
    """Close every ``running`` run of the academy whose holder is dead; their ids."""
    from etl.report import metrics

    now = now or utcnow()
    closed = []
    for run in s.scalars(select(Run).where(Run.academy == academy, Run.status == "running")):
        if run.id in (by, skip):
            continue
        alive, why = verdict(settings, run.holder, run.heartbeat_at, run.started_at, now)
        if not alive:
            abandon(s, run, why, by, now)
            closed.append(run.id)
            metrics.count_run(settings, academy, "abandoned")
    return closed


def acquire(settings: Settings, academy: str, run_id: str, kind: str = PROCESS) -> None:
    """Take the academy's lock for the run, or raise ``RunLocked`` naming the live holder. A
    lock whose run ended, or whose holder is dead, is taken over at once (its run closed
    ``abandoned``)."""
    Session = session_factory(settings.state_url)
    sqlite = Session.kw["bind"].dialect.name == "sqlite"
    last: Exception | None = None
    for attempt in range(3):
        try:
            with Session() as s, s.begin():
                now = utcnow()
                me = holder_info(kind)
                lock = s.get(AcademyLock, academy, with_for_update=True)
                if lock is None:
                    s.add(AcademyLock(academy=academy, run_id=run_id, acquired_at=now,
                                      holder=me, heartbeat_at=now))
                    break
                if lock.run_id == run_id:
                    lock.holder, lock.heartbeat_at = me, now
                    break
                holder = s.get(Run, lock.run_id)
                why = "its run ended"
                if holder is not None and holder.status in OPEN:
                    alive, why = verdict(settings, lock.holder, lock.heartbeat_at,
                                         lock.acquired_at, now)
                    if alive:
                        raise RunLocked(f"academy {academy} is being written by run "
                                        f"{lock.run_id} ({why}; since "
                                        f"{lock.acquired_at:%Y-%m-%d %H:%M} UTC); try again "
                                        "when it ends")
                    if holder.status == "running":
                        abandon(s, holder, why, by=f"lock taken over by run {run_id}", now=now)
                # compare and swap: of two runs taking over one dead lock, one wins (SQLite
                # reads outside a transaction: FOR UPDATE holds nothing there)
                took: Any = s.execute(
                    update(AcademyLock).where(AcademyLock.academy == academy,
                                              AcademyLock.run_id == lock.run_id)
                    .values(run_id=run_id, acquired_at=now, holder=me, heartbeat_at=now)
                    .execution_options(synchronize_session=False))
                if took.rowcount != 1:
                    raise IntegrityError("lock changed hands", None, Exception("cas"))
                log.warning("took over the lock of %s from run %s (%s)", academy,
                            lock.run_id, why)
                break
        except (IntegrityError, OperationalError) as e:
            # another run inserted or took the lock between our read and write (SQLite: a
            # read snapshot that went stale cannot write): look again
            if isinstance(e, OperationalError) and (not sqlite or attempt == 2):
                raise
            last = e
            continue
    else:
        raise RunLocked(f"academy {academy}: could not take the run lock") from last
    keep_alive(settings, academy, run_id)


def heartbeat(settings: Settings, academy: str, run_id: str) -> None:
    """Refresh the run's and its lock's heartbeat now, and keep beating from this process
    (each Airflow task is one). A run declared dead meanwhile stops here."""
    now = utcnow()
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None and run.status == "abandoned":
            gone: Any = (run.summary or {}).get("abandoned") or {}
            why = gone.get("reason", "")
            raise RunAbandoned(f"run {run_id} was closed as abandoned ({why}): it stops here; "
                               "the next run picks up what it left")
        if run is not None and run.status == "running":
            run.heartbeat_at = now
        lock = s.get(AcademyLock, academy)
        if lock is not None and lock.run_id == run_id:
            lock.heartbeat_at = now
    keep_alive(settings, academy, run_id)


def release(settings: Settings, academy: str, run_id: str) -> None:
    stop_beating(settings.state_url, run_id)
    with session_factory(settings.state_url)() as s, s.begin():
        lock = s.get(AcademyLock, academy)
        if lock is not None and lock.run_id == run_id:
            s.delete(lock)


def lock_view(settings: Settings, s: Any, academy: str) -> dict[str, Any] | None:
    """The academy's lock as ``entsync status`` shows it (holder, heartbeat, alive or not)."""
    lock = s.get(AcademyLock, academy)
    if lock is None:
        return None
    holder = s.get(Run, lock.run_id)
    alive, why = verdict(settings, lock.holder, lock.heartbeat_at, lock.acquired_at)
    if holder is None or holder.status not in OPEN:
        alive, why = False, "its run ended"
    h = lock.holder or {}
    return {"run_id": lock.run_id, "acquired_at": lock.acquired_at.isoformat(timespec="seconds"),
            "heartbeat_at": (lock.heartbeat_at.isoformat(timespec="seconds")
                             if lock.heartbeat_at else None),
            "kind": h.get("kind"), "host": h.get("host"), "pid": h.get("pid"),
            "alive": alive, "why": why}


def run_alive(settings: Settings, run: Run) -> tuple[bool, str]:
    """Whether a ``running`` run's holder is alive (``entsync status`` shows it abandoned
    otherwise)."""
    return verdict(settings, run.holder, run.heartbeat_at, run.started_at)


def unlock(settings: Settings, academy: str, by: str | None = None,
           force: bool = False) -> dict[str, Any]:
    """``entsync unlock``: release the academy's lock whose holder is dead, close its run
    and the academy's other dead ``running`` runs as ``abandoned``, and journal it (a run
    of its own, trigger ``unlock``). Refused (``RunLocked``) while the holder is alive;
    ``force`` overrides a verdict made on the heartbeat alone (another host, an Airflow DAG
    run), never a process seen alive on this host."""
    get_academy(academy)
    by = by or _operator()
    rid = f"{new_run_id(academy)}-unlock"
    now = utcnow()
    with session_factory(settings.state_url)() as s, s.begin():
        lock = s.get(AcademyLock, academy, with_for_update=True)
        released: dict[str, Any] | None = None
        if lock is not None:
            holder = s.get(Run, lock.run_id)
            alive, why = verdict(settings, lock.holder, lock.heartbeat_at, lock.acquired_at,
                                 now)
            if holder is None or holder.status not in OPEN:
                alive, why = False, "its run ended"
            if alive:
                seen = (lock.holder or {}).get("kind") == PROCESS and _same_machine(
                    lock.holder or {})
                if not force or seen:
                    raise RunLocked(
                        f"academy {academy} is held by run {lock.run_id}, which is alive "
                        f"({why}): not unlocked" + (
                            "; stop that process first" if seen else
                            "; --force releases it if you know it is dead"))
                why = f"forced by {by} ({why})"
            if holder is not None and holder.status == "running":
                abandon(s, holder, why, by=f"entsync unlock by {by}", now=now)
            released = {"run_id": lock.run_id, "holder": lock.holder, "reason": why,
                        "acquired_at": lock.acquired_at.isoformat(timespec="seconds")}
            s.delete(lock)
        closed = close_dead_runs(settings, s, academy, by=f"entsync unlock by {by}", now=now,
                                 skip=released["run_id"] if released else None)
        if released and released["run_id"] not in closed:
            hr = s.get(Run, released["run_id"])
            if hr is not None and hr.status == "abandoned":
                closed.insert(0, hr.id)
        out: dict[str, Any] = {"academy": academy, "released": released, "abandoned": closed,
                               "by": by, "forced": bool(force and released), "run_id": None}
        if released or closed:
            s.add(Run(id=rid, academy=academy, trigger="unlock", status="success",
                      started_at=now, ended_at=now, holder=holder_info(PROCESS),
                      summary={**out, "run_id": rid, "status": "success"}))
            out["run_id"] = rid
    if released:
        log.warning("lock of %s released by %s (run %s: %s)", academy, by,
                    released["run_id"], released["reason"])
    return out


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "cli"
