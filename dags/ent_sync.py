"""
### ENT directory sync: one DAG per academy

Reads tonight's SIECLE (BEE) and STS-web exports of the academy's schools from the landing
zone (`$ENTSYNC_LANDING/<academy>/`), validates them, and brings the ENT's LDAP directory in
step: accounts, classes and groups.

Stages: **discover** (identify each file by its root and UAI) → **read_validate** (one mapped
task per school: read, normalize, validate; a bad file is quarantined whole and its school
left untouched) → **reconcile** (identities, logins, plan) → **apply** (ldap3, journaled) →
**report** (run summary in `$ENTSYNC_WORKDIR/reports/<run_id>/`).

Params: `dry_run` plans and reports but writes nothing; `schools` limits the run to some UAIs.

Connections: `entsync_ldap` (host, port, login = bind DN, password, extra `{"base": ...}`) and
`entsync_state` (extra `{"sqlalchemy_url": ...}`); when absent, the `ENTSYNC_*` environment
variables are used.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from etl.config import Academy, load_academies


def _settings() -> Any:
    """Settings from the environment, with Airflow connections taking precedence."""
    from airflow.sdk import Connection

    from etl.config import Settings

    over: dict[str, Any] = {}
    try:
        c = Connection.get("entsync_ldap")
        extra = c.extra_dejson or {}
        scheme = "ldaps" if extra.get("ssl") else "ldap"
        over.update(ldap_url=extra.get("url") or f"{scheme}://{c.host}:{c.port or 389}",
                    ldap_bind_dn=c.login, ldap_password=c.password, ldap_base=extra.get("base"))
    except Exception:  # noqa: BLE001 - no such connection: environment variables apply
        pass
    try:
        c = Connection.get("entsync_state")
        over["state_url"] = (c.extra_dejson or {}).get("sqlalchemy_url") or c.get_uri()
    except Exception:  # noqa: BLE001
        pass
    return Settings.from_env(**over)


def _params() -> tuple[bool, list[str]]:
    p = get_current_context()["params"]
    return bool(p.get("dry_run")), [s for s in (p.get("schools") or []) if s]


def make_dag(academy: Academy) -> Any:
    code = academy.code

    @dag(
        dag_id=academy.dag_id,
        description=f"Sync {academy.name} exports into the ENT directory",
        doc_md=__doc__,
        schedule=academy.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz=academy.timezone),
        catchup=False,
        max_active_runs=1,
        tags=["entsync", code],
        params={
            "dry_run": Param(False, type="boolean", description="plan and report only"),
            "schools": Param([], type="array", description="only these UAIs (empty: all)"),
        },
        default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=2)},
    )
    def ent_sync() -> None:
        @task
        def discover() -> dict[str, Any]:
            from etl import pipeline

            dry, schools = _params()
            st = _settings()
            ctx = get_current_context()
            run_id = pipeline.start_run(st, code, dry, trigger="airflow")
            out = pipeline.discover_files(st, code, run_id, schools or None)
            out["batches"] = [{"uai": u, "docs": d} for u, d in out["schools"].items()]
            del out["schools"]
            ctx["ti"].xcom_push(key="run_id", value=run_id)
            return out

        @task
        def batches(disc: dict[str, Any]) -> list[dict[str, Any]]:
            return list(disc["batches"])

        @task(map_index_template="{{ task.op_kwargs['batch']['uai'] }}")
        def read_validate(batch: dict[str, Any], disc: dict[str, Any]) -> dict[str, Any]:
            from etl import pipeline

            dry, _ = _params()
            return pipeline.read_validate_school(_settings(), code, disc["run_id"],
                                                 batch["uai"], batch["docs"], dry)

        @task(trigger_rule="all_done")
        def reconcile(disc: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
            from etl import pipeline

            dry, _ = _params()
            return pipeline.reconcile(_settings(), code, disc["run_id"],
                                      [r for r in results if r], dry)

        @task
        def apply(disc: dict[str, Any], rec: dict[str, Any],
                  results: list[dict[str, Any]]) -> dict[str, Any]:
            from etl import pipeline

            dry, _ = _params()
            return pipeline.apply_plan(_settings(), code, disc["run_id"], rec["plan"],
                                       [r for r in results if r], dry)

        @task
        def report(disc: dict[str, Any], results: list[dict[str, Any]], rec: dict[str, Any],
                   app: dict[str, Any]) -> dict[str, Any]:
            from etl import pipeline
            from etl.errors import EntsyncError

            dry, _ = _params()
            s = pipeline.finish_run(_settings(), code, disc["run_id"], disc,
                                    [r for r in results if r], rec, app, dry)
            if s["status"] == "failed":
                raise EntsyncError(f"run {s['run_id']}: {s['failed']} changes failed")
            return {"run_id": s["run_id"], "status": s["status"], "changes": s["changes"],
                    "applied": s["applied"], "report_dir": s["report_dir"]}

        d = discover()
        res = read_validate.partial(disc=d).expand(batch=batches(d))
        rec = reconcile(d, res)
        app = apply(d, rec, res)
        report(d, res, rec, app)

    return ent_sync()


for _academy in load_academies().values():
    globals()[_academy.dag_id] = make_dag(_academy)
