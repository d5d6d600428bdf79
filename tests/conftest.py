"""Shared fixtures: the real slapd the test run starts (tests/ldap_fixture.py), a fresh state DB
and workdir per test, generated landing folders."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from etl.config import Settings
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd
from tests.paths import FIXTURES, SAMPLES

pytest_plugins = ["tests.ldap_fixture"]

SAMPLES = SAMPLES
FIXTURES = FIXTURES


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is not present")
    return SAMPLES


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LdapServer]:
    """A directory of the test's own (slapd starts in ~0.1 s)."""
    info = start_slapd(tmp_path / "slapd")
    yield info
    stop_slapd(tmp_path / "slapd")


#: the PostgreSQL server the PostgreSQL tests create their databases in
PG_ADMIN_URL = os.environ.get("ENTSYNC_TEST_PG_URL",
                              "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_pg_database(encoding: str | None = None) -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards; in ``encoding`` when given);
    its URL. Skips the test on a machine without PostgreSQL, except in CI (CI set), where
    that fails the test."""
    from sqlalchemy import create_engine, text

    from etl.store.db import dispose_all

    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("select 1"))
    except Exception as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and not reachable: {e}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {e}")
    name = f"entsync_test_{secrets.token_hex(4)}"
    with admin.connect() as c:
        extra = (f" ENCODING '{encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
                 if encoding else "")
        c.execute(text(f'CREATE DATABASE "{name}"{extra}'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        dispose_all()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def each_state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh state DB URL on each backend in turn (SQLite in a folder not made yet, then a
    new PostgreSQL database): for the tests of locks and migrations, which differ by backend."""
    if request.param == "postgresql":
        with fresh_pg_database() as u:
            yield u
    else:
        yield f"sqlite:///{tmp_path / 'fresh' / 'state.db'}"


@pytest.fixture
def state_url(tmp_path: Path) -> Iterator[str]:
    """The test's own state DB: SQLite by default; a fresh PostgreSQL database when
    ENTSYNC_TEST_STATE=postgresql (how `make test` runs the integration tests a second
    time)."""
    if os.environ.get("ENTSYNC_TEST_STATE", "sqlite") == "postgresql":
        with fresh_pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def env(tmp_path: Path, server: LdapServer, state_url: str) -> Settings:
    """Settings for a sync of the test's own: landing, workdir, state DB, its slapd."""
    return Settings.from_env({
        "ENTSYNC_LANDING": str(tmp_path / "landing"),
        "ENTSYNC_WORKDIR": str(tmp_path / "work"),
        "ENTSYNC_STATE_URL": state_url,
        # ENTSYNC_TEST_PLAN_GROUP=1: every sync streamed a school at a time
        "ENTSYNC_PLAN_GROUP": os.environ.get("ENTSYNC_TEST_PLAN_GROUP", "16"),
        **server.env(),
    })
