"""
### ENT account lifecycle (daily)

Deletes from the directory the accounts that have been DISABLED (absent from their school's
exports) for longer than their profile's retention period (`retention_days` in
`etl/academies.toml`, 90 days by default). Their login stays registered and is never handed
out again. One task per academy (`purge__<academy>`); each journals its deletions under a run
of its own, which `entsync undo RUN_ID` can revert. The same task then deletes from the
staging area the tables and plans of the academy's runs that ended more than
`ENTSYNC_STAGING_KEEP_DAYS` days ago (14 by default; a run awaiting approval keeps its held
plans, report copies stay), and the quarantine folders of runs that ended more than
`ENTSYNC_QUARANTINE_KEEP_DAYS` days ago (90 by default) on the worker it runs on.

**Retries**: like the sync DAGs, a task retries (up to 3 times, 5, 10 then 20 minutes apart)
only when the failure is transient (directory or state DB unreachable, busy or locked); an
error no retry can fix (configuration, directory credentials or certificate, a bug) fails it
at once. This DAG writes no report and emits no asset.
"""

from __future__ import annotations

from typing import Any

import pendulum
from _entsync_airflow import fail_fast, on_task_failure, operator_default_args, run_settings
from airflow.sdk import dag, task

from etl.config import load_academies


@dag(
    dag_id="ent_lifecycle",
    doc_md=__doc__,
    schedule="0 5 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    tags=["entsync", "lifecycle"],
    default_args={**operator_default_args(), "on_failure_callback": on_task_failure},
)
def ent_lifecycle() -> None:
    for code in load_academies():

        @task(task_id=f"purge__{code.replace('-', '_')}")
        @fail_fast  # the same connection handling and retry policy as the sync DAGs
        def purge(academy: str = code) -> dict[str, Any]:
            from etl import run as pipeline

            return pipeline.purge_academy(run_settings(), academy)

        purge()


ent_lifecycle()
