"""`entsync sync` and `check` fail in their first second, in one line, with the documented exit
code, on what used to fail late or not at all: a missing landing folder, an unwritable workdir or
state DB, a state DB URL or driver it cannot use, a state DB server down, refused LDAP
credentials, an unreachable directory. Nothing is read or recorded before that."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from tests.builders import Pupil, write_school
from tests.ldap_fixture import admin_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI = "0510001" + uai_check_letter("0510001")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, server: LdapServer, **over: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ENTSYNC_")}
    e.update({"ENTSYNC_LANDING": str(tmp_path / "landing"),
              "ENTSYNC_WORKDIR": str(tmp_path / "work"),
              "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}", **server.env()})
    e.update(over)
    return e


def _entsync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etl.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    return lines[0]


def _school(tmp_path: Path) -> None:
    write_school(tmp_path / "landing", ACADEMY, UAI,
                 [Pupil("1001", "Durand", "Alice", "6A")], [], [])


@pytest.mark.parametrize("cmd", ["sync", "check"])
def test_missing_landing_root_and_academy_folder(tmp_path: Path, server: LdapServer,
                                                 cmd: str) -> None:
    env = _env(tmp_path, server)
    r = _entsync(env, cmd, "--academy", ACADEMY)
    assert r.returncode == 2
    assert "landing folder" in _one_line(r) and "does not exist" in r.stderr
    (tmp_path / "landing" / "ac-nancy-metz").mkdir(parents=True)
    r = _entsync(env, cmd, "--academy", ACADEMY)
    assert r.returncode == 2
    assert "no folder ac-reims/" in _one_line(r)
    assert not (tmp_path / "state.db").exists()  # nothing recorded before the check
    # the academy's folder there but empty: a night with nothing to do, not an error
    (tmp_path / "landing" / ACADEMY).mkdir()
    assert _entsync(env, cmd, "--academy", ACADEMY).returncode == 0


def test_refused_credentials_fail_before_reading(tmp_path: Path, server: LdapServer) -> None:
    _school(tmp_path)
    env = _env(tmp_path, server, ENTSYNC_LDAP_PASSWORD="not-the-password")
    r = _entsync(env, "sync", "--academy", ACADEMY)
    assert r.returncode == 1
    assert "refused" in _one_line(r)
    assert not (tmp_path / "work" / "reports").exists()  # nothing read, nothing reported
    # a dry run reads the directory too (the accounts it would adopt): the same early stop
    r = _entsync(env, "sync", "--academy", ACADEMY, "--dry-run")
    assert r.returncode == 1 and "refused" in _one_line(r)


def test_unreachable_directory(tmp_path: Path, server: LdapServer) -> None:
    _school(tmp_path)
    env = _env(tmp_path, server, ENTSYNC_LDAP_URL=f"ldap://127.0.0.1:{_free_port()}")
    r = _entsync(env, "sync", "--academy", ACADEMY)
    assert r.returncode == 1
    assert "cannot be reached" in _one_line(r)


def test_unwritable_workdir_and_state_db(tmp_path: Path, server: LdapServer) -> None:
    _school(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = _entsync(_env(tmp_path, server, ENTSYNC_WORKDIR=str(blocker / "work")),
                 "sync", "--academy", ACADEMY)
    assert r.returncode == 2
    assert "workdir" in _one_line(r) and "not writable" in r.stderr
    r = _entsync(_env(tmp_path, server,
                      ENTSYNC_STATE_URL=f"sqlite:///{blocker / 'state.db'}"),
                 "check", "--academy", ACADEMY)
    assert r.returncode == 2
    assert "state DB" in _one_line(r)


@pytest.mark.parametrize(("url", "rc", "says"), [
    ("postgres://entsync@127.0.0.1/test", 2, "not a URL SQLAlchemy can use"),
    ("nosuchdb://x", 2, "not a URL SQLAlchemy can use"),
])
def test_state_db_urls(tmp_path: Path, server: LdapServer, url: str, rc: int,
                       says: str) -> None:
    _school(tmp_path)
    r = _entsync(_env(tmp_path, server, ENTSYNC_STATE_URL=url), "sync", "--academy", ACADEMY)
    assert r.returncode == rc
    assert says in _one_line(r)


def test_state_db_server_down(tmp_path: Path, server: LdapServer) -> None:
    _school(tmp_path)
    url = f"postgresql+psycopg2://entsync@127.0.0.1:{_free_port()}/test"
    r = _entsync(_env(tmp_path, server, ENTSYNC_STATE_URL=url), "sync", "--academy", ACADEMY)
    assert r.returncode == 1
    line = _one_line(r)
    assert "state DB" in line and "refused" in line.lower()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_apply_closes_the_run(tmp_path: Path, server: LdapServer,
                                                  sig: signal.Signals) -> None:
    """Ctrl-C or a service stop in the middle of the writes: the process ends soon (it sends
    nothing more), the run is closed as failed, its lock released, and every entry it wrote is
    in the journal; the next sync finishes the job."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from etl.devtools.generate import generate_academy
    from etl.store.models import AcademyLock, JournalEntry, Run

    generate_academy(tmp_path / "landing", ACADEMY, 3, 250, 11)
    env = _env(tmp_path, server, ENTSYNC_LDAP_URL=server.url)
    p = subprocess.Popen([sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY,
                          "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    engine = create_engine(env["ENTSYNC_STATE_URL"])
    try:
        deadline = time.monotonic() + 300
        journaled = 0
        while journaled == 0 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                with Session(engine) as s:
                    journaled = s.scalar(select(func.count()).select_from(JournalEntry)) or 0
            except Exception:
                journaled = 0
        assert p.poll() is None, "the sync ended before it could be interrupted"
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        assert p.returncode == (130 if sig == signal.SIGINT else 143), err
        assert "interrupted" in err and "Traceback" not in err
        with Session(engine) as s:
            run = s.scalars(select(Run)).one()
            assert run.status == "failed"
            assert s.scalars(select(AcademyLock).where(
                AcademyLock.academy == ACADEMY, AcademyLock.run_id.is_not(None))).first() \
                is None
            created = s.scalar(select(func.count()).select_from(JournalEntry).where(
                JournalEntry.op == "add")) or 0
    finally:
        if p.poll() is None:
            p.kill()
        engine.dispose()
    conn = admin_connection(server)
    people = conn.extend.standard.paged_search(
        server.base, "(objectClass=ENTPerson)", attributes=["uid"], generator=False)
    in_directory = len([e for e in people if e.get("type") == "searchResEntry"])
    assert 0 < in_directory <= created  # nothing written without its journal line
    r = _entsync(env, "sync", "--academy", ACADEMY)
    assert r.returncode == 0, r.stderr
