"""
### ENT directory sync: one DAG per academy

Reads tonight's SIECLE (BEE) and STS-web exports of the academy's schools from the landing
zone (`$ENTSYNC_LANDING/<academy>/`), validates them, and brings the ENT's LDAP directory in
step: accounts, classes and groups.

**Task groups, one per stage** (in the Graph view, expand a group to see its tasks):

- **read**: `discover` (identify each file by its root and UAI, open the sync run; its
  return value is the schools to read in groups, its XCom `run` the sync run: id, rejected
  and held files) → `read_validate` (one mapped task per group of up to 16 schools,
  `ENTSYNC_READ_GROUP`, named by their UAIs and the name the first one's STS-web export
  gives: read, normalize, validate, the group's validation rules run together; a bad file
  is quarantined whole and its school left untouched, the group's other schools go on);
- **plan**: `reconcile` (identities, logins, desired entries, plan, disaster guards);
- **write**: `apply` (ldap3, journaled);
- **close**: `report` (run summary in `$ENTSYNC_WORKDIR/reports/<run_id>/`: `summary.json`,
  `report.html`; the task's **Run report** link opens the page in the browser) → `publish`;
- **review** (only when a disaster guard held a school's changes): `held_plans` → `approval`
  (waits in the UI's *Required actions*; *Approve* applies exactly the plan shown, *Reject*
  discards it; no answer in 3 days counts as Reject) → `apply_decision` → `publish`.

A night with no new export maps read_validate over nothing (skipped); reconcile, apply and
report still run and close the run with an empty summary.

**Asset**: each `publish` task emits the asset `entsync_directory_<academy>` (uri
`x-entsync://directory/<academy>`, see `etl/assets.py`) only when its stage wrote changes to
the directory; it is skipped otherwise (quiet night, dry run, rejection). Consumer DAGs can
be scheduled on it; the event's extra holds the sync run id and counts per school.

**Retries**: a task retries (up to 3 times, 1, 2 then 4 minutes apart) only on transient
failures: directory or state DB unreachable, busy or locked, another run holding the
academy's lock. An error no retry can fix (rejected file, configuration, directory
credentials or certificate, refused approval, a bug) fails the task at once. A task that
gives up closes the sync run as failed (stage, school and error type, never personal data)
and releases the academy's lock.

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

import contextlib
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import pendulum
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Asset, BaseOperatorLink, Param, TaskGroup, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from etl.config import Academy, load_academies
from etl.report.assets import directory_asset_name, directory_asset_uri

F = TypeVar("F", bound=Callable[..., Any])

#: the task ids other tasks, the report link and the failure callback look up
DISCOVER = "read.discover"
#: discover's XCom holding the sync run (id, rejected, held, ...); its return value is the list
#: of schools read_validate maps over (Airflow maps only over a task's return value)
RUN_KEY = "run"
HELD_PLANS, APPROVAL = "review.held_plans", "review.approval"


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


#: Settings already built in this process, by DagRun (see `_settings`)
_SETTINGS: dict[tuple[str, str], Any] = {}


def _settings() -> Any:
    """The run's settings, built once per DagRun and process: every task of a run in one
    process (`airflow dags test`, or a task's failure callback) reuses them instead of asking
    the API server for the three connections again."""
    try:
        ti = get_current_context()["ti"]
        key: tuple[str, str] | None = (str(ti.dag_id), str(ti.run_id))
    except (RuntimeError, KeyError):  # outside a task (tests, the CLI): nothing to share
        key = None
    if key is not None and key in _SETTINGS:
        return _SETTINGS[key]
    st = _build_settings()
    from etl.runtime.cpu import yield_cpu

    yield_cpu(st)  # the task's process: CPU-bound batch work yields to the directory server
    if key is not None:
        _SETTINGS.clear()  # one run at a time: a long-lived process keeps no stale settings
        _SETTINGS[key] = st
    return st


def _build_settings() -> Any:
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


@contextlib.contextmanager
def retry_policy() -> Iterator[None]:
    """Let Airflow retry only what a retry can fix (`etl.errors.is_transient`); any other
    error becomes AirflowFailException, which fails the task at once whatever its retries.
    Airflow's own exceptions (skip, fail, defer) pass through."""
    try:
        yield
    except AirflowException:
        raise
    except Exception as e:
        from etl.errors import is_transient

        if is_transient(e):
            raise
        # the error type only: an exception's text may quote a record
        raise AirflowFailException(f"{type(e).__name__}: not retried (no retry can fix it)") from e


def fail_fast(fn: F) -> F:
    """`retry_policy` around a task's callable (under `@task`, which keeps its signature)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with retry_policy():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _root_error(err: BaseException | None) -> BaseException | None:
    """The error a task failed on (the cause of the AirflowFailException `retry_policy`
    raised)."""
    if isinstance(err, AirflowFailException) and err.__cause__ is not None:
        return err.__cause__
    return err


def _on_task_failure(context: Any) -> None:
    """A task gave up: say which stage and school, close the sync run as failed (which also
    releases the academy's lock, so the next run need not wait for it to go stale)."""
    import logging

    from etl import run as pipeline

    ti = context["ti"]
    school = getattr(ti, "rendered_map_index", None) or "-"
    err = _root_error(context.get("exception"))
    logging.getLogger("entsync.dag").error(
        "task %s failed (school %s): %s", ti.task_id, school,
        type(err).__name__ if err is not None else "unknown error")
    disc = ti.xcom_pull(task_ids=DISCOVER, key=RUN_KEY) or {}
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


def _groups(schools: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The schools in groups of ``size``, one mapped read_validate each: the first school's
    UAI and name label the task, ``schools`` lists them all, ``more`` says there are others."""
    out = []
    for i in range(0, len(schools), size):
        part = schools[i:i + size]
        out.append({"uai": part[0]["uai"], "name": part[0].get("name"), "schools": part,
                    "more": len(part) > 1})
    return out


def _results(results: Sequence[list[dict[str, Any]] | None]) -> list[dict[str, Any]]:
    """The mapped read_validate results (a list of schools each) as one list, in one XCom
    request.

    Slicing fetches them all at once; iterating the lazy sequence would probe one index past
    the end and log an "XCom not found" error on every run. An empty run gives [].
    """
    return [r for group in results[:] if group for r in group if r]


APPROVE, REJECT = "Approve", "Reject"
#: the summary's per-school counts that are writes to the directory
WRITES = ("created", "updated", "disabled", "restored", "deleted")


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
    from etl import run as pipeline

    out, st = {}, _settings()
    for uai, h in sorted(held.items()):
        res = pipeline.decide(st, run_id, approve, uai, by=by, expected_hash=h["hash"])
        out[uai] = {k: v for k, v in res["schools"][uai].items()
                    if k in ("decision", "applied", "failed")}
    return out


class RunReportLink(BaseOperatorLink):
    """The report task's "Run report" button: the run's report.html, served by the api-server
    (plugin `plugins/entsync_reports.py`). Computed by the worker when the task ends, from
    the sync run id discover returned: a report task that failed because changes failed has
    written the report, which is then the page to read."""

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.configuration import conf
        from airflow.sdk.execution_time.xcom import XCom

        from etl.report.page import report_url

        disc = XCom.get_one(key=RUN_KEY, dag_id=ti_key.dag_id, task_id=DISCOVER,
                            run_id=ti_key.run_id, map_index=-1)
        if not isinstance(disc, dict) or not disc.get("run_id"):
            return ""
        return report_url(conf.get("api", "base_url", fallback="/"), str(disc["run_id"]))


def directory_asset(academy_code: str) -> Asset:
    """The asset an academy's sync emits when it changed the directory (`etl.report.assets`)."""
    return Asset(name=directory_asset_name(academy_code), uri=directory_asset_uri(academy_code))


def _publish(asset: Asset, run_id: str, applied: int, uais: list[str]) -> dict[str, Any]:
    """Emit the directory's asset event (sync run id, count, UAIs as its extra), or skip:
    nothing written, no event."""
    if applied <= 0:
        raise AirflowSkipException("nothing was written to the directory: no asset event")
    extra: dict[str, Any] = {"run_id": run_id, "applied": applied, "schools": sorted(uais)}
    get_current_context()["outlet_events"][asset].extra = extra
    return extra


def make_dag(academy: Academy) -> Any:
    code = academy.code
    directory = directory_asset(code)

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
            # only transient failures get here: retry_policy fails the others at once
            "retries": 3,
            "retry_delay": dt.timedelta(minutes=1),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": dt.timedelta(minutes=15),
            "on_failure_callback": _on_task_failure,
        },
    )
    def ent_sync() -> None:
        with TaskGroup("read", tooltip="find tonight's exports, read and validate each school"):

            @task
            @fail_fast
            def discover() -> list[dict[str, Any]]:
                """Open the sync run (XCom `run`) and return the schools to read in groups
                of ENTSYNC_READ_GROUP (16; one mapped read_validate each: their rules run
                together, and one task process reads them all), each school with its name when
                its STS-web export gives it (the UI's label of the mapped task)."""
                from etl import run as pipeline
                from etl.report.page import school_name

                dry, schools = _params()
                st = _settings()
                run_id = pipeline.new_run_id(code)
                try:
                    pipeline.start_run(st, code, dry, trigger="airflow", run_id=run_id)
                    out = pipeline.discover_files(st, code, run_id, schools or None)
                    found = [{"uai": u, "docs": d, "name": school_name(d)}
                             for u, d in out.pop("schools").items()]
                    batches = _groups(found, st.read_group)
                except Exception as e:
                    # each try opens a run of its own: close it (no XCom names it yet, so the
                    # failure callback could not), a retry must not leave runs "running"
                    pipeline.fail_run(st, run_id, f"discover failed: {type(e).__name__}")
                    raise
                get_current_context()["ti"].xcom_push(key=RUN_KEY, value=out)
                return batches

            # each mapped task is labelled by its schools: "<UAI> <school name>" for one,
            # "<first UAI> <name> … <last UAI> (N schools)" for a group
            @task(
                multiple_outputs=False,
                map_index_template="{{ task.op_kwargs['batch']['uai'] }}"
                "{% if task.op_kwargs['batch'].get('name') %} "
                "{{ task.op_kwargs['batch']['name'] }}{% endif %}"
                "{% if task.op_kwargs['batch']['more'] %} … "
                "{{ task.op_kwargs['batch']['schools'][-1]['uai'] }} "
                "({{ task.op_kwargs['batch']['schools'] | length }} schools){% endif %}",
                max_active_tis_per_dagrun=4,
            )
            @fail_fast
            def read_validate(
                batch: dict[str, Any], disc: dict[str, Any]
            ) -> list[dict[str, Any]]:
                from etl import run as pipeline

                dry, _ = _params()
                return pipeline.read_validate_schools(
                    _settings(), code, disc["run_id"],
                    {x["uai"]: x["docs"] for x in batch["schools"]}, dry,
                )

            found = discover()
            d = cast(Any, found)[RUN_KEY]  # the sync run (its XCom "run"), for later tasks
            res = read_validate.partial(disc=d).expand(batch=found)

        with TaskGroup("plan", tooltip="identities, logins, plan, disaster guards"):
            # none_failed: also run when read_validate was skipped because no school had new
            # exports, so an empty night still closes its run and writes a summary.
            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def reconcile(
                disc: dict[str, Any], results: Sequence[list[dict[str, Any]] | None]
            ) -> dict[str, Any]:
                from etl import run as pipeline

                dry, _ = _params()
                return pipeline.reconcile(
                    _settings(), code, disc["run_id"], _results(results), dry, _mode()
                )

            rec = reconcile(d, res)

        with TaskGroup("write", tooltip="write the plan into the directory (journaled)"):

            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def apply(
                disc: dict[str, Any], rec: dict[str, Any],
                results: Sequence[list[dict[str, Any]] | None],
            ) -> dict[str, Any]:
                from etl import run as pipeline

                dry, _ = _params()
                return pipeline.apply_plan(
                    _settings(), code, disc["run_id"], rec["plan"], _results(results), dry
                )

            app = apply(d, rec, res)

        with TaskGroup("close", tooltip="run report; the directory's asset when it changed"):

            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def report(
                disc: dict[str, Any],
                results: Sequence[list[dict[str, Any]] | None],
                rec: dict[str, Any],
                app: dict[str, Any],
            ) -> dict[str, Any]:
                from etl import run as pipeline
                from etl.errors import EntsyncError

                dry, _ = _params()
                s = pipeline.finish_run(
                    _settings(), code, disc["run_id"], disc, _results(results), rec, app, dry
                )
                if s["status"] == "failed":  # the directory down: its one line
                    raise EntsyncError(s.get("error")
                                       or f"run {s['run_id']}: {s['failed']} changes failed")
                return {
                    "run_id": s["run_id"],
                    "status": s["status"],
                    "changes": s["changes"],
                    "applied": s["applied"],
                    "report_dir": s["report_dir"],
                    # the schools whose entries this run wrote (held ones wait for review)
                    "written": sorted(
                        u for u, v in s["schools"].items()
                        if v.get("status") in ("ok", "quarantined", "collateral")
                        and any(v.get(k) for k in WRITES)),
                }

            @task(task_id="publish", outlets=[directory], multiple_outputs=False)
            def publish_run(rep: dict[str, Any]) -> dict[str, Any]:
                """The directory's asset event when this run wrote to it; skipped otherwise."""
                return _publish(directory, rep["run_id"], int(rep.get("applied") or 0),
                                list(rep.get("written") or []))

            rep = report(d, res, rec, app)
            # the button on the report task (the worker computes it when the task ends)
            cast(Any, rep).operator.operator_extra_links = (RunReportLink(),)
            publish_run(rep)

        with TaskGroup("review", tooltip="changes a disaster guard held: approve or reject"):

            @task.short_circuit
            def held_plans(rec: dict[str, Any]) -> dict[str, Any] | None:
                """What a guard held tonight, as the approver will see it; nothing held (or a
                dry run): the review stage is skipped."""
                dry, _ = _params()
                if dry or not rec.get("held"):
                    return None
                return {"run_id": rec["plan"].split("/")[-2],
                        "uais": ", ".join(sorted(rec["held"])), "body": _approval_body(rec)}

            # subject and body are rendered from held_plans' XCom when the task starts
            approval = HITLOperator(
                task_id="approval",
                subject=f"{academy.name}: changes of "
                f"{{{{ ti.xcom_pull(task_ids='{HELD_PLANS}')['uais'] }}}} held by a guard, "
                "approve or reject",
                body=f"{{{{ ti.xcom_pull(task_ids='{HELD_PLANS}')['body'] }}}}",
                options=[APPROVE, REJECT],
                defaults=[REJECT],
                response_timeout=dt.timedelta(days=3),
                retries=0,
            )

            @task(multiple_outputs=False)
            @fail_fast
            def apply_decision(disc: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
                """Apply exactly the held plans that were shown (their hashes), or discard
                them."""
                answer = get_current_context()["ti"].xcom_pull(task_ids=APPROVAL) or {}
                approve = APPROVE in (answer.get("chosen_options") or [])
                return _decide(disc["run_id"], rec["held"], approve, _responder(answer))

            @task(task_id="publish", outlets=[directory], multiple_outputs=False)
            def publish_decision(disc: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
                """The directory's asset event when an approved plan was written."""
                applied = {u: int(v.get("applied") or 0) for u, v in decision.items()}
                return _publish(directory, disc["run_id"], sum(applied.values()),
                                [u for u, n in applied.items() if n])

            decision = apply_decision(d, rec)
            rep >> held_plans(rec) >> approval >> decision
            publish_decision(d, decision)

    return ent_sync()


for _academy in load_academies().values():
    globals()[_academy.dag_id] = make_dag(_academy)
