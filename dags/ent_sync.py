"""
### ENT directory sync: one DAG per academy

Reads tonight's SIECLE (BEE) and STS-web exports of the academy's schools from the landing
zone (`$ENTSYNC_LANDING/<academy>/`), validates them, and brings the ENT's LDAP directory in
step: accounts, classes and groups.

**Task groups, one per stage** (in the Graph view, expand a group to see its tasks):

- **read**: `discover` (identify each file by its root and UAI, open the sync run; its
  return value is the schools to read in groups, its XCom `run_id` the sync run's id, which
  every later task reads);
- **schools**: one mapped task group per group of up to 16 schools (`ENTSYNC_READ_GROUP`),
  named by their UAIs and the name the first one's STS-web export gives: `read_validate`
  (read, normalize, validate, the group's validation rules run together; a bad file is
  quarantined whole and its school left untouched, the group's other schools go on) →
  `plan_write` (a streamed night, more than one group: the group planned against what the
  groups before it wrote, its disaster guards, written; one group at a time, while the next
  are read. Otherwise it does nothing);
- **plan**: `reconcile` (a streamed night's absences, judged once every group is written;
  else identities, logins, desired entries, plan, disaster guards for the whole academy);
- **write**: `apply` (ldap3, journaled);
- **close**: `report` (run summary in `$ENTSYNC_WORKDIR/reports/<run_id>/`: `summary.json`,
  `report.html`; the task's **Run report** link opens the page in the browser) → `publish`;
- **review** (only when a disaster guard held a school's changes): `held_plans` →
  `request_approval` (one run of the academy's approval DAG `ent_approval__<academy>` per
  held school). The night does **not** wait for the answer: it ends, the held school
  `awaiting_approval`, the others written, and the next nights run as usual.

A night with no new export maps the schools' group over nothing (skipped); reconcile, apply
and report still run and close the run with an empty summary.

**Approvals** (`ent_approval__<academy>`, one run per held school): `panel` (what the guard
held: counts per action and profile, the guards with value and limit, sample DNs, the run
report's link, the default and its deadline) → `approval` (waits in the UI's *Required
actions*; *Approve* applies exactly the plan shown, checked by its hash; *Reject* discards
it; **no answer in 3 days counts as Reject**) → `apply_decision` (the run's summary, report
and `entsync status` then say who decided and when) → `publish`. A held school's next export
supersedes its pending plan (closed `superseded`, the new export planned as usual); the same
export seen again waits for the decision (the school is not read again).

**Asset**: each `publish` task emits the asset `entsync_directory_<academy>` (uri
`x-entsync://directory/<academy>`, see `etl/report/assets.py`) only when its stage wrote
changes to the directory; it is skipped otherwise (quiet night, dry run, rejection).
Consumer DAGs can be scheduled on it; the event's extra is flat: `run_id`, `academy`,
`applied` (changes written), `schools` (their UAIs), `by` (`night` or `approval`).

**Retries**: a task retries (up to 3 times, 1, 2 then 4 minutes apart) only on transient
failures: directory or state DB unreachable, busy or locked, another run holding the
academy's lock (an approved plan waits up to about 2 hours for a night writing the
academy). An error no retry can fix (rejected file, configuration, directory credentials or
certificate, refused approval, a bug) fails the task at once. A task that gives up closes
the sync run as failed (stage, school and error type, never personal data) and releases the
academy's lock.

Params: `dry_run` plans and reports but writes nothing; `schools` limits the run to some UAIs
(empty: all); `mode` overrides the academy's operation mode for this run (`create_only`,
`no_disable`: e.g. during the September roll-over; `default`: the academy's configuration).
The schedule starts no catch-up run when the DAG is unpaused, and no backfill is offered (a
night reads the landing zone as it is now, not as it was).

Connections: `entsync_ldap` (host, port, login = bind DN, password, extra `{"base": ...}`,
optionally `"url"`, `"ssl": true`, `"ca_file"`) and `entsync_state` (extra
`{"sqlalchemy_url": ...}`), `entsync_staging` (the staging area tasks hand each other files
through, as an ObjectStoragePath with this connection's credentials; extra `{"url":
"s3://bucket/entsync/staging"}`, else `ENTSYNC_STAGING_URL`); when a connection is not
defined, the `ENTSYNC_*` environment variables are used. The DAGs' owner:
`ENTSYNC_AIRFLOW_OWNER` (default `entsync-ops`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from _entsync_airflow import (
    DISCOVER,
    RUN_ID_KEY,
    RUN_KEY,
    default_args,
    fail_fast,
    run_settings,
)
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import (
    Asset,
    BaseOperatorLink,
    CronTriggerTimetable,
    Param,
    TaskGroup,
    dag,
    get_current_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowSkipException

from etl.config import Academy, load_academies
from etl.report.assets import directory_asset_name, directory_asset_uri

PANEL, APPROVAL = "panel", "approval"
APPROVE, REJECT = "Approve", "Reject"
#: the trigger form's `mode` choices: "default" is the academy's configuration
MODES = {"default": "the academy's configuration", "normal": "normal",
         "create_only": "create_only: only new entries",
         "no_disable": "no_disable: nobody is disabled"}
#: no answer in this long counts as Reject (`etl.approve.panel.APPROVAL_TIMEOUT`)
APPROVAL_TIMEOUT = dt.timedelta(days=3)


#: each mapped task's label (`_label`, set in the task's context as it runs)
LABEL = "{{ school_label }}"


def _label(batch: dict[str, Any]) -> None:
    """Label the mapped task by its schools: "<UAI> <school name>" for one, "<first UAI>
    <name> … <last UAI> (N schools)" for a group (the map_index_template reads it)."""
    first = f"{batch['uai']} {batch['name']}" if batch.get("name") else str(batch["uai"])
    more = (f" … {batch['schools'][-1]['uai']} ({len(batch['schools'])} schools)"
            if batch.get("more") else "")
    cast(Any, get_current_context())["school_label"] = first + more


def _mode() -> str | None:
    """The run's operation mode from the `mode` param (None: the academy's configuration)."""
    m = get_current_context()["params"].get("mode")
    return str(m) if m and m != "default" else None


def _params() -> tuple[bool, list[str]]:
    p = get_current_context()["params"]
    return bool(p.get("dry_run")), [s for s in (p.get("schools") or []) if s]


def _run(code: str) -> Any:
    """The sync run the tasks work for (`etl.contracts.RunRef`): its id is discover's small
    XCom `run_id`, read at run time (no graph edge from discover to every task)."""
    from etl.contracts import RunRef

    dry, _ = _params()
    rid = get_current_context()["ti"].xcom_pull(task_ids=DISCOVER, key=RUN_ID_KEY)
    return RunRef(academy=code, run_id=str(rid), dry_run=dry)


def _groups(groups: Any) -> tuple[list[Any], list[Any]]:
    """The mapped task groups' results (each: its schools' `SchoolResult`s, and what a
    streamed night's group wrote) as one list of `SchoolResult` and the list of
    `StreamedGroup` (None for a group planned whole), in one XCom request.

    Slicing fetches them all at once; iterating the lazy sequence would probe one index past
    the end and log an "XCom not found" error on every run. An empty run gives [].
    """
    from etl.contracts import StreamedGroup, results_of

    # one group: Airflow hands its one value, not a sequence of one; none: None
    got = ([groups] if isinstance(groups, dict) else
           [g for g in groups[:] if g] if groups is not None else [])
    return (results_of([r for g in got for r in g.get("results") or []]),
            [StreamedGroup.from_json(g["streamed"]) if g.get("streamed") else None
             for g in got])


def _responder(answer: dict[str, Any]) -> str:
    """Who answered: the Airflow user's name (a HITLUser {id, name}); a timeout's default
    answer has no user."""
    user = answer.get("responded_by_user")
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "airflow")
    if user:
        return str(user)
    return "nobody (no answer in time: the default)"


def _base_url() -> str:
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="/"))


class RunReportLink(BaseOperatorLink):
    """The report task's "Run report" button: the run's report.html, served by the api-server
    (plugin `plugins/entsync_reports.py`). Computed by the worker when the task ends, from
    the sync run id discover returned: a report task that failed because changes failed has
    written the report, which is then the page to read."""

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        from etl.report.page import report_url

        rid = XCom.get_one(key=RUN_ID_KEY, dag_id=ti_key.dag_id, task_id=DISCOVER,
                           run_id=ti_key.run_id, map_index=-1)
        return report_url(_base_url(), str(rid)) if rid else ""


def directory_asset(academy_code: str) -> Asset:
    """The asset an academy's sync emits when it changed the directory (`etl.report.assets`)."""
    return Asset(name=directory_asset_name(academy_code), uri=directory_asset_uri(academy_code))


def _publish(asset: Asset, academy: str, run_id: str, applied: int, uais: list[str],
             by: str) -> dict[str, Any]:
    """Emit the directory's asset event, or skip: nothing written, no event. Its extra is
    flat (the Assets view lists it key by key): the sync run, the academy, the changes
    written, the schools' UAIs, and whether the night or an approval wrote them."""
    if applied <= 0:
        raise AirflowSkipException("nothing was written to the directory: no asset event")
    extra: dict[str, Any] = {"run_id": run_id, "academy": academy, "applied": applied,
                             "schools": sorted(uais), "by": by}
    get_current_context()["outlet_events"][asset].extra = extra
    return extra


def make_dag(academy: Academy) -> Any:
    code = academy.code
    directory = directory_asset(code)

    @dag(
        dag_id=academy.dag_id,
        description=f"Sync {academy.name} exports into the ENT directory",
        doc_md=__doc__,
        # no start_date, and run_immediately=0: unpausing starts no run of a past night
        # beside the one triggered by hand
        schedule=CronTriggerTimetable(academy.schedule, timezone=academy.timezone,
                                      run_immediately=dt.timedelta(0)),
        catchup=False,
        max_active_runs=1,
        # a night reads the landing zone as it is now: no backfill of past nights
        allowed_run_types=cast(Any, ["scheduled", "manual"]),  # DagRunType values
        tags=["entsync", code],
        params={
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="plan and report only, write nothing"),
            "schools": Param(
                [],
                type=["null", "array"],
                items={"type": "string"},
                title="Schools",
                description="only these UAIs, one a line (empty: every school with exports)",
            ),
            "mode": Param(
                "default",
                type="string",
                enum=list(MODES),
                values_display=MODES,
                title="Mode",
                description="operation mode for this run (default: the academy's "
                "configuration; create_only: only new entries; no_disable: nobody is "
                "disabled)",
            ),
        },
        default_args=default_args(),
    )
    def ent_sync() -> None:
        with TaskGroup("read", tooltip="find tonight's exports"):

            @task
            @fail_fast
            def discover() -> list[dict[str, Any]]:
                """Open the sync run (XCom `run_id`; `run`: what discovery refused or held)
                and return the schools to read in groups of ENTSYNC_READ_GROUP (16; one
                mapped task group each: their rules run together, and one task process
                reads them all), each school with its name when its STS-web export gives it
                (the UI's label of the mapped tasks)."""
                from etl import run as pipeline
                from etl.contracts import dump_all

                dry, schools = _params()
                run, groups = pipeline.open_run(run_settings(), code, dry, schools or None)
                ti = get_current_context()["ti"]
                ti.xcom_push(key=RUN_ID_KEY, value=run.run_id)
                ti.xcom_push(key=RUN_KEY, value=run.to_json())
                return dump_all(groups)

            found = discover()

        # one mapped task group per group of schools: read_validate, then (a streamed
        # night) plan_write, the group planned and written while the next groups are read
        @task_group(group_id="schools", tooltip="each group of schools: read and validate; "
                    "on a streamed night, plan and write it")
        def schools(batch: dict[str, Any]) -> Any:
            # each mapped task is labelled by its schools (`_label`)
            @task(
                multiple_outputs=False,
                map_index_template=LABEL,
                max_active_tis_per_dagrun=4,
            )
            @fail_fast
            def read_validate(batch: dict[str, Any]) -> list[dict[str, Any]]:
                from etl import run as pipeline
                from etl.contracts import ReadGroup, dump_all

                _label(batch)
                run = _run(code)
                return dump_all(pipeline.read_validate_schools(
                    run_settings(), code, run.run_id, ReadGroup.from_json(batch).docs(),
                    run.dry_run))

            # one group planned and written at a time (each against what the others wrote)
            @task(multiple_outputs=False, map_index_template=LABEL,
                  max_active_tis_per_dagrun=1)
            @fail_fast
            def plan_write(batch: dict[str, Any],
                           results: list[dict[str, Any]]) -> dict[str, Any]:
                """A streamed night's group (`ENTSYNC_PLAN_GROUP` not 0, more than one
                group, not a dry run): planned against what the groups before it wrote, its
                absences left for `reconcile`, written. Otherwise nothing: `reconcile` plans
                the academy whole. Returns the group's read results and what it wrote."""
                from etl import run as pipeline
                from etl.contracts import ReadGroup, results_of

                _label(batch)
                tag = ReadGroup.from_json(batch).stream
                part = (pipeline.plan_write_group(run_settings(), _run(code),
                                                  results_of(results), tag, _mode()).to_json()
                        if tag else None)
                return {"results": results, "streamed": part}

            return plan_write(batch, read_validate(batch))

        res = schools.expand(batch=found)

        with TaskGroup("plan", tooltip="identities, logins, plan, disaster guards"):
            # none_failed: also run when read_validate was skipped because no school had new
            # exports, so an empty night still closes its run and writes a summary.
            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def reconcile(groups: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
                """A streamed night's absences, judged once every group is written; else the
                academy's plan, whole."""
                from etl import run as pipeline

                results, parts = _groups(groups)
                return pipeline.reconcile_night(run_settings(), _run(code), results, parts,
                                                _mode()).to_json()

            rec = reconcile(res)

        with TaskGroup("write", tooltip="write the plan into the directory (journaled)"):

            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def apply(rec: dict[str, Any]) -> dict[str, Any]:
                from etl import run as pipeline
                from etl.contracts import Reconciled

                run = _run(code)
                return pipeline.apply_plan(run_settings(), code, run.run_id,
                                           Reconciled.from_json(rec).plan,
                                           dry_run=run.dry_run).to_json()

            app = apply(rec)

        with TaskGroup("close", tooltip="run report; the directory's asset when it changed"):

            @task(trigger_rule="none_failed", multiple_outputs=False)
            @fail_fast
            def report(
                groups: Sequence[dict[str, Any] | None],
                rec: dict[str, Any],
                app: dict[str, Any],
            ) -> dict[str, Any]:
                from etl import run as pipeline
                from etl.contracts import Applied, Discovery, Reconciled

                disc = get_current_context()["ti"].xcom_pull(task_ids=DISCOVER, key=RUN_KEY)
                results, parts = _groups(groups)
                return pipeline.close_run(
                    run_settings(), _run(code), Discovery.from_json(disc),
                    results, Reconciled.from_json(rec) if rec else None,
                    Applied.from_json(app) if app else None, parts,
                ).to_json()

            @task(task_id="publish", outlets=[directory], multiple_outputs=False)
            def publish_run(rep: dict[str, Any]) -> dict[str, Any]:
                """The directory's asset event when this run wrote to it; skipped otherwise."""
                return _publish(directory, code, rep["run_id"], int(rep.get("applied") or 0),
                                list(rep.get("written") or []), "night")

            rep = report(res, rec, app)
            # the button on the report task (the worker computes it when the task ends)
            cast(Any, rep).operator.operator_extra_links = (RunReportLink(),)
            publish_run(rep)

        with TaskGroup("review", tooltip="a guard held a school: ask for its approval, "
                       "outside the night"):

            @task.short_circuit
            def held_plans(rec: dict[str, Any]) -> list[dict[str, Any]] | None:
                """One approval DAG run per school a guard held (its conf: the sync run, the
                school, the plan's hash); nothing held (or a dry run): skipped."""
                from etl import run as pipeline
                from etl.contracts import Reconciled

                reqs = pipeline.approval_requests(_run(code), Reconciled.from_json(rec))
                return [{"trigger_run_id": r.dag_run_id, "conf": r.to_json()}
                        for r in reqs] or None

            held = held_plans(rec)
            # the night triggers and ends: the decision waits in the approval DAG's run
            request = TriggerDagRunOperator.partial(
                task_id="request_approval", trigger_dag_id=academy.approval_dag_id,
                logical_date=None, wait_for_completion=False, skip_when_already_exists=True,
                openlineage_inject_parent_info=False,
            ).expand_kwargs(held)
            rep >> held >> request

    return ent_sync()


def make_approval_dag(academy: Academy) -> Any:
    code = academy.code
    directory = directory_asset(code)

    @dag(
        dag_id=academy.approval_dag_id,
        description=f"Approve or reject a school of {academy.name} held by a disaster guard",
        doc_md=__doc__,
        schedule=None,
        catchup=False,
        # a run per held school, each waiting up to 3 days: they must not queue behind
        # each other, nor behind the nights
        max_active_runs=64,
        is_paused_upon_creation=False,
        allowed_run_types=cast(Any, ["manual", "operator_triggered"]),
        tags=["entsync", code, "approval"],
        params={
            "run_id": Param("", type="string", title="Sync run",
                            description="the night's sync run that held the school"),
            "uai": Param("", type="string", title="School (UAI)"),
            "plan_hash": Param("", type="string", title="Plan hash (sha256)",
                               description="the held plan shown, checked when applied"),
        },
        default_args=default_args(),
    )
    def ent_approval() -> None:
        def request() -> Any:
            from etl.contracts import ApprovalRequest

            p = get_current_context()["params"]
            return ApprovalRequest(run_id=str(p["run_id"]), uai=str(p["uai"]).upper(),
                                   plan_hash=str(p["plan_hash"]))

        @task.short_circuit(task_id=PANEL)
        @fail_fast
        def panel() -> dict[str, Any] | None:
            """What the approver reads, built from the state DB now; None (the rest
            skipped) when the plan was decided meanwhile or superseded by a newer export."""
            from etl import run as pipeline
            from etl.report.page import report_url

            req = request()
            got = pipeline.approval_panel(run_settings(), req,
                                          report_url(_base_url(), req.run_id))
            return None if got is None else got.to_json()

        approval = HITLOperator(
            task_id=APPROVAL,
            subject=f"{{{{ ti.xcom_pull(task_ids='{PANEL}')['subject'] }}}}",
            body=f"{{{{ ti.xcom_pull(task_ids='{PANEL}')['body'] }}}}",
            options=[APPROVE, REJECT],
            defaults=[REJECT],
            response_timeout=APPROVAL_TIMEOUT,
            retries=0,
        )

        @task(multiple_outputs=False, retries=12, max_retry_delay=dt.timedelta(minutes=15))
        @fail_fast
        def apply_decision() -> dict[str, Any]:
            """Apply exactly the plan shown (its hash), or discard it; the run's summary,
            report and status record who decided and when. A night writing the academy
            holds its lock: the retries wait for it (about 2 hours at most)."""
            from etl import run as pipeline

            answer = get_current_context()["ti"].xcom_pull(task_ids=APPROVAL) or {}
            approve = APPROVE in (answer.get("chosen_options") or [])
            return pipeline.decide_request(run_settings(), request(), approve,
                                           _responder(answer))

        @task(task_id="publish", outlets=[directory], multiple_outputs=False)
        def publish_decision(decision: dict[str, Any]) -> dict[str, Any]:
            """The directory's asset event when the approved plan was written."""
            p = get_current_context()["params"]
            applied = {u: int(v.get("applied") or 0) for u, v in decision.items()}
            return _publish(directory, code, str(p["run_id"]), sum(applied.values()),
                            [u for u, n in applied.items() if n], "approval")

        decision = apply_decision()
        panel() >> approval >> cast(Any, decision)
        publish_decision(decision)

    return ent_approval()


for _academy in load_academies().values():
    globals()[_academy.dag_id] = make_dag(_academy)
    globals()[_academy.approval_dag_id] = make_approval_dag(_academy)
