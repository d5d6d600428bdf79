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
from tests.integration.test_sync import people

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


def test_a_delta_without_its_base_is_held(env: Settings, server: LdapServer) -> None:
    aaf.write(env.landing, ACADEMY, "Delta", "20261002", "EtabEducNat",
              [[aaf.etab("100", UAI_A)]])
    aaf.write(env.landing, ACADEMY, "Delta", "20261002", "Eleve",
              [[aaf.eleve("100", PUPILS[0], GUARDIANS)]])
    s1 = sync(env)
    assert s1["status"] == "awaiting_approval", s1
    row = s1["schools"][UAI_A]
    assert row["status"] == "awaiting_approval"
    held = {g["guard"]: g["detail"] for g in row["held"]}
    assert "aaf_gap" in held and "no Eleve Complet" in held["aaf_gap"]
    assert writes(s1) == 0 and not people(server, "ELV")
    with Session(get_engine(env.state_url)) as s:  # the state waits with the plan
        assert s.get(AafSchool, (ACADEMY, UAI_A, "Eleve")) is None
    # held again the next night (nothing guessed); approved, it is applied and the chain
    # goes on from it
    s2 = sync(env)  # the same exports: the school waits for the pending plan, not re-read
    assert s2["schools"][UAI_A]["status"] == "awaiting_approval"
    assert s2["schools"][UAI_A]["pending_run"] == s1["run_id"]
    res = pipeline.decide(env, s1["run_id"], True, UAI_A, by="test")
    assert res["schools"][UAI_A]["decision"] == "approved"
    assert sorted(by_key(server, "ELV")) == [f"{PREFIX}$71001"]
    with Session(get_engine(env.state_url)) as s:
        mark = s.get(AafSchool, (ACADEMY, UAI_A, "Eleve"))
        assert mark is not None and (mark.complet_date, mark.applied_stamp) == (
            None, "2026-10-02/D")
    assert sync(env)["schools"][UAI_A]["status"] == "already_applied"


def test_a_delta_older_than_the_applied_complet_is_ignored(env: Settings,
                                                           server: LdapServer) -> None:
    feed_a(env, date="20261003")
    assert sync(env)["status"] == "success"
    old = aaf.write(env.landing, ACADEMY, "Delta", "20261002", "Eleve",
                    [[aaf.delete("Eleve", "71001")]])
    s2 = sync(env)
    assert s2["status"] == "success", s2
    assert writes(s2) == 0
    assert by_key(server, "ELV")[f"{PREFIX}$71001"]["entSyncStatus"] == ["ACTIVE"]
    files = {f["file"]: f["reason"] for f in s2["aaf"]["files"]}
    assert "older than the Eleve Complet of 2026-10-03" in files[old[0].name]
    with Session(get_engine(env.state_url)) as s:
        st = s.scalars(select(SourceFile.status).where(SourceFile.path == str(old[0]),
                                                       SourceFile.run_id == s2["run_id"]))
        assert list(st) == ["ignored"]


def test_a_school_moving_from_its_exports_to_the_aaf_keeps_uids_and_logins(
        env: Settings, server: LdapServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_school(env.landing, ACADEMY, UAI_A, PUPILS, GUARDIANS, TEACHERS, date="01/10/2026")
    s1 = sync(env)
    assert s1["status"] == "success", s1
    before = {prof: {p["uid"][0]: p["ENTPersonLogin"][0] for p in people(server, prof)}
              for prof in ("ELV", "TUT", "ENS")}
    assert [len(v) for v in before.values()] == [3, 2, 2]
    # the school moves to the AAF (its old exports still lie in the landing zone)
    academies = tmp_path / "academies.toml"
    from etl import config

    academies.write_text(config.ACADEMIES_FILE.read_text("utf-8").replace(
        'jointure_prefix = "AC-REIMS"',
        f'jointure_prefix = "AC-REIMS"\nschool_sources = {{ "{UAI_A}" = "aaf" }}'), "utf-8")
    monkeypatch.setattr(config, "ACADEMIES_FILE", academies)
    feed_a(env, date="20261002")
    s2 = sync(env)
    row = s2["schools"][UAI_A]
    assert row["status"] == "awaiting_approval", s2
    # named a source switch (every account's jointure changes: the update share trips too)
    assert {g["guard"] for g in row["held"]} == {"source_switch", "update_share"}
    assert row["disabled"] == 0 and row["created"] == 0
    pipeline.decide(env, s2["run_id"], True, UAI_A, by="test")
    after = {prof: {p["uid"][0]: p["ENTPersonLogin"][0] for p in people(server, prof)}
             for prof in ("ELV", "TUT", "ENS")}
    assert after == before
    for p in people(server, "ELV") + people(server, "ENS") + people(server, "TUT"):
        assert p["entSyncStatus"] == ["ACTIVE"]
        assert any(j.count("$") == 1 for j in p["ENTPersonJointure"])  # the AAF key
        assert not any("$SIECLE$" in j or "$STS$" in j for j in p["ENTPersonJointure"])
    # the next nights: from the AAF alone, nothing new, nothing held
    s3 = sync(env)
    assert s3["status"] == "success" and writes(s3) == 0, s3
    # a pupil the AAF deletes is disabled (their old SIECLE key does not keep them)
    aaf.write(env.landing, ACADEMY, "Delta", "20261003", "Eleve",
              [[aaf.delete("Eleve", "71002")]])
    s4 = sync(env)
    assert s4["status"] == "success", s4
    gone = [p for p in people(server, "ELV") if p["sn"] == ["DURAND"]]
    assert gone[0]["entSyncStatus"] == ["DISABLED"]


def test_both_sources_one_night_the_authoritative_one_wins(
        env: Settings, server: LdapServer) -> None:
    # ac-reims: SIECLE is authoritative; the AAF also feeds UAI_A (left aside) and UAI_B
    write_school(env.landing, ACADEMY, UAI_A, PUPILS[:1], GUARDIANS[:1], TEACHERS[:1])
    feed_a(env)
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "EtabEducNat",
              [[aaf.etab("100", UAI_A), aaf.etab("200", UAI_B)]])
    other = Pupil("2001", "ROBERT", "Jules", "6A", ine="333333333CC")
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "Eleve",
              [[aaf.eleve("100", p, GUARDIANS) for p in PUPILS] + [aaf.eleve("200", other)]],
              prefix="ENT")
    s1 = sync(env)
    assert s1["status"] == "success", s1
    assert "AAF's records of this school were left aside" in s1["ignored_sources"][UAI_A]
    assert s1["schools"][UAI_A]["ignored_source"] == s1["ignored_sources"][UAI_A]
    elv = by_key(server, "ELV")
    # UAI_A from its own exports only: one pupil, by its SIECLE key; never merged with AAF
    a = [p for p in elv.values() if p["ENTPersonStructRattach"][0].startswith(
        f"ENTStructureUAI={UAI_A},")]
    assert len(a) == 1
    assert sorted(a[0]["ENTPersonJointure"]) == [f"{PREFIX}$INE$070876696HA",
                                                 f"{PREFIX}$SIECLE${UAI_A}$1001"]
    assert f"{PREFIX}$72001" in elv  # UAI_B from the AAF
    with Session(get_engine(env.state_url)) as s:
        assert s.get(AafSchool, (ACADEMY, UAI_A, "Eleve")) is None  # its AAF state: none
        assert s.get(AafSchool, (ACADEMY, UAI_B, "Eleve")) is not None


def test_a_bad_aaf_file_is_quarantined_whole_and_its_schools_left_untouched(
        env: Settings, server: LdapServer) -> None:
    feed_a(env)
    assert sync(env)["status"] == "success"
    parts = aaf.write(env.landing, ACADEMY, "Delta", "20261002", "Eleve", [
        [aaf.delete("Eleve", "71001")], [aaf.delete("Eleve", "71002")]])
    text = parts[1].read_text("utf-8")
    parts[1].write_text(text[: len(text) // 2], "utf-8")  # truncated
    s2 = sync(env)
    assert writes(s2) == 0, s2
    assert s2["aaf"]["stopped_at"] == "2026-10-02/D"
    files = {f["file"]: f for f in s2["aaf"]["files"]}
    assert all(files[p.name].get("quarantined") for p in parts)  # the whole document
    assert not any(p.exists() for p in parts)
    assert all(p["entSyncStatus"] == ["ACTIVE"] for p in people(server, "ELV"))
    with Session(get_engine(env.state_url)) as s:
        mark = s.get(AafSchool, (ACADEMY, UAI_A, "Eleve"))
        assert mark is not None and mark.applied_stamp == "2026-10-01/C"
    # a DOCTYPE with an internal subset is still refused, and stops the feed the same way
    evil = env.landing / ACADEMY / "aaf" / "ENT_Delta_20261003_Eleve_0000.xml"
    evil.write_text('<?xml version="1.0"?>\n<!DOCTYPE ficAlimMENESR [<!ENTITY x "y">]>\n'
                    "<ficAlimMENESR></ficAlimMENESR>\n", "utf-8")
    s3 = sync(env)
    assert writes(s3) == 0
    assert any(f["file"].endswith(evil.name) and "DOCTYPE" in str(f["reason"])
               for f in s3["rejected_files"]), s3["rejected_files"]


def test_a_bad_record_is_rejected_on_its_schools_page(env: Settings,
                                                      server: LdapServer) -> None:
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "EtabEducNat",
              [[aaf.etab("100", UAI_A), aaf.etab("200", UAI_B)]])
    other = Pupil("2001", "ROBERT", "Jules", "6A", ine="333333333CC")
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "Eleve", [[
        *(aaf.eleve("100", p) for p in PUPILS),
        aaf.eleve("100", Pupil("1009", "FAUX", "Né", "3A"), ENTPersonDateNaissance=["31/02/2012"]),
        aaf.eleve("200", other)]])
    s1 = sync(env)
    assert s1["status"] == "success", s1
    assert s1["schools"][UAI_A]["rejected"] == 1 and s1["schools"][UAI_B]["rejected"] == 0
    assert sorted(by_key(server, "ELV")) == sorted(
        [f"{PREFIX}${aaf.pupil_id(p)}" for p in PUPILS] + [f"{PREFIX}$72001"])
    page = Path(s1["schools"][UAI_A]["report"]).parent / f"retours_{UAI_A}.html"
    html = page.read_text("utf-8")
    assert "ENT_Complet_20261001_Eleve_0000.xml" in html and "FAUX" not in html


def test_a_teacher_in_two_schools_is_one_account(env: Settings, server: LdapServer) -> None:
    t = Teacher("9001", "LEBLANC", "Henri", ["3A"], head_of=["3A"])
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "EtabEducNat",
              [[aaf.etab("100", UAI_A), aaf.etab("200", UAI_B)]])
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "Eleve",
              [[aaf.eleve("100", PUPILS[0]), aaf.eleve("200", Pupil("2001", "ROBERT", "Jules",
                                                                      "6A"))]])
    aaf.write(env.landing, ACADEMY, "Complet", "20261001", "PersEducNat", [[aaf.staff(
        ["100", "200"], t, ENTAuxEnsClasses=["100$3A", "200$6A"],
        ENTAuxEnsClassesMatieres=["100$3A$030101", "200$6A$030101"])]])
    s1 = sync(env)
    assert s1["status"] == "success", s1
    ens = people(server, "ENS")
    assert len(ens) == 1
    classes = sorted(c.split(",", 1)[0] + "|" + c.rsplit("$", 1)[1]
                     for c in ens[0]["ENTAuxEnsClasses"])
    assert classes == [f"ENTStructureUAI={UAI_B}|6A", f"ENTStructureUAI={UAI_A}|3A"] or \
        len(classes) == 2
    # the teacher leaves school B in a Delta: still one account, active, in A only
    aaf.write(env.landing, ACADEMY, "Delta", "20261002", "PersEducNat", [[aaf.modify(
        "PersEducNat", "39001", {"ENTPersonFonctions": ["100$ENS$ENSEIGNEMENT$L0201$LETTRES"],
                                 "ENTAuxEnsClasses": ["100$3A"],
                                 "ENTAuxEnsClassesMatieres": ["100$3A$030101"]})]])
    s2 = sync(env)
    assert s2["status"] == "success", s2
    ens = people(server, "ENS")
    assert len(ens) == 1 and ens[0]["entSyncStatus"] == ["ACTIVE"]
    assert all(UAI_A in c for c in ens[0]["ENTAuxEnsClasses"]), (ens[0], s2["schools"])
    with Session(get_engine(env.state_url)) as s:
        assert s.get(AafStateRecord, (ACADEMY, UAI_B, "PersEducNat", "39001")) is None
        assert s.get(AafStateRecord, (ACADEMY, UAI_A, "PersEducNat", "39001")) is not None
