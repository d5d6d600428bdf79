"""CPU slots: N CPU-bound stages (reading, validating, planning) at a time on a machine go
first, whichever processes run them (the academies' syncs, the DAGs' tasks).

Three academies starting at once on two cores each got two thirds of a core: all three reached
their first write late, and the directory server sat idle until the first did. With a slot per
core, two academies read and plan at full speed; a stage that finds no slot free runs on what
they leave (``etl.runtime.cpu.cpu_bound``: at the lowest priority), so the directory's writes
start sooner and yet no core idles while work is left (a stage waiting for a slot would idle
one when the last academies are the largest).

A slot is an advisory lock (``flock``) on one of N files in a directory of this machine: the
kernel releases it when its holder exits however it exits, so a killed task never leaves a
slot taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_held = threading.local()


def _depth() -> int:
    """Slots this thread holds, nested (0 or 1 taken, more re-entered)."""
    return int(getattr(_held, "depth", 0))


def default_slots() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"entsync-cpu-slots-{os.getuid()}"


def _own_dir(d: Path) -> bool:
    """Make the slots' directory; False (logged) when it is not a real directory of this
    user's, out of reach of others (a shared /tmp: somebody's symlink or folder there)."""
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(d)
    except OSError as e:
        log.warning("CPU slots off: %s (%s)", d, e)
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        log.warning("CPU slots off: %s is not a directory of this user's alone", d)
        return False
    return True


def _try_one(folder: Path, n: int) -> IO[bytes] | None:
    start = os.getpid() % n  # processes start their search at different slots
    for i in range(n):
        f = (folder / f"slot-{(start + i) % n}").open("ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return f
    return None


@contextmanager
def cpu_slot(slots: int, folder: Path | None = None) -> Iterator[bool | None]:
    """Hold one of ``slots`` machine-wide CPU slots while the block runs if one is free (a
    stage never waits for one: it runs last in line instead); yields True when held, False
    when every slot was taken, None when there are no slots (``slots`` 0, or no safe folder
    for them). Re-entrant in a thread: a stage inside a stage holding a slot holds it."""
    if slots <= 0:
        yield None
        return
    if _depth():
        _held.depth += 1
        try:
            yield True
        finally:
            _held.depth -= 1
        return
    d = folder or default_dir()
    if not _own_dir(d):
        yield None  # no slots rather than files somebody else controls
        return
    f = _try_one(d, slots)
    if f is None:
        yield False
        return
    _held.depth = 1
    try:
        yield True
    finally:
        _held.depth = 0
        f.close()  # closing the file releases the lock
