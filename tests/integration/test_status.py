"""`entsync status`: the last run per academy and each school's last state, text and JSON."""

from __future__ import annotations

import json
import zipfile
from typing import Any

import pytest

from etl import cli
from etl import run as pipeline
from etl.config import Settings, load_academies
from etl.contracts import RunRequest
from etl.store import models
from etl.store.db import session_factory
from etl.store.models import Approval
from tests.integration.test_sync import ACADEMY, UAI_A, UAI_B, school_a, school_b

pytestmark = pytest.mark.ldap


def _status(env: Settings, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    rc = cli.main(["status", "--state-url", env.state_url, "--workdir", str(env.workdir),
                   *args])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out) if "--json" in args else out


def _school(out: dict[str, Any], uai: str) -> dict[str, Any]:
    (aca,) = out["academies"]
    found: dict[str, Any] = next(x for x in aca["schools"] if x["uai"] == uai)
    return found


def test_status_before_any_run(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    out = _status(env, capsys, "--json")
    assert [a["academy"] for a in out["academies"]] == list(load_academies())
    assert all(a["last_run"] is None and a["schools"] == [] for a in out["academies"])
    text = _status(env, capsys)
    assert f"{ACADEMY}: no run yet" in text


def test_status_after_runs(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    school_a(env.landing)
    school_b(env.landing)
    first = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert first["status"] == "success"

    out = _status(env, capsys, "--json", "--academy", ACADEMY)
    (aca,) = out["academies"]
    run = aca["last_run"]
    assert run["run_id"] == first["run_id"] and run["status"] == "success"
    assert run["trigger"] == "cli" and run["dry_run"] is False
    assert run["started_at"] <= run["ended_at"] and run["duration_s"] >= 0
    assert set(run["stage_durations_s"]) == {"discover", "read_validate", "reconcile",
                                             "apply", "report"}
    assert run["counts"]["changes"] == run["counts"]["applied"] == first["changes"] > 0
    assert run["counts"]["schools"] == 2 and run["counts"]["records_read"] > 0
    a = _school(out, UAI_A)
    assert a["status"] == "ok" and a["run_id"] == first["run_id"]
    assert a["changes"]["created"] == first["schools"][UAI_A]["created"] > 0
    assert a["last_applied_exports"]["ELEVES"].startswith("2026-10-01")
    assert a["last_applied_export"] == max(a["last_applied_exports"].values())
    assert a["last_applied_run"] == first["run_id"]

    # the next night: school A the same content again, school B broken -> quarantined
    school_a(env.landing, date="05/10/2026")
    school_b(env.landing, date="05/10/2026", extra=True)
    pupils_zip = next(p for p in (env.landing / ACADEMY).rglob("*.zip")
                      if UAI_B in str(p) and "Eleves" in p.name)
    with zipfile.ZipFile(pupils_zip) as zf:
        (member,) = zf.namelist()
        text = zf.read(member)
    with zipfile.ZipFile(pupils_zip, "w") as zf:  # a truncated pupils export
        zf.writestr(member, text[: len(text) // 2])
    second = pipeline.run_sync(env, RunRequest(ACADEMY))
    out = _status(env, capsys, "--json", "--academy", ACADEMY)
    assert out["academies"][0]["last_run"]["run_id"] == second["run_id"]
    a, b = _school(out, UAI_A), _school(out, UAI_B)
    assert a["status"] == "already_applied"  # same records in new exports: not read again
    assert a["last_applied_exports"]["ELEVES"].startswith("2026-10-05")
    assert a["changes"]["created"] == 0
    assert b["status"] == "quarantined" and b["run_id"] == second["run_id"]
    assert b["last_applied_exports"]["ELEVES"].startswith("2026-10-01")  # the first night's
    assert b["last_applied_run"] == first["run_id"]
    assert out["academies"][0]["last_run"]["counts"]["quarantined_files"] >= 1

    # a dry run is the last run, but does not change what the schools' status says
    dry = pipeline.run_sync(env, RunRequest(ACADEMY, dry_run=True))
    out = _status(env, capsys, "--json", "--academy", ACADEMY)
    assert out["academies"][0]["last_run"]["run_id"] == dry["run_id"]
    assert out["academies"][0]["last_run"]["dry_run"] is True
    assert _school(out, UAI_A)["status"] == "already_applied"

    # a held school: awaiting approval, then what the approver decided
    with session_factory(env.state_url)() as s, s.begin():
        s.add(Approval(run_id=second["run_id"], academy=ACADEMY, uai=UAI_B, plan_path="x",
                       plan_hash="0" * 64, guards=[], summary={}))
    with session_factory(env.state_url)() as s:
        run = s.get(models.Run, second["run_id"])
        assert run is not None and run.summary is not None
        summary = {**run.summary}
    summary["schools"] = {**summary["schools"],
                          UAI_B: {**summary["schools"][UAI_B], "status": "awaiting_approval"}}
    with session_factory(env.state_url)() as s, s.begin():
        r = s.get(models.Run, second["run_id"])
        assert r is not None
        r.summary = summary
    out = _status(env, capsys, "--json", "--academy", ACADEMY)
    assert _school(out, UAI_B)["status"] == "awaiting_approval"
    with session_factory(env.state_url)() as s, s.begin():  # as `entsync reject` leaves it
        for ap in s.query(Approval).filter_by(run_id=second["run_id"], uai=UAI_B):
            ap.status = "rejected"
    out = _status(env, capsys, "--json", "--academy", ACADEMY)
    assert _school(out, UAI_B)["status"] == "rejected"

    # the text form: one line per school, ids and counts, no names
    text = _status(env, capsys, "--academy", ACADEMY)
    assert f"{ACADEMY}: last run {dry['run_id']}" in text
    assert UAI_A in text and UAI_B in text and "already_applied" in text and "rejected" in text
    assert "MARTIN" not in text and "ROBERT" not in text
    other = next(c for c in load_academies() if c != ACADEMY)
    assert f"{other}: no run yet" in _status(env, capsys, "--academy", other)
