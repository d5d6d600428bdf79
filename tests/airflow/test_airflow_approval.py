"""Issues 4 and 25: a school held by a disaster guard is approved, or rejected, from Airflow,
outside the night.

A real `airflow standalone` (``etl.devtools.airflow_dev``: its own AIRFLOW_HOME, free ports, a
slapd of the test's own) runs ac-strasbourg's DAGs on a landing of two hand-made schools
(`tests.integration.test_lifecycle`'s ``roster``/``drop``). The REST API triggers the nights
and checks the states; Debian's headless chromium (playwright) shows the trigger form and
answers the held school's *Required action* like an operator:

1. the trigger form: `schools` optional, `mode` with a default and no "null", no backfill;
2. a first night creates the schools;
3. the next export of one school misses 30 % of its pupils: the guard holds it, the night's
   DagRun **succeeds** (the other school written) after asking `ent_approval__ac_strasbourg`
   for a run, whose ``approval`` task waits for input with the panel (counts per profile,
   guards, sample DNs, report link, the Reject default and its deadline);
4. the next night runs; while it writes, the operator clicks *Approve* in the browser; the
   night succeeds (the other school's new pupils written, the held school waiting), then the
   approval applies the plan (its retry waited for the night's lock): the pupils and their
   guardians disabled, the held run's summary.json, report and ``entsync status`` say who
   approved and when, the approval DAG's ``publish`` emitted the directory's asset event; the
   report and the school's page are opened in the browser;
5. another held night answered *Reject* through the API: the directory as before, the
   approval ``rejected``, no asset event; an answered request cannot be answered again.

Screenshots: ``test-artifacts/airflow-approval-*.png``. Every process started (the
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
from etl.report.status import status
from etl.store.db import session_factory
from etl.store.models import Approval, Run
from tests.airflow.test_airflow_ui import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_lifecycle import ACADEMY, UAI, UAI_2, drop, dump, roster
from tests.integration.test_sync import search

pytestmark = [pytest.mark.airflow, pytest.mark.ldap]

DAG_ID = get_academy(ACADEMY).dag_id
APPROVAL_DAG = get_academy(ACADEMY).approval_dag_id
RUN_TIMEOUT_S = 150  # one DAG run on a loaded 2-core machine
DECISION_TIMEOUT_S = 330  # an approval that waited for a night's lock: a retry 1 min later
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
        drop(settings, roster(10, uai=UAI_2), day=1, uai=UAI_2)
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


def _run_path(run_id: str, dag_id: str = DAG_ID) -> str:
    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def _trigger(af: RunningAirflow) -> str:
    # mode "normal" whatever the date: in the September roll-over window the academy's
    # default would be no_disable, and no guard would trip
    run = _api(af, "POST", f"/dags/{DAG_ID}/dagRuns",
               {"logical_date": None, "conf": {"mode": "normal"}})
    return str(run["dag_run_id"])


def _task_states(af: RunningAirflow, run_id: str,
                 dag_id: str = DAG_ID) -> dict[str, str | None]:
    tis = _api(af, "GET", f"{_run_path(run_id, dag_id)}/taskInstances?limit=100")[
        "task_instances"]
    return {t["task_id"] + ("" if t["map_index"] < 0 else f"[{t['map_index']}]"): t["state"]
            for t in tis}


def _wait_run(af: RunningAirflow, run_id: str, dag_id: str = DAG_ID,
              timeout: float = RUN_TIMEOUT_S) -> str:
    """Wait until the DAG run has ended; its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(_api(af, "GET", _run_path(run_id, dag_id))["state"])
        if state in ("success", "failed"):
            return state
        time.sleep(1)
    raise AssertionError(f"run {run_id} still running after {timeout:.0f}s: "
                         f"{_task_states(af, run_id, dag_id)}")


def _wait_task(af: RunningAirflow, run_id: str, task_id: str, state: str) -> None:
    """Wait until a task of a night's DAG run is in ``state``."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    states: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        states = _task_states(af, run_id)
        if states.get(task_id) == state:
            return
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} not {state}: {states}")


def _wait_awaiting_input(af: RunningAirflow, run_id: str) -> None:
    """Wait until the approval DAG run's approval task is parked waiting for a human."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    states: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        try:
            states = _task_states(af, run_id, APPROVAL_DAG)
        except AssertionError:  # the run is not there yet
            time.sleep(1)
            continue
        if states.get("approval") == "awaiting_input":
            return
        if any(s in ("failed", "upstream_failed") for s in states.values()):
            break
        time.sleep(1)
    raise AssertionError(f"approval of {run_id} is not awaiting input: {states}")


def _xcom(af: RunningAirflow, run_id: str, task_id: str, dag_id: str = DAG_ID) -> Any:
    """A task's return value (stored as JSON: the API gives it back as is, or as its text)."""
    value = _api(af, "GET", f"{_run_path(run_id, dag_id)}/taskInstances/{task_id}/"
                 "xcomEntries/return_value")["value"]
    return json.loads(value) if isinstance(value, str) else value


def _wait_parked(log: Path, run_id: str, timeout: float = 20) -> None:
    """Wait until the scheduler has seen the approval task's worker exit after parking.

    Airflow 3.3.2 races otherwise: an answer given before the scheduler processed the
    executor's "success" event of the parking worker re-queues the task first, and the stale
    event then makes the scheduler mark it failed ("finished with state success, but the task
    instance's state attribute is queued"). A human never answers that fast; a test does.
    No API shows that moment, the scheduler's log line does (if it never comes: go on).
    """
    mark = f"task_id=approval, run_id={run_id},"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("r", encoding="utf-8", errors="replace") as f:
            if any("TaskInstance Finished" in line and mark in line
                   and "state=awaiting_input" in line for line in f):
                return
        time.sleep(0.5)


def _asset_events(af: RunningAirflow, run_id: str,
                  dag_id: str = DAG_ID) -> list[dict[str, Any]]:
    """The asset events a DAG run emitted (its publish tasks), as the UI lists them."""
    got = _api(af, "GET", f"/assets/events?source_dag_id={dag_id}"
               f"&source_run_id={quote(run_id, safe='')}&limit=100")
    return list(got["asset_events"])


def _hitl(run_id: str) -> str:
    return f"{_run_path(run_id, APPROVAL_DAG)}/taskInstances/approval/-1/hitlDetails"


def _held_night(setup: Setup, skip: set[int], day: int) -> tuple[str, str, str, dict[str, Any]]:
    """Drop an export of UAI missing the ``skip`` pupils, trigger, wait for the night's end
    (it does not wait for the decision) and for the approval DAG run's request.

    Returns the night's DAG run id, the sync run id, the approval DAG run id and the HITL
    detail the UI shows.
    """
    af = setup.af
    drop(setup.settings, roster(30, skip=skip), day=day)
    run_id = _trigger(af)
    assert _wait_run(af, run_id) == "success", _task_states(af, run_id)
    states = _task_states(af, run_id)
    assert states["review.held_plans"] == "success"
    assert states["review.request_approval[0]"] == "success"
    sync_run = str(_xcom(af, run_id, "close.report")["run_id"])
    approval_run = f"approval__{sync_run}__{UAI}"
    _wait_awaiting_input(af, approval_run)
    _wait_parked(setup.log, approval_run)
    detail = _api(af, "GET", _hitl(approval_run))
    return run_id, sync_run, approval_run, detail


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


class Browser:
    """Debian's headless chromium, logged in as the admin."""

    def __init__(self, page: Any, af: RunningAirflow) -> None:
        self.page, self.url = page, af.cfg.url

    def shot(self, name: str) -> Path:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"airflow-approval-{name}.png"
        try:  # the UI keeps polling: settle for a quiet moment, not for silence
            self.page.wait_for_load_state("networkidle", timeout=5_000)
        except PlaywrightTimeout:
            pass
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def browser(airflow: Setup) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail("Debian chromium is not installed: make browser-deps")
    from playwright.sync_api import sync_playwright

    af = airflow.af
    profile = tempfile.mkdtemp(prefix="entsync-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS], viewport={"width": 1400, "height": 1000})
            try:
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                page.goto(af.cfg.url)
                page.wait_for_url("**/login**")
                page.get_by_label("username", exact=False).fill(USERNAME)
                page.get_by_label("password", exact=False).fill(af.password)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(lambda u: "login" not in u)
                yield Browser(page, af)
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _trigger_form(b: Browser) -> None:
    """The night's trigger form: Backfill not offered (greyed out), `schools` not required,
    no "null"."""
    page = b.page
    page.goto(f"{b.url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    try:
        dialog.get_by_text("Schools").first.wait_for()
        text = dialog.inner_text()
        # allowed_run_types (scheduled, manual): the UI greys the Backfill choice out
        disabled = [r.get_attribute("value") for r in dialog.locator("input[type=radio]").all()
                    if r.is_disabled()]
    finally:
        b.shot("01-trigger-form")
    assert len(disabled) == 1 and "backfill" in str(disabled[0]).lower(), disabled
    assert "null" not in text
    assert "Schools" in text and "Mode" in text
    page.keyboard.press("Escape")


def _approve_in_browser(b: Browser, approval_run: str, subject: str) -> None:
    """Open the approval DAG run's Required actions and click Approve."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = b.page
    page.goto(f"{b.url}/dags/{APPROVAL_DAG}/runs/{quote(approval_run, safe='')}/tasks/"
              "approval/required_actions")
    try:
        page.get_by_text(subject).first.wait_for()
        page.get_by_text("Default: Reject.").first.wait_for()
        button = page.get_by_role("button", name="Approve").first
        button.wait_for()
    except PlaywrightTimeout:
        b.shot("02-required-action")
        raise
    b.shot("02-required-action")
    button.click()


def test_a_held_school_is_approved_outside_the_night_while_the_next_night_runs(
        airflow: Setup, browser: Browser) -> None:
    af, settings, server = airflow.af, airflow.settings, airflow.server
    # the approval DAG is active from the start: a request is never left queued
    assert _api(af, "GET", f"/dags/{APPROVAL_DAG}")["is_paused"] is False
    _api(af, "PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    _trigger_form(browser)

    # 1. first night: the schools are created, nothing to approve
    first = _trigger(af)
    assert _wait_run(af, first) == "success", _task_states(af, first)
    states = _task_states(af, first)
    assert states["review.held_plans"] == "success"  # ran, found nothing held ...
    assert states.get("review.request_approval") in ("skipped", None), states  # ...
    assert states["close.publish"] == "success"
    assert _xcom(af, first, "close.report")["status"] == "success"
    [event] = _asset_events(af, first)
    assert event["source_task_id"] == "close.publish"
    first_sync = _xcom(af, first, "close.report")["run_id"]
    assert event["extra"] == {"run_id": first_sync, "academy": ACADEMY,
                              "applied": event["extra"]["applied"],
                              "schools": sorted([UAI, UAI_2]), "by": "night"}
    # 30 + 10 pupils, as many guardians, the teacher(s)
    assert len(search(server, "(entSyncStatus=ACTIVE)", f"ou=people,{server.base}")) >= 81
    assert pipeline.pending_approvals(settings) == []

    # 2. 30 % of UAI's pupils missing: held; the night ended; the request waits apart
    before = dump(server)
    _, sync_run, approval_run, detail = _held_night(airflow, THIRD, day=2)
    assert _sync_status(settings, sync_run) == "awaiting_approval"
    assert UAI in detail["subject"] and "disabled 20" in detail["subject"]
    body = detail["body"]
    for words in ("**disable_share**", "**pupil_drop**", "| disabled | 10 | 10 |",
                  "- disabled: `uid=", "[Run report](", "**Default: Reject.**",
                  "counts as Reject", "(Europe/Paris)"):
        assert words in body, words
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert detail["response_received"] is False
    assert not _disabled(server) and dump(server) == before  # nothing written for it
    pending = pipeline.pending_approvals(settings, sync_run)
    assert [p["uai"] for p in pending] == [UAI]
    assert pending[0]["plan_hash"][:16] in body

    # 3. the next night runs; while it writes, the operator approves in the browser
    drop(settings, roster(12, uai=UAI_2), day=3, uai=UAI_2)
    third = _trigger(af)
    _wait_task(af, third, "read.discover", "success")  # the night holds the academy's lock
    _approve_in_browser(browser, approval_run, detail["subject"])
    assert _wait_run(af, third) == "success", _task_states(af, third)
    summary3 = _xcom(af, third, "close.report")
    night3 = json.loads((settings.reports_dir / summary3["run_id"] / "summary.json")
                        .read_text("utf-8"))
    assert night3["status"] == "success"
    assert night3["schools"][UAI_2]["status"] == "ok"
    assert night3["schools"][UAI_2]["created"] == 4  # two pupils, their guardians
    assert night3["schools"][UAI]["status"] == "awaiting_approval"
    assert night3["schools"][UAI]["pending_run"] == sync_run

    answered = _api(af, "GET", _hitl(approval_run))
    assert answered["response_received"] is True
    assert answered["chosen_options"] == ["Approve"]
    assert answered["responded_by_user"]["name"] == USERNAME
    assert _wait_run(af, approval_run, APPROVAL_DAG, DECISION_TIMEOUT_S) == "success", \
        _task_states(af, approval_run, APPROVAL_DAG)
    decision = _xcom(af, approval_run, "apply_decision", APPROVAL_DAG)
    assert decision[UAI]["decision"] == "approved" and decision[UAI]["failed"] == 0
    assert decision[UAI]["by"] == USERNAME
    held = {k: v for k, v in pending[0]["summary"]["counts"].items() if k != "unchanged"}
    assert held["disabled"] == 20 and decision[UAI]["applied"] == sum(held.values())
    [event] = _asset_events(af, approval_run, APPROVAL_DAG)
    assert event["source_task_id"] == "publish"
    assert event["extra"] == {"run_id": sync_run, "academy": ACADEMY,
                              "applied": decision[UAI]["applied"], "schools": [UAI],
                              "by": "approval"}
    disabled = _disabled(server)
    assert len(disabled) == 10 + 10  # the pupils and their only guardians
    gone = {f"AC-STRASBOURG$SIECLE${UAI}${1000 + i}" for i in THIRD}
    assert {j for e in disabled for j in e["ENTPersonJointure"]} >= gone
    assert pipeline.pending_approvals(settings) == []
    assert _approval_rows(settings, sync_run) == [(UAI, "approved", USERNAME)]
    assert _sync_status(settings, sync_run) == "success"
    # the held run's summary, report and status: who approved, when
    summary = json.loads((settings.reports_dir / sync_run / "summary.json").read_text("utf-8"))
    assert summary["status"] == "success"
    assert summary["decisions"][UAI]["decision"] == "approved"
    assert summary["decisions"][UAI]["by"] == USERNAME and summary["decisions"][UAI]["at"]
    assert summary["schools"][UAI]["status"] == "approved"
    [ac] = status(settings, ACADEMY)["academies"]
    [mine] = [x for x in ac["schools"] if x["uai"] == UAI]
    assert mine["status"] == "approved" and mine["decision"]["by"] == USERNAME
    page = browser.page
    page.goto(f"{browser.url}/entsync/reports/{quote(sync_run, safe='')}/report.html")
    page.get_by_role("heading", name=f"Run {sync_run}").wait_for()
    page.get_by_text("approved").first.wait_for()
    browser.shot("03-report-after-decision")
    page.goto(f"{browser.url}/entsync/reports/{quote(sync_run, safe='')}/schools/{UAI}/"
              f"retours_{UAI}.html")
    page.get_by_text(UAI).first.wait_for()
    browser.shot("04-school-page-after-decision")

    # 4. another held night (10 more of the remaining 20 pupils missing), rejected
    before = dump(server)
    _, sync_run, approval_run, detail = _held_night(
        airflow, THIRD | set(range(1, 30, 3)), day=4)
    assert UAI in detail["subject"] and "**" in detail["body"]
    answer = _api(af, "PATCH", _hitl(approval_run), {"chosen_options": ["Reject"]})
    assert answer["chosen_options"] == ["Reject"]
    assert _wait_run(af, approval_run, APPROVAL_DAG) == "success", \
        _task_states(af, approval_run, APPROVAL_DAG)
    assert _xcom(af, approval_run, "apply_decision", APPROVAL_DAG) == {
        UAI: {"decision": "rejected", "by": USERNAME}}
    assert _asset_events(af, approval_run, APPROVAL_DAG) == []  # the directory did not change
    assert dump(server) == before
    assert _approval_rows(settings, sync_run) == [(UAI, "rejected", USERNAME)]
    assert pipeline.pending_approvals(settings) == []
    assert _sync_status(settings, sync_run) == "success"
    # an answered request cannot be answered again
    with pytest.raises(AssertionError, match="409"):
        _api(af, "PATCH", _hitl(approval_run), {"chosen_options": ["Approve"]})
