"""The change feed (`etl.report.feed`, `entsync changes`): what the journal says changed, and
since when."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.errors import ConfigError
from etl.report.feed import changed_attributes, changes_since
from tests.integration.test_sync import ACADEMY, UAI_A, UAI_B, school_a, school_b

pytestmark = pytest.mark.ldap


def test_changed_attributes_per_operation() -> None:
    before = {"sn": ["A"], "mail": ["a@x"], "cn": ["A B"]}
    after = {"sn": ["A"], "mail": ["b@x"], "givenName": ["B"], "cn": []}
    assert changed_attributes("modify", before, after) == ["cn", "givenName", "mail"]
    assert changed_attributes("add", None, after) == ["givenName", "mail", "sn"]
    assert changed_attributes("delete", before, None) == ["cn", "mail", "sn"]
    # names compare case-insensitively, values as sets
    assert changed_attributes("modify", {"SN": ["x", "y"]}, {"sn": ["y", "x"]}) == []


def test_feed_since_a_run_and_since_a_time(env: Settings) -> None:
    school_a(env.landing)
    first = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert first["status"] == "success" and first["applied"] > 0
    t_between = dt.datetime.now(dt.UTC)

    school_b(env.landing, extra=True)
    second = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert second["status"] == "success" and second["applied"] > 0

    # since the first run: only the second run's changes, each once, in journal order
    feed = changes_since(env.state_url, first["run_id"])
    assert len(feed) == second["applied"]
    assert {c["run_id"] for c in feed} == {second["run_id"]}
    assert [c["seq"] for c in feed] == sorted(c["seq"] for c in feed)
    assert all(UAI_A not in c["dn"] or c["op"] != "add" for c in feed)
    assert any(UAI_B in c["dn"] for c in feed)
    for c in feed:
        assert set(c) == {"run_id", "academy", "seq", "dn", "op", "attributes", "applied_at"}
        assert c["academy"] == ACADEMY and c["op"] in ("add", "modify", "delete")
        assert c["attributes"], c
        assert dt.datetime.fromisoformat(c["applied_at"]) >= t_between
    pupil = [c for c in feed if c["op"] == "add" and "ENTEleveINE" in c["attributes"]]
    assert len(pupil) == 2  # ROBERT and PETIT in school B
    # no value by default: the personal data stays out of the feed
    text = json.dumps(feed)
    assert "ROBERT" not in text and "PETIT" not in text and "111111111AA" not in text

    # since the second run: nothing yet
    assert changes_since(env.state_url, second["run_id"]) == []

    # since a time: a timestamp between the runs gives the second run's changes
    by_time = changes_since(env.state_url, t_between.isoformat())
    assert [(c["run_id"], c["seq"]) for c in by_time] == [(c["run_id"], c["seq"]) for c in feed]
    # a naive timestamp is UTC; one before everything gives both runs
    everything = changes_since(env.state_url, "2000-01-01T00:00:00")
    assert len(everything) == first["applied"] + second["applied"]
    assert changes_since(env.state_url, "2000-01-01", academy="ac-strasbourg") == []

    # operators may ask for the values
    with_values = changes_since(env.state_url, first["run_id"], include_values=True)
    assert "ROBERT" in json.dumps(with_values)
    assert all("after" in c and "before" in c for c in with_values)

    with pytest.raises(ConfigError):
        changes_since(env.state_url, "no-such-run")


def test_entsync_changes_cli(env: Settings, tmp_path: Path) -> None:
    school_a(env.landing)
    first = pipeline.run_sync(env, RunRequest(ACADEMY))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ENTSYNC_")}
    child_env["ENTSYNC_STATE_URL"] = env.state_url
    child_env["ENTSYNC_WORKDIR"] = str(env.workdir)
    cmd = [sys.executable, "-m", "etl.cli", "changes"]
    out = subprocess.run([*cmd, "--since", "2000-01-01T00:00:00Z", "--json"], env=child_env,
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["since"] == "2000-01-01T00:00:00Z"
    assert len(got["changes"]) == first["applied"]
    assert "MARTIN" not in out.stdout
    table = subprocess.run([*cmd, "--since", first["run_id"]], env=child_env,
                           capture_output=True, text=True, check=True)
    assert table.stdout.strip() == "no change"
    bad = subprocess.run([*cmd, "--since", "yesterday"], env=child_env, capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and "neither a known run id" in bad.stderr
