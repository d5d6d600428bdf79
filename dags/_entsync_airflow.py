"""What the entsync DAGs share: connections -> Settings, the retry policy, the failure callback.

Imported by the DAG files (`ent_sync.py`, `ent_lifecycle.py`, `gar_export.py`); not a DAG file
itself (listed in `.airflowignore`). Airflow puts the DAGs folder on `sys.path`, so it imports as
`_entsync_airflow`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from etl.runtime.logs import quiet_loggers

F = TypeVar("F", bound=Callable[..., Any])

#: the task ids other tasks, the report link and the failure callback look up
DISCOVER = "read.discover"
#: discover's XCom holding the sync run (id, rejected, held, ...); its return value is the list
#: of schools read_validate maps over (Airflow maps only over a task's return value)
RUN_KEY = "run"
#: discover's small XCom holding only the sync run's id: what every later task reads
RUN_ID_KEY = "run_id"
#: the DAGs' owner in the UI (`ENTSYNC_AIRFLOW_OWNER`)
DEFAULT_OWNER = "entsync-ops"

quiet_loggers()  # the task process imports this module when it parses the DAG file


def default_args() -> dict[str, Any]:
    """The tasks' defaults: the owner, retries with backoff (only transient failures get
    there: `retry_policy` fails the others at once), the failure callback."""
    return {
        "owner": os.environ.get("ENTSYNC_AIRFLOW_OWNER") or DEFAULT_OWNER,
        "retries": 3,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=15),
        "on_failure_callback": on_task_failure,
    }


def operator_default_args() -> dict[str, Any]:
    """The tasks' defaults in the DAGs that are no night (lifecycle, audit, GAR export): the
    owner, and retries further apart (only transient failures get there: `retry_policy` fails
    the others at once). No sync run to close on failure."""
    return {
        "owner": os.environ.get("ENTSYNC_AIRFLOW_OWNER") or DEFAULT_OWNER,
        "retries": 3,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
    }


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


#: Settings already built in this process, by DagRun (see `run_settings`)
_SETTINGS: dict[tuple[str, str], Any] = {}


def run_settings() -> Any:
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
    st = build_settings()
    from etl.runtime.cpu import yield_cpu

    yield_cpu(st)  # the task's process: CPU-bound batch work yields to the directory server
    if key is not None:
        _SETTINGS.clear()  # one run at a time: a long-lived process keeps no stale settings
        _SETTINGS[key] = st
    return st


def build_settings() -> Any:
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


def gar_settings(settings: Any) -> Any:
    """``settings`` with the GAR delivery's SFTP credentials of the `entsync_gar_sftp`
    connection when it is defined (host, port, login, password; extra `path`, `host_key`
    (`<type> <base64>`), `known_hosts`, `key_file`); else ENTSYNC_GAR_* as they are."""
    from dataclasses import replace

    conn = _connection("entsync_gar_sftp")
    if conn is None:
        return settings
    extra = conn.extra_dejson or {}
    gar = replace(
        settings.gar,
        target=f"sftp://{conn.host}:{conn.port or 22}/{str(extra.get('path', '')).lstrip('/')}",
        sftp_user=conn.login or settings.gar.sftp_user,
        sftp_password=conn.password or settings.gar.sftp_password,
        sftp_host_key=extra.get("host_key") or settings.gar.sftp_host_key,
        sftp_known_hosts=extra.get("known_hosts") or settings.gar.sftp_known_hosts,
        sftp_key_file=extra.get("key_file") or settings.gar.sftp_key_file,
    )
    return replace(settings, gar=gar)


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


def on_task_failure(context: Any) -> None:
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
        pipeline.fail_run(run_settings(), disc["run_id"],
                          f"Airflow task {ti.task_id} (school {school}) failed: "
                          f"{type(err).__name__ if err is not None else 'error'}")
