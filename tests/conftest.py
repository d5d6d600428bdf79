"""Shared fixtures: the real slapd the test run starts (tests/ldap_fixture.py), a fresh state DB
and workdir per test, generated landing folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from etl.config import Settings
from etl.ldapserver import LdapServer, start_slapd, stop_slapd

pytest_plugins = ["tests.ldap_fixture"]

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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


@pytest.fixture
def env(tmp_path: Path, server: LdapServer) -> Settings:
    """Settings for a sync of the test's own: landing, workdir, SQLite state, its slapd."""
    return Settings.from_env({
        "ENTSYNC_LANDING": str(tmp_path / "landing"),
        "ENTSYNC_WORKDIR": str(tmp_path / "work"),
        "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        **server.env(),
    })
