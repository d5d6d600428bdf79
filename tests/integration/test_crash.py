"""Crash safety: slapd SIGKILLed in the middle of an apply (restarted at once, or left dead:
the run then fails at once), or the sync worker SIGKILLed; after a restart and a rerun the
directory holds exactly what a clean run writes, nobody is duplicated, and the journal has an
entry (run, time) for every entry written.

The sync runs as a subprocess (the CLI, as an Airflow worker would run it); the kill comes
once the journal holds some but not all of the ~2,000 changes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from etl.devtools.generate import generate_academy
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd
from tests.ldap_fixture import Refuser, admin_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
#: attributes that legitimately differ between two runs of the same input
RUN_SPECIFIC = {"uid", "entsyncsourcehash", "entsynclastrun", "entsyncrunid", "entpersonlogin"}


@dataclass
class Workspace:
    folder: Path
    server: LdapServer

    @property
    def state_db(self) -> Path:
        return self.folder / "state.db"

    def env(self) -> dict[str, str]:
        return {**os.environ, "ENTSYNC_LANDING": str(self.folder / "landing"),
                "ENTSYNC_WORKDIR": str(self.folder / "work"),
                "ENTSYNC_STATE_URL": f"sqlite:///{self.state_db}", **self.server.env()}

    def sync(self) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY,
                                 "--json"], env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def sync_to_end(self) -> dict[str, Any]:
        out, err = self.sync().communicate(timeout=600)
        try:
            result: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError:
            raise AssertionError(err[-3000:]) from None
        return result

    def journal(self) -> int:
        if not self.state_db.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=1) as c:
                return int(c.execute("select count(*) from journal").fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet, or locked by the writer
            return 0


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-landing")
    generate_academy(root, ACADEMY, schools=2, pupils_per_school=420, seed=21)
    return root


def _workspace(folder: Path, landing: Path) -> Workspace:
    shutil.copytree(landing, folder / "landing")
    return Workspace(folder, start_slapd(folder / "slapd"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, landing: Path) -> Iterator[dict[str, Any]]:
    """What an uninterrupted run writes: the reference."""
    ws = _workspace(tmp_path_factory.mktemp("crash-clean"), landing)
    try:
        summary = ws.sync_to_end()
        assert summary["status"] == "success" and summary["failed"] == 0, summary
        assert 1500 <= summary["applied"] <= 3000, summary["applied"]
        yield {"view": directory_view(ws.server), "applied": summary["applied"]}
    finally:
        stop_slapd(ws.folder / "slapd")


def _dump(server: LdapServer) -> list[tuple[str, dict[str, list[str]]]]:
    conn = admin_connection(server)
    try:
        out = []
        for ou in ("people", "structures"):
            gen = conn.extend.standard.paged_search(
                f"ou={ou},{server.base}", "(objectClass=*)", ldap3.SUBTREE, attributes=["*"],
                paged_size=500, generator=True)
            out += [(e["dn"], {k: [x.decode("utf-8") for x in v]
                               for k, v in e["raw_attributes"].items()})
                    for e in gen if e.get("type") == "searchResEntry"]
        return out
    finally:
        conn.unbind()


def directory_view(server: LdapServer) -> dict[str, dict[str, list[str]]]:
    """The directory with every opaque uid replaced by the person's source keys, so that two
    runs of the same input compare equal; asserts that no source key is on two entries."""
    entries = _dump(server)
    owners = Counter(j for _dn, a in entries for j in a.get("ENTPersonJointure", []))
    dup = [j for j, n in owners.items() if n > 1]
    assert not dup, f"source keys on several entries: {dup[:5]}"
    key: dict[str, str] = {}
    for dn, a in entries:
        if "ENTPersonJointure" in a:
            k = "person:" + "|".join(sorted(a["ENTPersonJointure"]))
            key[dn.lower()] = k
            key[a["uid"][0].lower()] = k
    view: dict[str, dict[str, list[str]]] = {}
    for dn, a in entries:
        norm = {name.lower(): sorted(key.get(v.lower(), v) for v in values)
                for name, values in a.items() if name.lower() not in RUN_SPECIFIC}
        view[key.get(dn.lower(), dn.lower())] = norm
    return view


def journal_covers(ws: Workspace) -> tuple[set[str], list[tuple[str, str, str]]]:
    with sqlite3.connect(ws.state_db) as c:
        rows = c.execute("select dn, run_id, applied_at from journal").fetchall()
    return {r[0].lower() for r in rows}, rows


def _kill_when_half_journaled(ws: Workspace, proc: subprocess.Popen[str], pid_of_victim: Any,
                              timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = ws.journal()
        if n > 0:
            os.kill(pid_of_victim(), signal.SIGKILL)
            return n
        if proc.poll() is not None:
            raise AssertionError("the sync ended before any change was journaled: "
                                 + (proc.stderr.read() if proc.stderr else "")[-2000:])
        time.sleep(0.02)
    raise AssertionError("no journal entry within the timeout")


def _assert_converged(ws: Workspace, clean: dict[str, Any], first_journal: int) -> None:
    assert 0 < first_journal < clean["applied"]
    view = directory_view(ws.server)
    ref = clean["view"]
    assert set(view) == set(ref), (sorted(set(view) ^ set(ref))[:10])
    diff = [k for k in ref if view[k] != ref[k]]
    assert not diff, [(k, view[k], ref[k]) for k in diff[:3]]
    journaled, rows = journal_covers(ws)
    base_ous = {f"ou={ou},{ws.server.base}".lower() for ou in ("people", "structures")}
    written = {dn.lower() for dn, _a in _dump(ws.server)} - base_ous
    assert written <= journaled, sorted(written - journaled)[:5]
    assert all(run and at for _dn, run, at in rows)


def test_slapd_killed_mid_apply_then_restarted_converges(tmp_path: Path, landing: Path,
                                                         clean: dict[str, Any]) -> None:
    ws = _workspace(tmp_path, landing)
    slapd_dir = tmp_path / "slapd"
    try:
        proc = ws.sync()
        pid_file = slapd_dir / "run" / "slapd.pid"
        n = _kill_when_half_journaled(ws, proc, lambda: int(pid_file.read_text()))
        # systemd would restart it; the running sync retries with backoff meanwhile
        time.sleep(0.3)
        restarted = start_slapd(slapd_dir)
        assert restarted.port == ws.server.port
        out, err = proc.communicate(timeout=600)
        first = json.loads(out) if out.strip() else {"status": "crashed", "stderr": err[-2000:]}
        second = ws.sync_to_end()
        assert second["status"] == "success", second
        _assert_converged(ws, clean, n)
        print(f"slapd killed at journal={n}; first run {first.get('status')} "
              f"applied={first.get('applied')} failed={first.get('failed')}; rerun "
              f"applied={second.get('applied')}")
    finally:
        stop_slapd(slapd_dir)


def test_worker_killed_mid_apply_then_rerun_converges(tmp_path: Path, landing: Path,
                                                      clean: dict[str, Any]) -> None:
    ws = _workspace(tmp_path, landing)
    try:
        proc = ws.sync()
        n = _kill_when_half_journaled(ws, proc, lambda: proc.pid)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # The killed run still holds the academy's lock; its process is gone, so the rerun
        # takes the lock over at once and closes the dead run as abandoned, with the
        # changes it had journaled (etl.store.locks). Nobody touches the state DB by hand.
        second = ws.sync_to_end()
        assert second["status"] == "success", second
        _assert_converged(ws, clean, n)
        with sqlite3.connect(f"file:{ws.state_db}?mode=ro", uri=True) as c:
            runs = c.execute("select status, summary from runs order by started_at").fetchall()
        assert [r[0] for r in runs] == ["abandoned", "success"], runs
        gone = json.loads(runs[0][1])["abandoned"]
        assert gone["applied"] >= n and "gone" in gone["reason"], gone
        print(f"worker killed at journal={n}; abandoned run applied={gone['applied']}; "
              f"rerun applied={second.get('applied')}")
    finally:
        stop_slapd(tmp_path / "slapd")


def test_directory_down_mid_apply_fails_the_run_at_once_then_rerun_converges(
        tmp_path: Path, landing: Path, clean: dict[str, Any]) -> None:
    """slapd dies mid-apply and stays dead: after ENTSYNC_LDAP_MAX_CONNECT_FAILURES (3 here)
    consecutive connection failures the apply stops, every thread with it; the run ends
    failed with what was written and what is left, one line on stderr, exit code 1; once
    slapd is back a rerun writes the rest and the directory is a clean run's."""
    ws = _workspace(tmp_path, landing)
    slapd_dir = tmp_path / "slapd"
    refuser: Refuser | None = None
    proc: subprocess.Popen[str] | None = None
    try:
        env = {**ws.env(), "ENTSYNC_LDAP_MAX_CONNECT_FAILURES": "3"}
        proc = subprocess.Popen([sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY,
                                 "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        pid = int((slapd_dir / "run" / "slapd.pid").read_text())
        n = _kill_when_half_journaled(ws, proc, lambda: pid)
        refuser = Refuser(ws.server.port)
        # the bound is on attempts, not time: the old writer retried each change 5 times on
        # 4 threads (hours for a night's plan); the timeout only keeps a hang from blocking CI
        out, err = proc.communicate(timeout=300)
        refuser.close()
        assert proc.returncode == 1, err[-3000:]
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("entsync: directory ") and "unreachable" in last, last
        assert "3 consecutive connection failures" in last and "left" in last, last
        # one thread probed, the others waited: the 3 failures, plus at most one try at once
        # per connection after a reconnect that still reached the dying slapd (the old
        # writer: 5 attempts for each of the ~1,700 changes left)
        assert refuser.attempts <= 3 + 4, refuser.attempts
        first = json.loads(out)
        # (a reconnect may still have reached slapd while it died: a failure before it)
        assert first["status"] == "failed" and 3 <= first["connection_failures"] <= 6
        assert first["left"] > 0 and first["applied"] > 0
        assert first["applied"] + first["failed"] + first["left"] == first["changes"]
        assert first["error"] == last.removeprefix("entsync: ")
        # the journal holds exactly what was written; the run row is closed, failed
        assert ws.journal() == first["applied"]
        with sqlite3.connect(ws.state_db) as c:
            status, ended, summary = c.execute(
                "select status, ended_at, summary from runs where id = ?",
                (first["run_id"],)).fetchone()
        assert status == "failed" and ended is not None
        assert json.loads(summary)["left"] == first["left"]
        # per school: what was written and what is left; none of them "ok"
        for uai, school in first["schools"].items():
            assert school["status"] in ("partial", "failed"), (uai, school["status"])
            assert school["written"] == sum(school[k] for k in
                                            ("created", "updated", "disabled", "restored",
                                             "deleted"))
        assert sum(s["pending"] for s in first["schools"].values()) <= first["left"]
        assert sum(s["written"] for s in first["schools"].values()) <= first["applied"]

        restarted = start_slapd(slapd_dir)
        assert restarted.port == ws.server.port
        second = ws.sync_to_end()
        assert second["status"] == "success", second
        assert second["applied"] <= first["left"] + first["failed"] + 8 * 4  # in flight
        _assert_converged(ws, clean, n)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if refuser is not None:
            refuser.close()
        stop_slapd(slapd_dir)

