"""Summaries, logs, reports and metrics count what was written and what failed, per school and
per category, not what the plan had: a school whose writes the directory refused is not
"ok", a held school shows nothing written and what is pending. Real slapd, real state DB."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import ldap3
import pytest

from etl import run as pipeline
from etl.cli import _sync_table
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.report.metrics import run_metrics
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.ldap_fixture import admin_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-strasbourg"
UAI_OK = "0670030" + uai_check_letter("0670030")
UAI_BAD = "0670040" + uai_check_letter("0670040")
NOV = dt.date(2026, 11, 16)  # outside the September roll-over window
CATEGORIES = ("created", "updated", "disabled", "restored", "deleted")


def roster(n: int, uai: str, skip: set[int] | None = None) -> list[Pupil]:
    return [Pupil(str(1000 + i), f"ELEVE{i}", "Léa", "5A" if i % 2 else "5B",
                  ine=f"{uai[1:7]}{i:03d}AB") for i in range(n) if i not in (skip or set())]


def drop(env: Settings, uai: str, pupils: list[Pupil], day: int) -> None:
    guardians = [Guardian(str(5000 + int(p.eleve_id)), p.last, "Marc", [p.eleve_id])
                 for p in pupils]
    write_school(env.landing, ACADEMY, uai, pupils, guardians,
                 [Teacher("77", "PROF", "Ada", ["5A", "5B"])], date=f"{day:02d}/10/2026")


def _squat_school_entry(server: LdapServer, uai: str) -> None:
    """The school's DN taken by an entry of another structural class: the sync's add finds
    it there, and slapd refuses to change its structural class (objectClassModsProhibited)."""
    admin = admin_connection(server)
    try:
        assert admin.add(f"ENTStructureUAI={uai},ou=structures,{server.base}",
                         ["top", "organizationalUnit", "extensibleObject"],
                         {"ou": "squatter", "ENTStructureUAI": uai}), admin.result
    finally:
        admin.unbind()


def _checks_totals(summary: dict[str, Any]) -> None:
    """The run's totals are the sums of its schools' counts."""
    schools = summary["schools"].values()
    for k in CATEGORIES:
        assert summary["written"][k] == sum(s[k] for s in schools), k
        assert summary["failed_by"][k] == sum(s["failed_by"][k] for s in schools), k
    assert summary["failed"] == sum(s["failed"] for s in schools)


def test_refused_writes_are_counted_and_the_school_is_not_ok(
        env: Settings, server: LdapServer) -> None:
    drop(env, UAI_OK, roster(6, UAI_OK), day=1)
    drop(env, UAI_BAD, roster(6, UAI_BAD), day=1)
    _squat_school_entry(server, UAI_BAD)
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))

    assert s["status"] == "failed" and s["failed"] == 1, s["errors"]
    bad, ok = s["schools"][UAI_BAD], s["schools"][UAI_OK]
    # the school entry's creation failed; everything else of the school was written
    assert bad["status"] == "partial"
    assert bad["failed"] == 1 and bad["failed_by"]["created"] == 1
    assert bad["created"] == bad["planned"]["created"] - 1
    assert bad["written"] == sum(bad[k] for k in CATEGORIES) == bad["planned"]["created"] - 1
    assert bad["pending"] == 0
    assert ok["status"] == "ok" and ok["failed"] == 0
    assert ok["created"] == ok["planned"]["created"] == ok["written"] > 0
    _checks_totals(s)
    assert s["written"]["created"] == s["applied"] == s["planned"]["created"] - 1

    # the CLI's table: per school, what was written, what failed
    table = _sync_table(s)
    row = next(line for line in table.splitlines() if line.startswith(UAI_BAD))
    cells = row.split()
    assert cells[1] == "partial"
    head = next(line for line in table.splitlines() if line.startswith("school")).split()
    assert int(cells[head.index("created")]) == bad["created"]
    assert int(cells[head.index("failed")]) == 1
    assert re.search(r"^failed: 1 \(created 1\)$", table, re.M), table
    # the report page and the per-school metrics say the same
    html = (env.reports_dir / s["run_id"] / "report.html").read_text("utf-8")
    assert "partial" in html and f"<td>{UAI_BAD}</td>" in html
    m = {(x["uai"], x["name"]): x["value"] for x in run_metrics(env, s["run_id"])
         if x["stage"] == "report"}
    assert m[(UAI_BAD, "failed")] == 1 and m[(UAI_BAD, "written")] == bad["written"]
    assert m[(UAI_OK, "written.created")] == ok["created"]
    assert m[(None, "failed.created")] == 1 and m[(None, "written.created")] == s["applied"]


def test_a_held_school_shows_nothing_written_and_what_is_pending(
        env: Settings, server: LdapServer, caplog: pytest.LogCaptureFixture) -> None:
    drop(env, UAI_OK, roster(30, UAI_OK), day=1)
    first = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    assert first["status"] == "success"
    # a truncated-looking export: a third of the pupils missing, the school is held
    drop(env, UAI_OK, roster(30, UAI_OK, skip=set(range(0, 30, 3))), day=2)
    caplog.set_level(logging.INFO, logger="etl.run")
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    assert s["status"] == "awaiting_approval"
    sch = s["schools"][UAI_OK]
    assert sch["status"] == "awaiting_approval"
    assert sch["planned"]["disabled"] == 20  # pupils and their guardians
    assert all(sch[k] == 0 for k in CATEGORIES) and sch["written"] == 0
    assert sch["pending"] == sum(sch["planned"].values()) == s["held_changes"] > 0
    assert sch["pending_by"]["disabled"] == 20
    assert s["applied"] == 0 and s["pending"] == sch["pending"]
    assert s["written"]["disabled"] == 0 and s["pending_by"]["disabled"] == 20
    # nothing was disabled in the directory, and the log does not say otherwise
    admin = admin_connection(server)
    try:
        admin.search(f"ou=people,{server.base}", "(entSyncStatus=DISABLED)",
                     ldap3.SUBTREE, attributes=["uid"])
        assert not [e for e in admin.response if e.get("type") == "searchResEntry"]
    finally:
        admin.unbind()
    line = next(r.getMessage() for r in caplog.records
                if r.getMessage().startswith(f"run {s['run_id']} awaiting_approval"))
    assert "disabled 0" in line and f"pending {sch['pending']}" in line, line
    assert "disabled 20" not in line
    table = _sync_table(s)
    row = next(x for x in table.splitlines() if x.startswith(UAI_OK)).split()
    head = next(x for x in table.splitlines() if x.startswith("school")).split()
    assert int(row[head.index("disabled")]) == 0
    assert int(row[head.index("pending")]) == sch["pending"]
    # and what waits, with the guard, on a line of its own
    held = next(x for x in table.splitlines() if x.startswith(f"held {UAI_OK}: would "))
    assert "disabled 20" in held and "guard: " in held, held
    m = {(x["uai"], x["name"]): x["value"] for x in run_metrics(env, s["run_id"])
         if x["stage"] == "report"}
    assert m[(UAI_OK, "pending")] == sch["pending"] and m[(UAI_OK, "written")] == 0


def test_a_dry_run_counts_the_plan_and_writes_nothing(env: Settings, server: LdapServer) -> None:
    drop(env, UAI_OK, roster(4, UAI_OK), day=1)
    s = pipeline.run_sync(env, RunRequest(ACADEMY, dry_run=True, today=NOV))
    sch = s["schools"][UAI_OK]
    assert s["status"] == "dry_run" and s["applied"] == 0
    assert sch["written"] == 0 and sch["created"] == sch["planned"]["created"] > 0
    assert "planned, nothing written (dry run)" in _sync_table(s)
