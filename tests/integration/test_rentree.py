"""La rentrée on a real slapd (issue 24): one collège and one lycée generated with their next
school year (etl/devtools/generate/rentree.py), synced after a first load.

As docs/operations.md documents it: inside the roll-over window (`rollover_window`,
`no_disable`, relaxed update guard) nobody is disabled, the new classes are created and last
year's are archived (`rollover_archive = "archive"`); outside it the disaster guards hold
every school until an operator approves, and approving applies the plan. Archived classes are
never mixed with the new ones: an archive holds last year's members, a new class this year's,
and a new class with last year's code is a new entry, not last year's modified.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import Rentree, generate_academy
from etl.devtools.slapd import LdapServer
from tests.integration.test_sync import search

pytestmark = pytest.mark.ldap
ACADEMY = "ac-strasbourg"
PREFIX = "AC-STRASBOURG"
TONIGHT = dt.date(2026, 10, 1)
IN_WINDOW = dt.date(2027, 9, 3)  # rollover_window 08-20..09-30
OUTSIDE = dt.date(2027, 10, 5)


def generate(tmp: Path, export: dt.date, renumber: bool = True) -> tuple[Path, Path, list[str]]:
    """Tonight's landing and the rentrée's, of one collège (index 0) and one lycée (1)."""
    summary = generate_academy(tmp / "tonight", ACADEMY, 2, 60, seed=11,
                               rentree=Rentree(tmp / "rentree", export, renumber=renumber))
    return tmp / "tonight", tmp / "rentree", summary.schools


def sync(env: Settings, landing: Path, today: dt.date) -> dict[str, Any]:
    return pipeline.run_sync(dataclasses.replace(env, landing=landing),
                             RunRequest(ACADEMY, today=today))


def sdn(server: LdapServer, uai: str) -> str:
    return f"ENTStructureUAI={uai},ou=structures,{server.base}"


def classes(server: LdapServer, uai: str, archived: bool = False) -> dict[str, dict[str, Any]]:
    """cn -> entry: the school's live classes, or its archived ones."""
    return {e["cn"][0]: e for e in search(server, "(objectClass=ENTClasse)",
                                          f"ou=groups,{sdn(server, uai)}")
            if (",ou=archives," in e["dn"]) == archived}


def placement(landing: Path, uai: str) -> dict[str, str]:
    """ELEVE_ID -> division, as the school's pupils export says."""
    with zipfile.ZipFile(landing / ACADEMY / uai / "ExportXML_ElevesSansAdresses.zip") as z:
        root = etree.fromstring(z.read("ElevesSansAdresses.xml"))
    return {s.get("ELEVE_ID"): s.findtext("STRUCTURE[TYPE_STRUCTURE='D']/CODE_STRUCTURE")
            for s in root.iterfind("DONNEES/STRUCTURES/STRUCTURES_ELEVE")}


def ines(landing: Path, uai: str) -> set[str]:
    with zipfile.ZipFile(landing / ACADEMY / uai / "ExportXML_ElevesSansAdresses.zip") as z:
        root = etree.fromstring(z.read("ElevesSansAdresses.xml"))
    return {e.findtext("ID_NATIONAL") or "" for e in root.iterfind("DONNEES/ELEVES/ELEVE")} - {""}


def pupil_ids(server: LdapServer, uai: str, dns: list[str]) -> set[str]:
    """The ELEVE_IDs (in `uai`) of the pupils among these member DNs."""
    out = set()
    for dn in dns:
        for e in search(server, "(ENTPersonProfils=National_ELV)", dn):
            key = f"{PREFIX}$SIECLE${uai}$"
            out |= {j[len(key):] for j in e["ENTPersonJointure"] if j.startswith(key)}
    return out


def disabled(server: LdapServer) -> list[dict[str, Any]]:
    return search(server, "(entSyncStatus=DISABLED)", f"ou=people,{server.base}", ["uid"])


def assert_new_year(server: LdapServer, tonight: Path, rentree: Path, uais: list[str],
                    last_year: dict[str, dict[str, set[str]]]) -> None:
    """Live classes are this year's with this year's pupils only; archives last year's."""
    for uai in uais:
        now = placement(rentree, uai)
        live = classes(server, uai)
        assert set(live) == set(now.values()), uai
        for code, entry in live.items():
            assert entry["ENTStructureAnneeScolaire"] == ["2027"]
            assert pupil_ids(server, uai, entry["member"]) == {
                i for i, d in now.items() if d == code}, (uai, code)
        archived = classes(server, uai, archived=True)
        assert set(archived) == set(last_year[uai]), uai
        for code, entry in archived.items():
            assert entry["dn"].endswith(f",ou=2026,ou=archives,ou=groups,{sdn(server, uai)}")
            assert set(entry["member"]) == last_year[uai][code], (uai, code)
    college, lycee = uais
    # the collège's 3e in the lycée's 2nde: the same account, found by its INE
    came = ines(tonight, college) & ines(rentree, lycee)
    assert came
    for ine in came:
        (acc,) = search(server, f"(ENTEleveINE={ine})", f"ou=people,{server.base}")
        assert any(j.startswith(f"{PREFIX}$SIECLE${lycee}$") for j in acc["ENTPersonJointure"])
        assert all(c.startswith(sdn(server, lycee)) for c in acc["ENTEleveClasses"])


def first_load(env: Settings, server: LdapServer,
               tonight: Path, uais: list[str]) -> dict[str, dict[str, set[str]]]:
    s = sync(env, tonight, TONIGHT)
    assert s["status"] == "success", s
    return {u: {c: set(e["member"]) for c, e in classes(server, u).items()} for u in uais}


def test_rentree_in_the_window_disables_nobody_and_archives_last_year(
        env: Settings, server: LdapServer, tmp_path: Path) -> None:
    tonight, rentree, uais = generate(tmp_path, IN_WINDOW)
    last_year = first_load(env, server, tonight, uais)
    people_before = {e["dn"] for e in search(server, "(objectClass=*)",
                                             f"ou=people,{server.base}", ["uid"])}
    s = sync(env, rentree, IN_WINDOW)
    assert s["status"] == "success", s
    assert s["mode"] == "no_disable"
    assert {v["status"] for v in s["schools"].values()} == {"ok"}, s["schools"]
    # nobody disabled, nobody removed: the leavers (3e, terminale) wait for October
    assert not disabled(server)
    assert people_before <= {e["dn"] for e in search(server, "(objectClass=*)",
                                                     f"ou=people,{server.base}", ["uid"])}
    assert_new_year(server, tonight, rentree, uais, last_year)
    # renumbered: no code of last year is a live class
    for uai in uais:
        assert not set(classes(server, uai)) & set(last_year[uai])


def people(server: LdapServer) -> dict[str, dict[str, Any]]:
    return {e["dn"]: e for e in search(server, "(objectClass=*)", f"ou=people,{server.base}")}


@pytest.mark.parametrize("group,order", [(0, "uai"), (1, "uai"), (1, "reverse")])
def test_rentree_outside_the_window_is_held_then_approval_applies_it(
        env: Settings, server: LdapServer, tmp_path: Path, group: int, order: str) -> None:
    # whole, and streamed a school at a time in both orders: a pupil moving from the collège
    # to the lycée is planned with whichever school comes first, and waits all the same
    env = dataclasses.replace(env, plan_group=group, plan_order=order)
    tonight, rentree, uais = generate(tmp_path, OUTSIDE)
    last_year = first_load(env, server, tonight, uais)
    before = people(server)
    s = sync(env, rentree, OUTSIDE)
    assert s["mode"] == "normal"
    assert s["status"] == "awaiting_approval", s
    assert {u: v["status"] for u, v in s["schools"].items()} == {
        u: "awaiting_approval" for u in uais}
    pending = pipeline.pending_approvals(env, s["run_id"])
    assert sorted(p["uai"] for p in pending) == sorted(uais)
    assert all(any(g["tripped"] for g in p["guards"]) for p in pending)
    # nothing written meanwhile: last year's classes are still the live ones
    for uai in uais:
        assert {c: set(e["member"]) for c, e in classes(server, uai).items()} == last_year[uai]
        assert not classes(server, uai, archived=True)
    assert people(server) == before
    # all at once, or (streamed in reverse) one school at a time, the last held first
    each = [None] if order == "uai" else [p["uai"] for p in reversed(pending)]
    for uai in each:
        res = pipeline.decide(env, s["run_id"], approve=True, uai=uai, by="test")
        assert {v["decision"] for v in res["schools"].values()} == {"approved"}
        assert not any(v.get("failed") for v in res["schools"].values()), res
    assert not pipeline.pending_approvals(env, s["run_id"])
    assert_new_year(server, tonight, rentree, uais, last_year)
    # outside the window the leavers are disabled (normal mode), as the held plan said
    assert disabled(server)


def test_a_class_with_last_years_code_is_a_new_entry(
        env: Settings, server: LdapServer, tmp_path: Path) -> None:
    tonight, rentree, uais = generate(tmp_path, IN_WINDOW, renumber=False)
    last_year = first_load(env, server, tonight, uais)
    uuids = {u: {c: e["entryUUID"] for c, e in classes(server, u).items()} for u in uais}
    s = sync(env, rentree, IN_WINDOW)
    assert s["status"] == "success", s
    assert_new_year(server, tonight, rentree, uais, last_year)
    same = 0
    for uai in uais:
        live, archived = classes(server, uai), classes(server, uai, archived=True)
        for code in set(live) & set(last_year[uai]):
            same += 1
            # a new entry at last year's DN, not last year's modified; last year's members
            # are in the archive only
            assert live[code]["entryUUID"] != uuids[uai][code]
            assert archived[code]["entryUUID"] != uuids[uai][code]
            assert set(archived[code]["member"]) == last_year[uai][code]
            assert set(live[code]["member"]) != last_year[uai][code]
    assert same
    # the next export of the year changes nothing (the new entries are not renewed again)
    again = generate_academy(tmp_path / "t2", ACADEMY, 2, 60, seed=11, rentree=Rentree(
        tmp_path / "r2", IN_WINDOW + dt.timedelta(days=1), renumber=False))
    assert again.schools == uais
    s = sync(env, tmp_path / "r2", IN_WINDOW + dt.timedelta(days=1))
    assert s["status"] == "success" and s["changes"] == 0, s
