"""
### ENT account lifecycle (daily)

Deletes from the directory the accounts that have been DISABLED (absent from their school's
exports) for longer than their profile's retention period (`retention_days` in
`etl/academies.toml`, 90 days by default). Their login stays registered and is never handed
out again. One task per academy; each journals its deletions under a run of its own, which
`entsync undo RUN_ID` can revert.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
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
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=5)},
)
def ent_lifecycle() -> None:
    for code in load_academies():

        @task(task_id=f"purge__{code.replace('-', '_')}")
        def purge(academy: str = code) -> dict[str, Any]:
            from ent_sync import _settings  # the same connection handling as the sync DAGs

            from etl.operations import purge_expired

            return purge_expired(_settings(), academy)

        purge()


ent_lifecycle()
