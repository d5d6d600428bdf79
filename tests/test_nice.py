"""The sync yields the CPU to the directory server (issue 6): reading, validating and planning
are CPU-bound batch work, and on a shared machine slapd's commits, which every write waits
for, must not queue behind them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from etl.config import Settings
from etl.errors import ConfigError


def _niceness_after_yield(env: dict[str, str]) -> int:
    """A fresh process's niceness once it has called yield_cpu (os.nice is per process)."""
    code = ("import os; from etl.config import Settings; from etl.pipeline import yield_cpu;"
            "yield_cpu(Settings.from_env()); print(os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_the_sync_runs_at_niceness_10_unless_told() -> None:
    assert Settings.from_env({}).nice == 10
    assert Settings.from_env({"ENTSYNC_NICE": "0"}).nice == 0
    # a child starts at this process's niceness (a sync run in-process by an earlier test
    # may have raised it) and never goes back below it
    here = os.nice(0)
    assert _niceness_after_yield({}) == max(here, 10)
    assert _niceness_after_yield({"ENTSYNC_NICE": "3"}) == max(here, 3)
    assert _niceness_after_yield({"ENTSYNC_NICE": "0"}) == here


@pytest.mark.parametrize("bad", ["-5", "20", "high"])
def test_a_niceness_out_of_range_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="ENTSYNC_NICE"):
        Settings.from_env({"ENTSYNC_NICE": bad})
