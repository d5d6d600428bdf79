"""CPU slots (``etl.runtime.cpuslots``): at most N holders at once on the machine, across processes,
the others told at once that none is free; a slot freed however its holder ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.config import Settings
from etl.errors import ConfigError
from etl.runtime.cpuslots import cpu_slot, default_slots

HOLDER = """
import sys, time
from pathlib import Path
from etl.runtime.cpuslots import cpu_slot
folder, slots, hold = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
with cpu_slot(slots, folder) as held:
    print("holding" if held else "none", flush=True)
    time.sleep(hold)
"""


def _holder(folder: Path, slots: int, hold: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(slots), str(hold)],
                            stdout=subprocess.PIPE, text=True)


def _answer(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    return p.stdout.readline().strip()


def test_n_processes_hold_a_slot_the_others_find_none_and_do_not_wait(tmp_path: Path) -> None:
    procs = [_holder(tmp_path, 2, 30) for _ in range(2)]
    try:
        assert [_answer(p) for p in procs] == ["holding", "holding"]
        t0 = time.monotonic()
        late = _holder(tmp_path, 2, 0)
        assert _answer(late) == "none" and late.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 20  # answered at once, not after the holders
        procs[0].terminate()
        procs[0].wait(timeout=10)
        again = _holder(tmp_path, 2, 0)
        assert _answer(again) == "holding" and again.wait(timeout=30) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    p = _holder(tmp_path, 1, 60)
    assert _answer(p) == "holding"
    with cpu_slot(1, tmp_path) as held:
        assert held is False  # taken by another process
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    with cpu_slot(1, tmp_path) as held:
        assert held is True


def test_a_thread_holding_a_slot_takes_no_second_one(tmp_path: Path) -> None:
    with cpu_slot(1, tmp_path) as h1:
        with cpu_slot(1, tmp_path) as h2:  # the machine's one slot: this thread's already
            assert h1 is True and h2 is True
    with cpu_slot(1, tmp_path) as h4:  # given back: free again
        assert h4 is True
    with cpu_slot(0, tmp_path) as h5:  # no limit
        assert h5 is None


def test_slots_setting() -> None:
    assert Settings.from_env({}).cpu_slots == default_slots() >= 1
    assert Settings.from_env({"ENTSYNC_CPU_SLOTS": "auto"}).cpu_slots == default_slots()
    assert Settings.from_env({"ENTSYNC_CPU_SLOTS": "0"}).cpu_slots == 0
    assert Settings.from_env({"ENTSYNC_CPU_SLOTS": "3"}).cpu_slots == 3
    with pytest.raises(ConfigError, match="ENTSYNC_CPU_SLOTS"):
        Settings.from_env({"ENTSYNC_CPU_SLOTS": "many"})


def test_no_slots_in_a_directory_somebody_else_could_control(tmp_path: Path) -> None:
    """A symlink or a folder others may write in where the slots would go: no slots (and no
    file opened there), rather than locks somebody else controls."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "slots"
    link.symlink_to(target)
    with cpu_slot(1, link) as held:
        assert held is None
    assert list(target.iterdir()) == []
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with cpu_slot(1, shared) as held:
        assert held is None
    mine = tmp_path / "mine"
    with cpu_slot(1, mine) as held:
        assert held is True
    assert (mine.stat().st_mode & 0o777) == 0o700
