"""The sync yields the CPU to the directory server (issue 6): reading, validating and planning
are CPU-bound batch work, and on a shared machine slapd's commits, which every write waits
for, must not queue behind them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etl.config import Settings
from etl.errors import ConfigError


def _niceness_after_yield(env: dict[str, str]) -> int:
    """A fresh process's niceness once it has called yield_cpu (os.nice is per process)."""
    code = ("import os; from etl.config import Settings; from etl.runtime.cpu import yield_cpu;"
            "yield_cpu(Settings.from_env()); print(os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_the_sync_runs_at_niceness_10_unless_told() -> None:
    assert Settings.from_env({}).nice == 10
    assert Settings.from_env({"ENTSYNC_NICE": "0"}).nice == 0
    # a child starts at this process's niceness (a sync run in-process by an earlier test
    # may have raised it) and never goes back below it
    here = os.nice(0)
    assert _niceness_after_yield({}) == max(here, 10)
    assert _niceness_after_yield({"ENTSYNC_NICE": "3"}) == max(here, 3)
    assert _niceness_after_yield({"ENTSYNC_NICE": "0"}) == here


@pytest.mark.parametrize("bad", ["-5", "20", "high"])
def test_a_niceness_out_of_range_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="ENTSYNC_NICE"):
        Settings.from_env({"ENTSYNC_NICE": bad})


def test_cpu_policy_defaults_to_auto_and_refuses_anything_else() -> None:
    assert Settings.from_env({}).cpu_policy == "auto"
    assert Settings.from_env({"ENTSYNC_CPU_POLICY": " IDLE "}).cpu_policy == "idle"
    assert Settings.from_env({"ENTSYNC_CPU_POLICY": "nice"}).cpu_policy == "nice"
    with pytest.raises(ConfigError, match="ENTSYNC_CPU_POLICY"):
        Settings.from_env({"ENTSYNC_CPU_POLICY": "realtime"})


@pytest.mark.parametrize(("url", "local"), [
    ("ldap://127.0.0.1:3890", True), ("ldap://localhost", True), ("ldaps://[::1]:636", True),
    ("ldapi://%2Frun%2Fslapd%2Fldapi", True), ("ldap://ldap.ent.example.fr", False),
    ("ldaps://10.1.2.3:636", False), (None, False)])
def test_a_directory_on_this_machine_is_told_by_its_url(url: str | None, local: bool) -> None:
    from etl.runtime.cpu import directory_is_local

    assert directory_is_local(url) is local


def _inside(env: dict[str, str], slot: str, folder: Path,
            lead: bool = False) -> tuple[int, int]:
    """(policy, niceness) of a CPU-bound stage run by this thread, which holds the machine's
    one CPU slot (``slot`` "held"), finds it taken by another thread ("taken"), or runs with
    no slots ("none"); ``lead``: a streamed first load's first group."""
    import threading

    from etl.runtime.cpu import cpu_bound
    from etl.runtime.cpuslots import cpu_slot

    def probe() -> tuple[int, int]:
        return (os.sched_getscheduler(0),
                os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    settings = Settings.from_env({**env, "ENTSYNC_CPU_SLOTS": "0" if slot == "none" else "1"})
    if slot != "taken":
        with cpu_slot(1, folder):
            return cpu_bound(settings, probe, slot=True, lead=lead)
    taken, done = threading.Event(), threading.Event()

    def holder() -> None:
        with cpu_slot(1, folder):
            taken.set()
            done.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert taken.wait(30)
        return cpu_bound(settings, probe, slot=True, lead=lead)
    finally:
        done.set()
        t.join()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies")
def test_cpu_bound_work_runs_first_with_a_slot_last_without(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading and planning run in a thread of their own (the caller's thread, which writes,
    keeps its policy and niceness): with a CPU slot at niceness 19, without one in
    SCHED_IDLE when the directory is local; at the process's niceness or 19 when it is not."""
    from etl.runtime import cpuslots

    monkeypatch.setattr(cpuslots, "default_dir", lambda: tmp_path)
    me = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
    other, idle = os.SCHED_OTHER, os.SCHED_IDLE
    local = {"ENTSYNC_LDAP_URL": "ldap://127.0.0.1:3890"}
    remote = {"ENTSYNC_LDAP_URL": "ldaps://ldap.ent.example.fr"}
    assert _inside(local, "held", tmp_path) == (other, 19)
    assert _inside(local, "taken", tmp_path)[0] == idle
    assert _inside(local, "none", tmp_path)[0] == idle
    assert _inside(remote, "held", tmp_path) == me
    assert _inside(remote, "taken", tmp_path) == (other, 19)
    assert _inside(remote, "none", tmp_path) == me
    assert _inside({**local, "ENTSYNC_CPU_POLICY": "nice"}, "held", tmp_path) == me
    assert _inside({**remote, "ENTSYNC_CPU_POLICY": "idle"}, "taken", tmp_path)[0] == idle
    # a streamed first load's first group: without a slot, as the slots' holders run
    assert _inside(local, "taken", tmp_path, lead=True) == (other, 19)
    assert _inside(remote, "taken", tmp_path, lead=True) == me
    assert _inside(local, "held", tmp_path, lead=True) == (other, 19)
    assert _inside(local, "none", tmp_path, lead=True)[0] == idle
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)) == me


def test_cpu_bound_gives_back_the_result_and_raises_the_error_in_the_caller() -> None:
    from etl.errors import FileRejected
    from etl.runtime.cpu import cpu_bound

    settings = Settings.from_env({"ENTSYNC_CPU_POLICY": "idle"})
    assert cpu_bound(settings, lambda a, b: a + b, 2, 3) == 5

    def fails() -> None:
        raise FileRejected("f.xml", "bad")

    with pytest.raises(FileRejected):
        cpu_bound(settings, fails)


def test_cpu_bound_defers_full_collections_and_collects_once_at_the_end() -> None:
    """Inside a CPU-bound stage the cyclic GC makes no automatic full collection; the
    thresholds come back after, and a cycle that became garbage inside is collected by the
    stage's end, not left for later."""
    import gc
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self

    before = gc.get_threshold()
    seen: dict[str, object] = {}

    def stage() -> None:
        seen["threshold"] = gc.get_threshold()
        n = Node()
        gc.collect()  # into the oldest generation: only a full collection frees it now
        seen["ref"] = weakref.ref(n)
        del n
        keep = [(i,) for i in range(1_000_000)]  # a stage's worth of objects made
        seen["full_due"] = gc.get_count()[2] >= before[2]
        del keep

    gc.collect()
    from etl.runtime.cpu import cpu_bound

    cpu_bound(Settings.from_env({"ENTSYNC_CPU_POLICY": "nice"}), stage)
    assert seen["threshold"][:2] == before[:2]  # type: ignore[index]
    assert seen["threshold"][2] >= 1_000_000  # type: ignore[index]
    assert gc.get_threshold() == before
    assert seen["full_due"] and seen["ref"]() is None  # type: ignore[operator]


def test_only_a_first_load_asks_for_a_cpu_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              state_url: str) -> None:
    """An academy none of whose schools was applied goes first if it finds a slot; once one
    was, its stages share the cores (SCHED_IDLE with a local directory, slot or none)."""
    import threading

    from etl.runtime import cpuslots
    from etl.runtime.cpu import cpu_bound, first_load
    from etl.runtime.cpuslots import cpu_slot
    from etl.store.db import session_factory
    from etl.store.models import SchoolState

    monkeypatch.setattr(cpuslots, "default_dir", lambda: tmp_path)
    settings = Settings.from_env({"ENTSYNC_LDAP_URL": "ldap://127.0.0.1:3890",
                                  "ENTSYNC_STATE_URL": state_url, "ENTSYNC_CPU_SLOTS": "1"})

    def probe() -> tuple[int, int]:
        return (os.sched_getscheduler(0),
                os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def stage() -> tuple[int, int]:
        return cpu_bound(settings, probe, slot=first_load(settings, "ac-x"))

    assert first_load(settings, "ac-x")
    assert stage() == (os.SCHED_OTHER, 19)
    with session_factory(state_url)() as s, s.begin():
        s.add(SchoolState(academy="ac-x", uai="0671234X", pupils=1, guardians=0, staff=0))
    assert not first_load(settings, "ac-x") and first_load(settings, "ac-y")
    with cpu_slot(1, tmp_path):
        assert stage()[0] == os.SCHED_IDLE  # this thread's slot not re-entered: none asked for
