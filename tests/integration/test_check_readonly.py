"""`entsync check` leaves the state as it found it: every table of the state DB and the staging
area unchanged, whatever it read (a new export, a rejected record); its reports are its output.
`--record` keeps it as a dry-run run."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select

from etl import cli
from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.store.db import get_engine
from tests.builders import Guardian, Pupil, Teacher, write_school

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI = "0510021" + uai_check_letter("0510021")
NOV = dt.date(2026, 11, 16)


def _state(env: Settings) -> dict[str, str]:
    """Each table's rows, hashed: any row added, changed or removed shows."""
    engine = get_engine(env.state_url)
    meta = MetaData()
    meta.reflect(engine)
    out: dict[str, str] = {}
    with engine.connect() as c:
        for name, table in sorted(meta.tables.items()):
            rows = sorted(json.dumps(list(r), default=str) for r in c.execute(select(table)))
            out[name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return out


def _staging(env: Settings) -> list[str]:
    root = env.workdir / "staging"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _pupils(n: int) -> list[Pupil]:
    return [Pupil(str(100 + i), f"NOM{i}", "Lou", "4A", ine=f"05100{i:04d}AB") for i in range(n)]


def test_check_leaves_the_state_db_and_the_staging_as_they_were(
        env: Settings, server: LdapServer, capsys: pytest.CaptureFixture[str]) -> None:
    write_school(env.landing, ACADEMY, UAI, _pupils(6), [Guardian("900", "NOM0", "Ana", ["100"])],
                 [Teacher("77", "PROF", "Ada", ["4A"])])
    assert pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))["status"] == "success"
    # tonight: a new export, one pupil more, one record the validation rejects (no class)
    pupils = [*_pupils(7), Pupil("999", "SANS", "Classe", "")]
    write_school(env.landing, ACADEMY, UAI, pupils, [], [], date="02/10/2026")
    before, staged = _state(env), _staging(env)
    args = ["check", "--academy", ACADEMY, "--landing", str(env.landing), "--workdir",
            str(env.workdir), "--state-url", env.state_url, "--today", NOV.isoformat(), "--json"]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schools"][UAI]["counts"]  # it did read tonight's export
    assert _state(env) == before and _staging(env) == staged
    assert Path(out["report_dir"]).is_dir()  # its output stays
    # --record: kept as a dry-run run
    assert cli.main([*args, "--record"]) == 0
    kept = json.loads(capsys.readouterr().out)["run_id"]
    assert _state(env)["runs"] != before["runs"]
    assert any(r["run_id"] == kept for r in pipeline.last_runs(env))
