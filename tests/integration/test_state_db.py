"""The state DB: migrations run once however many processes open a fresh database together
(SQLite and PostgreSQL), and what goes wrong with it reaches a CLI user as one line and the
documented exit code, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from etl import cli
from etl.store import db
from tests.paths import REPO

ROOT = REPO
WORKERS = 6


def _open_at_once(url: str, barrier: multiprocessing.synchronize.Barrier,
                  out: multiprocessing.queues.Queue[str]) -> None:
    """One process of the first night: wait for the others, then open the state DB."""
    try:
        barrier.wait(timeout=120)
        db.get_engine(url)
        out.put("ok")
    except BaseException as e:  # reported to the test
        out.put(f"{type(e).__name__}: {str(e)[:300]}")


def head() -> str:
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head()
    assert rev
    return rev


def test_processes_opening_a_fresh_database_together_migrate_it_once(each_state_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    out: multiprocessing.queues.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(each_state_url, barrier, out))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * WORKERS, results
    engine = create_engine(each_state_url)
    try:
        with engine.connect() as c:
            assert c.execute(text("select version_num from alembic_version")).scalars().all() \
                == [head()]
        assert {"runs", "academy_locks", "journal", "entries"} <= set(
            inspect(engine).get_table_names())
    finally:
        engine.dispose()


def entsync(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etl.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_a_url_sqlalchemy_cannot_use_is_a_configuration_error(tmp_path: Path) -> None:
    p = entsync("status", "--state-url", "postgres://entsync:s3cret@dbhost/entsync",
                ENTSYNC_WORKDIR=str(tmp_path))
    assert p.returncode == 2
    line = one_line(p)
    assert line.startswith("entsync: configuration error: state DB postgres://entsync:***@")
    assert "s3cret" not in p.stderr


def test_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    p = entsync("status", "--state-url",
                "postgresql+psycopg2://entsync:s3cret@127.0.0.1:1/entsync",
                ENTSYNC_WORKDIR=str(tmp_path))
    assert p.returncode == 1
    line = one_line(p)
    assert line.startswith("entsync: state DB postgresql+psycopg2://entsync:***@127.0.0.1:1")
    assert "s3cret" not in p.stderr


def test_a_state_db_path_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    (tmp_path / "landing" / "ac-reims").mkdir(parents=True)
    p = entsync("sync", "--academy", "ac-reims", "--state-url",
                f"sqlite:///{blocker / 'state.db'}", ENTSYNC_WORKDIR=str(tmp_path),
                ENTSYNC_LANDING=str(tmp_path / "landing"))
    assert p.returncode == 2  # a configuration to fix, found before anything is read
    assert one_line(p).startswith("entsync: configuration error: state DB sqlite:///")


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "state.db"
    bad.write_bytes(b"this is no SQLite database" * 100)
    p = entsync("status", "--state-url", f"sqlite:///{bad}", ENTSYNC_WORKDIR=str(tmp_path))
    assert p.returncode == 1
    assert "not a database" in one_line(p)


def test_a_locked_state_db_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    db.get_engine(url)
    db.dispose_all()
    holder = sqlite3.connect(path)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    # not 30 s of waiting in a test
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200, raising=False)
    try:
        rc = cli.main(["unlock", "--academy", "ac-reims", "--state-url", url,
                       "--workdir", str(tmp_path)])
    finally:
        holder.rollback()
        holder.close()
        db.dispose_all()
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == "entsync: state DB: database is locked" or \
        err.strip().endswith("database is locked"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_state_db_is_left_to_airflow_s_retries() -> None:
    """The DAG's retry policy sees a server that is down as transient, a bad URL as not."""
    from etl.errors import ConfigError, StateDBError, is_transient

    with pytest.raises(StateDBError) as down:
        db.get_engine("postgresql+psycopg2://entsync@127.0.0.1:1/entsync")
    assert is_transient(down.value)
    with pytest.raises(ConfigError) as bad:
        db.get_engine("postgres://entsync@127.0.0.1/entsync")
    assert not is_transient(bad.value)
