"""Issue 25: a held school's plan is decided outside the night (the DAG `ent_approval__*`).

Against a real slapd, through the functions the DAG tasks call: the next night proceeds
while a school awaits approval (the same export waits, a newer one supersedes the pending
plan), the approver's panel says what the README promises, and a decision is recorded in
the run's summary (state DB and summary.json), its report and `entsync status`.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from etl import run as pipeline
from etl.approve.panel import approval_panel
from etl.config import Settings
from etl.contracts import ApprovalRequest, Reconciled, RunRef
from etl.devtools.slapd import LdapServer
from etl.errors import ApprovalRefused
from etl.report.status import status, status_table
from etl.store.db import session_factory
from etl.store.models import Approval, Run, SourceFile
from tests.integration.test_lifecycle import UAI, UAI_2, drop, dump, roster, sync
from tests.integration.test_sync import search

pytestmark = pytest.mark.ldap
THIRD = set(range(0, 30, 3))


def _held_night(env: Settings) -> dict:
    """Night 1 creates two schools; night 2 misses 30 % of UAI's pupils: held."""
    drop(env, roster(30), day=1)
    drop(env, roster(10, uai=UAI_2), day=1, uai=UAI_2)
    sync(env)
    drop(env, roster(30, skip=THIRD), day=2)
    held = sync(env)
    assert held["status"] == "awaiting_approval"
    assert held["schools"][UAI]["status"] == "awaiting_approval"
    return held


def _request(env: Settings, run_id: str) -> ApprovalRequest:
    [p] = pipeline.pending_approvals(env, run_id)
    return ApprovalRequest(run_id=run_id, uai=p["uai"], plan_hash=p["plan_hash"])


def _summary_file(env: Settings, run_id: str) -> dict:
    return dict(json.loads((env.reports_dir / run_id / "summary.json").read_text("utf-8")))


def test_the_next_night_proceeds_while_a_school_awaits_approval_then_the_decision_is_recorded(
        env: Settings, server: LdapServer) -> None:
    held = _held_night(env)
    req = _request(env, held["run_id"])
    assert req.dag_run_id == f"approval__{held['run_id']}__{UAI}"
    before = dump(server)

    # the next night: UAI's same export waits (not read again), UAI_2's new pupil is written
    drop(env, roster(12, uai=UAI_2), day=3, uai=UAI_2)
    night = sync(env)
    assert night["status"] == "success"
    assert night["schools"][UAI]["status"] == "awaiting_approval"
    assert night["schools"][UAI]["pending_run"] == held["run_id"]
    assert night["schools"][UAI_2]["status"] == "ok"
    assert night["schools"][UAI_2]["created"] == 4  # two pupils and their guardians
    assert night["held_changes"] == 0  # no second request for the same plan
    with session_factory(env.state_url)() as s:
        waiting = {f.status for f in s.query(SourceFile).filter_by(
            run_id=night["run_id"], uai=UAI)}
        assert waiting == {"awaiting_approval"}
    assert [p["uai"] for p in pipeline.pending_approvals(env)] == [UAI]
    held_dns = {dn for dn in before if f"SIECLE${UAI}$" in json.dumps(before[dn])}
    assert all(dump(server).get(dn) == before[dn] for dn in held_dns)  # UAI untouched
    # status says UAI waits, and on which run's plan
    [ac] = status(env, "ac-strasbourg")["academies"]
    [mine] = [x for x in ac["schools"] if x["uai"] == UAI]
    assert mine["status"] == "awaiting_approval" and mine["pending_run"] == held["run_id"]

    # the approval (what the approval DAG's apply_decision calls), once the night is over
    got = pipeline.decide_request(env, req, approve=True, by="ops.marie")
    assert got[UAI]["decision"] == "approved" and got[UAI]["applied"] > 0
    assert len(search(server, "(entSyncStatus=DISABLED)", f"ou=people,{server.base}")) == 20

    # the held run's summary (state DB and summary.json) and report: decided, by whom, when
    with session_factory(env.state_url)() as s:
        run = s.get(Run, held["run_id"])
        assert run is not None and run.status == "success"
        db_summary = dict(run.summary or {})
    summary = _summary_file(env, held["run_id"])
    for sm in (db_summary, summary):
        assert sm["status"] == "success"
        d = sm["decisions"][UAI]
        assert d["decision"] == "approved" and d["by"] == "ops.marie"
        at = dt.datetime.fromisoformat(d["at"])
        assert at.tzinfo is not None
        assert abs((dt.datetime.now(dt.UTC) - at).total_seconds()) < 600
        assert sm["schools"][UAI]["status"] == "approved"
        assert sm["schools"][UAI]["pending"] == 0
        assert sm["schools"][UAI]["written"] == got[UAI]["applied"]
        assert sm["schools"][UAI]["disabled"] == 20
    assert summary["applied"] == held["applied"] + got[UAI]["applied"]
    # the run's totals by category too (the report's "written" and "pending" rows)
    assert summary["written"]["disabled"] == held["written"]["disabled"] + 20
    assert summary["pending_by"]["disabled"] == 0 and summary["pending"] == 0
    report = (env.reports_dir / held["run_id"] / "report.html").read_text("utf-8")
    page = report.split("</style>", 1)[1]  # the page, not its style sheet
    assert "awaiting_approval" not in page and "approved" in page
    # `entsync status`: no longer awaiting, who decided and when
    [ac] = status(env, "ac-strasbourg")["academies"]
    [mine] = [x for x in ac["schools"] if x["uai"] == UAI]
    assert mine["status"] == "approved"
    assert mine["decision"]["by"] == "ops.marie" and mine["decision"]["run_id"] == held["run_id"]
    assert "approved by ops.marie" in status_table({"academies": [ac]})
    # answering the Airflow request again (or after the CLI decided): nothing applied
    again = pipeline.decide_request(env, req, approve=False, by="ops.paul")
    assert again == {UAI: {"decision": "approved", "by": "ops.marie", "applied": 0}}


def test_a_newer_export_supersedes_the_pending_plan(env: Settings, server: LdapServer) -> None:
    held = _held_night(env)
    old = _request(env, held["run_id"])
    # the school exports again (a different day: new files), still missing the same pupils
    drop(env, roster(30, skip=THIRD), day=4)
    night = sync(env)
    assert night["status"] == "awaiting_approval"  # held again, by tonight's run
    assert night["schools"][UAI]["status"] == "awaiting_approval"
    assert "pending_run" not in night["schools"][UAI]
    with session_factory(env.state_url)() as s:
        rows = {(a.run_id, a.status, a.decided_by) for a in s.query(Approval)}
    assert rows == {(held["run_id"], "superseded", f"run {night['run_id']}"),
                    (night["run_id"], "pending", None)}
    old_summary = _summary_file(env, held["run_id"])
    assert old_summary["decisions"][UAI]["decision"] == "superseded"
    assert old_summary["decisions"][UAI]["by"] == f"run {night['run_id']}"
    assert old_summary["schools"][UAI]["status"] == "superseded"
    assert old_summary["status"] == "success"  # nothing of it awaits approval any more
    # answering the old request applies nothing: its plan is out of date
    before = dump(server)
    assert pipeline.decide_request(env, old, approve=True, by="ops")[UAI]["decision"] == \
        "superseded"
    assert dump(server) == before
    # the panel of the old request: nothing to ask; of the new one: the plan to decide
    assert approval_panel(env, old) is None
    assert approval_panel(env, _request(env, night["run_id"])) is not None


def test_the_panel_says_what_was_held_why_and_what_no_answer_means(
        env: Settings, server: LdapServer) -> None:
    held = _held_night(env)
    req = _request(env, held["run_id"])
    now = dt.datetime(2026, 11, 16, 1, 30, tzinfo=dt.UTC)
    panel = approval_panel(env, req, "http://af.example/entsync/reports/x/report.html", now=now)
    assert panel is not None
    assert UAI in panel.subject and "disabled 20" in panel.subject
    body = panel.body
    # the default and its deadline, as a date in the academy's time zone
    assert panel.deadline == "2026-11-19T01:30:00+00:00"
    assert "**Default: Reject.**" in body
    assert "Thursday 19 November 2026 02:30 (Europe/Paris)" in body
    assert "counts as Reject" in body
    # the guards with value and limit
    assert "**disable_share**" in body and "**pupil_drop**" in body
    assert "(value 33%, limit " in body
    # counts per action and profile: 10 pupils and their 10 guardians disabled
    assert "| action | pupils | guardians" in body
    assert "| disabled | 10 | 10 |" in body
    # sample DNs per action (opaque uids), the report link, the plan's hash
    assert "- disabled: `uid=" in body and f",ou=people,{server.base}`" in body
    assert "[Run report](http://af.example/entsync/reports/x/report.html)" in body
    assert req.plan_hash[:16] in body
    for name in ("ELEVE", "Léa", "Marc"):  # no personal data
        assert name not in body
    with pytest.raises(ApprovalRefused, match="hash mismatch"):
        approval_panel(env, ApprovalRequest(run_id=req.run_id, uai=UAI, plan_hash="0" * 64))
    # the night asks for one approval DAG run per held school, none in a dry run
    rec = Reconciled(plan="p", changes=0, per_school={}, by_kind_op={}, held={}, mode="normal",
                     absent=0, guards={}, new_identities=0, skipped={}, matches={},
                     duplicates=[])
    assert pipeline.approval_requests(RunRef(academy="ac-strasbourg", run_id="r"), rec) == []
