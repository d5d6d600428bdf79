"""End to end against a real slapd: exports in the landing zone -> entries per the contract."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.utils.conv import escape_filter_chars
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import generate_academy, uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.store.db import get_engine
from etl.store.models import Identity, JournalEntry, Rejection, SchoolState, SourceFile
from tests.builders import Guardian, Pupil, Teacher, write_school

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
PREFIX = "AC-REIMS"
UAI_A = "0510001" + uai_check_letter("0510001")
UAI_B = "0080002" + uai_check_letter("0080002")
NASTY = "O'Brien*(x)\\y,z+w=v"


def conn_of(server: LdapServer) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), server.bind_dn,
                            server.password, auto_bind=True)


def search(server: LdapServer, flt: str, base: str | None = None,
           attrs: list[str] | None = None) -> list[dict[str, Any]]:
    c = conn_of(server)
    c.search(base or server.base, flt, attributes=attrs or ["*", "+"])
    out = [{"dn": e["dn"], **{k: [x.decode("utf-8") for x in v]
                              for k, v in e["raw_attributes"].items()}}
           for e in c.response if e.get("type") == "searchResEntry"]
    c.unbind()
    return out


def people(server: LdapServer, profile: str) -> list[dict[str, Any]]:
    return search(server, f"(ENTPersonProfils=National_{profile})", f"ou=people,{server.base}")


def school_a(landing: Path, date: str = "01/10/2026", pupil_last: str = "MARTIN",
             broken: bool = False) -> None:
    pupils = [
        Pupil("1001", pupil_last, "Zoé", "3A", ine="070876696HA", groups=["3LV2ESP"]),
        Pupil("1002", NASTY, "Anne-Sophie ", "3A", ine=None),
        Pupil("1003", "N'DIAYE", "Moussa", "3B", ine="123456789AB", groups=["3LV2ESP"]),
        Pupil("1004", "PARTI", "Léo", "3B", leave="01/09/2020"),
    ]
    guardians = [
        Guardian("501", pupil_last, "Claire", ["1001"], email="c.martin@example.org"),
        Guardian("502", "DURAND", "Paul", ["1002", "1003"]),
        Guardian("503", "GRAND-MÈRE", "Odette", ["1001"], level="3"),
    ]
    teachers = [
        Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"], head_of=["3A"]),
        Teacher("9002", "ROUX", "Inès", ["3B"], function="ENS"),
        Teacher("9003", "CHEF", "Hélène", [], function="DIR"),
    ]
    d = write_school(landing, ACADEMY, UAI_A, pupils, guardians, teachers, date=date)
    if broken:  # a truncated pupils export
        p = d / "ExportXML_ElevesSansAdresses.zip"
        import zipfile

        with zipfile.ZipFile(p) as zf:
            text = zf.read("ElevesSansAdresses.xml")
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("ElevesSansAdresses.xml", text[: len(text) // 2])


def school_b(landing: Path, date: str = "01/10/2026", extra: bool = False) -> None:
    pupils = [Pupil("2001", "ROBERT", "Jules", "6A", ine="111111111AA")]
    if extra:
        pupils.append(Pupil("2002", "PETIT", "Lina", "6A", ine="222222222BB"))
    write_school(landing, ACADEMY, UAI_B, pupils, [Guardian("601", "ROBERT", "Eva", ["2001"])],
                 [Teacher("9101", "BLANC", "Luc", ["6A"])], date=date)


def journal_count(env: Settings) -> int:
    with Session(get_engine(env.state_url)) as s:
        return int(s.scalar(select(func.count()).select_from(JournalEntry)) or 0)


def test_first_sync_writes_the_contract(env: Settings, server: LdapServer) -> None:
    school_a(env.landing)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success", summary
    assert summary["failed"] == 0

    base = server.base
    pupils = {p["ENTPersonJointure"][0]: p for p in people(server, "ELV")}
    # the pupil who left is not created; the others are, each with its source keys
    jointures = sorted(j for p in pupils.values() for j in p["ENTPersonJointure"])
    assert jointures == sorted([
        f"{PREFIX}$INE$070876696HA", f"{PREFIX}$SIECLE${UAI_A}$1001",
        f"{PREFIX}$SIECLE${UAI_A}$1002",
        f"{PREFIX}$INE$123456789AB", f"{PREFIX}$SIECLE${UAI_A}$1003",
    ])
    for p in pupils.values():
        oc = set(p["objectClass"])
        assert {"inetOrgPerson", "ENTPerson", "ENTEleve", "entSyncAccount"} <= oc
        assert p["entSyncStatus"] == ["ACTIVE"]
        assert re.fullmatch(r"[a-z0-9.-]+", p["ENTPersonLogin"][0])
        assert p["dn"] == f"uid={p['uid'][0]},ou=people,{base}"
        assert p["ENTPersonStructRattach"] == [f"ENTStructureUAI={UAI_A},ou=structures,{base}"]
        assert not re.search(r"martin|diaye|brien", p["uid"][0], re.I)  # uid is opaque

    # a name full of LDAP metacharacters survives intact, and is found by an escaped filter
    nasty = search(server, f"(sn={escape_filter_chars(NASTY)})", f"ou=people,{base}")
    assert len(nasty) == 1 and nasty[0]["sn"] == [NASTY]
    assert nasty[0]["givenName"] == ["Anne-Sophie"]  # trimmed
    assert nasty[0]["ENTPersonLogin"] == ["anne-sophie.obrienxyzwv"]

    # only legal guardians get an account; the contact (level 3) does not
    tut = people(server, "TUT")
    assert sorted(t["sn"][0] for t in tut) == ["DURAND", "MARTIN"]
    durand = next(t for t in tut if t["sn"] == ["DURAND"])
    kids = {pupils[f"{PREFIX}$INE$123456789AB"]["dn"], nasty[0]["dn"]}
    assert set(durand["ENTAuxPersRelEleveEleve"]) == kids
    for k in kids:
        pupil = search(server, "(objectClass=*)", k)[0]
        assert durand["uid"][0] in pupil["ENTElevePersRelEleve"]

    # teachers and staff; the head teacher of 3A
    ens = people(server, "ENS")
    assert sorted(t["sn"][0] for t in ens) == ["LEBLANC", "ROUX"]
    leblanc = next(t for t in ens if t["sn"] == ["LEBLANC"])
    sdn = f"ENTStructureUAI={UAI_A},ou=structures,{base}"
    assert set(leblanc["ENTAuxEnsClasses"]) == {f"{sdn}$3A", f"{sdn}$3B"}
    assert leblanc["ENTAuxEnsClassesPrincipal"] == [f"{sdn}$3A"]
    assert {"ENTAuxEnseignant", "ENTPerson"} <= set(leblanc["objectClass"])
    assert len(people(server, "DIR")) == 1

    # a class's member is exactly its pupils and teachers
    classes = {c["cn"][0]: c for c in search(server, "(objectClass=ENTClasse)", sdn)}
    assert set(classes) == {"3A", "3B"}
    roux = next(t for t in ens if t["sn"] == ["ROUX"])
    assert set(classes["3A"]["member"]) == {pupils[f"{PREFIX}$INE$070876696HA"]["dn"],
                                            nasty[0]["dn"], leblanc["dn"]}
    assert set(classes["3B"]["member"]) == {pupils[f"{PREFIX}$INE$123456789AB"]["dn"],
                                            leblanc["dn"], roux["dn"]}
    groups = search(server, "(objectClass=ENTGroupe)", sdn)
    assert [g["cn"][0] for g in groups] == ["3LV2ESP"]
    assert len(groups[0]["member"]) == 2
    # every change is journaled with the run id
    assert journal_count(env) == summary["applied"] > 0


def test_rerun_of_same_exports_writes_nothing(env: Settings, server: LdapServer) -> None:
    school_a(env.landing)
    first = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert first["status"] == "success" and first["applied"] > 0
    csn = search(server, "(objectClass=*)", server.base, ["contextCSN"])[0]["contextCSN"]
    n = journal_count(env)
    # the very same files: recognised as already applied
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI_A]["status"] == "already_applied"
    # the same content exported again (new export date, so new files): recognised by the
    # files' content past their headers, not even read
    school_a(env.landing, date="02/10/2026")
    third = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert third["schools"][UAI_A]["status"] == "already_applied"
    assert third["changes"] == 0 and third["applied"] == 0
    with Session(get_engine(env.state_url)) as s:
        assert s.scalar(select(func.count()).select_from(Rejection)
                        .where(Rejection.run_id == third["run_id"])) == 0
    # without the content digests (files applied before they existed) the school is read,
    # recognised by its tables' fingerprint, nothing validated, planned or written
    with Session(get_engine(env.state_url)) as s, s.begin():
        s.query(SourceFile).update({"content_sha256": None})
    school_a(env.landing, date="03/10/2026")
    fourth = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert fourth["schools"][UAI_A]["status"] == "unchanged"
    assert fourth["changes"] == 0 and fourth["applied"] == 0
    # and without the fingerprint shortcut the planner itself finds nothing to change
    with Session(get_engine(env.state_url)) as s, s.begin():
        s.query(SchoolState).update({"fingerprint": None})
        s.query(SourceFile).update({"content_sha256": None})
    school_a(env.landing, date="04/10/2026")
    fifth = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert fifth["schools"][UAI_A]["status"] == "ok"
    assert fifth["changes"] == 0 and fifth["applied"] == 0
    assert fifth["schools"][UAI_A]["unchanged"] > 0
    assert journal_count(env) == n
    assert search(server, "(objectClass=*)", server.base, ["contextCSN"])[0]["contextCSN"] == csn


def test_a_leaving_date_that_comes_makes_unchanged_exports_read_again(
        env: Settings, server: LdapServer) -> None:
    """Exports whose content did not change are not read again, except once the earliest
    leaving date they announce has come: that pupil has left, the directory must say so."""
    ahead = dt.date.today() + dt.timedelta(days=30)
    write_school(env.landing, ACADEMY, UAI_B,
                 [Pupil("2001", "ROBERT", "Jules", "6A", ine="111111111AA"),
                  Pupil("2003", "BIENTOT", "Parti", "6A", leave=ahead.strftime("%d/%m/%Y"))],
                 [Guardian("601", "ROBERT", "Eva", ["2001"])],
                 [Teacher("9101", "BLANC", "Luc", ["6A"])])
    first = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert first["schools"][UAI_B]["status"] == "ok"
    with Session(get_engine(env.state_url)) as s:
        assert s.get(SchoolState, (ACADEMY, UAI_B)).reread_on == ahead.isoformat()
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI_B]["status"] == "already_applied"
    # the day comes (moved into the past here rather than waiting a month)
    with Session(get_engine(env.state_url)) as s, s.begin():
        s.get(SchoolState, (ACADEMY, UAI_B)).reread_on = "2000-01-01"
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI_B]["status"] == "unchanged"  # read, same tables


def test_name_change_updates_entry_keeps_uid_and_login(env: Settings,
                                                       server: LdapServer) -> None:
    school_a(env.landing)
    pipeline.run_sync(env, RunRequest(ACADEMY))
    flt = f"(ENTPersonJointure={PREFIX}$SIECLE${UAI_A}$1001)"
    before = search(server, flt, f"ou=people,{server.base}")[0]
    assert before["sn"] == ["MARTIN"]
    school_a(env.landing, date="03/10/2026", pupil_last="MARTIN-LOPEZ")
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success"
    after = search(server, flt, f"ou=people,{server.base}")[0]
    assert after["sn"] == ["MARTIN-LOPEZ"]
    assert after["dn"] == before["dn"] and after["uid"] == before["uid"]
    assert after["ENTPersonLogin"] == before["ENTPersonLogin"] == ["zoe.martin"]
    # the pupil and the guardian (same family name) changed; nothing else
    assert summary["schools"][UAI_A]["updated"] == 2
    assert summary["schools"][UAI_A]["created"] == 0


def test_quarantined_school_is_untouched_while_others_sync(env: Settings,
                                                           server: LdapServer) -> None:
    school_a(env.landing)
    school_b(env.landing)
    pipeline.run_sync(env, RunRequest(ACADEMY))
    sdn_a = f"ENTStructureUAI={UAI_A},ou=structures,{server.base}"
    members_before = search(server, "(cn=3A)", sdn_a)[0]["member"]
    n_people = len(search(server, "(objectClass=ENTPerson)", f"ou=people,{server.base}"))
    # next night: school A's pupils file is truncated, school B has a newcomer
    school_a(env.landing, date="04/10/2026", pupil_last="CHANGED", broken=True)
    school_b(env.landing, date="04/10/2026", extra=True)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success"
    assert summary["schools"][UAI_A]["status"] == "quarantined"
    assert summary["schools"][UAI_B]["created"] == 1
    q = summary["quarantined"]
    assert len(q) == 1 and "ElevesSansAdresses" in q[0]["file"]
    assert "truncated" in q[0]["reason"] or "malformed" in q[0]["reason"]
    moved = Path(q[0]["moved_to"])
    assert moved.exists() and Path(str(moved) + ".reason.json").exists()
    assert not (env.landing / ACADEMY / UAI_A / "ExportXML_ElevesSansAdresses.zip").exists()
    # school A: same members, no name changed (its guardian file was fine but the school waits)
    assert search(server, "(cn=3A)", sdn_a)[0]["member"] == members_before
    assert not search(server, "(sn=CHANGED)", f"ou=people,{server.base}")
    assert len(search(server, "(objectClass=ENTPerson)",
                      f"ou=people,{server.base}")) == n_people + 1


def test_dry_run_writes_nothing(env: Settings, server: LdapServer) -> None:
    school_a(env.landing)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY, dry_run=True))
    assert summary["status"] == "dry_run"
    assert summary["changes"] > 0 and summary["applied"] == 0
    assert search(server, "(objectClass=ENTPerson)", f"ou=people,{server.base}") == []
    assert search(server, "(objectClass=ENTEtablissement)", f"ou=structures,{server.base}") == []
    with Session(get_engine(env.state_url)) as s:
        assert s.scalar(select(func.count()).select_from(Identity)) == 0
    assert journal_count(env) == 0
    # and the real run afterwards still applies everything
    assert pipeline.run_sync(env, RunRequest(ACADEMY))["applied"] == summary["changes"]


def test_cli_sync_json_on_generated_exports(tmp_path: Path, env: Settings,
                                            server: LdapServer) -> None:
    gen = generate_academy(env.landing, ACADEMY, schools=2, pupils_per_school=60, seed=5)
    cli_env = {**os.environ, "ENTSYNC_LANDING": str(env.landing),
               "ENTSYNC_WORKDIR": str(env.workdir), "ENTSYNC_STATE_URL": env.state_url,
               **server.env()}
    cmd = [sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY, "--json"]
    r = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["status"] == "success" and set(out["schools"]) == set(gen.schools)
    for s in out["schools"].values():
        assert s["created"] > 0 and s["rejected"] == 0
    n_pupils = len(people(server, "ELV"))
    assert 0.9 * gen.pupils <= n_pupils <= gen.pupils  # pupils who left are not created
    # the logs name no person: no generated surname appears on stderr
    names = {p["sn"][0] for p in people(server, "ELV")}
    leaked = [n for n in names if len(n) > 3 and n in r.stderr]
    assert not leaked, leaked[:5]
    # dry run through the CLI: exit 0, nothing written
    r2 = subprocess.run([*cmd, "--dry-run"], env=cli_env, capture_output=True, text=True,
                        timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads(r2.stdout)["applied"] == 0
