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

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

import pendulum
from _entsync_airflow import DISCOVER, RUN_KEY, fail_fast, on_task_failure, run_settings
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Asset, BaseOperatorLink, Param, TaskGroup, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from etl.config import Academy, load_academies
from etl.report.assets import directory_asset_name, directory_asset_uri

HELD_PLANS, APPROVAL = "review.held_plans", "review.approval"
APPROVE, REJECT = "Approve", "Reject"


def _mode() -> str | None:
    """The run's operation mode from the `mode` param (None: the academy's configuration)."""
    m = get_current_context()["params"].get("mode")
    return str(m) if m else None


def _params() -> tuple[bool, list[str]]:
    p = get_current_context()["params"]
    return bool(p.get("dry_run")), [s for s in (p.get("schools") or []) if s]


def _run(code: str, disc: dict[str, Any]) -> Any:
    """The sync run the tasks work for (`etl.contracts.RunRef`): discover's XCom `run`."""
    from etl.contracts import RunRef

    dry, _ = _params()
    return RunRef(academy=code, run_id=str(disc["run_id"]), dry_run=dry)


def _results(results: Sequence[list[dict[str, Any]] | None]) -> list[Any]:
    """The mapped read_validate results (a list of schools each) as one list of
    `SchoolResult`, in one XCom request.

    Slicing fetches them all at once; iterating the lazy sequence would probe one index past
    the end and log an "XCom not found" error on every run. An empty run gives [].
    """
    from etl.contracts import results_of

    return results_of([r for group in results[:] if group for r in group])


def _responder(answer: dict[str, Any]) -> str:
    """Who answered: the Airflow user's name (a HITLUser {id, name}); a timeout's default
    answer has no user."""
    user = answer.get("responded_by_user")
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "airflow")
    if user:
        return str(user)
    return "airflow (timeout)" if answer.get("timedout") else "airflow"


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
            "on_failure_callback": on_task_failure,
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
                from etl.contracts import dump_all

                dry, schools = _params()
                run, groups = pipeline.open_run(run_settings(), code, dry, schools or None)
                get_current_context()["ti"].xcom_push(key=RUN_KEY, value=run.to_json())
                return dump_all(groups)

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
                from etl.contracts import ReadGroup, dump_all

                run = _run(code, disc)
                return dump_all(pipeline.read_validate_schools(
                    run_settings(), code, run.run_id, ReadGroup.from_json(batch).docs(),
                    run.dry_run))

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

                run = _run(code, disc)
                return pipeline.reconcile(run_settings(), code, run.run_id, _results(results),
                                          run.dry_run, _mode()).to_json()

            rec = reconcile(d, res)

        with TaskGroup("write", tooltip="write the plan into the directory (journaled)"):

            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def apply(
                disc: dict[str, Any], rec: dict[str, Any],
                results: Sequence[list[dict[str, Any]] | None],
            ) -> dict[str, Any]:
                """Write the plan (`results`: only so that it waits for read_validate)."""
                from etl import run as pipeline
                from etl.contracts import Reconciled

                run = _run(code, disc)
                return pipeline.apply_plan(run_settings(), code, run.run_id,
                                           Reconciled.from_json(rec).plan,
                                           dry_run=run.dry_run).to_json()

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
                from etl.contracts import Applied, Discovery, Reconciled

                return pipeline.close_run(
                    run_settings(), _run(code, disc), Discovery.from_json(disc),
                    _results(results), Reconciled.from_json(rec) if rec else None,
                    Applied.from_json(app) if app else None,
                ).to_json()

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
            def held_plans(disc: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any] | None:
                """What a guard held tonight, as the approver will see it; nothing held (or a
                dry run): the review stage is skipped."""
                from etl import run as pipeline
                from etl.contracts import Reconciled

                req = pipeline.review_request(_run(code, disc), Reconciled.from_json(rec))
                return None if req is None else req.to_json()

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
                from etl import run as pipeline
                from etl.contracts import Reconciled

                answer = get_current_context()["ti"].xcom_pull(task_ids=APPROVAL) or {}
                approve = APPROVE in (answer.get("chosen_options") or [])
                return pipeline.decide_held(run_settings(), str(disc["run_id"]),
                                            Reconciled.from_json(rec).held, approve,
                                            _responder(answer))

            @task(task_id="publish", outlets=[directory], multiple_outputs=False)
            def publish_decision(disc: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
                """The directory's asset event when an approved plan was written."""
                applied = {u: int(v.get("applied") or 0) for u, v in decision.items()}
                return _publish(directory, disc["run_id"], sum(applied.values()),
                                [u for u, n in applied.items() if n])

            decision = apply_decision(d, rec)
            rep >> held_plans(d, rec) >> approval >> decision
            publish_decision(d, decision)

    return ent_sync()


for _academy in load_academies().values():
    globals()[_academy.dag_id] = make_dag(_academy)
