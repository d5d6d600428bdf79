"""The Airflow DAGs: every academy's DAG parses cleanly and cheaply, and one runs end to end.

Airflow never runs in the test process: it would read and write its config and metadata DB
wherever AIRFLOW_HOME points. Every Airflow step runs in a subprocess with its own env.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import ldap3
import pytest
from sqlalchemy import select

from etl.config import Settings, load_academies
from etl.devtools.generate import generate_academy
from etl.devtools.slapd import LdapServer
from etl.report.assets import directory_asset_name
from etl.store.db import session_factory
from etl.store.models import AcademyLock, Run
from tests.ldap_fixture import admin_connection
from tests.paths import REPO

DAGS = REPO / "dags"
AIRFLOW = Path(sys.executable).with_name("airflow")
HEAVY = ("great_expectations", "pandas", "ldap3", "sqlalchemy")

# Runs in a subprocess: what parsing the DAG file imports, then what DagBag makes of the folder.
PROBE = r"""
import json, runpy, sys
import airflow.sdk, pendulum  # what any DAG file pays for; airflow.sdk itself loads sqlalchemy
before = set(sys.modules)
runpy.run_path(sys.argv[1])
added = sorted(set(sys.modules) - before)

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    rv = (dag.get_task("schools.read_validate") if "schools.read_validate" in dag.task_ids
          else None)
    pw = dag.get_task("schools.plan_write") if "schools.plan_write" in dag.task_ids else None
    dags[dag_id] = {
        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "owner": dag.owner,
        "allowed_run_types": sorted(str(getattr(r, "value", r))
                                    for r in dag.allowed_run_types or []),
        "start_date": str(dag.start_date) if dag.start_date else None,
        "run_immediately": str(getattr(dag.timetable, "run_immediately", None)),
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "max_active_runs": dag.max_active_runs,
        "param_schemas": {k: dag.params.get_param(k).schema for k in dag.params},
        "task_ids": sorted(dag.task_ids),
        "schedule": getattr(dag.timetable, "expression", None),
        "timetable_tz": str(getattr(dag.timetable, "timezone", "")),
        "timezone": str(dag.timezone),
        "params": {k: dag.params[k] for k in dag.params},
        "doc_md": dag.doc_md or "",
        "mapped": sorted(t.task_id for t in dag.tasks if "Mapped" in type(t).__name__),
        "map_index_template": getattr(rv, "map_index_template", None) if rv else None,
        "plan_write_template": getattr(pw, "map_index_template", None) if pw else None,
        "max_active": {t.task_id: t.max_active_tis_per_dagrun for t in dag.tasks
                       if t.max_active_tis_per_dagrun},
        "trigger_rules": {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule)
                          for t in dag.tasks},
        "groups": {t.task_id: t.task_group.group_id for t in dag.tasks},
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "backoff": {t.task_id: [t.retry_exponential_backoff,
                                t.max_retry_delay.total_seconds() if t.max_retry_delay else None]
                    for t in dag.tasks},
        "links": {t.task_id: sorted(link.name for link in t.operator_extra_links)
                  for t in dag.tasks if t.operator_extra_links},
        "outlets": {t.task_id: [[a.name, a.uri] for a in t.outlets] for t in dag.tasks
                    if t.outlets},
        "multiple_outputs": sorted(t.task_id for t in dag.tasks
                                   if getattr(t, "multiple_outputs", False)),
        # the mapped task group's argument: [task id, XCom key]
        "expand": {k: [v.operator.task_id, v.key]
                   for k, v in rv.task_group._expand_input.value.items()} if rv else None,
    }
print(json.dumps({"added": added,
                  "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                  "dags": dags}))
"""


def _clean_env(airflow_home: Path) -> dict[str, str]:
    """The parent's environment minus any Airflow or entsync settings, with our AIRFLOW_HOME."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ENTSYNC_", "_AIRFLOW"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PATH": f"{AIRFLOW.parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env



def _snippet(code: str, home: Path, *args: str) -> dict[str, Any]:
    """Run a probe snippet in a fresh interpreter (the DAG file imported there, Airflow's
    settings from ``home``); its last stdout line is JSON."""
    env = _clean_env(home)
    # the DAGs folder on sys.path, as Airflow's bundle DagBag puts it (the DAG files import
    # dags/_entsync_airflow.py)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(DAGS), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code, *args], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))

# --------------------------------------------------------------------------------------------
# Integrity: fast, no slapd
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow_probe")
    return _snippet(PROBE, home, str(DAGS / "ent_sync.py"))


def test_dag_file_parses_without_heavy_imports(probe: dict[str, Any]) -> None:
    # airflow.sdk already brings sqlalchemy; what matters is that the DAG file adds none of
    # these, and none of the etl modules that would need them at parse time.
    # (Airflow's own TriggerDagRunOperator, the night's request for an approval, imports
    # Airflow's ORM models and with them a few sqlalchemy.ext modules: ~0.3 s, Airflow's)
    heavy = [m for m in probe["added"] if m.split(".")[0] in HEAVY
             and not m.startswith("sqlalchemy.ext.")]
    assert heavy == []
    etl = {m for m in probe["added"] if m.startswith("etl")}
    # etl.runtime.logs: the quieted loggers (the standard library's logging only)
    assert etl <= {"etl", "etl.config", "etl.errors", "etl.report", "etl.report.assets",
                   "etl.runtime", "etl.runtime.logs"}, etl


def test_dagbag_has_one_dag_per_academy(probe: dict[str, Any]) -> None:
    assert probe["import_errors"] == {}
    academies = load_academies()
    assert set(probe["dags"]) == {
        "ent_sync__ac_nancy_metz", "ent_approval__ac_nancy_metz",
        "ent_sync__ac_reims", "ent_approval__ac_reims",
        "ent_sync__ac_strasbourg", "ent_approval__ac_strasbourg",
    }
    assert set(probe["dags"]) == {a.dag_id for a in academies.values()} | {
        a.approval_dag_id for a in academies.values()}
    for academy in academies.values():
        dag = probe["dags"][academy.dag_id]
        # one task group per stage, so the ops team reads the graph as the pipeline; the
        # review only asks: the decision is the approval DAG's
        assert dag["groups"] == {
            "read.discover": "read", "schools.read_validate": "schools",
            "schools.plan_write": "schools",
            "plan.reconcile": "plan", "write.apply": "write",
            "close.report": "close", "close.publish": "close",
            "review.held_plans": "review", "review.request_approval": "review",
        }
        # the schools' task group maps over discover's return value, read_validate then
        # plan_write per group; the sync run's id is read at run time (discover's small XCom
        # "run_id"): no edge from discover to every later task
        assert dag["expand"] == {"batch": ["read.discover", "return_value"]}
        assert dag["upstream"] == {
            "read.discover": [], "schools.read_validate": ["read.discover"],
            "schools.plan_write": ["read.discover", "schools.read_validate"],
            "plan.reconcile": ["schools.plan_write"], "write.apply": ["plan.reconcile"],
            "close.report": ["plan.reconcile", "schools.plan_write", "write.apply"],
            "close.publish": ["close.report"],
            "review.held_plans": ["close.report", "plan.reconcile"],
            "review.request_approval": ["review.held_plans"],
        }
        # a dict a task returns is one XCom, not one more per key (each one a request)
        assert dag["multiple_outputs"] == []
        assert dag["map_index_template"] == "{{ school_label }}"
        assert dag["plan_write_template"] == dag["map_index_template"]
        # groups read four at a time, planned and written one at a time
        assert dag["max_active"] == {"schools.read_validate": 4, "schools.plan_write": 1}
        assert set(dag["retries"].values()) == {3}
        assert dag["backoff"]["write.apply"] == [2.0, 900.0]
        # the report task's button, the request's link to the approval DAG run it made, and
        # the directory's asset on the night's publish task
        assert dag["links"] == {"close.report": ["Run report"],
                                "review.request_approval": ["Triggered DAG"]}
        asset = [f"entsync_directory_{academy.code.replace('-', '_')}",
                 f"x-entsync://directory/{academy.code}"]
        assert dag["outlets"] == {"close.publish": [asset]}
        assert dag["schedule"] == academy.schedule
        assert dag["timetable_tz"] == "Europe/Paris"
        # unpausing starts no past night beside the one triggered; no backfill offered
        assert dag["start_date"] is None and dag["run_immediately"] == "0:00:00"
        assert dag["allowed_run_types"] == ["manual", "scheduled"]
        assert dag["max_active_runs"] == 1
        assert dag["owner"] == "entsync-ops"
        # the trigger form: schools optional (no "required" asterisk: its type allows
        # null), mode an enum with a default (no "null" shown)
        assert dag["params"] == {"dry_run": False, "schools": [], "mode": "default"}
        assert "null" in dag["param_schemas"]["schools"]["type"]
        mode = dag["param_schemas"]["mode"]
        assert mode["type"] == "string" and None not in mode["enum"]
        assert mode["enum"] == ["default", "normal", "create_only", "no_disable"]
        assert "ENT directory sync" in dag["doc_md"]
        for words in ("Task groups", "Run report", "entsync_directory_<academy>", "Retries",
                      "transient", "ent_approval__<academy>", "counts as Reject",
                      "supersedes"):
            assert words in dag["doc_md"], words
        # an empty night (read_validate skipped) must still reconcile, apply and report
        for tid in ("plan.reconcile", "write.apply", "close.report"):
            assert dag["trigger_rules"][tid] == "none_failed"

        # the approval DAG: one run per held school, each one waiting for a human
        ap = probe["dags"][academy.approval_dag_id]
        assert ap["upstream"] == {"panel": [], "approval": ["panel"],
                                  "apply_decision": ["approval"],
                                  "publish": ["apply_decision"]}
        assert ap["retries"]["approval"] == 0  # the human step never retries
        assert ap["retries"]["apply_decision"] == 12  # waits for a night writing the academy
        assert ap["outlets"] == {"publish": [asset]}
        assert ap["schedule"] is None and ap["is_paused_upon_creation"] is False
        assert ap["max_active_runs"] > 1  # held schools do not queue behind each other
        assert ap["allowed_run_types"] == ["manual", "operator_triggered"]
        assert ap["params"] == {"run_id": "", "uai": "", "plan_hash": ""}
        assert ap["owner"] == "entsync-ops"


FOLDER = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
print(json.dumps({"errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dags),
                  "files": sorted({d.fileloc.rsplit("/", 1)[-1] for d in bag.dags.values()})}))
"""


def test_the_dags_folder_holds_one_sync_dag_per_academy_and_the_lifecycle(tmp_path: Path) -> None:
    """The folder as Airflow parses it: one sync DAG and one GAR export DAG per academy
    configured, the lifecycle and audit DAGs, and the shared module (`_entsync_airflow.py`, in
    .airflowignore) no DAG file."""
    got = _snippet(FOLDER, tmp_path / "home", str(DAGS))
    assert got["errors"] == {}
    academies = load_academies()
    assert len(got["dags"]) == 3 * len(academies) + 2
    assert set(got["dags"]) == ({a.dag_id for a in academies.values()}
                                | {a.gar_dag_id for a in academies.values()}
                                | {a.approval_dag_id for a in academies.values()}
                                | {"ent_lifecycle", "ent_audit"})
    assert got["files"] == ["ent_audit.py", "ent_lifecycle.py", "ent_sync.py", "gar_export.py"]
    assert "_entsync_airflow.py" in (DAGS / ".airflowignore").read_text("utf-8").split()


LIFECYCLE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
dag = bag.dags["ent_lifecycle"]
print(json.dumps({"errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                  "tasks": {t.task_id: [t.retries, t.retry_exponential_backoff]
                            for t in dag.tasks},
                  "doc_md": dag.doc_md}))
"""


def test_lifecycle_dag_retries_like_the_sync(tmp_path: Path) -> None:
    got = _snippet(LIFECYCLE, tmp_path / "home", str(DAGS / "ent_lifecycle.py"))
    assert got["errors"] == {}
    assert got["tasks"] == {f"purge__{c.replace('-', '_')}": [3, 2.0] for c in load_academies()}
    assert "transient" in got["doc_md"]


AUDIT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
dag = bag.dags["ent_audit"]
print(json.dumps({"errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                  "tasks": {t.task_id: [t.retries, t.retry_exponential_backoff]
                            for t in dag.tasks},
                  "schedule": getattr(dag.timetable, "expression", None),
                  "params": {k: dag.params[k] for k in dag.params},
                  "doc_md": dag.doc_md}))
"""


def test_audit_dag_audits_each_academy_weekly(tmp_path: Path) -> None:
    """``ent_audit``: one thin task per academy (``etl.audit.stage.airflow_audit``), weekly,
    with the ``repair`` and ``schools`` params, retried only on transient failures."""
    got = _snippet(AUDIT, tmp_path / "home", str(DAGS / "ent_audit.py"))
    assert got["errors"] == {}
    assert got["tasks"] == {f"audit__{c.replace('-', '_')}": [3, 2.0] for c in load_academies()}
    assert got["schedule"] == "0 6 * * 0"
    assert got["params"] == {"repair": False, "schools": []}
    assert "transient" in got["doc_md"] and "entsync approve" in got["doc_md"]


# The DAG file's retry policy and failure callback, called directly (in a subprocess: importing
# the DAG file imports airflow). Each exception kind through `fail_fast`: what Airflow sees.
POLICY = r"""
import inspect, json, runpy, sys
import ldap3.core.exceptions as lx
import sqlalchemy.exc as sx
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from etl.errors import ConfigError, DirectoryError, FileRejected, RunLocked
from etl.errors import ApprovalRefused

dag_file = runpy.run_path(sys.argv[1])
fail_fast = dag_file["fail_fast"]
cases = {
    "ldap_down": lx.LDAPSocketOpenError("socket connection error: [Errno 111] refused"),
    "ldap_busy": lx.LDAPBusyResult("busy"),
    "state_db_locked": sx.OperationalError("UPDATE runs", {}, Exception("database is locked")),
    "connection_reset": ConnectionResetError(104, "reset"),
    "run_locked": RunLocked("academy ac-reims is being written by run r0"),
    "bad_credentials": DirectoryError("bind as cn=entsync refused: invalidCredentials"),
    "untrusted_certificate": DirectoryError("LDAPS failed: certificate not trusted"),
    "file_rejected": FileRejected("ELEVES.xml", "no UAJ"),
    "config": ConfigError("unknown academy"),
    "approval_refused": ApprovalRefused("plan changed"),
    "bug": KeyError("plan"),
    "skip": AirflowSkipException("nothing to do"),
}
out = {}
for name, exc in cases.items():
    @fail_fast
    def task_body(a, b=2, *, exc=exc):
        raise exc
    try:
        task_body(1)
    except AirflowFailException as e:
        out[name] = ["fail_now", type(e.__cause__).__name__, str(e)]
    except Exception as e:
        out[name] = ["retry" if e is exc else "other", type(e).__name__, ""]
out["signature"] = str(inspect.signature(task_body))
out["name"] = task_body.__name__

# the failure callback, with a context shaped like Airflow's
calls = []
class Pipeline:
    @staticmethod
    def fail_run(settings, run_id, reason):
        calls.append([run_id, reason])
import etl
etl.run = Pipeline  # what `from etl import pipeline` inside the callback picks up
sys.modules["etl.run"] = Pipeline
on_task_failure = dag_file["default_args"]()["on_failure_callback"]
on_task_failure.__globals__["run_settings"] = lambda: "settings"
class TI:
    task_id = "schools.read_validate"
    rendered_map_index = "0670001A"
    def xcom_pull(self, task_ids, key="return_value"):
        found = task_ids == "read.discover" and key == "run"
        return {"run_id": "ac-strasbourg-x"} if found else None
try:
    raise AirflowFailException("DirectoryError: not retried") from DirectoryError("x")
except AirflowFailException as e:
    err = e
on_task_failure({"ti": TI(), "exception": err})
out["callback"] = calls
print(json.dumps(out))
"""


def test_only_transient_failures_are_left_to_airflow_retries(tmp_path: Path) -> None:
    got = _snippet(POLICY, tmp_path / "home", str(DAGS / "ent_sync.py"))
    for name in ("ldap_down", "ldap_busy", "state_db_locked", "connection_reset", "run_locked"):
        assert got[name][0] == "retry", (name, got[name])  # raised as is: Airflow retries
    for name, cause in (("bad_credentials", "DirectoryError"),
                        ("untrusted_certificate", "DirectoryError"),
                        ("file_rejected", "FileRejected"), ("config", "ConfigError"),
                        ("approval_refused", "ApprovalRefused"), ("bug", "KeyError")):
        kind, raised_from, message = got[name]
        assert (kind, raised_from) == ("fail_now", cause), (name, got[name])
        assert message == f"{cause}: not retried (no retry can fix it)"  # type only, no text
    assert got["skip"] == ["retry", "AirflowSkipException", ""]  # Airflow's own: untouched
    # @task still sees the task's own signature and name
    assert got["signature"].startswith("(a, b=2, *, exc=")
    assert got["name"] == "task_body"
    # the failure callback closes the run, naming the task, the school and the root error
    assert got["callback"] == [["ac-strasbourg-x",
                                "Airflow task schools.read_validate (school 0670001A) failed: "
                                "DirectoryError"]]


# discover's own callable, with the academy locked by a live run: RunLocked goes to Airflow's
# retries as is, and the run this try opened is closed ("refused"), not left "running".
LOCKED = r"""
import json, runpy, sys
from sqlalchemy import select
from etl import run as pipeline
from etl.config import Settings
from etl.errors import RunLocked
from etl.store.db import session_factory
from etl.store.models import AcademyLock, Run

import etl.preflight

dag_file = runpy.run_path(sys.argv[1])
settings = Settings.from_env({"ENTSYNC_WORKDIR": sys.argv[2]})
(settings.landing / "ac-reims").mkdir(parents=True)  # the preflight's landing check passes
etl.preflight.check_bind = lambda settings: None  # no directory here: this is about the lock
holder = pipeline.start_run(settings, "ac-reims", trigger="cli")  # holds the lock
task = dag_file["ent_sync__ac_reims"].get_task("read.discover")
g = task.python_callable.__wrapped__.__globals__
g["run_settings"] = lambda: settings
g["_params"] = lambda: (False, [])
try:
    task.python_callable()
    raised = None
except RunLocked as e:
    raised = type(e).__name__
with session_factory(settings.state_url)() as s:
    runs = {r.id: [r.status, (r.summary or {}).get("error")] for r in s.scalars(select(Run))}
    lock = s.get(AcademyLock, "ac-reims").run_id
print(json.dumps({"raised": raised, "holder": holder, "runs": runs, "lock": lock}))
"""


def test_a_discover_try_that_finds_the_academy_locked_closes_its_run(tmp_path: Path) -> None:
    got = _snippet(LOCKED, tmp_path / "home", str(DAGS / "ent_sync.py"), str(tmp_path / "work"))
    assert got["raised"] == "RunLocked"  # transient: left to Airflow's retries
    holder = got["holder"]
    assert got["lock"] == holder  # still the holder's
    assert got["runs"].pop(holder) == ["running", None]
    [(status, error)] = got["runs"].values()
    assert status == "refused" and f"is being written by run {holder}" in error


# --------------------------------------------------------------------------------------------
# End to end: a real Airflow run against the session slapd
# --------------------------------------------------------------------------------------------


class AirflowRunner:
    """`airflow dags test` in a subprocess, against a throwaway SQLite metadata DB."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env

    def run(self, *args: str, timeout: int = 240, check: bool = True) -> str:
        out = subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.home,
        )
        log = out.stdout + out.stderr
        (self.home / "last.log").write_text(log, "utf-8")
        assert not check or out.returncode == 0, f"airflow {' '.join(args)} failed:\n{log[-5000:]}"
        return log

    def dag_test(
        self, dag_id: str, workdir: Path, landing: Path, conf: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run the DAG once and return the summary.json its report task wrote."""
        self.env.update(ENTSYNC_WORKDIR=str(workdir), ENTSYNC_LANDING=str(landing))
        before = set(workdir.glob("reports/*/summary.json"))
        args = ["dags", "test", dag_id]
        if conf is not None:
            args += ["-c", json.dumps(conf)]
        self.run(*args)  # `airflow dags test` exits non-zero when the DAG run failed
        new = set(workdir.glob("reports/*/summary.json")) - before
        assert len(new) == 1, f"expected one new run summary, got {sorted(new)}"
        summary: dict[str, Any] = json.loads(new.pop().read_text("utf-8"))
        return summary


@pytest.fixture(scope="module")
def airflow_runner(tmp_path_factory: pytest.TempPathFactory, slapd: LdapServer) -> AirflowRunner:
    """One Airflow home per module: `airflow db migrate` runs once."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = _clean_env(home)
    env.update(slapd.env())
    # INFO costs ~2 s per run in log rendering; task failures are still logged with traceback
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    runner = AirflowRunner(home, env)
    runner.run("db", "migrate", timeout=180)
    return runner


def _snapshot(conn: ldap3.Connection, base: str) -> dict[str, str]:
    """Every entry's DN and entryCSN: any write to any entry changes it."""
    entries = conn.extend.standard.paged_search(
        base, "(objectClass=*)", attributes=["entryCSN"], paged_size=1000, generator=False
    )
    snap = {
        e["dn"].lower(): str(e["attributes"].get("entryCSN") or "")
        for e in entries
        if e.get("type") == "searchResEntry"
    }
    assert snap and all(snap.values()), "entryCSN missing: the snapshot would prove nothing"
    return snap


def _people(
    conn: ldap3.Connection, base: str, profile: str, school_dns: list[str]
) -> list[dict[str, Any]]:
    rattach = "".join(
        f"(ENTPersonStructRattach={ldap3.utils.conv.escape_filter_chars(d)})" for d in school_dns
    )
    entries = conn.extend.standard.paged_search(
        f"ou=people,{base}",
        f"(&(ENTPersonProfils=National_{profile})(|{rattach}))",
        attributes=["*"],
        paged_size=1000,
        generator=False,
    )
    return [e for e in entries if e.get("type") == "searchResEntry"]


def _lower(values: Any) -> set[str]:
    return {str(v).lower() for v in (values if isinstance(values, list) else [values])}


def _metadata(runner: AirflowRunner, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the Airflow metadata DB of the runner (SQLite in its home)."""
    db = runner.home / "airflow.db"
    assert db.is_file(), db
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql, params).fetchall())


def _asset_events(runner: AirflowRunner, academy: str) -> list[dict[str, Any]]:
    """The directory asset's events (their extra), oldest first."""
    rows = _metadata(runner, "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
                     " WHERE a.name = ? ORDER BY e.id", directory_asset_name(academy))
    return [json.loads(r[0]) if isinstance(r[0], str) else dict(r[0] or {}) for r in rows]


@pytest.mark.airflow
@pytest.mark.ldap
def test_academy_dag_runs_end_to_end(
    airflow_runner: AirflowRunner, slapd: LdapServer, tmp_path: Path
) -> None:
    academy, dag_id, prefix = "ac-reims", "ent_sync__ac_reims", "AC-REIMS$"
    landing, workdir = tmp_path / "landing", tmp_path / "work"
    gen = generate_academy(landing, academy, schools=2, pupils_per_school=60, seed=4242)
    school_dns = [f"ENTStructureUAI={u},ou=structures,{slapd.base}" for u in gen.schools]

    # 1. first night: everything is created
    first = airflow_runner.dag_test(dag_id, workdir, landing)
    assert first["status"] == "success"
    assert first["applied"] == first["changes"] > 0 and first["failed"] == 0
    # the directory changed: one event of the academy's asset, naming the run and schools
    assert _asset_events(airflow_runner, academy) == [
        {"run_id": first["run_id"], "academy": academy, "applied": first["applied"],
         "schools": sorted(gen.schools), "by": "night"}]
    assert set(first["schools"]) == set(gen.schools)
    assert {s["status"] for s in first["schools"].values()} == {"ok"}
    # one mapped task per group of up to 16 schools (their rules run together), labelled
    # with its schools: the first one's UAI and name (its STS-web export's), the last's UAI
    labels = [r[0] for r in _metadata(
        airflow_runner, "SELECT rendered_map_index FROM task_instance WHERE dag_id = ? AND "
        "task_id = 'schools.read_validate' AND map_index >= 0", dag_id)]
    first_uai, last_uai = gen.schools[0], gen.schools[-1]
    assert len(labels) == 1, labels
    assert labels[0].startswith((f"{first_uai} COLLEGE ", f"{first_uai} LYCEE ")), labels
    assert labels[0].endswith(f" … {last_uai} (2 schools)"), labels

    conn = admin_connection(slapd)
    try:
        pupils = _people(conn, slapd.base, "ELV", school_dns)
        guardians = _people(conn, slapd.base, "TUT", school_dns)
        teachers = _people(conn, slapd.base, "ENS", school_dns)
        assert 0.9 * gen.pupils <= len(pupils) <= gen.pupils
        assert guardians and teachers
        logins: list[str] = []
        for entries, profile_class in (
            (pupils, "ENTEleve"),
            (guardians, "ENTAuxPersRelEleve"),
            (teachers, "ENTAuxEnseignant"),
        ):
            for e in entries:
                a = e["attributes"]
                object_classes = _lower(a["objectClass"])
                assert {
                    "inetorgperson",
                    "entperson",
                    "entsyncaccount",
                    profile_class.lower(),
                } <= object_classes, e["dn"]
                assert a["ENTPersonJointure"] and all(
                    j.startswith(prefix) for j in a["ENTPersonJointure"]
                ), e["dn"]
                assert len(a["ENTPersonLogin"]) == 1
                logins.append(a["ENTPersonLogin"][0])
                assert a["entSyncStatus"] == ["ACTIVE"]
        assert len(logins) == len(set(logins)), "logins must be unique"
        assert all(e["attributes"]["ENTEleveClasses"] for e in pupils)
        assert all(e["attributes"]["ENTAuxPersRelEleveEleve"] for e in guardians)

        pupil_dns = {e["dn"].lower() for e in pupils}
        for sdn in school_dns:
            conn.search(sdn, "(objectClass=ENTClasse)", attributes=["cn", "member"])
            classes = [e for e in conn.response if e.get("type") == "searchResEntry"]
            assert classes, f"no class under {sdn}"
            assert any(_lower(c["attributes"]["member"]) & pupil_dns for c in classes)

        # 2. same inputs again: nothing to write, nothing written
        before = _snapshot(conn, slapd.base)
        second = airflow_runner.dag_test(dag_id, workdir, landing)
        assert second["status"] == "success"
        assert second["applied"] == 0 and second["changes"] == 0
        assert _snapshot(conn, slapd.base) == before
        assert len(_asset_events(airflow_runner, academy)) == 1  # no change, no new event

        shutil.rmtree(landing / academy)
        generate_academy(
            landing,
            academy,
            schools=2,
            pupils_per_school=65,
            seed=4242,
            export_date=dt.date(2026, 10, 2),
        )
        # 3. the next night's exports, in a dry run limited to one school: planned for that
        #    school only, reported, not written
        one = gen.schools[0]
        dry = airflow_runner.dag_test(
            dag_id, workdir, landing, conf={"dry_run": True, "schools": [one.lower()]}
        )
        assert dry["status"] == "dry_run" and dry["dry_run"] is True
        # (the other school may appear as "collateral": its groups lose people disabled here)
        assert {u for u, v in dry["schools"].items() if v["status"] != "collateral"} == {one}
        # a different seed: different people, so tonight's plan also disables last night's
        # accounts and the disable guard holds it (counted apart, still nothing written)
        assert dry["changes"] + dry["held_changes"] > 0 and dry["applied"] == 0
        assert _snapshot(conn, slapd.base) == before
        assert len(_asset_events(airflow_runner, academy)) == 1  # a dry run writes nothing
    finally:
        conn.unbind()


@pytest.mark.airflow
@pytest.mark.ldap
def test_a_streamed_night_in_airflow_writes_what_one_plan_writes(
    airflow_runner: AirflowRunner, server: LdapServer, tmp_path: Path
) -> None:
    """Three groups of one school (ENTSYNC_READ_GROUP=1): each mapped task group reads its
    school and plans and writes it (plan_write), the absences after the last; the directory
    is the one a single plan of the academy gives (a CLI run into a slapd of its own)."""
    from etl import run as pipeline
    from etl.contracts import RunRequest
    from etl.devtools.slapd import start_slapd, stop_slapd
    from tests.integration.test_stream import dump

    academy, dag_id = "ac-strasbourg", "ent_sync__ac_strasbourg"
    landing = tmp_path / "landing"
    gen = generate_academy(landing, academy, schools=3, pupils_per_school=40, seed=77)
    saved = dict(airflow_runner.env)
    airflow_runner.env.update(server.env(), ENTSYNC_READ_GROUP="1",
                              ENTSYNC_STATE_URL=f"sqlite:///{tmp_path / 'state.db'}")
    try:
        first = airflow_runner.dag_test(dag_id, tmp_path / "work", landing)
        assert first["status"] == "success", first
        assert first["applied"] == first["changes"] > 0 and first["failed"] == 0
        assert {v["status"] for v in first["schools"].values()} == {"ok"}
        labels = sorted(r[0] for r in _metadata(
            airflow_runner, "SELECT rendered_map_index FROM task_instance WHERE dag_id = ? "
            "AND task_id = 'schools.plan_write' AND map_index >= 0 AND run_id = "
            "(SELECT MAX(run_id) FROM task_instance WHERE dag_id = ? AND "
            "task_id = 'schools.plan_write')", dag_id, dag_id))
        assert [x.split(" ")[0] for x in labels] == sorted(gen.schools), labels
        streamed = dump(server)
        second = airflow_runner.dag_test(dag_id, tmp_path / "work", landing)
        assert second["status"] == "success"
        assert second["changes"] == 0 and second["applied"] == 0, second
    finally:
        airflow_runner.env.clear()
        airflow_runner.env.update(saved)
    ref = start_slapd(tmp_path / "ref")
    try:
        env = Settings.from_env({
            "ENTSYNC_LANDING": str(landing), "ENTSYNC_WORKDIR": str(tmp_path / "ref-work"),
            "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'ref.db'}",
            "ENTSYNC_PLAN_GROUP": "0", **ref.env()})
        assert pipeline.run_sync(env, RunRequest(academy))["status"] == "success"
        assert dump(ref) == streamed
    finally:
        stop_slapd(tmp_path / "ref")


@pytest.mark.airflow
@pytest.mark.ldap
def test_dag_run_with_no_school_succeeds(airflow_runner: AirflowRunner, tmp_path: Path) -> None:
    """An empty landing zone: read_validate maps over nothing, the run still reports."""
    landing = tmp_path / "landing"
    (landing / "ac-strasbourg").mkdir(parents=True)  # the academy's folder, empty
    summary = airflow_runner.dag_test("ent_sync__ac_strasbourg", tmp_path / "work", landing)
    assert summary["status"] == "success"
    assert summary["schools"] == {} and summary["changes"] == 0 and summary["applied"] == 0


@pytest.mark.airflow
@pytest.mark.ldap
def test_a_task_no_retry_can_fix_fails_at_once_and_closes_the_run(
    airflow_runner: AirflowRunner, tmp_path: Path
) -> None:
    """Wrong directory password: the night's first task, `read.discover`, fails on its first
    try (its preflight binds before anything is read; DirectoryError is not transient,
    retries=3 notwithstanding), the failure callback closes the sync run as failed naming the
    task and the error type, and the academy's lock is released."""
    academy, dag_id = "ac-nancy-metz", "ent_sync__ac_nancy_metz"
    landing, workdir = tmp_path / "landing", tmp_path / "work"
    generate_academy(landing, academy, schools=1, pupils_per_school=20, seed=99)
    runner = AirflowRunner(airflow_runner.home, {
        **airflow_runner.env, "ENTSYNC_WORKDIR": str(workdir), "ENTSYNC_LANDING": str(landing),
        "ENTSYNC_LDAP_PASSWORD": "not-the-password"})
    log = runner.run("dags", "test", dag_id, check=False)

    tis = dict(_metadata(runner, "SELECT t.task_id, t.state || ':' || t.try_number "
                         "FROM task_instance t JOIN dag_run r ON r.run_id = t.run_id "
                         "AND r.dag_id = t.dag_id WHERE t.dag_id = ? AND r.id = "
                         "(SELECT max(id) FROM dag_run WHERE dag_id = ?)", dag_id, dag_id))
    assert tis["read.discover"] == "failed:1", (tis, log[-3000:])  # one try, no retry
    assert tis["plan.reconcile"] == "upstream_failed:0", tis  # nothing read or planned
    assert tis["close.report"] == "upstream_failed:0"  # never ran
    assert "not retried" in log and "DirectoryError" in log

    settings = Settings.from_env({"ENTSYNC_WORKDIR": str(workdir)})
    with session_factory(settings.state_url)() as s:
        runs = list(s.scalars(select(Run).where(Run.academy == academy)))
        assert len(runs) == 1
        run = runs[0]
        assert run.status == "failed" and run.ended_at is not None
        error = str((run.summary or {}).get("error"))
        assert "discover" in error and error.endswith("DirectoryError"), error
        assert s.get(AcademyLock, academy) is None  # released: the next run need not wait
    assert "not-the-password" not in log


@pytest.mark.airflow
@pytest.mark.ldap
def test_the_next_night_runs_while_a_school_awaits_approval(
    airflow_runner: AirflowRunner, server: LdapServer, tmp_path: Path
) -> None:
    """Issue 25: a held school no longer keeps the night's DagRun open. The night that
    holds it ends (success) after asking the academy's approval DAG for one run, which
    waits for a human; the next night of the same academy runs and succeeds while that run
    waits (the held school's same export waits, the other school is written); the decision,
    taken afterwards as the approval DAG's `apply_decision` takes it, is recorded in the
    held run's summary."""
    from etl import run as pipeline
    from etl.config import get_academy
    from etl.contracts import ApprovalRequest
    from tests.integration.test_lifecycle import ACADEMY, UAI, UAI_2, drop, roster

    dag_id, approval_dag = get_academy(ACADEMY).dag_id, get_academy(ACADEMY).approval_dag_id
    landing, workdir = tmp_path / "landing", tmp_path / "work"
    settings = Settings.from_env({"ENTSYNC_LANDING": str(landing),
                                  "ENTSYNC_WORKDIR": str(workdir), **server.env()})
    runner = AirflowRunner(airflow_runner.home, {**airflow_runner.env, **server.env()})
    normal = {"mode": "normal"}  # whatever the date: no roll-over mode, the guards apply

    drop(settings, roster(30), day=1)
    drop(settings, roster(10, uai=UAI_2), day=1, uai=UAI_2)
    assert runner.dag_test(dag_id, workdir, landing, normal)["status"] == "success"

    # night 2: 30 % of UAI's pupils missing: held; the night's DagRun ends all the same
    drop(settings, roster(30, skip=set(range(0, 30, 3))), day=2)
    held = runner.dag_test(dag_id, workdir, landing, normal)
    assert held["status"] == "awaiting_approval"
    assert held["schools"][UAI]["status"] == "awaiting_approval"
    night_runs = _metadata(runner, "SELECT run_id, state FROM dag_run WHERE dag_id = ? "
                           "ORDER BY id", dag_id)
    assert [s for _r, s in night_runs[-2:]] == ["success", "success"]  # (the module's
    # other tests ran the academy's DAG too)
    tis = dict(_metadata(runner, "SELECT task_id, state FROM task_instance WHERE dag_id = ? "
                         "AND run_id = ?", dag_id, night_runs[-1][0]))
    assert tis["review.held_plans"] == tis["review.request_approval"] == "success"
    # ... and asked the approval DAG for one run: that school, that plan
    [p] = pipeline.pending_approvals(settings, held["run_id"])
    req = ApprovalRequest(run_id=held["run_id"], uai=UAI, plan_hash=p["plan_hash"])
    [(run_id, state, conf)] = _metadata(
        runner, "SELECT run_id, state, conf FROM dag_run WHERE dag_id = ?", approval_dag)
    assert run_id == req.dag_run_id and state in ("queued", "running")
    got_conf = json.loads(conf) if isinstance(conf, str) else conf
    assert got_conf == req.to_json()

    # night 3, while the approval waits: the other school's new pupils are written
    drop(settings, roster(12, uai=UAI_2), day=3, uai=UAI_2)
    third = runner.dag_test(dag_id, workdir, landing, normal)
    assert third["status"] == "success"
    assert third["schools"][UAI_2]["status"] == "ok" and third["schools"][UAI_2]["created"] == 4
    assert third["schools"][UAI]["status"] == "awaiting_approval"
    assert third["schools"][UAI]["pending_run"] == held["run_id"]
    assert [s for (s,) in _metadata(runner, "SELECT state FROM dag_run WHERE dag_id = ?",
                                    dag_id)][-1] == "success"
    # no second request for the same plan
    assert len(_metadata(runner, "SELECT run_id FROM dag_run WHERE dag_id = ?",
                         approval_dag)) == 1

    # the decision (the approval DAG's apply_decision) afterwards: recorded in the held run
    decided = pipeline.decide_request(settings, req, approve=True, by="admin")
    assert decided[UAI]["decision"] == "approved" and decided[UAI]["applied"] > 0
    summary = json.loads((workdir / "reports" / held["run_id"] / "summary.json")
                         .read_text("utf-8"))
    assert summary["status"] == "success"
    assert summary["decisions"][UAI]["decision"] == "approved"
    assert summary["decisions"][UAI]["by"] == "admin"


QUIET = r"""
import io, json, logging, sys
sys.path.insert(0, sys.argv[1])
import _entsync_airflow  # what a task's process imports with the DAG file
out = io.StringIO()
handler = logging.StreamHandler(out)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
import great_expectations.data_context.types.base as gx_base  # sets its logger to INFO
from alembic.runtime import migration
gx_base.logger.info("Created temporary directory '/tmp/x' for ephemeral docs site")
migration.log.info("Context impl SQLiteImpl.")
gx_base.logger.warning("a real GX warning")
logging.getLogger("etl.run").info("entsync's own line")
print(json.dumps(out.getvalue().splitlines()))
"""


def test_tasks_do_not_log_great_expectations_and_alembic_chatter(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", QUIET, str(DAGS)], env=_clean_env(tmp_path),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = json.loads(out.stdout.strip().splitlines()[-1])
    assert lines == ["a real GX warning", "entsync's own line"]
