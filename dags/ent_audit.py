"""
### ENT directory audit (weekly)

Reads each academy's part of the directory (its schools, everything below them, the accounts
attached to it; paged) and compares it with what the state DB says the sync wrote: entries
deleted behind its back, attributes it owns changed by hand or rolled back, members it did not
put in its classes and groups, accounts it does not know, state DB accounts matching nothing.
One task per academy (`audit__<academy>`), each an `entsync audit --academy A` run with its
report in the run report pages (`/entsync/reports/<run_id>/report.html`: counts per kind and
school, each difference by DN and attribute names, never a value) and its metrics (stage
`audit`, `differences.<kind>`).

Params: `repair` writes the differences back through the sync's apply path (journaled,
undoable with `entsync undo RUN_ID`, under the academy's lock; entries the state DB does not
know are kept; a school whose repair trips a disaster guard, e.g. a directory restored from
an older backup, is held for approval: `entsync approve RUN_ID`); `schools` limits the audit
to some UAIs (each academy audits those it owns; none: it is skipped).

**Retries**: like the sync DAGs, only transient failures (directory or state DB unreachable,
busy or locked) are retried; differences found are not a failure (they are in the report).
"""

from __future__ import annotations

from typing import Any

import pendulum
from _entsync_airflow import fail_fast, operator_default_args, run_settings
from airflow.sdk import Param, dag, get_current_context, task

from etl.config import load_academies


@dag(
    dag_id="ent_audit",
    doc_md=__doc__,
    schedule="0 6 * * 0",
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    tags=["entsync", "audit"],
    params={
        "repair": Param(False, type="boolean",
                        description="write the differences back (guards apply)"),
        "schools": Param([], type="array", items={"type": "string"},
                         description="only these UAIs (empty: all)"),
    },
    default_args=operator_default_args(),
)
def ent_audit() -> None:
    for code in load_academies():

        @task(task_id=f"audit__{code.replace('-', '_')}")
        @fail_fast  # the same connection handling and retry policy as the sync DAGs
        def audit(academy: str = code) -> dict[str, Any]:
            from etl.audit.stage import airflow_audit

            p = get_current_context()["params"]
            return airflow_audit(run_settings(), academy, bool(p.get("repair")),
                                 list(p.get("schools") or []))

        audit()


ent_audit()
