"""The state DB on PostgreSQL: Alembic migration and a sync, rerun idempotent.

Needs the PostgreSQL server at 127.0.0.1:5432 (trust auth; ENTSYNC_TEST_PG_URL overrides).
Skipped on a machine without one, except in CI (CI=true), where it must run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import start_slapd, stop_slapd
from etl.store.db import get_engine
from tests.conftest import fresh_pg_database
from tests.integration.test_sync import ACADEMY, UAI_A, school_a

pytestmark = [pytest.mark.postgres, pytest.mark.ldap]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


def test_migrations_create_the_schema(pg_url: str) -> None:
    engine = get_engine(pg_url)
    tables = set(inspect(engine).get_table_names())
    assert {"runs", "source_files", "identities", "accounts", "logins", "entries", "journal",
            "rejections", "alembic_version"} <= tables


def test_sync_with_postgres_state(tmp_path: Path, pg_url: str) -> None:
    server = start_slapd(tmp_path / "slapd")
    try:
        env = Settings.from_env({"ENTSYNC_LANDING": str(tmp_path / "landing"),
                                 "ENTSYNC_WORKDIR": str(tmp_path / "work"),
                                 "ENTSYNC_STATE_URL": pg_url, **server.env()})
        school_a(env.landing)
        first = pipeline.run_sync(env, RunRequest(ACADEMY))
        assert first["status"] == "success" and first["applied"] > 0
        school_a(env.landing, date="05/10/2026")
        again = pipeline.run_sync(env, RunRequest(ACADEMY))
        assert again["schools"][UAI_A]["status"] == "already_applied"  # same records
        assert again["changes"] == 0
        with get_engine(pg_url).connect() as c:
            assert c.execute(text("select count(*) from journal")).scalar() == first["applied"]
            assert c.execute(text("select count(*) from runs where status='success'")
                             ).scalar() == 2
    finally:
        stop_slapd(tmp_path / "slapd")


def test_a_latin1_database_keeps_names_in_any_script() -> None:
    """A state DB created in LATIN1 (an old cluster's default) cannot hold "Ł" or "ễ" as
    such: the JSON columns are then written with every non-ASCII character escaped."""
    from etl.store.db import session_factory
    from tests.integration.test_plan_state import store_and_read_back

    attrs = {"cn": ["Łukasz Nguyễn Thị", "Zoë"]}
    with fresh_pg_database(encoding="LATIN1") as url:
        Session = session_factory(url)
        assert store_and_read_back(Session, attrs) == attrs
        with Session() as s:
            raw = str(s.execute(text("SELECT attrs::text FROM entries")).scalar())
            assert raw.isascii() and "\\u0141ukasz" in raw
