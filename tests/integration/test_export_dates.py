"""Issue 19, item 2: export dates. An export dated in the future is refused and applies
nothing; a school held because its export is older than the applied one is held like any
other (``entsync pending``, exit 3, approve or reject). Against a real slapd and state DB."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from etl import cli
from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer
from tests.integration.test_sync import ACADEMY, UAI_A, UAI_B, school_a, school_b, search

pytestmark = pytest.mark.ldap
PUPIL = "(ENTPersonJointure=AC-REIMS$SIECLE$" + UAI_A + "$1001)"


def sn_of_pupil(server: LdapServer) -> list[str]:
    found = search(server, PUPIL, f"ou=people,{server.base}")
    return found[0]["sn"] if found else []


def run_cli(env: Settings, server: LdapServer, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    rc = cli.main([*args, "--landing", str(env.landing), "--workdir", str(env.workdir),
                   "--state-url", env.state_url, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else None


def test_an_export_dated_in_the_future_is_refused(env: Settings, server: LdapServer,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    school_a(env.landing, date="01/10/2099")
    school_b(env.landing)
    rc, s = run_cli(env, server, monkeypatch, capsys, "sync", "--academy", ACADEMY)
    assert rc == 0, s
    assert s["schools"][UAI_A]["status"] == "quarantined"
    assert s["schools"][UAI_B]["status"] == "ok"
    reasons = [q["reason"] for q in s["quarantined"] if q["uai"] == UAI_A]
    assert len(reasons) == 3  # the three SIECLE exports dated 2099; the STS file is not
    assert all("in the future" in r and "2099-10-01" in r for r in reasons)
    # nothing of school A applied, not even its (well dated) STS export
    assert sn_of_pupil(server) == [] and not search(
        server, "(sn=LEBLANC)", f"ou=people,{server.base}")
    assert pipeline.pending_approvals(env) == []
    # the genuine export of the next day applies (nothing dated 2099 became a reference)
    school_a(env.landing, date="02/10/2026")
    rc, s = run_cli(env, server, monkeypatch, capsys, "sync", "--academy", ACADEMY)
    assert rc == 0 and s["schools"][UAI_A]["status"] == "ok"
    assert sn_of_pupil(server) == ["MARTIN"]


def test_a_school_frozen_by_an_applied_future_export_is_released(
        env: Settings, server: LdapServer) -> None:
    """A 2099 export that an older version applied is no reference: the next genuine
    export applies, without a hold."""
    lax = replace(env, export_future_tolerance_minutes=200 * 366 * 24 * 60)  # older versions
    school_a(env.landing, date="01/10/2099")
    assert pipeline.run_sync(lax, RunRequest(ACADEMY))["schools"][UAI_A]["status"] == "ok"
    assert sn_of_pupil(server) == ["MARTIN"]
    school_a(env.landing, date="02/10/2026", pupil_last="NOUVEAU")
    s = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert s["status"] == "success" and s["schools"][UAI_A]["status"] == "ok"
    assert sn_of_pupil(server) == ["NOUVEAU"]


def test_an_older_export_is_held_pending_and_approved(env: Settings, server: LdapServer,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    school_a(env.landing, date="02/10/2026")
    assert pipeline.run_sync(env, RunRequest(ACADEMY))["status"] == "success"
    school_a(env.landing, date="01/10/2026", pupil_last="ANCIEN")
    rc, s = run_cli(env, server, monkeypatch, capsys, "sync", "--academy", ACADEMY)
    assert rc == 3, s
    assert s["status"] == "awaiting_approval"
    assert s["schools"][UAI_A]["status"] == "awaiting_approval"
    assert sn_of_pupil(server) == ["MARTIN"]  # nothing applied yet
    rc, p = run_cli(env, server, monkeypatch, capsys, "pending")
    assert rc == 0
    (held,) = p["pending"]
    assert held["uai"] == UAI_A and held["run_id"] == s["run_id"]
    (g,) = held["guards"]
    assert g["guard"] == "older_export" and "older than" in g["detail"]
    assert "2026-10-02" in g["detail"] and "2026-10-01" in g["detail"]
    rc, d = run_cli(env, server, monkeypatch, capsys, "approve", s["run_id"])
    assert rc == 0 and d["schools"][UAI_A]["decision"] == "approved"
    assert sn_of_pupil(server) == ["ANCIEN"]
    # the approved export is the school's reference now
    rc, st = run_cli(env, server, monkeypatch, capsys, "status", "--academy", ACADEMY)
    (a,) = [x for x in st["academies"][0]["schools"] if x["uai"] == UAI_A]
    assert a["status"] == "approved"
    assert a["last_applied_exports"]["ELEVES"].startswith("2026-10-01")
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["status"] == "success"
    assert again["schools"][UAI_A]["status"] == "already_applied"
    assert pipeline.pending_approvals(env) == []


def test_an_older_export_of_the_same_content_is_held_too(env: Settings,
                                                         server: LdapServer) -> None:
    school_a(env.landing, date="02/10/2026")
    pipeline.run_sync(env, RunRequest(ACADEMY))
    school_a(env.landing, date="01/10/2026")
    s = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert s["status"] == "awaiting_approval" and s["schools"][UAI_A]["held"]
    assert [a["uai"] for a in pipeline.pending_approvals(env)] == [UAI_A]
    res = pipeline.decide(env, s["run_id"], approve=True)
    assert res["schools"][UAI_A]["applied"] == 0
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI_A]["status"] == "already_applied"


def test_a_rejected_older_export_is_not_proposed_again(env: Settings, server: LdapServer,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    school_a(env.landing, date="02/10/2026")
    pipeline.run_sync(env, RunRequest(ACADEMY))
    school_a(env.landing, date="01/10/2026", pupil_last="ANCIEN")
    held = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert held["status"] == "awaiting_approval"
    rc, d = run_cli(env, server, monkeypatch, capsys, "reject", held["run_id"])
    assert rc == 0 and d["schools"][UAI_A]["decision"] == "rejected"
    assert sn_of_pupil(server) == ["MARTIN"]
    # the same files the next night: dropped, not held again
    s = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert s["status"] == "success" and pipeline.pending_approvals(env) == []
    dropped = [f for f in s["rejected_files"] if "rejected by an operator" in f["reason"]]
    assert len(dropped) == 3  # the three SIECLE exports; the STS one was not older
    assert sn_of_pupil(server) == ["MARTIN"]
    # a newer export is read as usual
    school_a(env.landing, date="03/10/2026", pupil_last="RECENT")
    s = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert s["status"] == "success" and s["schools"][UAI_A]["status"] == "ok"
    assert sn_of_pupil(server) == ["RECENT"]


def test_tolerance_setting(tmp_path: Path) -> None:
    st = Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path),
                            "ENTSYNC_EXPORT_FUTURE_TOLERANCE_MINUTES": "5"})
    assert st.export_future_tolerance_minutes == 5
    assert Settings.from_env({"ENTSYNC_WORKDIR": str(tmp_path)}).export_future_tolerance_minutes \
        == 60
