"""
### ENT directory sync: one DAG per academy

Reads tonight's SIECLE (BEE) and STS-web exports of the academy's schools from the landing
zone (`$ENTSYNC_LANDING/<academy>/`), validates them, and brings the ENT's LDAP directory in
step: accounts, classes and groups.

Stages: **discover** (identify each file by its root and UAI) → **read_validate** (one mapped
task per school: read, normalize, validate; a bad file is quarantined whole and its school
left untouched) → **reconcile** (identities, logins, plan) → **apply** (ldap3, journaled) →
**report** (run summary in `$ENTSYNC_WORKDIR/reports/<run_id>/`: `summary.json`,
`report.html`) → **approval** (only when a disaster guard held a school's changes: the
`approval` task waits in the UI's *Required actions*; *Approve* applies exactly the plan
shown, *Reject* discards it; no answer in 3 days counts as Reject). A night with no new
export maps read_validate over nothing (skipped); reconcile, apply and report still run and
close the run with an empty summary.

Params: `dry_run` plans and reports but writes nothing; `schools` limits the run to some UAIs;
`mode` overrides the academy's operation mode for this run (`create_only`, `no_disable`:
e.g. during the September roll-over).

Connections: `entsync_ldap` (host, port, login = bind DN, password, extra `{"base": ...}`,
optionally `"url"`, `"ssl": true`, `"ca_file"`) and `entsync_state` (extra
`{"sqlalchemy_url": ...}`), `entsync_staging` (the staging area tasks hand each other files
through, as an ObjectStoragePath with this connection's credentials; extra `{"url":
"s3://bucket/entsync/staging"}`, else `ENTSYNC_STAGING_URL`); when a connection is not
defined, the `ENTSYNC_*` environment variables are used.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, dag, get_current_context, task

from etl.config import Academy, load_academies


def _connection(conn_id: str) -> Any | None:
    """The Airflow connection, or None when it is not defined (other errors propagate).

    In Airflow 3 task context `Connection.get` asks the API server through the supervisor and
    raises `AirflowNotFoundException` for an unknown id; anything else (API down, bad secrets
    backend) must fail the task rather than silently fall back to the environment.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _settings() -> Any:
    """Settings from the ENTSYNC_* environment, with Airflow connections taking precedence."""
    from etl.config import Settings

    over: dict[str, Any] = {}
    ldap = _connection("entsync_ldap")
    if ldap is not None:
        extra = ldap.extra_dejson or {}
        url = extra.get("url")
        if not url and ldap.host:
            scheme, port = ("ldaps", 636) if extra.get("ssl") else ("ldap", 389)
            url = f"{scheme}://{ldap.host}:{ldap.port or port}"
        over.update(
            ldap_url=url,
            ldap_bind_dn=ldap.login,
            ldap_password=ldap.password,
            ldap_base=extra.get("base"),
            ldap_ca_file=extra.get("ca_file"),
        )
    state = _connection("entsync_state")
    if state is not None:
        url = (state.extra_dejson or {}).get("sqlalchemy_url") or state.get_uri()
        # Airflow's "postgres" conn type renders postgres://, which SQLAlchemy 2 rejects.
        over["state_url"] = url.replace("postgres://", "postgresql://", 1)
    staging = _connection("entsync_staging")
    if staging is not None:
        # the staging area through Airflow's object storage, with this connection's
        # credentials; its URL: the connection's extra "url", else ENTSYNC_STAGING_URL
        import os

        from airflow.sdk import ObjectStoragePath

        url = (staging.extra_dejson or {}).get("url") or os.environ.get("ENTSYNC_STAGING_URL")
        if url:
            over["staging_url"] = url
            over["staging_path"] = ObjectStoragePath(url, conn_id="entsync_staging")
    return Settings.from_env(**over)


def _on_task_failure(context: Any) -> None:
    """A task gave up: say which stage and school, close the sync run as failed (which also
    releases the academy's lock, so the next run need not wait for it to go stale)."""
    import logging

    from etl import pipeline

    ti = context["ti"]
    school = getattr(ti, "rendered_map_index", None) or "-"
    err = context.get("exception")
    logging.getLogger("entsync.dag").error(
        "task %s failed (school %s): %s", ti.task_id, school,
        type(err).__name__ if err is not None else "unknown error")
    disc = ti.xcom_pull(task_ids="discover") or {}
    if disc.get("run_id"):
        pipeline.fail_run(_settings(), disc["run_id"],
                          f"Airflow task {ti.task_id} (school {school}) failed: "
                          f"{type(err).__name__ if err is not None else 'error'}")


def _mode() -> str | None:
    """The run's operation mode from the `mode` param (None: the academy's configuration)."""
    m = get_current_context()["params"].get("mode")
    return str(m) if m else None


def _params() -> tuple[bool, list[str]]:
    p = get_current_context()["params"]
    return bool(p.get("dry_run")), [s for s in (p.get("schools") or []) if s]


def _results(results: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The mapped read_validate results as a list, in one XCom request.

    Slicing fetches them all at once; iterating the lazy sequence would probe one index past
    the end and log an "XCom not found" error on every run. An empty run gives [].
    """
    return [r for r in results[:] if r]


APPROVE, REJECT = "Approve", "Reject"


def _approval_body(rec: dict[str, Any]) -> str:
    """Markdown shown to the approver: per school, counts per action, the guards that
    tripped, a sample of affected accounts (opaque DNs only: no personal data)."""
    lines = ["Each school below tripped a disaster guard; its changes were **not** written.",
             "Approve applies exactly these plans (checked by hash); Reject discards them.", ""]
    for uai, h in sorted(rec["held"].items()):
        counts = ", ".join(f"{k} {v}" for k, v in h["counts"].items() if v)
        lines.append(f"### {uai}: {counts or 'no change'}")
        for g in h["guards"]:
            lines.append(f"- guard **{g['guard']}**: {g['detail']} (limit {g['limit']})")
        lines.append(f"- plan `{h['plan']}` sha256 `{h['hash'][:16]}…`")
        lines.append("")
    return "\n".join(lines)


def _responder(answer: dict[str, Any]) -> str:
    """Who answered: the Airflow user's name (a HITLUser {id, name}); a timeout's default
    answer has no user."""
    user = answer.get("responded_by_user")
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "airflow")
    if user:
        return str(user)
    return "airflow (timeout)" if answer.get("timedout") else "airflow"


def _decide(run_id: str, held: dict[str, Any], approve: bool, by: str) -> dict[str, Any]:
    """One decision per held school, each checked against the plan hash that was shown."""
    from etl import pipeline

    out = {}
    for uai, h in sorted(held.items()):
        res = pipeline.decide(_settings(), run_id, approve, uai, by=by, expected_hash=h["hash"])
        out[uai] = {k: v for k, v in res["schools"][uai].items()
                    if k in ("decision", "applied", "failed")}
    return out


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
            "schools": Param(
                [],
                type="array",
                items={"type": "string"},
                description="only these UAIs (empty: all)",
            ),
            "mode": Param(
                None,
                type=["null", "string"],
                enum=[None, "normal", "create_only", "no_disable"],
                description="operation mode for this run (empty: the academy's configuration; "
                "create_only: only new entries; no_disable: nobody is disabled)",
            ),
        },
        default_args={
            "retries": 1,
            "retry_delay": dt.timedelta(minutes=2),
            "on_failure_callback": _on_task_failure,
        },
    )
    def ent_sync() -> None:
        @task
        def discover() -> dict[str, Any]:
            from etl import pipeline

            dry, schools = _params()
            st = _settings()
            run_id = pipeline.start_run(st, code, dry, trigger="airflow")
            out = pipeline.discover_files(st, code, run_id, schools or None)
            out["batches"] = [{"uai": u, "docs": d} for u, d in out.pop("schools").items()]
            return out

        @task
        def batches(disc: dict[str, Any]) -> list[dict[str, Any]]:
            """One item per school to read (Airflow maps only over a task's whole return)."""
            return list(disc["batches"])

        @task(
            map_index_template="{{ task.op_kwargs['batch']['uai'] }}", max_active_tis_per_dagrun=4
        )
        def read_validate(batch: dict[str, Any], disc: dict[str, Any]) -> dict[str, Any]:
            from etl import pipeline

            dry, _ = _params()
            return pipeline.read_validate_school(
                _settings(), code, disc["run_id"], batch["uai"], batch["docs"], dry
            )

        # none_failed: also run when read_validate was skipped because no school had new
        # exports, so an empty night still closes its run and writes a summary.
        @task(trigger_rule="none_failed")
        def reconcile(
            disc: dict[str, Any], results: Sequence[dict[str, Any] | None]
        ) -> dict[str, Any]:
            from etl import pipeline

            dry, _ = _params()
            return pipeline.reconcile(
                _settings(), code, disc["run_id"], _results(results), dry, _mode()
            )

        @task(trigger_rule="none_failed")
        def apply(
            disc: dict[str, Any], rec: dict[str, Any], results: Sequence[dict[str, Any] | None]
        ) -> dict[str, Any]:
            from etl import pipeline

            dry, _ = _params()
            return pipeline.apply_plan(
                _settings(), code, disc["run_id"], rec["plan"], _results(results), dry
            )

        @task(trigger_rule="none_failed", retries=0)
        def report(
            disc: dict[str, Any],
            results: Sequence[dict[str, Any] | None],
            rec: dict[str, Any],
            app: dict[str, Any],
        ) -> dict[str, Any]:
            from etl import pipeline
            from etl.errors import EntsyncError

            dry, _ = _params()
            s = pipeline.finish_run(
                _settings(), code, disc["run_id"], disc, _results(results), rec, app, dry
            )
            if s["status"] == "failed":
                raise EntsyncError(f"run {s['run_id']}: {s['failed']} changes failed")
            return {
                "run_id": s["run_id"],
                "status": s["status"],
                "changes": s["changes"],
                "applied": s["applied"],
                "report_dir": s["report_dir"],
            }

        @task.short_circuit
        def held_plans(rec: dict[str, Any]) -> dict[str, Any] | None:
            """What a guard held tonight, as the approver will see it; nothing held (or a dry
            run): the approval stage is skipped."""
            dry, _ = _params()
            if dry or not rec.get("held"):
                return None
            return {"run_id": rec["plan"].split("/")[-2], "uais": ", ".join(sorted(rec["held"])),
                    "body": _approval_body(rec)}

        # subject and body are rendered from held_plans' XCom when the task starts
        approval = HITLOperator(
            task_id="approval",
            subject=f"{academy.name}: changes of "
            "{{ ti.xcom_pull(task_ids='held_plans')['uais'] }} held by a guard, approve or reject",
            body="{{ ti.xcom_pull(task_ids='held_plans')['body'] }}",
            options=[APPROVE, REJECT],
            defaults=[REJECT],
            response_timeout=dt.timedelta(days=3),
            retries=0,
        )

        @task(retries=0)
        def apply_decision(disc: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
            """Apply exactly the held plans that were shown (their hashes), or discard them."""
            answer = get_current_context()["ti"].xcom_pull(task_ids="approval") or {}
            approve = APPROVE in (answer.get("chosen_options") or [])
            return _decide(disc["run_id"], rec["held"], approve, _responder(answer))

        d = discover()
        res = read_validate.partial(disc=d).expand(batch=batches(d))
        rec = reconcile(d, res)
        app = apply(d, rec, res)
        rep = report(d, res, rec, app)
        gate = held_plans(rec)
        rep >> gate >> approval >> apply_decision(d, rec)

    return ent_sync()


for _academy in load_academies().values():
    globals()[_academy.dag_id] = make_dag(_academy)
