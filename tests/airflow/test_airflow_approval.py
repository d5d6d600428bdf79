"""Issue 4's acceptance: a school held by a disaster guard is approved, or rejected, from Airflow.

A real `airflow standalone` (``etl.devtools.airflow_dev``: its own AIRFLOW_HOME, free ports, a slapd
of the test's own) runs ac-strasbourg's DAG on a landing of one hand-made school of 30 pupils
(`tests.integration.test_lifecycle`'s ``roster``/``drop``). Everything goes through Airflow's
REST API, the
same calls the UI makes:

1. a first night creates the school;
2. the next export misses 30 % of the pupils: the guard holds the school, the DAG run stops on
   the ``review.approval`` task in the ``awaiting_input`` state with a *Required action* whose
   subject and body name the school and the guard; nothing is written yet; the test answers
   *Approve* (``PATCH .../taskInstances/review.approval/-1/hitlDetails``) and the run goes on:
   the 10 pupils and their 10 guardians are disabled, the approval is no longer pending, the
   sync run succeeded, and ``review.publish`` emitted the directory's asset event;
3. another held night answered *Reject*: the directory is exactly as before, the approval row
   says ``rejected``, no asset event.

The *Required actions* page of the waiting task is opened in Debian's headless chromium
(playwright) and saved to ``test-artifacts/airflow-approval.png``. Every process started (the
standalone's process group, slapd, chromium) is stopped even on failure.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from etl import run as pipeline
from etl.config import Settings, get_academy
from etl.devtools.airflow_dev import USERNAME, DevAirflowConfig, RunningAirflow, running
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd
from etl.store.db import session_factory
from etl.store.models import Approval, Run
from tests.airflow.test_airflow_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_lifecycle import ACADEMY, UAI, drop, dump, roster
from tests.integration.test_sync import search

pytestmark = [pytest.mark.airflow, pytest.mark.ldap]

DAG_ID = get_academy(ACADEMY).dag_id
RUN_TIMEOUT_S = 150  # one DAG run on a loaded 2-core machine
THIRD = set(range(0, 30, 3))  # 10 of the 30 pupils: 1000, 1003, ... 1027


@dataclass(frozen=True)
class Setup:
    af: RunningAirflow
    settings: Settings  # what the DAG's tasks use (landing, workdir, state DB, directory)
    server: LdapServer
    log: Path  # the standalone's output


@pytest.fixture
def airflow(tmp_path: Path) -> Iterator[Setup]:
    """Airflow on ac-strasbourg only, its slapd, and the settings the DAG's tasks use."""
    cfg = DevAirflowConfig.local(demo=tmp_path / "demo", home=tmp_path / "airflow",
                                 academies=(ACADEMY,), schedules=False)
    log = tmp_path / "standalone.log"
    try:
        server = start_slapd(cfg.slapd_dir)
        settings = Settings.from_env({
            "ENTSYNC_LANDING": str(cfg.landing), "ENTSYNC_WORKDIR": str(cfg.workdir),
            "ENTSYNC_STATE_URL": f"sqlite:///{cfg.workdir / 'state.db'}", **server.env()})
        drop(settings, roster(30), day=1)  # the landing exists: devserver generates nothing
        with log.open("ab") as out, running(cfg, output=out) as af:
            yield Setup(af, settings, server, log)
    finally:
        stop_slapd(cfg.slapd_dir)
        if log.exists():
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(log, ARTIFACTS / "airflow-approval-standalone.log")


def _api(af: RunningAirflow, method: str, path: str, body: Any = None) -> Any:
    """One REST API call (``/api/v2``) with the admin's token; JSON in and out."""
    url = f"{af.cfg.url}/api/v2{path}"
    assert url.startswith("http://127.0.0.1:")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {af.token}", "Accept": "application/json",
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read()[:800]!r}") from e


def _run_path(run_id: str) -> str:
    return f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"


def _trigger(af: RunningAirflow) -> str:
    # mode "normal" whatever the date: in the September roll-over window the academy's
    # default would be no_disable, and no guard would trip
    run = _api(af, "POST", f"/dags/{DAG_ID}/dagRuns",
               {"logical_date": None, "conf": {"mode": "normal"}})
    return str(run["dag_run_id"])


def _task_states(af: RunningAirflow, run_id: str) -> dict[str, str | None]:
    tis = _api(af, "GET", f"{_run_path(run_id)}/taskInstances?limit=100")["task_instances"]
    return {t["task_id"] + ("" if t["map_index"] < 0 else f"[{t['map_index']}]"): t["state"]
            for t in tis}


def _wait_run(af: RunningAirflow, run_id: str, timeout: float = RUN_TIMEOUT_S) -> str:
    """Wait until the DAG run has ended; its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(_api(af, "GET", _run_path(run_id))["state"])
        if state in ("success", "failed"):
            return state
        time.sleep(1)
    raise AssertionError(f"run {run_id} still running after {timeout:.0f}s: "
                         f"{_task_states(af, run_id)}")


def _wait_awaiting_input(af: RunningAirflow, run_id: str) -> None:
    """Wait until the approval task is parked waiting for a human."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    states: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        states = _task_states(af, run_id)
        if states.get("review.approval") == "awaiting_input":
            return
        if _api(af, "GET", _run_path(run_id))["state"] in ("success", "failed") or any(
                s in ("failed", "upstream_failed") for s in states.values()):
            break
        time.sleep(1)
    raise AssertionError(f"approval of {run_id} is not awaiting input: {states}")


def _xcom(af: RunningAirflow, run_id: str, task_id: str) -> Any:
    """A task's return value (stored as JSON: the API gives it back as is, or as its text)."""
    value = _api(af, "GET", f"{_run_path(run_id)}/taskInstances/{task_id}/xcomEntries/"
                 "return_value")["value"]
    return json.loads(value) if isinstance(value, str) else value


def _wait_parked(log: Path, run_id: str, timeout: float = 20) -> None:
    """Wait until the scheduler has seen the approval task's worker exit after parking.

    Airflow 3.3.2 races otherwise: an answer given before the scheduler processed the
    executor's "success" event of the parking worker re-queues the task first, and the stale
    event then makes the scheduler mark it failed ("finished with state success, but the task
    instance's state attribute is queued"). A human never answers that fast; a test does.
    No API shows that moment, the scheduler's log line does (if it never comes: go on).
    """
    mark = f"task_id=review.approval, run_id={run_id},"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("r", encoding="utf-8", errors="replace") as f:
            if any("TaskInstance Finished" in line and mark in line
                   and "state=awaiting_input" in line for line in f):
                return
        time.sleep(0.5)


def _asset_events(af: RunningAirflow, run_id: str) -> list[dict[str, Any]]:
    """The asset events a DAG run emitted (its publish tasks), as the UI lists them."""
    got = _api(af, "GET", f"/assets/events?source_dag_id={DAG_ID}"
               f"&source_run_id={quote(run_id, safe='')}&limit=100")
    return list(got["asset_events"])


def _hitl(af: RunningAirflow, run_id: str) -> str:
    return f"{_run_path(run_id)}/taskInstances/review.approval/-1/hitlDetails"


def _held_run(setup: Setup, skip: set[int], day: int) -> tuple[str, str, dict[str, Any]]:
    """Drop an export missing the ``skip`` pupils, trigger, wait for the approval request.

    Returns the DAG run id, the sync run id and the HITL detail the UI shows.
    """
    af = setup.af
    drop(setup.settings, roster(30, skip=skip), day=day)
    run_id = _trigger(af)
    _wait_awaiting_input(af, run_id)
    _wait_parked(setup.log, run_id)
    sync_run = str(_xcom(af, run_id, "close.report")["run_id"])
    detail = _api(af, "GET", _hitl(af, run_id))
    return run_id, sync_run, detail


def _approval_rows(settings: Settings, sync_run: str) -> list[tuple[str, str, str | None]]:
    with session_factory(settings.state_url)() as s:
        return [(a.uai, a.status, a.decided_by) for a in
                s.scalars(select(Approval).where(Approval.run_id == sync_run))]


def _sync_status(settings: Settings, sync_run: str) -> str | None:
    with session_factory(settings.state_url)() as s:
        run = s.get(Run, sync_run)
        return None if run is None else run.status


def _disabled(server: LdapServer) -> list[dict[str, Any]]:
    return search(server, "(entSyncStatus=DISABLED)", f"ou=people,{server.base}")


def _screenshot_required_action(af: RunningAirflow, run_id: str, subject: str) -> Path:
    """Log in with headless Debian chromium and open the waiting task's Required actions."""
    if not CHROMIUM.is_file():
        pytest.fail("Debian chromium is not installed: make browser-deps")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url = af.cfg.url
    shot = ARTIFACTS / "airflow-approval.png"
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tempfile.mkdtemp(prefix="entsync-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS], viewport={"width": 1400, "height": 1000})
            try:
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                page.goto(url)
                page.wait_for_url("**/login**")
                page.get_by_label("username", exact=False).fill(USERNAME)
                page.get_by_label("password", exact=False).fill(af.password)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(lambda u: "login" not in u)
                page.goto(f"{url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/"
                          "review.approval/required_actions")
                try:
                    page.get_by_text(subject).first.wait_for()
                    page.get_by_role("button", name="Approve").first.wait_for()
                except PlaywrightTimeout:
                    page.screenshot(path=str(shot), full_page=True)
                    raise
                page.screenshot(path=str(shot), full_page=True)
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return shot


def test_a_held_school_is_approved_then_another_rejected_from_airflow(
        airflow: Setup) -> None:
    af, settings, server = airflow.af, airflow.settings, airflow.server
    _api(af, "PATCH", f"/dags/{DAG_ID}", {"is_paused": False})

    # 1. first night: the school is created, nothing to approve
    first = _trigger(af)
    assert _wait_run(af, first) == "success", _task_states(af, first)
    states = _task_states(af, first)
    assert states["review.held_plans"] == "success"  # ran, found nothing held ...
    assert states["review.approval"] == states["review.apply_decision"] == "skipped"  # ...
    # the first night wrote the school: its asset event; nothing to publish after review
    assert states["close.publish"] == "success" and states["review.publish"] == "skipped"
    assert _xcom(af, first, "close.report")["status"] == "success"
    [event] = _asset_events(af, first)
    assert event["source_task_id"] == "close.publish"
    assert event["extra"]["schools"] == [UAI] and event["extra"]["applied"] > 0
    assert len(search(server, "(entSyncStatus=ACTIVE)", f"ou=people,{server.base}")) == 61
    assert pipeline.pending_approvals(settings) == []

    # 2. 30 % of the pupils missing: held, shown, approved through the API
    before = dump(server)
    run_id, sync_run, detail = _held_run(airflow, THIRD, day=2)
    assert UAI in detail["subject"] and UAI in detail["body"]
    assert "guard **disable_share**" in detail["body"]
    assert "guard **pupil_drop**" in detail["body"]
    assert "disabled 20" in detail["body"]
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert detail["response_received"] is False
    assert _sync_status(settings, sync_run) == "awaiting_approval"
    assert not _disabled(server) and dump(server) == before  # nothing written for the school
    pending = pipeline.pending_approvals(settings, sync_run)
    assert [p["uai"] for p in pending] == [UAI]
    assert pending[0]["plan_hash"][:16] in detail["body"]
    _screenshot_required_action(af, run_id, detail["subject"])

    answer = _api(af, "PATCH", _hitl(af, run_id), {"chosen_options": ["Approve"]})
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by"]["name"] == USERNAME
    assert _wait_run(af, run_id) == "success", _task_states(af, run_id)
    decision = _xcom(af, run_id, "review.apply_decision")
    assert decision[UAI]["decision"] == "approved" and decision[UAI]["failed"] == 0
    held = {k: v for k, v in pending[0]["summary"]["counts"].items() if k != "unchanged"}
    assert held["disabled"] == 20 and decision[UAI]["applied"] == sum(held.values())
    # the held run wrote nothing before the approval, then the approved plan: one event,
    # from the review stage
    states = _task_states(af, run_id)
    assert states["close.publish"] == "skipped" and states["review.publish"] == "success"
    [event] = _asset_events(af, run_id)
    assert event["source_task_id"] == "review.publish"
    assert event["extra"] == {"run_id": sync_run, "applied": decision[UAI]["applied"],
                              "schools": [UAI]}
    disabled = _disabled(server)
    assert len(disabled) == 10 + 10  # the pupils and their only guardians
    gone = {f"AC-STRASBOURG$SIECLE${UAI}${1000 + i}" for i in THIRD}
    assert {j for e in disabled for j in e["ENTPersonJointure"]} >= gone
    assert pipeline.pending_approvals(settings) == []
    assert _approval_rows(settings, sync_run) == [(UAI, "approved", USERNAME)]
    assert _sync_status(settings, sync_run) == "success"

    # 3. another held night (10 more of the remaining 20 pupils missing), rejected
    before = dump(server)
    run_id, sync_run, detail = _held_run(airflow, THIRD | set(range(1, 30, 3)), day=3)
    assert UAI in detail["subject"] and "guard **" in detail["body"]
    answer = _api(af, "PATCH", _hitl(af, run_id), {"chosen_options": ["Reject"]})
    assert answer["chosen_options"] == ["Reject"]
    assert _wait_run(af, run_id) == "success", _task_states(af, run_id)
    assert _xcom(af, run_id, "review.apply_decision") == {UAI: {"decision": "rejected"}}
    assert _asset_events(af, run_id) == []  # rejected: the directory did not change
    assert dump(server) == before
    assert _approval_rows(settings, sync_run) == [(UAI, "rejected", USERNAME)]
    assert pipeline.pending_approvals(settings) == []
    assert _sync_status(settings, sync_run) == "success"
    # an answered request cannot be answered again
    with pytest.raises(AssertionError, match="409"):
        _api(af, "PATCH", _hitl(af, run_id), {"chosen_options": ["Approve"]})
