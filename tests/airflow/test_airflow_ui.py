"""The ops team's path through the real Airflow UI, in a real headless browser.

`etl.devtools.airflow_dev` starts `airflow standalone` (its own AIRFLOW_HOME, free ports, a
slapd of the test's own, a generated landing of 2 small schools); Debian's chromium, driven by
playwright-python (never a downloaded browser), logs in, opens the academy DAG, and after a
run (triggered through the REST API: the trigger dialog's markup changes between Airflow
releases) opens the run, the report task with its *Run report* link, and the report itself as
the api-server serves it (``plugins/entsync_reports.py``, behind Airflow's login).
Screenshots go to ``test-artifacts/`` at the repo root, which CI keeps. Everything started is
stopped (process group) even on failure.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from etl.devtools.airflow_dev import USERNAME, DevAirflowConfig, RunningAirflow, running
from etl.devtools.slapd import stop_slapd
from tests.paths import REPO

pytestmark = [pytest.mark.airflow, pytest.mark.ldap]

REPO = REPO
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ACADEMY, DAG_ID = "ac-reims", "ent_sync__ac_reims"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
RUN_TIMEOUT_S = 240  # generous: a loaded 2-core CI machine runs the 11 tasks slowly


@pytest.fixture
def airflow(tmp_path: Path) -> Iterator[RunningAirflow]:
    cfg = DevAirflowConfig.local(demo=tmp_path / "demo", home=tmp_path / "airflow",
                                 schools=2, pupils=30, academies=(ACADEMY,),
                                 schedules=False)
    try:
        with running(cfg, output=(tmp_path / "standalone.log").open("ab")) as af:
            yield af
    finally:
        stop_slapd(cfg.slapd_dir)
        log = tmp_path / "standalone.log"
        if log.exists():
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(log, ARTIFACTS / "airflow-standalone.log")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail("Debian chromium is not installed: make browser-deps")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="entsync-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS], viewport={"width": 1400, "height": 900})
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _shot(page: Any, name: str) -> Path:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"airflow-ui-{name}.png"
    try:  # the UI keeps polling: settle for a quiet moment, not for silence
        page.wait_for_load_state("networkidle", timeout=5_000)
    except PlaywrightTimeout:
        pass
    page.screenshot(path=str(path), full_page=True)
    return path


def _api(ctx: Any, af: RunningAirflow, method: str, path: str,
         body: dict[str, Any] | None = None) -> Any:
    r = ctx.request.fetch(f"{af.cfg.url}/api/v2{path}", method=method,
                          headers={"Authorization": f"Bearer {af.token}"},
                          data=body)
    assert r.ok, f"{method} {path}: {r.status} {r.text()[:500]}"
    return r.json()


def test_ops_logs_in_runs_an_academy_and_reads_the_report(
        airflow: RunningAirflow, browser: Any) -> None:
    af, url = airflow, airflow.cfg.url
    page = browser.new_page()
    page.set_default_timeout(30_000)

    # 1. log in through the simple auth manager's form
    page.goto(url)
    page.wait_for_url("**/login**")
    page.get_by_label("username", exact=False).fill(USERNAME)
    page.get_by_label("password", exact=False).fill(af.password)
    _shot(page, "01-login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "login" not in u)

    # 2. the academy's DAG, with its documentation
    page.goto(f"{url}/dags/{DAG_ID}")
    page.get_by_text(DAG_ID).first.wait_for()
    _shot(page, "02-dag")

    # 3. unpause and trigger a run; wait for success
    _api(browser, af, "PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run = _api(browser, af, "POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = run["state"]
    while time.monotonic() < deadline and state not in ("success", "failed"):
        time.sleep(2)
        state = _api(browser, af, "GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id)}")["state"]
    page.goto(f"{url}/dags/{DAG_ID}/runs/{quote(run_id)}")
    page.get_by_text(run_id).first.wait_for()
    _shot(page, "03-run")
    assert state == "success", f"run {run_id} ended {state}"

    # 4. the run's report: the report task's return value names the sync run
    xcom = _api(browser, af, "GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/"
                "close.report/xcomEntries/return_value")
    value = xcom["value"]
    out = value if isinstance(value, dict) else json.loads(str(value).replace("'", '"'))
    report_dir = Path(out["report_dir"])
    assert report_dir.parent == af.cfg.workdir / "reports"
    assert report_dir.name == out["run_id"]
    summary = json.loads((report_dir / "summary.json").read_text("utf-8"))
    assert summary["status"] == "success" and summary["academy"] == ACADEMY
    assert summary["applied"] == summary["changes"] > 0 and summary["failed"] == 0
    assert len(summary["schools"]) == 2
    assert {s["status"] for s in summary["schools"].values()} == {"ok"}

    # 5. ... and its "Run report" link points at the page the api-server serves
    links = _api(browser, af, "GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/"
                 "close.report/links")["extra_links"]
    report_url = f"{url}/entsync/reports/{out['run_id']}/report.html"
    assert links == {"Run report": report_url}
    # the task instance's Details tab lists its extra links (an <a> per link)
    page.goto(f"{url}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/close.report/details")
    button = page.get_by_role("link", name="Run report")
    try:
        button.wait_for()
    finally:
        _shot(page, "04-report-task")
    assert button.get_attribute("href") == report_url

    # 6. the report, opened in the logged-in browser (the plugin checks Airflow's session)
    page.goto(report_url)
    page.get_by_role("heading", name=f"Run {out['run_id']}").wait_for()
    for uai in summary["schools"]:
        page.get_by_role("cell", name=uai, exact=True).first.wait_for()
    _shot(page, "05-run-report")
    page.goto(f"{url}/entsync/reports/{out['run_id']}/summary.json")
    assert json.loads(page.locator("body").inner_text())["run_id"] == out["run_id"]
    _shot(page, "06-summary")
    # the school's validation page, through the report's own relative link
    page.goto(report_url)
    page.get_by_role("link", name="validation").first.click()
    page.wait_for_url("**/schools/*/validation_*.html")
    _shot(page, "07-school-validation")

    # 7. nobody else: no session, no report; nothing outside the run's folder, nor other files
    def status(path: str, token: str | None = None) -> int:
        req = urllib.request.Request(f"{url}{path}", headers={
            "Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    rel = f"/entsync/reports/{out['run_id']}"
    assert status(f"{rel}/report.html") == 401
    assert status(f"{rel}/report.html", af.token) == 200
    (af.cfg.workdir / "reports" / "notes.txt").write_text("x", "utf-8")
    for bad in (f"{rel}/../notes.txt", f"{rel}/%2e%2e/notes.txt", f"{rel}/..%2Fnotes.txt",
                f"{rel}/missing.html", "/entsync/reports/..%2F..%2Fstate.db/x.json",
                f"/entsync/reports/{ACADEMY}-nope/report.html"):
        assert status(bad, af.token) == 404, bad
