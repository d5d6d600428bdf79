"""Production shape: PostgreSQL for Airflow's metadata and for the state DB, the
CeleryExecutor with two workers, the staging area shared through its URL (the Airflow
connection ``entsync_staging``, which the DAG turns into an ObjectStoragePath).

The test creates two fresh PostgreSQL databases (Airflow metadata; entsync state), configures
Airflow only through ``AIRFLOW__*`` variables (CeleryExecutor, Redis broker on a database of
its own, result backend in the metadata DB), runs ``airflow db migrate``, starts the
api-server (the workers' execution API), scheduler, dag-processor and two ``airflow celery
worker`` processes (concurrency 1, different names), a slapd of its own, generates an
academy's exports with ``entsync generate`` and triggers that academy's DAG. It checks that
the run succeeded, the directory holds the accounts, task instances ran on both workers (the
``hostname`` column of ``task_instance``: each worker reports its own name through
``[core] hostname_callable``, as two machines would), and the state DB rows are in
PostgreSQL (and ``entsync status`` reads them). Every process started is stopped and both
databases dropped, even on failure.

Needs PostgreSQL at 127.0.0.1:5432 (``ENTSYNC_TEST_PG_URL``) and Redis at 127.0.0.1:6379
(``ENTSYNC_TEST_REDIS_URL``): skipped without them, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import Engine, create_engine, text

from etl.devtools.slapd import start_slapd, stop_slapd
from tests.integration.test_sync import people
from tests.paths import REPO

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.ldap]

BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"
PG_ADMIN = os.environ.get("ENTSYNC_TEST_PG_URL",
                          "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("ENTSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ACADEMY, DAG_ID = "ac-reims", "ent_sync__ac_reims"
SCHOOLS, PUPILS = 3, 40
WORKERS = ("entsync-worker-1", "entsync-worker-2")
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 420  # one DAG run of ~10 tasks on a loaded 2-core machine

HOSTNAME_MODULE = '''
import os


def hostname():
    """The name this worker reports in task_instance.hostname (two machines' worth)."""
    return os.environ["ENTSYNC_TEST_WORKER_NAME"]
'''


def _unavailable(what: str, err: Exception) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI and not reachable: {err}")
    pytest.skip(f"no {what}: {err}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pg_admin() -> Iterator[Engine]:
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("select 1"))
    except Exception as e:
        _unavailable(f"PostgreSQL at {PG_ADMIN}", e)
    yield admin
    admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    db = secrets.randbelow(14) + 2  # a database of the test's own (not 0 nor 1)
    url = f"{REDIS}/{db}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
    except Exception as e:
        _unavailable(f"Redis at {REDIS}", e)
    yield url
    with contextlib.suppress(Exception):
        client.flushdb()
        client.close()


@pytest.fixture
def databases(pg_admin: Engine) -> Iterator[dict[str, str]]:
    """Two fresh databases: Airflow's metadata and entsync's state."""
    tag = secrets.token_hex(4)
    names = {"airflow": f"entsync_af_{tag}", "state": f"entsync_state_{tag}"}
    base = PG_ADMIN.rsplit("/", 1)[0]
    with pg_admin.connect() as c:
        for n in names.values():
            c.execute(text(f'CREATE DATABASE "{n}"'))
    try:
        yield {k: f"{base}/{n}" for k, n in names.items()}
    finally:
        from etl.store.db import dispose_all

        dispose_all()
        with pg_admin.connect() as c:
            for n in names.values():
                c.execute(text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))


class Processes:
    """The Airflow components, each in a process group of its own, output to a log file."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self._files.append(out)
        self.procs[name] = subprocess.Popen(args, env=env, cwd=cwd, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def log(self, name: str) -> str:
        p = self.logs / f"{name}.log"
        return p.read_text("utf-8", "replace") if p.exists() else ""

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"exited: {dead}\n" + "\n".join(
            f"--- {n}\n{self.log(n)[-3000:]}" for n in dead)

    def stop_all(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():  # children (task processes) may outlive their parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for f in self._files:
            f.close()


def _airflow(env: dict[str, str], cwd: Path, *args: str, timeout: int = 300) -> str:
    out = subprocess.run([str(BIN / "airflow"), *args], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=timeout, check=False)
    assert out.returncode == 0, f"airflow {' '.join(args)}:\n{(out.stdout + out.stderr)[-4000:]}"
    return out.stdout


def _wait(what: str, probe: Any, procs: Processes, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            last = probe()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"{what}: not after {timeout:.0f}s (last: {last!r})")


def test_dag_runs_on_two_celery_workers_with_postgresql(
        tmp_path: Path, databases: dict[str, str], redis_url: str) -> None:
    home, logs = tmp_path / "airflow", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    (tmp_path / "pylib").mkdir()
    (tmp_path / "pylib" / "entsync_test_hostname.py").write_text(HOSTNAME_MODULE, "utf-8")
    landing, workdir = tmp_path / "landing", tmp_path / "work"
    staging = tmp_path / "shared-staging"  # what every worker reaches (s3:// on real machines)
    port = _free_port()
    af_db = databases["airflow"]
    server = start_slapd(tmp_path / "slapd")
    procs = Processes(logs)
    try:
        gen = subprocess.run([str(BIN / "entsync"), "generate", "--academy", ACADEMY,
                              "--schools", str(SCHOOLS), "--pupils-per-school", str(PUPILS),
                              "--seed", "31", "--out", str(landing)],
                             capture_output=True, text=True, timeout=120, check=True)
        generated = json.loads(gen.stdout)

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "_AIRFLOW", "ENTSYNC_"))}
        env.update({
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "pylib"), str(REPO)]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": af_db,
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + af_db,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run we trigger
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "ENTSYNC_LANDING": str(landing),
            "ENTSYNC_WORKDIR": str(workdir),
            "ENTSYNC_STATE_URL": databases["state"],
            # one school per read task: the schools' reading spreads over both workers
            "ENTSYNC_READ_GROUP": "1",
            # the staging area through the DAG's ObjectStoragePath: the only place its URL is
            # given is this connection (no ENTSYNC_STAGING_URL)
            "AIRFLOW_CONN_ENTSYNC_STAGING": json.dumps(
                {"conn_type": "fs", "extra": {"url": staging.as_uri()}}),
            **server.env(),
        })
        _airflow(env, home, "db", "migrate")
        af = create_engine(af_db)
        procs.start("api-server", [str(BIN / "airflow"), "api-server"], env, home)
        procs.start("scheduler", [str(BIN / "airflow"), "scheduler"], env, home)
        procs.start("dag-processor", [str(BIN / "airflow"), "dag-processor"], env, home)
        for name in WORKERS:
            procs.start(name, [str(BIN / "airflow"), "celery", "worker",
                               "--celery-hostname", f"{name}@%h", "--concurrency", "1",
                               "--skip-serve-logs", "--pid", str(home / f"{name}.pid")],
                        {**env, "ENTSYNC_TEST_WORKER_NAME": name,
                         "AIRFLOW__CORE__HOSTNAME_CALLABLE": "entsync_test_hostname.hostname"},
                        home)

        def health() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health",
                                        timeout=5) as r:
                h = json.loads(r.read().decode())
            return all((h.get(k) or {}).get("status") == "healthy"
                       for k in ("metadatabase", "scheduler", "dag_processor"))

        def parsed() -> bool:
            with af.connect() as c:
                return bool(c.execute(text("select count(*) from serialized_dag where "
                                           "dag_id = :d"), {"d": DAG_ID}).scalar())

        _wait("Airflow healthy", health, procs, START_TIMEOUT_S)
        _wait(f"{DAG_ID} parsed", parsed, procs, START_TIMEOUT_S)
        for name in WORKERS:
            _wait(f"{name} ready", lambda n=name: " ready." in procs.log(n), procs,
                  START_TIMEOUT_S)

        _airflow(env, home, "dags", "unpause", DAG_ID)
        _airflow(env, home, "dags", "trigger", DAG_ID)

        def finished() -> str | None:
            with af.connect() as c:
                state = c.execute(text("select state from dag_run where dag_id = :d "
                                       "order by id desc limit 1"), {"d": DAG_ID}).scalar()
            return str(state) if state in ("success", "failed") else None

        state = _wait(f"{DAG_ID} run finished", finished, procs, RUN_TIMEOUT_S)
        with af.connect() as c:
            rows = c.execute(text(
                "select ti.task_id, ti.map_index, ti.state, ti.hostname, ti.queue "
                "from task_instance ti join dag_run dr on dr.run_id = ti.run_id "
                "and dr.dag_id = ti.dag_id where ti.dag_id = :d and dr.id = "
                "(select max(id) from dag_run where dag_id = :d)"), {"d": DAG_ID}).all()
        tis = [dict(r._mapping) for r in rows]
        assert state == "success", json.dumps(tis, indent=1, default=str)
        af.dispose()

        # the run: every school read on some worker, the work spread over both workers
        mapped = [t for t in tis if t["task_id"].endswith("read_validate")]
        assert len(mapped) == SCHOOLS and {t["state"] for t in mapped} == {"success"}
        ran = [t for t in tis if t["state"] == "success"]
        assert {t["hostname"] for t in ran} == set(WORKERS), tis

        # the directory holds the accounts
        pupils = people(server, "ELV")
        assert 0.9 * generated["pupils"] <= len(pupils) <= generated["pupils"]
        assert people(server, "TUT") and people(server, "ENS")

        # the state DB is the PostgreSQL one: the run, its journal and metrics are there
        state_db = create_engine(databases["state"])
        with state_db.connect() as c:
            run_id, status, trigger = c.execute(text(
                "select id, status, trigger from runs")).one()
            assert (status, trigger) == ("success", "airflow")
            journal = c.execute(text("select count(*) from journal where run_id = :r"),
                                {"r": run_id}).scalar()
            assert journal and journal >= len(pupils)
            stages = {s for (s,) in c.execute(text(
                "select distinct stage from run_metrics where run_id = :r"), {"r": run_id})}
            # a group per school: a streamed night, its absences judged after the groups
            assert stages == {"discover", "read_validate", "reconcile", "apply", "absences",
                              "report"}
            accounts = c.execute(text("select count(*) from accounts")).scalar()
            assert accounts == len(pupils) + len(people(server, "TUT")) + sum(
                len(people(server, p)) for p in ("ENS", "DIR", "EVS", "DOC", "ETA"))
        state_db.dispose()
        # `entsync status` on that PostgreSQL state DB
        out = subprocess.run([str(BIN / "entsync"), "status", "--json", "--academy", ACADEMY,
                              "--state-url", databases["state"]], capture_output=True,
                             text=True, timeout=120, check=True)
        (aca,) = json.loads(out.stdout)["academies"]
        assert aca["last_run"]["run_id"] == run_id and aca["last_run"]["trigger"] == "airflow"
        assert aca["last_run"]["status"] == "success"
        assert aca["last_run"]["counts"]["applied"] == journal
        assert {x["uai"]: x["status"] for x in aca["schools"]} == dict.fromkeys(
            generated["schools"], "ok")
        assert all(x["last_applied_export"] for x in aca["schools"])
        # tasks handed each other files through the connection's staging URL, not the workdir
        staged = {p.relative_to(staging / run_id).as_posix()
                  for p in (staging / run_id).rglob("*") if p.is_file()}
        # a streamed night: a plan per group and what each saw, then the absences' plan
        assert {"plan-absences.json", "reports/summary.json", "reports/report.html"} <= staged
        assert len([p for p in staged if p.startswith("plan-0")]) == SCHOOLS
        assert len([p for p in staged if p.startswith("presence/")]) == SCHOOLS
        assert len([p for p in staged if p.endswith("/persons.pkl")]) == SCHOOLS
        assert not (workdir / "staging").exists()
    finally:
        procs.stop_all()
        stop_slapd(tmp_path / "slapd")
        ARTIFACTS.mkdir(exist_ok=True)
        for f in logs.glob("*.log"):
            shutil.copy(f, ARTIFACTS / f"airflow-celery-{f.name}")
