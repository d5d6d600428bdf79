"""`entsync show`: what the directory holds, all of it or one academy's part (`--academy`)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from etl import cli
from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from tests.builders import Guardian, Pupil, Teacher, write_school

pytestmark = pytest.mark.ldap
NOV = dt.date(2026, 11, 16)
REIMS = "0510011" + uai_check_letter("0510011")
STRASBOURG = "0670011" + uai_check_letter("0670011")


def _show(env: Settings, server: LdapServer, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str], *args: str) -> str:
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    assert cli.main(["show", "--state-url", env.state_url, "--workdir", str(env.workdir),
                     *args]) == 0
    return capsys.readouterr().out


def _count(out: str, what: str) -> int:
    found = re.search(rf"^\s*{what}\s+(\d+)$", out, re.M)
    return int(found.group(1)) if found else 0


def test_show_filters_by_academy(env: Settings, server: LdapServer,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    write_school(env.landing, "ac-reims", REIMS,
                 [Pupil("1", "MARTIN", "Zoé", "3A"), Pupil("2", "DURAND", "Léo", "3A")],
                 [Guardian("51", "MARTIN", "Claire", ["1"])],
                 [Teacher("91", "LEBLANC", "Henri", ["3A"])])
    write_school(env.landing, "ac-strasbourg", STRASBOURG,
                 [Pupil("1", "MULLER", "Anna", "6B")], [],
                 [Teacher("91", "SCHMITT", "Paul", ["6B"])])
    for academy in ("ac-reims", "ac-strasbourg"):
        assert pipeline.run_sync(env, RunRequest(academy, today=NOV))["status"] == "success"
    every = _show(env, server, monkeypatch, capsys)
    reims = _show(env, server, monkeypatch, capsys, "--academy", "ac-reims")
    stras = _show(env, server, monkeypatch, capsys, "--academy", "ac-strasbourg")
    assert "schools: 2," in every and "academy" not in every.splitlines()[0]
    assert reims.splitlines()[0].endswith(" academy ac-reims") and "schools: 1," in reims
    assert _count(reims, "National_ELV") == 2 and _count(stras, "National_ELV") == 1
    assert _count(reims, "National_TUT") == 1 and _count(stras, "National_TUT") == 0
    for prof in ("ELV", "TUT", "ENS"):
        assert (_count(every, f"National_{prof}")
                == _count(reims, f"National_{prof}") + _count(stras, f"National_{prof}"))
    # its sample pupil and class are the academy's own
    assert f"cn=3A,ou=groups,ENTStructureUAI={REIMS}" in reims and STRASBOURG not in reims
    assert f"cn=6B,ou=groups,ENTStructureUAI={STRASBOURG}" in stras and REIMS not in stras
    assert "AC-STRASBOURG$" not in stras  # no value of a person's entry unless asked
    stras = _show(env, server, monkeypatch, capsys, "--academy", "ac-strasbourg", "--values")
    assert "AC-STRASBOURG$" in stras and "AC-REIMS$" not in stras
    assert "ENTPersonJointure" in reims and "MARTIN" not in reims and "Zo" not in reims


def test_show_counts_beyond_one_page_and_disabled_apart(env: Settings, server: LdapServer,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """1,205 pupils: more than one page of the server's (and ldap3's) 1,000; a night later 5
    of them gone (DISABLED) are counted apart."""
    pupils = [Pupil(str(1000 + i), f"NOM{i}", "Eve", f"6{chr(65 + i % 8)}")
              for i in range(1205)]
    write_school(env.landing, "ac-reims", REIMS, pupils, [], [])
    assert pipeline.run_sync(env, RunRequest("ac-reims", today=NOV))["status"] == "success"
    out = _show(env, server, monkeypatch, capsys, "--academy", "ac-reims", "--json")
    import json

    o = json.loads(out)
    assert o["accounts"]["National_ELV"] == {"active": 1205, "disabled": 0}
    write_school(env.landing, "ac-reims", REIMS, pupils[5:], [], [], date="02/10/2026")
    assert pipeline.run_sync(env, RunRequest("ac-reims", today=NOV + dt.timedelta(days=1))
                             )["status"] == "success"
    out = _show(env, server, monkeypatch, capsys, "--academy", "ac-reims")
    assert re.search(r"^\s*National_ELV\s+1200\s+\(\+5 disabled\)$", out, re.M), out
