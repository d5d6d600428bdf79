"""A local Airflow on the demo data, for the ops team and the browser test (`make airflow`).

`airflow standalone` runs the api-server, scheduler, dag-processor and triggerer as child
processes of one process group, so one ``killpg`` stops them all. Everything it needs is
prepared here first:

- the directory: the project's slapd in ``<demo>/slapd`` (started if not running);
- the landing zone ``<demo>/landing``: synthetic exports generated for each academy that has
  none; the workdir (reports, staging, state DB) is ``<demo>/work``;
- ``AIRFLOW_HOME`` (default ``var/airflow``) with a SQLite metadata DB, the LocalExecutor sized
  for a 2-core machine, the simple auth manager with one ``admin`` user whose password lives
  in the home's password file (generated once, mode 0600), and free ports for the API server
  and the two log servers (the defaults 8793/8794 would clash with a second Airflow).

This module never imports airflow: it only runs the ``airflow`` program.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from etl.config import load_academies
from etl.errors import ConfigError, EntsyncError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
#: the api-server plugin that serves the run reports (plugins/entsync_reports.py)
PLUGINS_DIR = REPO_ROOT / "plugins"
#: LocalExecutor worker processes: the default (32) forks far too many on 2 cores
PARALLELISM = 4
USERNAME = "admin"
START_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 20.0
_RESERVED_PORTS = {8793, 8794}  # Airflow's default serve-logs ports


class DevServerError(EntsyncError):
    """The local Airflow did not start, or stopped on its own."""


def free_port() -> int:
    """A TCP port nobody listens on now (never Airflow's serve-logs ports)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _RESERVED_PORTS:
            return port


def airflow_program() -> str:
    """The ``airflow`` next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).with_name("airflow")
    if here.is_file():
        return str(here)
    found = shutil.which("airflow")
    if found is None:
        raise ConfigError("the airflow program is not installed (make install)")
    return found


@dataclass(frozen=True)
class DevAirflowConfig:
    """Where the local Airflow keeps its files and how it is reached."""

    home: Path
    demo: Path
    port: int
    worker_log_port: int
    trigger_log_port: int
    schools: int = 2
    pupils: int = 120
    seed: int = 7
    #: False: the scheduler creates no cron run (tests trigger their own runs only)
    schedules: bool = True
    academies: tuple[str, ...] = field(default_factory=lambda: tuple(load_academies()))
    #: more ENTSYNC_* variables for the tasks (e.g. the GAR export's ENT id and target)
    extra_env: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def local(port: int | None = None, demo: Path = Path("var/demo"),
              home: Path = Path("var/airflow"), schools: int = 2, pupils: int = 120,
              academies: tuple[str, ...] | None = None,
              schedules: bool = True) -> DevAirflowConfig:
        if port in _RESERVED_PORTS:
            raise ConfigError(f"port {port} is Airflow's serve-logs port: choose another")
        return DevAirflowConfig(
            home=Path(home).resolve(), demo=Path(demo).resolve(), port=port or free_port(),
            worker_log_port=free_port(), trigger_log_port=free_port(), schools=schools,
            pupils=pupils, academies=academies or tuple(load_academies()), schedules=schedules)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def landing(self) -> Path:
        return self.demo / "landing"

    @property
    def workdir(self) -> Path:
        return self.demo / "work"

    @property
    def slapd_dir(self) -> Path:
        return self.demo / "slapd"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    @property
    def log_file(self) -> Path:
        return self.home / "standalone.log"


def ensure_password(cfg: DevAirflowConfig) -> str:
    """The admin password from the simple auth manager's file; created (0600) if missing."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    path = cfg.password_file
    users: dict[str, str] = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            users = dict(json.loads(path.read_text("utf-8") or "{}"))
    if not users.get(USERNAME):
        users[USERNAME] = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(users) + "\n")
    os.chmod(path, 0o600)
    return users[USERNAME]


def _jwt_secret(cfg: DevAirflowConfig) -> str:
    """One signing secret shared by every component (kept in the home, mode 0600)."""
    path = cfg.home / "jwt.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(64))
    return path.read_text("utf-8").strip()


def ensure_landing(cfg: DevAirflowConfig) -> list[str]:
    """Generate synthetic exports for each academy whose landing folder is missing."""
    from etl.devtools.generate import generate_academy

    made = []
    for code in cfg.academies:
        if (cfg.landing / code).is_dir():
            continue
        generate_academy(cfg.landing, code, cfg.schools, cfg.pupils, cfg.seed)
        made.append(code)
    return made


def airflow_env(cfg: DevAirflowConfig, ldap_env: Mapping[str, str],
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the Airflow processes: no inherited AIRFLOW_*/ENTSYNC_* setting."""
    src = dict(os.environ if base is None else base)
    env = {k: v for k, v in src.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "ENTSYNC_"))}
    bin_dir = str(Path(airflow_program()).parent)
    env.update({
        "PATH": os.pathsep.join([bin_dir, env.get("PATH", ""), "/usr/sbin", "/sbin"]),
        "AIRFLOW_HOME": str(cfg.home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{cfg.home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.password_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": _jwt_secret(cfg),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(cfg.port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": cfg.url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.url}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.trigger_log_port),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(cfg.schedules),
        "ENTSYNC_LANDING": str(cfg.landing),
        "ENTSYNC_WORKDIR": str(cfg.workdir),
        "ENTSYNC_STATE_URL": f"sqlite:///{cfg.workdir / 'state.db'}",
        **ldap_env,
        **dict(cfg.extra_env),
    })
    return env


def prepare(cfg: DevAirflowConfig) -> dict[str, str]:
    """Directory running, landing present, password set: the env to start Airflow with."""
    from etl.devtools.slapd import start_slapd

    ldap = start_slapd(cfg.slapd_dir)
    made = ensure_landing(cfg)
    if made:
        log.info("generated landing for %s in %s", ", ".join(made), cfg.landing)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    ensure_password(cfg)
    return airflow_env(cfg, ldap.env())


def start(cfg: DevAirflowConfig, env: Mapping[str, str],
          output: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start `airflow standalone` in a process group of its own (output to the home's log),
    in the caller's session: with the embedded slapd (``etl.devtools.slapd.start_slapd``), so
    that the tasks' niceness yields the CPU to it."""
    out = output or open(cfg.log_file, "ab")  # lives as long as the process
    return subprocess.Popen([airflow_program(), "standalone"], env=dict(env), cwd=cfg.home,
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            process_group=0)


def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop Airflow and every process it forked: SIGTERM to the group, SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # children may outlive the standalone parent
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _http_json(url: str, token: str | None = None, body: Any = None,
               timeout: float = 10) -> Any:
    """GET (or POST ``body``) JSON on the local API server."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"not the local API server: {url}")
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (http only)
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (http only)
        return json.loads(r.read().decode("utf-8"))


def api_token(url: str, username: str, password: str) -> str:
    """A JWT for the REST API from the simple auth manager."""
    got = _http_json(f"{url}/auth/token", body={"username": username, "password": password})
    return str(got["access_token"])


def wait_ready(cfg: DevAirflowConfig, proc: subprocess.Popen[bytes], password: str,
               dag_ids: list[str], timeout: float = START_TIMEOUT_S) -> str:
    """Wait until every component is healthy and the DAGs are parsed; return an API token."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    token: str | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevServerError(f"airflow standalone exited with {proc.returncode}; see "
                                 f"{cfg.log_file}")
        try:
            health = _http_json(f"{cfg.url}/api/v2/monitor/health")
            bad = [k for k in ("metadatabase", "scheduler", "dag_processor", "triggerer")
                   if (health.get(k) or {}).get("status") != "healthy"]
            if bad:
                last = f"not healthy yet: {', '.join(bad)}"
            else:
                token = token or api_token(cfg.url, USERNAME, password)
                dags = _http_json(f"{cfg.url}/api/v2/dags?limit=100", token)
                have = {d["dag_id"] for d in dags.get("dags", [])}
                missing = sorted(set(dag_ids) - have)
                if not missing:
                    return token
                last = f"DAGs not parsed yet: {', '.join(missing)}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = str(e)
        time.sleep(1)
    raise DevServerError(f"Airflow not ready after {timeout:.0f}s ({last}); see {cfg.log_file}")


@dataclass(frozen=True)
class RunningAirflow:
    """A started local Airflow: its process (group leader), admin password and an API token."""

    cfg: DevAirflowConfig
    proc: subprocess.Popen[bytes]
    password: str = field(repr=False)
    token: str = field(repr=False)


@contextlib.contextmanager
def running(cfg: DevAirflowConfig, output: IO[bytes] | None = None,
            timeout: float = START_TIMEOUT_S) -> Iterator[RunningAirflow]:
    """Airflow up and ready for the block, stopped (whole process group) after it, always."""
    env = prepare(cfg)
    password = ensure_password(cfg)
    dag_ids = [a.dag_id for c, a in load_academies().items() if c in cfg.academies]
    proc = start(cfg, env, output)
    try:
        token = wait_ready(cfg, proc, password, dag_ids, timeout)
        yield RunningAirflow(cfg, proc, password, token)
    finally:
        stop(proc)


def serve(cfg: DevAirflowConfig) -> int:
    """`entsync airflow`: start, print where to log in, run until Ctrl-C."""
    def interrupt(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM, and SIGINT even when started in the background (where it is ignored), stop
    # Airflow's process group rather than orphaning it
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    print(f"preparing {cfg.demo} (slapd, landing) and {cfg.home} ...", flush=True)
    with running(cfg) as af:
        dags = ", ".join(a.dag_id for c, a in load_academies().items() if c in cfg.academies)
        print(f"\nAirflow UI: {cfg.url}\n  login: {USERNAME}  password: {af.password}\n"
              f"  (password file: {cfg.password_file})\n  DAGs: {dags} (paused until you "
              f"unpause or trigger one)\n  landing: {cfg.landing}\n  reports: "
              f"{cfg.workdir / 'reports'}\n  log: {cfg.log_file}\n"
              "Ctrl-C stops Airflow; the slapd keeps running (make demo-down stops it).",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while af.proc.poll() is None:
                time.sleep(1)
        if af.proc.returncode is not None:
            print(f"airflow standalone exited with {af.proc.returncode}; see {cfg.log_file}")
            return 1
    print("Airflow stopped", flush=True)
    return 0
