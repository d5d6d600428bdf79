"""Shared fixtures: the real slapd the test run starts (tests/ldap_fixture.py), a fresh state DB
and workdir per test, generated landing folders."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.ldap_fixture"]

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is not present")
    return SAMPLES
