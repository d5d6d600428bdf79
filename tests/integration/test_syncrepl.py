"""An LDAP consumer follows a sync with content synchronization (RFC 4533, syncprov).

`ldapsearch -E sync=rp` (refreshAndPersist) runs as a separate process, the way an ENT
backend's syncrepl client would, while `pipeline.run_sync` writes; it must see every person
the run created, including a given pupil, without polling.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer, find_program
from etl.store.db import get_engine
from etl.store.models import JournalEntry
from tests.integration.test_sync import ACADEMY, school_a, search

pytestmark = pytest.mark.ldap
SEEN_TIMEOUT_S = 20.0


def _dns(path: Path) -> list[str]:
    """DNs the consumer printed so far (ldif-wrap=no: one line each)."""
    text = path.read_text("utf-8", errors="replace")
    return [line[4:].strip() for line in text.splitlines() if line.startswith("dn: ")]


def _wait_for(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_refresh_and_persist_consumer_sees_the_runs_persons(
        env: Settings, server: LdapServer, tmp_path: Path) -> None:
    ldapsearch = find_program("ldapsearch")
    assert ldapsearch, "ldap-utils is not installed (make system-deps)"
    people_base = f"ou=people,{server.base}"
    out = tmp_path / "consumer.ldif"
    err = tmp_path / "consumer.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        consumer = subprocess.Popen(
            [ldapsearch, "-LLL", "-x", "-H", server.url, "-D", server.bind_dn,
             "-y", str(server.password_file), "-o", "ldif-wrap=no", "-b", people_base,
             "-E", "!sync=rp", "(objectClass=*)", "1.1"],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # the refresh phase sends the (empty) people branch: the consumer is now persisting
        assert _wait_for(lambda: people_base.lower() in map(str.lower, _dns(out)), 10), (
            f"consumer not started: {err.read_text()}")
        school_a(env.landing)
        summary = pipeline.run_sync(env, RunRequest(ACADEMY))
        assert summary["status"] == "success" and summary["applied"] > 0

        with Session(get_engine(env.state_url)) as s:
            journal = s.execute(select(JournalEntry.dn, JournalEntry.op).where(
                JournalEntry.run_id == summary["run_id"])).all()
        persons = {dn.lower() for dn, _op in journal if dn.lower().endswith(people_base.lower())
                   and dn.lower() != people_base.lower()}
        assert persons, "the run journaled no person"
        pupil = search(server, "(ENTEleveINE=070876696HA)", people_base, ["uid"])
        assert len(pupil) == 1
        pupil_dn = pupil[0]["dn"].lower()
        assert pupil_dn in persons

        def seen() -> set[str]:
            return {d.lower() for d in _dns(out)} - {people_base.lower()}

        assert _wait_for(lambda: persons <= seen(), SEEN_TIMEOUT_S), (
            f"consumer saw {len(seen())} of {len(persons)} persons; "
            f"missing e.g. {sorted(persons - seen())[:3]}; stderr: {err.read_text()}")
        assert seen() == persons  # exactly the run's persons: nothing else moved
        assert pupil_dn in seen()
        assert consumer.poll() is None, "a refreshAndPersist search must still be running"
    finally:
        consumer.terminate()
        try:
            consumer.wait(5)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait(5)
