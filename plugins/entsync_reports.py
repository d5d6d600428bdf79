"""Airflow plugin: the sync runs' reports, served by the api-server to logged-in users.

``<base_url>/entsync/reports/<run_id>/report.html`` (and the other pages and JSON of the run's
folder, e.g. ``summary.json``, ``schools/<UAI>/validation_<UAI>.html``) from
``$ENTSYNC_WORKDIR/reports/<run_id>/``, and the academy's history
(``<base_url>/entsync/reports/<academy>/history.html``). The report task's *Run report* link
points here.

Airflow does not authenticate plugin apps: each request is checked here, with Airflow's own
session (the UI's cookie, or a bearer token) and the auth manager's verdict on reading the
runs of the academy's DAG. Which file may be served is decided by ``etl.report.page``
(``resolve_report_file``: no ``..``, nothing outside the run's folder, .html/.json only).
"""

from __future__ import annotations

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import (
    DagAccessEntity,
    DagDetails,
)
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, status
from fastapi.responses import FileResponse

from etl.report.page import REPORTS_URL_PREFIX

app = FastAPI(title="entsync run reports", docs_url=None, redoc_url=None, openapi_url=None)

#: the pages are static: no script, no outside resource, not cached
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'",
}


@app.get("/{run_id}/{relpath:path}")
def run_report(run_id: str, relpath: str, user: GetUserDep) -> FileResponse:
    from airflow.models.dag import DagModel

    from etl.config import Settings, load_academies
    from etl.errors import ReportNotFound
    from etl.report.page import academy_of_run, media_type, resolve_report_file

    academies = load_academies()
    code = academy_of_run(run_id, academies)
    if code is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
    dag_id = academies[code].dag_id
    if not get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)), user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    try:
        path = resolve_report_file(Settings.from_env().reports_dir, run_id, relpath)
    except ReportNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report") from None
    return FileResponse(path, media_type=media_type(path), headers=HEADERS)


class EntsyncReportsPlugin(AirflowPlugin):
    name = "entsync_reports"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares it so
        {"app": app, "url_prefix": REPORTS_URL_PREFIX, "name": "entsync run reports"}]
