"""
### GAR export: one DAG per academy

The nightly directory export the national resource broker (GAR) receives: the academy's
schools, pupils, teachers and staff, classes and groups, who assigns resources, as the
GAR-ENT schema (version 1.7) defines them; files split every `ENTSYNC_GAR_MAX_NODES`
elements, each checked against the schema (`ENTSYNC_GAR_XSD`), then one `.tar.gz` and its
`.md5`, delivered to the academy's target (`gar_target` in `etl/academies.toml`, or the
`entsync_gar_sftp` connection). A file the schema refuses fails the task and nothing is sent;
the task's log names the file, the record and the rule.

**Schedule**: after every sync of the academy that changed the directory (the asset
`entsync_directory_<academy>` the sync's `publish` task emits), and every night at the
academy's `gar_schedule` (21:00 by default) as a fallback. The files stay in
`$ENTSYNC_WORKDIR/gar/<academy>/` (the last 7 exports).

**Retries**: like the sync DAGs, only transient failures (the SFTP server or the state DB
unreachable) are retried; an invalid export or a host key that is not the configured one
fails at once.

Connections: `entsync_state`, `entsync_ldap` (the schools' RESP-AFFECT-GAR groups and the
mails of who assigns resources), `entsync_gar_sftp` (host, port, login, password; extra
`{"path": "/in", "host_key": "ssh-ed25519 AAAA..."}` or `"known_hosts"`, `"key_file"`).
"""

from __future__ import annotations

from typing import Any

import pendulum
from _entsync_airflow import fail_fast, gar_settings, operator_default_args, run_settings
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from etl.config import Academy, load_academies
from etl.report.assets import directory_asset_name, directory_asset_uri

#: exports kept in the workdir per academy
KEEP = 7


def make_dag(academy: Academy) -> Any:
    code = academy.code
    directory = Asset(name=directory_asset_name(code), uri=directory_asset_uri(code))

    @dag(
        dag_id=academy.gar_dag_id,
        description=f"GAR export of {academy.name}",
        doc_md=__doc__,
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(academy.gar_schedule, timezone=academy.timezone),
            assets=[directory]),
        start_date=pendulum.datetime(2026, 1, 1, tz=academy.timezone),
        catchup=False,
        max_active_runs=1,
        tags=["entsync", "gar", code],
        default_args=operator_default_args(),
    )
    def gar_export() -> None:
        @task(task_id="export")
        @fail_fast
        def export() -> dict[str, Any]:
            from etl.gar import export_academy

            settings = gar_settings(run_settings())
            return export_academy(settings, code, settings.workdir / "gar" / code, keep=KEEP)

        export()

    return gar_export()


for _academy in load_academies().values():
    globals()[_academy.gar_dag_id] = make_dag(_academy)
