"""How CPU-bound stages take the CPU: priority, the cyclic GC, slots."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select

from etl.config import Settings
from etl.store.db import session_factory
from etl.store.models import (
    SchoolState,
)

log = logging.getLogger(__name__)


def yield_cpu(settings: Settings) -> None:
    """Lower this process's CPU priority to ``settings.nice`` (never raise it back: that
    takes privileges). Reading, validating and planning are CPU-bound batch work; when the
    sync shares a machine with slapd (the embedded default, a small deployment), slapd's
    commits, which every write waits for, and the ENT's own reads come first."""
    try:
        now = os.nice(0)
        if settings.nice > now:
            os.nice(settings.nice - now)
    except OSError:  # not allowed here: run as started
        pass


_T = TypeVar("_T")


def directory_is_local(url: str | None) -> bool:
    """Whether the directory server runs on this machine: an ldapi:// socket or a loopback
    address."""
    if not url:
        return False
    parts = urlsplit(url)
    if parts.scheme.lower() == "ldapi":
        return True
    host = (parts.hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


#: young collections before the cyclic GC's full one, inside ``cpu_bound``: as good as never
_FULL_GC_DEFERRED = 1_000_000


@contextmanager
def full_collections_deferred() -> Iterator[None]:
    """Python's cyclic GC without its automatic full collections, then one at the end.

    Reading and planning an academy build millions of long-lived objects (rows, entries,
    keys), nearly none in reference cycles: refcounting frees them. The default thresholds
    made the collector walk every one of them again and again, and a full collection's cost
    grows with the heap (docs/performance.md). Young collections still run
    (short-lived cycles go at once); cycles that grew old wait for the collection made here
    when the stage ends (if the default thresholds would have made one by then: a small
    stage, a test's, makes none)."""
    t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(t0, t1, max(t2, _FULL_GC_DEFERRED))
    try:
        yield
    finally:
        gc.set_threshold(t0, t1, t2)
        if gc.get_count()[2] >= t2:  # a full collection was due: the stage's one, now
            gc.collect()




def cpu_bound(settings: Settings, fn: Callable[..., _T], *args: Any, slot: bool = False,
              lead: bool = False) -> _T:
    """``fn(*args)``, a CPU-bound stage, without the cyclic GC's automatic full collections
    (``full_collections_deferred``), in a thread at the stage's priority (``_cpu_bound``).

    ``slot``: the stage goes first if it finds one of the machine's CPU slots free
    (``etl.runtime.cpuslots``), last if not; what a first load asks for (``first_load``): its writes
    are most of its night, and the sooner an academy has read and planned the sooner they
    start while the others read. Other nights share the cores equally: reading and planning
    are most of them, and three single-threaded stages on two cores finish soonest together.

    ``lead``: with ``slot``, a stage the night's first writes wait for (a streamed first
    load's first group, a few schools): without a free slot it runs as the slots' holders
    do, sharing the cores with them, rather than last in line: the academy that found both
    slots taken (two academies' first groups, or a smaller academy's whole plan) writes
    within seconds too, not after their planning."""
    from etl.runtime.cpuslots import cpu_slot

    with cpu_slot(settings.cpu_slots if slot else 0) as held, \
            full_collections_deferred():
        return _cpu_bound(settings, fn, True if lead and held is False else held, *args)


#: niceness of a CPU-bound stage's thread: the lowest of the normal policy (weight 15 against
#: slapd's 1024 and the writers' 110 at niceness 10)
STAGE_NICE = 19


def _cpu_bound(settings: Settings, fn: Callable[..., _T], held: bool | None,
               *args: Any) -> _T:
    """``fn(*args)`` in a thread of its own at the stage's priority, the caller's thread (which
    writes) left as it was (Linux's niceness and policy are per thread):

    - the directory on this machine (``settings.cpu_policy`` ``idle``; ``auto``: ldapi://, a
      loopback address): a stage holding a CPU slot runs at niceness 19, one without in
      ``SCHED_IDLE`` (a core only when nothing else wants it). slapd's commits, which every
      write waits for, and the sync's writes preempt both (niceness alone left them waiting
      behind the planning with both cores busy: ``python -m bench.sched``);
    - elsewhere (``nice``): a stage holding a slot at the process's niceness
      (``ENTSYNC_NICE``), one without at niceness 19;
    - no slots (``ENTSYNC_CPU_SLOTS=0``): ``SCHED_IDLE``, or the process's niceness.

    A thread rather than switching back: an unprivileged process may not leave ``SCHED_IDLE``
    nor lower its niceness (RLIMIT_NICE)."""
    policy = settings.cpu_policy
    if policy == "auto":
        policy = "idle" if directory_is_local(settings.ldap.url) else "nice"
    idle = policy == "idle" and not held and hasattr(os, "SCHED_IDLE")
    if not idle and (held is None or (held and policy == "nice")):
        return fn(*args)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            if idle:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STAGE_NICE)
        except OSError as e:  # not allowed here (a container's seccomp): run as started
            log.debug("stage priority refused (%s): CPU-bound work at the process's", e)
        try:
            box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["err"] = e

    t = threading.Thread(target=body, name=f"entsync-{getattr(fn, '__name__', 'cpu')}",
                         daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]  # type: ignore[no-any-return]


def first_load(settings: Settings, academy_code: str) -> bool:
    """Whether no school of the academy has been applied yet (its first load: the night's
    writes are the academy's whole directory)."""
    with session_factory(settings.state_url)() as s:
        return s.scalar(select(SchoolState.uai).where(SchoolState.academy == academy_code)
                        .limit(1)) is None


def goes_first(settings: Settings, academy_code: str, dry_run: bool) -> bool:
    """Whether the academy's reading and planning ask for a CPU slot: a first load that
    writes (a check or a dry run writes nothing that would start sooner)."""
    return not dry_run and first_load(settings, academy_code)
