"""End to end against a real slapd: the academy's AAF feed, Complet then Deltas."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.store.db import get_engine
from etl.store.models import AafSchool, AafStateRecord, SourceFile
from tests import aaf_landing as aaf
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.integration.test_sync import conn_of, people

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
PREFIX = "AC-REIMS"
UAI_A = "0510001" + uai_check_letter("0510001")
UAI_B = "0080002" + uai_check_letter("0080002")
TODAY = dt.date(2026, 10, 5)

PUPILS = [Pupil("1001", "MARTIN", "Zoé", "3A", ine="070876696HA", groups=["3LV2ESP"]),
          Pupil("1002", "DURAND", "Anne", "3A", ine="111111111AA"),
          Pupil("1003", "N'DIAYE", "Moussa", "3B", ine="123456789AB")]
GUARDIANS = [Guardian("501", "MARTIN", "Claire", ["1001"], email="c.martin@example.org"),
             Guardian("502", "DURAND", "Paul", ["1002", "1003"], email="p.durand@example.org")]
TEACHERS = [Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"], head_of=["3A"]),
            Teacher("9002", "ROUX", "Inès", ["3B"])]


def sync(env: Settings, **kw: Any) -> dict[str, Any]:
    return pipeline.run_sync(env, RunRequest(ACADEMY, today=TODAY, **kw))


def by_key(server: LdapServer, profile: str) -> dict[str, dict[str, Any]]:
    """People of a profile by their AAF jointure (else their first one)."""
    out = {}
    for p in people(server, profile):
        keys = sorted(p["ENTPersonJointure"], key=lambda j: j.count("$"))
        out[keys[0]] = p
    return out


def feed_a(env: Settings, mode: str = "Complet", date: str = "20261001",
           pupils: list[Pupil] = PUPILS, parts: int = 2) -> None:
    aaf.school_feed(env.landing, ACADEMY, mode, date, "100", UAI_A, pupils, GUARDIANS, TEACHERS,
                    pupil_parts=parts)


def writes(summary: dict[str, Any]) -> int:
    return sum(summary["written"].values())


def test_complet_then_delta_then_nothing_new(env: Settings, server: LdapServer) -> None:
    feed_a(env)
    s1 = sync(env)
    assert s1["status"] == "success", s1
    assert s1["schools"][UAI_A]["status"] == "ok"
    elv = by_key(server, "ELV")
    assert sorted(elv) == [f"{PREFIX}${aaf.pupil_id(p)}" for p in PUPILS]
    zoe = elv[f"{PREFIX}$71001"]
    assert f"{PREFIX}$INE$070876696HA" in zoe["ENTPersonJointure"]
    assert zoe["ENTPersonStructRattach"][0].startswith(f"ENTStructureUAI={UAI_A},")
    tut = by_key(server, "TUT")
    durand = tut[f"{PREFIX}$5502"]
    assert len(durand["ENTAuxPersRelEleveEleve"]) == 2  # a guardian of two children
    assert sorted(by_key(server, "ENS")) == [f"{PREFIX}$39001", f"{PREFIX}$39002"]
    with Session(get_engine(env.state_url)) as s:
        marks = {m.type: (m.complet_date, m.applied_stamp) for m in s.scalars(
            select(AafSchool).where(AafSchool.uai == UAI_A))}
        assert marks["Eleve"] == ("2026-10-01", "2026-10-01/C")
        n = len(list(s.scalars(select(AafStateRecord).where(AafStateRecord.uai == UAI_A))))
        assert n == 1 + len(PUPILS) + len(GUARDIANS) + len(TEACHERS)
    uids = {k: p["uid"][0] for k, p in elv.items()}

    # a rerun with nothing new: nothing read, nothing written
    s2 = sync(env)
    assert s2["status"] == "success", s2
    assert writes(s2) == 0 and s2["changes"] == 0
    assert s2["schools"][UAI_A]["status"] == "already_applied"

    # a Delta: a new pupil, a pupil changes class and leaves a group, one is deleted
    newbie = Pupil("1004", "PETIT", "Lina", "3B", ine="222222222BB")
    aaf.write(env.landing, ACADEMY, "Delta", "20261002", "Eleve", [[
        aaf.eleve("100", newbie, GUARDIANS),
        aaf.modify("Eleve", "71001", {"ENTEleveClasses": ["100$3B"], "ENTEleveGroupes": []}),
        aaf.delete("Eleve", "71003"),
    ]])
    s3 = sync(env)
    assert s3["status"] == "success", s3
    elv = by_key(server, "ELV")
    assert elv[f"{PREFIX}$71004"]["entSyncStatus"] == ["ACTIVE"]
    zoe = elv[f"{PREFIX}$71001"]
    assert zoe["uid"][0] == uids[f"{PREFIX}$71001"]
    assert [c.rsplit("$", 1)[1] for c in zoe["ENTEleveClasses"]] == ["3B"]
    assert not zoe.get("ENTEleveGroupes")
    assert elv[f"{PREFIX}$71003"]["entSyncStatus"] == ["DISABLED"]  # deleted: absent
    assert elv[f"{PREFIX}$71002"]["uid"][0] == uids[f"{PREFIX}$71002"]
    guards = {g["guard"]: g for g in s3["schools"][UAI_A]["guards"]}
    assert "pupil_drop" not in guards  # a Delta is no vanished export
    with Session(get_engine(env.state_url)) as s:
        mark = s.get(AafSchool, (ACADEMY, UAI_A, "Eleve"))
        assert mark is not None and mark.applied_stamp == "2026-10-02/D"
        assert mark.complet_date == "2026-10-01"
        rec = s.get(AafStateRecord, (ACADEMY, UAI_A, "Eleve", "71001"))
        assert rec is not None and rec.attrs["ENTEleveClasses"] == ["100$3B"]
        assert rec.attrs["sn"] == ["MARTIN"]  # the attributes it did not replace kept
        assert s.get(AafStateRecord, (ACADEMY, UAI_A, "Eleve", "71003")) is None

    # and again nothing new: 0 writes
    s4 = sync(env)
    assert writes(s4) == 0 and s4["changes"] == 0, s4
