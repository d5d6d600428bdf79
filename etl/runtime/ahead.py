"""Read ahead: a streamed night's next group of schools read in a process of its own while
this one is planned and written (``etl.run._streamed``, the CLI; the DAG gets the same from
its mapped ``read_validate`` tasks).

Reading is CPU-bound Python (lxml, pandas, the validation rules) and so is most of planning
and the LDAP client's encoding: in one process they would share one interpreter lock. A
second process reads group k+1 while the first plans and writes group k, so that the
directory's writes are not paused for the reading of every group but for the first.

The reader is started with ``spawn`` (a fresh interpreter): nothing of the parent's state
DB connections, LDAP connections or threads is inherited. It reads exactly as the parent
would (``etl.validate.school.read_validate_schools``: staged tables, quarantine, the
school's reports, its metrics), and hands back the schools' JSON results. It ignores SIGINT
(the parent stops it), logs at the parent's level in the CLI's format, and is terminated
when the night ends or stops."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from collections.abc import Mapping
from multiprocessing.pool import AsyncResult, Pool
from types import TracebackType
from typing import Any

from etl.config import Settings
from etl.contracts import SchoolResult

#: how long the reader waits for a SQLite state DB's write lock, in milliseconds: the sync's
#: planning holds its write transaction from the identities it decides to its commit (tens of
#: seconds for a group at region scale), and the reader has nothing better to do than wait
READER_BUSY_TIMEOUT_MS = 600_000


def _child_init(level: int) -> None:
    from etl.store import db

    db.SQLITE_BUSY_TIMEOUT_MS = max(db.SQLITE_BUSY_TIMEOUT_MS, READER_BUSY_TIMEOUT_MS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from etl.runtime.logs import LOG_FORMAT, quiet_loggers

    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    quiet_loggers()


def _read(settings: Settings, academy_code: str, run_id: str,
          schools: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A group read as the sync reads it, asking for no CPU slot: a slot taken to read ahead
    would be one an academy's first group (its first write) or a group's planning waits for."""
    from etl.validate.school import read_validate_schools

    return [r.to_json() for r in read_validate_schools(settings, academy_code, run_id, schools,
                                                       first=False)]


class ReadAhead:
    """One reader process for a night: ``submit`` a group, later take its ``result``; one
    group in flight at a time. A context manager: the process is ended on leaving."""

    def __init__(self, settings: Settings, academy_code: str, run_id: str) -> None:
        self.settings, self.academy, self.run_id = settings, academy_code, run_id
        self._pool: Pool | None = None
        self._pending: AsyncResult[list[dict[str, Any]]] | None = None

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def submit(self, schools: Mapping[str, list[dict[str, Any]]]) -> None:
        if self._pending is not None:
            raise RuntimeError("a group is already being read ahead")
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(1, initializer=_child_init,
                                  initargs=(logging.getLogger().getEffectiveLevel(),))
        self._pending = self._pool.apply_async(
            _read, (self.settings, self.academy, self.run_id, dict(schools)))

    def result(self) -> list[SchoolResult]:
        """The group submitted last, once read (an error in the reader is raised here)."""
        if self._pending is None:
            raise RuntimeError("no group is being read ahead")
        pending, self._pending = self._pending, None
        return [SchoolResult.from_json(r) for r in pending.get()]

    def close(self) -> None:
        """End the reader: once idle, it exits as a process ends normally (its finalizers
        run: killed, it left the resource tracker a semaphore to warn about on the user's
        terminal at exit); a group still being read is dropped at once (its schools are read
        again next night, as after a run that stopped)."""
        pool, pending = self._pool, self._pending
        self._pool, self._pending = None, None
        if pool is None:
            return
        if pending is None or pending.ready():
            pool.close()
        else:
            pool.terminate()
        pool.join()
