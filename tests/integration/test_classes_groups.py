"""Classes, groups and pupils' placement on a real slapd (issue 18), from hand-written exports
in ``fixtures/``: a division and a group sharing a code never share an entry; groups known
only from the pupils export are kept whatever the order the files arrive in; pupils in
SIECLE's "Inactifs" have left; pupils with no division keep an account with no class.

The layout is ``docs/directory.md``'s: a class at ``cn=<CODE>``, a group at ``cn=<CODE>``
unless a division has its code, then at ``cn=<CODE> (groupe)``."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer
from etl.ops.undo import undo_run
from etl.store.db import get_engine
from etl.store.models import Entry, SchoolState
from tests.builders import Pupil, Teacher, eleves_xml, sts_xml
from tests.integration.test_sync import search
from tests.paths import FIXTURES

pytestmark = pytest.mark.ldap
FIXTURES = FIXTURES
ACADEMY = "ac-strasbourg"
PREFIX = "AC-STRASBOURG"
UAI = "0671234C"


def drop(env: Settings, *names: str) -> None:
    """Tonight's files of the school, and only them (the drop zone emptied of the others):
    files of one school arriving on different nights."""
    d = env.landing / ACADEMY / UAI
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name in names:
        shutil.copy(FIXTURES / name, d / Path(name).name)


def sync(env: Settings) -> dict[str, Any]:
    summary = pipeline.run_sync(env, RunRequest(ACADEMY, mode="normal"))
    assert summary["status"] == "success", summary
    assert summary["schools"][UAI]["status"] == "ok", summary["schools"]
    return summary


def reports(summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The school's validation report (JSON) and French page of a run."""
    page = Path(summary["schools"][UAI]["report"])
    data = json.loads((page.parent / f"validation_{UAI}.json").read_text("utf-8"))
    return data, html.unescape((page.parent / f"retours_{UAI}.html").read_text("utf-8"))


def sdn(server: LdapServer) -> str:
    return f"ENTStructureUAI={UAI},ou=structures,{server.base}"


def pupil(server: LdapServer, eleve_id: str) -> dict[str, Any] | None:
    found = search(server, f"(ENTPersonJointure={PREFIX}$SIECLE${UAI}${eleve_id})",
                   f"ou=people,{server.base}")
    return found[0] if found else None


def teacher(server: LdapServer, sts_id: str) -> dict[str, Any]:
    return search(server, f"(ENTPersonJointure={PREFIX}$STS${UAI}${sts_id})",
                  f"ou=people,{server.base}")[0]


def structures(server: LdapServer) -> dict[str, dict[str, Any]]:
    """RDN value -> entry, for the school's classes and groups (archives left out)."""
    out = {}
    for e in search(server, "(|(objectClass=ENTClasse)(objectClass=ENTGroupe))",
                    f"ou=groups,{sdn(server)}"):
        if ",ou=archives," not in e["dn"]:
            out[e["dn"].split(",", 1)[0][3:]] = e
    return out


def members(entry: dict[str, Any], server: LdapServer) -> set[str]:
    """The members of a class or group, as ELEVE_ID / STS ID (their first source key)."""
    out = set()
    for dn in entry["member"]:
        p = search(server, "(objectClass=*)", dn)
        if p:
            key = next(j for j in p[0]["ENTPersonJointure"] if "$INE$" not in j)
            out.add(key.rsplit("$", 1)[1])
    return out


def kind(entry: dict[str, Any]) -> str:
    oc = set(entry["objectClass"])
    assert len(oc & {"ENTClasse", "ENTGroupe"}) == 1, oc
    return "class" if "ENTClasse" in oc else "group"


# ------------------------------------------------------------------- division and group


def assert_class_and_group_apart(server: LdapServer) -> None:
    s = sdn(server)
    st = structures(server)
    assert set(st) == {"4A", "4B", "4B (groupe)"}
    assert kind(st["4A"]) == kind(st["4B"]) == "class"
    assert kind(st["4B (groupe)"]) == "group"
    # the group carries its code as a cn value too: found by (&(objectClass=ENTGroupe)(cn=4B))
    assert set(st["4B (groupe)"]["cn"]) == {"4B", "4B (groupe)"}
    assert st["4B"]["cn"] == ["4B"]
    assert st["4B (groupe)"]["dn"] == f"cn=4B (groupe),ou=groups,{s}"
    assert len(search(server, "(&(objectClass=ENTGroupe)(cn=4B))", s)) == 1
    assert len(search(server, "(&(objectClass=ENTClasse)(cn=4B))", s)) == 1
    assert members(st["4B"], server) >= {"1001", "1003"}
    assert "1002" not in members(st["4B"], server)
    assert members(st["4B (groupe)"], server) >= {"1002", "1003"}
    assert "1001" not in members(st["4B (groupe)"], server)
    a, b, c = (pupil(server, x) for x in ("1001", "1002", "1003"))
    assert a is not None and b is not None and c is not None
    assert a["ENTEleveClasses"] == [f"{s}$4B"] and "ENTEleveGroupes" not in a
    assert b["ENTEleveClasses"] == [f"{s}$4A"] and b["ENTEleveGroupes"] == [f"{s}$4B"]
    assert c["ENTEleveClasses"] == [f"{s}$4B"] and c["ENTEleveGroupes"] == [f"{s}$4B"]


def test_division_and_group_with_one_code_are_two_entries(env: Settings,
                                                          server: LdapServer) -> None:
    drop(env, "siecle/eleves_division_et_groupe_meme_code.xml",
         "sts/sts_emp_division_et_groupe_meme_code.xml")
    summary = sync(env)
    assert_class_and_group_apart(server)
    st = structures(server)
    s = sdn(server)
    assert members(st["4B"], server) == {"1001", "1003", "101"}
    assert members(st["4B (groupe)"], server) == {"1002", "1003", "102"}
    assert members(st["4A"], server) == {"1002", "101", "102"}
    # teachers' links land on the right entry: 101 teaches the class, 102 the group
    t1, t2 = teacher(server, "101"), teacher(server, "102")
    assert set(t1["ENTAuxEnsClasses"]) == {f"{s}$4A", f"{s}$4B"}
    assert t1["ENTAuxEnsClassesPrincipal"] == [f"{s}$4B"] and "ENTAuxEnsGroupes" not in t1
    assert t2["ENTAuxEnsClasses"] == [f"{s}$4A"] and t2["ENTAuxEnsGroupes"] == [f"{s}$4B"]
    # reported to the school (kept, not rejected), by file, line and code, never a name
    data, page = reports(summary)
    assert data["rejected"] == []
    warned = [w for w in data["warnings"] if w["rule"] == "group_code_is_division"]
    assert len(warned) == 1 and "group 4B" in warned[0]["message"] and warned[0]["line"]
    assert "Groupe portant le code d'une division" in page
    for name in ("Lambert", "Moreau", "Fontaine", "Alice", "Bruno", "Denise", "Gilles",
                 "Dupuis", "Garnier", "2012"):
        assert name not in page


def test_a_division_created_later_moves_the_group_once(env: Settings,
                                                       server: LdapServer) -> None:
    """Night 1: 4B is only a group (at cn=4B, as today). Night 2: a division 4B appears: the
    class takes cn=4B (the group's entry cannot be modified into a class: it is replaced),
    the group goes to cn=4B (groupe). Night 3: the division is gone again: the group stays
    where it is (no flip-flop), the class is removed."""
    d = env.landing / ACADEMY / UAI
    drop(env)
    (d / "eleves.xml").write_text(eleves_xml(UAI, [
        Pupil("1001", "Lambert", "Alice", "4A"),
        Pupil("1002", "Moreau", "Bruno", "4A", groups=["4B"]),
        Pupil("1003", "Fontaine", "Chloe", "4A", groups=["4B"])], date="30/09/2026"), "utf-8")
    sync(env)
    st = structures(server)
    assert set(st) == {"4A", "4B"} and kind(st["4B"]) == "group"
    assert members(st["4B"], server) == {"1002", "1003"}

    drop(env, "siecle/eleves_division_et_groupe_meme_code.xml")
    sync(env)
    assert_class_and_group_apart(server)
    st = structures(server)
    assert members(st["4B"], server) == {"1001", "1003"}
    assert members(st["4B (groupe)"], server) == {"1002", "1003"}

    drop(env)
    (d / "eleves.xml").write_text(eleves_xml(UAI, [
        Pupil("1001", "Lambert", "Alice", "4A"),
        Pupil("1002", "Moreau", "Bruno", "4A", groups=["4B"]),
        Pupil("1003", "Fontaine", "Chloe", "4A", groups=["4B"])], date="02/10/2026"), "utf-8")
    sync(env)
    st = structures(server)
    assert set(st) == {"4A", "4B (groupe)"}
    assert members(st["4B (groupe)"], server) == {"1002", "1003"}
    b = pupil(server, "1002")
    assert b is not None and b["ENTEleveGroupes"] == [f"{sdn(server)}$4B"]
    # and a quiet night after that plans nothing (the school read and planned again)
    with Session(get_engine(env.state_url)) as ses, ses.begin():
        ses.query(SchoolState).update({"fingerprint": None})
    (d / "eleves.xml").write_text(eleves_xml(UAI, [
        Pupil("1001", "Lambert", "Alice", "4A"),
        Pupil("1002", "Moreau", "Bruno", "4A", groups=["4B"]),
        Pupil("1003", "Fontaine", "Chloe", "4A", groups=["4B"])], date="03/10/2026") + " ", "utf-8")
    again = sync(env)
    assert again["changes"] == 0


def test_undo_of_the_move_puts_the_group_back(env: Settings, server: LdapServer) -> None:
    d = env.landing / ACADEMY / UAI
    drop(env)
    (d / "eleves.xml").write_text(eleves_xml(UAI, [
        Pupil("1002", "Moreau", "Bruno", "4A", groups=["4B"])], date="30/09/2026"), "utf-8")
    sync(env)
    drop(env, "siecle/eleves_division_et_groupe_meme_code.xml")
    moved = sync(env)
    assert kind(structures(server)["4B"]) == "class"
    out = undo_run(env, moved["run_id"])
    assert out["status"] == "success", out
    st = structures(server)
    assert set(st) == {"4A", "4B"} and kind(st["4B"]) == "group"
    assert members(st["4B"], server) == {"1002"}


def test_a_group_the_state_db_does_not_know_is_replaced_by_the_class(
        env: Settings, server: LdapServer) -> None:
    """The directory holds the group at cn=4B but the state DB lost it (restored from an
    older backup): the class's add finds a group there and replaces it."""
    d = env.landing / ACADEMY / UAI
    drop(env)
    (d / "eleves.xml").write_text(eleves_xml(UAI, [
        Pupil("1002", "Moreau", "Bruno", "4A", groups=["4B"])], date="30/09/2026"), "utf-8")
    sync(env)
    with Session(get_engine(env.state_url)) as ses, ses.begin():
        ses.query(Entry).filter(Entry.dn == f"cn=4B,ou=groups,{sdn(server)}").delete()
    drop(env, "siecle/eleves_division_et_groupe_meme_code.xml")
    summary = sync(env)
    assert summary["failed"] == 0
    assert_class_and_group_apart(server)


@pytest.mark.parametrize("sts", ["listing_the_group", "divisions_only"])
def test_a_division_only_sts_web_has_yet_moves_the_group_with_its_pupils(
        env: Settings, server: LdapServer, sts: str) -> None:
    """Night 1: the pupils export has 4B as a group. Night 2: only STS-web comes, and it has
    a division 4B: the class takes cn=4B with its teacher, the group goes apart keeping its
    pupils (no pupils export came to say otherwise); none of them lands in the class."""
    d = env.landing / ACADEMY / UAI
    drop(env)
    (d / "eleves.xml").write_text(eleves_xml(UAI, [
        Pupil("1001", "Lambert", "Alice", "4A"),
        Pupil("1002", "Moreau", "Bruno", "4A", groups=["4B"])], date="30/09/2026"), "utf-8")
    sync(env)
    drop(env)
    if sts == "listing_the_group":
        drop(env, "sts/sts_emp_division_et_groupe_meme_code.xml")
    else:
        (d / "sts.xml").write_text(sts_xml(UAI, [Teacher("101", "Dupuis", "Denise",
                                                         ["4A", "4B"])]), "utf-8")
    sync(env)
    st = structures(server)
    assert set(st) == {"4A", "4B", "4B (groupe)"}
    assert kind(st["4B"]) == "class" and kind(st["4B (groupe)"]) == "group"
    assert members(st["4B"], server) == {"101"}
    expected = {"1002", "102"} if sts == "listing_the_group" else {"1002"}
    assert members(st["4B (groupe)"], server) == expected
    b = pupil(server, "1002")
    assert b is not None and b["ENTEleveGroupes"] == [f"{sdn(server)}$4B"]


# ------------------------------------------------------- groups from the pupils export only

ELEVES_GROUPES = "siecle/eleves_groupes_sans_structures.xml"
STS_DIVISIONS = "sts/sts_emp_divisions_sans_groupes.xml"


@pytest.mark.parametrize("nights", [
    [[ELEVES_GROUPES, STS_DIVISIONS]],
    [[STS_DIVISIONS], [ELEVES_GROUPES]],
    [[ELEVES_GROUPES], [STS_DIVISIONS]],
], ids=["together", "sts_first", "pupils_first"])
def test_groups_known_only_from_the_pupils_export_are_kept(
        env: Settings, server: LdapServer, nights: list[list[str]]) -> None:
    """No BEE_STRUCTURES: STS-web lists the divisions, the pupils export the groups. The
    groups are kept, with their pupils, whatever the order the files come in."""
    summary: dict[str, Any] = {}
    seen: list[dict[str, Any]] = []
    for files in nights:
        drop(env, *files)
        summary = sync(env)
        seen.append(reports(summary)[0])
    for data in seen:
        assert not [r for r in data["rejected"] if r["rule"] == "unknown_division"]
        assert data["warnings"] == []  # nothing listing groups came: nothing to warn about
    st = structures(server)
    assert set(st) == {"3A", "3B", "3A_ALL2", "3B_LAT"}
    assert kind(st["3A_ALL2"]) == kind(st["3B_LAT"]) == "group"
    assert members(st["3A_ALL2"], server) == {"1001", "1003"}
    assert members(st["3B_LAT"], server) == {"1002", "1003"}
    assert members(st["3A"], server) == {"1001", "101"}
    s = sdn(server)
    c = pupil(server, "1003")
    assert c is not None and set(c["ENTEleveGroupes"]) == {f"{s}$3A_ALL2", f"{s}$3B_LAT"}
    assert c["ENTEleveClasses"] == [f"{s}$3B"]


def test_a_group_no_list_of_groups_has_is_kept_and_reported(env: Settings,
                                                            server: LdapServer) -> None:
    """A BEE_STRUCTURES that lists 3A_ALL2 but not 3B_LAT: 3B_LAT is kept (SIECLE says the
    pupils are in it), and the school is told, as a warning, not a rejection."""
    drop(env, ELEVES_GROUPES, STS_DIVISIONS, "siecle/structures_groupe_non_liste.xml")
    summary = sync(env)
    st = structures(server)
    assert members(st["3B_LAT"], server) == {"1002", "1003"}
    assert members(st["3A_ALL2"], server) == {"1001", "1003"}
    assert st["3A_ALL2"]["description"] == ["3EME ALLEMAND LV2"]
    data, page = reports(summary)
    assert data["rejected"] == []
    warned = sorted((w["rule"], w["line"]) for w in data["warnings"])
    assert [r for r, _ in warned] == ["unknown_group", "unknown_group"]
    assert all(line for _, line in warned)
    assert all("3B_LAT" in w["message"] for w in data["warnings"])
    assert "Groupe absent de la liste des groupes" in page and "ELEVE_ID 1002" in page


# ------------------------------------------------------------- Inactifs, no division at all


def test_a_pupil_moved_to_inactifs_has_left(env: Settings, server: LdapServer) -> None:
    drop(env, "siecle/eleves_inactifs_la_veille.xml")
    sync(env)
    before = pupil(server, "1001")
    assert before is not None and before["entSyncStatus"] == ["ACTIVE"]
    drop(env, "siecle/eleves_inactifs.xml")
    summary = sync(env)
    gone = pupil(server, "1001")
    assert gone is not None and gone["entSyncStatus"] == ["DISABLED"]
    assert gone["uid"] == before["uid"]
    st = structures(server)
    assert set(st) == {"4C"}  # never a class "Inactifs"
    assert members(st["4C"], server) == {"1002", "1003", "1004", "1005", "1006"}
    kept = pupil(server, "1002")  # INACTIFS and 4C: in 4C
    assert kept is not None and kept["entSyncStatus"] == ["ACTIVE"]
    assert kept["ENTEleveClasses"] == [f"{sdn(server)}$4C"]
    assert summary["schools"][UAI]["disabled"] == 1
    assert reports(summary)[0]["rejected"] == []


def test_inactifs_on_a_first_load_get_no_account(env: Settings, server: LdapServer) -> None:
    drop(env, "siecle/eleves_inactifs.xml")
    sync(env)
    assert pupil(server, "1001") is None
    assert pupil(server, "1002") is not None
    assert not search(server, "(cn=inactifs)", sdn(server))


def test_pupils_without_a_division_keep_an_account(env: Settings, server: LdapServer) -> None:
    drop(env, "siecle/eleves_sans_division.xml")
    summary = sync(env)
    s = sdn(server)
    a, b, c = (pupil(server, x) for x in ("1001", "1002", "1003"))
    assert a is not None and a["entSyncStatus"] == ["ACTIVE"]
    assert "ENTEleveClasses" not in a and "ENTEleveGroupes" not in a
    assert b is not None and b["entSyncStatus"] == ["ACTIVE"]
    assert "ENTEleveClasses" not in b and b["ENTEleveGroupes"] == [f"{s}$6_LAT"]
    assert c is not None and c["ENTEleveClasses"] == [f"{s}$6A"]
    assert pupil(server, "1004") is None  # no division and a past DATE_SORTIE: left
    st = structures(server)
    assert set(st) == {"6A", "6_LAT"}
    assert members(st["6_LAT"], server) == {"1002"}
    assert reports(summary)[0]["rejected"] == []
