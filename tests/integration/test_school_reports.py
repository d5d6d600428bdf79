"""What a school is told (issue 18): every rejection, whatever stage made it, and every
warning reach its ``validation_<UAI>.{json,html}`` and its French ``retours_<UAI>.html``, with
file, line, record number and rule, never a name; end to end against a real slapd.

School 0510001Z (ac-reims) is written by ``tests.builders``; one of its exports is replaced
by a hand-written case from ``fixtures/reports/`` (see its README).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.integration.test_sync import people, search
from tests.paths import FIXTURES, REPO

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
PREFIX = "AC-REIMS"
UAI = "0510001Z"
CASES = FIXTURES / "reports"
PUPILS = [Pupil("1001", "MARTIN", "Zoé", "3A"), Pupil("1002", "DURAND", "Hélène", "3A"),
          Pupil("1003", "PETIT", "Léo", "3B")]
GUARDIANS = [Guardian("501", "MARTIN", "Claire", ["1001"]),
             Guardian("502", "DURAND", "Paul", ["1002", "1003"])]
TEACHERS = [Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"]),
            Teacher("9002", "ROUX", "Inès", ["3B"])]
#: what must never appear on a page (names of the builders and of the fixtures, dates)
SECRETS = ("MARTIN", "Zoé", "DURAND", "Hélène", "PETIT", "Léo", "Claire", "Paul", "LEBLANC",
           "Henri", "ROUX", "Inès", "DOUBLON", "REDITE", "MARNITR", "NITR", "DIAYE",
           "2012-04-03", "03/04/2012", "01/02/2012", "02/01/1985", "1985-01-02")
EXPORTS = {"ELEVES": "ExportXML_ElevesSansAdresses.zip",
           "RESPONSABLES": "ExportXML_ResponsablesAvecAdresses.zip",
           "STRUCTURES": "ExportXML_Structures.zip", "STS": f"sts_emp_{UAI}_2026.xml"}


def school(landing: Path, date: str = "01/10/2026", pupils: list[Pupil] | None = None,
           guardians: list[Guardian] | None = None, **cases: str) -> Path:
    """The school's exports, one kind replaced by a case (``ELEVES="eleves_x.xml"``)."""
    d = write_school(landing, ACADEMY, UAI, pupils or PUPILS, guardians or GUARDIANS,
                     TEACHERS, date=date)
    for kind, name in cases.items():
        (d / EXPORTS[kind]).unlink()
        shutil.copyfile(CASES / name, d / name)
    return d


def at_line(n: int) -> str:
    """A line number on the French page: a technical detail beside the record."""
    return f"ligne <span class=line>{n}</span>"


def line_of(name: str, needle: str, nth: int = 1) -> int:
    """The line of the ``nth`` occurrence of ``needle`` in a case file."""
    lines = [i for i, text in enumerate((CASES / name).read_text("utf-8").splitlines(), 1)
             if needle in text]
    return lines[nth - 1]


@dataclass
class Pages:
    """A school's three pages after a run."""

    report: dict[str, Any]
    html: str
    retours: str

    def rejected(self, rule: str) -> list[dict[str, Any]]:
        return [r for r in self.report["rejected"] if r["rule"] == rule]

    def section(self, title: str) -> str:
        """The French page's section whose heading starts with ``title``."""
        parts = self.retours.split(f"<h2>{html.escape(title)}", 1)
        assert len(parts) == 2, f"no section {title!r} in the French page"
        return parts[1].split("<h2>", 1)[0]

    def titles(self) -> list[str]:
        return re.findall(r"<h2>([^<(]+)", self.retours)

    def assert_no_personal_data(self) -> None:
        for page in (self.html, self.retours, json.dumps(self.report, ensure_ascii=False)):
            text = re.sub(r"<[^>]+>", " ", page)
            for secret in SECRETS:
                assert secret not in text, secret


def pages(summary: dict[str, Any], uai: str = UAI) -> Pages:
    html_path = Path(summary["schools"][uai]["report"])
    report = json.loads(html_path.with_suffix(".json").read_text("utf-8"))
    retours = html_path.parent / f"retours_{uai}.html"
    return Pages(report, html_path.read_text("utf-8"), retours.read_text("utf-8"))


def jointures(server: LdapServer, profile: str) -> set[str]:
    return {j for p in people(server, profile) for j in p["ENTPersonJointure"]}


def key(eleve_id: str) -> str:
    return f"{PREFIX}$SIECLE${UAI}${eleve_id}"


def test_eleves_date_naissance_iso(env: Settings, server: LdapServer) -> None:
    """A birth date in ISO form, rejected by the reader, is on the school's pages; what hung
    on that pupil is shown as its consequence, not as a problem of its own."""
    name = "eleves_date_naissance_iso.xml"
    school(env.landing, ELEVES=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success"
    assert summary["schools"][UAI]["status"] == "ok"
    p = pages(summary)
    [r] = p.rejected("date_format")
    assert (r["file"], r["line"], r["element"]) == (name, line_of(name, 'ELEVE_ID="1002"'),
                                                    "ELEVE")
    assert "ELEVE_ID 1002" in r["message"] and r["field"] == "birth_date"
    assert p.report["rules"]["date_format"] == 1
    assert name in p.html and "date_format" in p.html
    # the French page: the problem, its screen, its file, line and SIECLE number
    sec = p.section("Date de naissance invalide")
    assert "onglet Identité" in sec and name in sec
    assert at_line(r["line"]) in sec and "ELEVE_ID 1002" in sec
    # its class membership and its guardian link follow it, shown as its consequences only
    cascades = [x for x in p.report["rejected"] if x.get("cascade")]
    assert sorted(x["rule"] for x in cascades) == ["unknown_person", "unknown_pupil"]
    assert "Rattachement à une personne absente" not in p.titles()
    assert "Responsable sans élève" not in " ".join(p.titles())
    assert "ELEVE_ID 1002" in p.section("Conséquences des problèmes ci-dessus")
    assert p.report["quarantine"] == {}
    p.assert_no_personal_data()
    # the directory: the pupil has no account; the others, their class and guardian do
    assert key("1002") not in jointures(server, "ELV")
    assert {key("1001"), key("1003")} <= jointures(server, "ELV")
    durand = [g for g in people(server, "TUT") if g["sn"] == ["DURAND"]]
    assert len(durand) == 1 and len(durand[0]["ENTAuxPersRelEleveEleve"]) == 1


def test_eleves_eleve_id_en_double(env: Settings, server: LdapServer) -> None:
    name = "eleves_eleve_id_en_double.xml"
    school(env.landing, ELEVES=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    p = pages(summary)
    [r] = p.rejected("unique")
    assert (r["file"], r["line"], r["element"]) == (
        name, line_of(name, 'ELEVE_ID="1002"', 2), "ELEVE")
    sec = p.section("Identifiant en double")
    assert "ELEVE_ID 1002" in sec and at_line(r["line"]) in sec
    assert "Exports XML" in sec
    p.assert_no_personal_data()
    # the first record is kept: one account, with the first record's name
    [pupil] = [x for x in people(server, "ELV") if key("1002") in x["ENTPersonJointure"]]
    assert pupil["sn"] == ["DURAND"]
    assert not [x for x in people(server, "ELV") if x["sn"] == ["DOUBLON"]]


def test_eleves_deux_divisions(env: Settings, server: LdapServer) -> None:
    name = "eleves_deux_divisions.xml"
    school(env.landing, ELEVES=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    p = pages(summary)
    [r] = p.rejected("one_division")
    assert (r["file"], r["element"]) == (name, "STRUCTURES_ELEVE")
    assert r["line"] == line_of(name, "<CODE_STRUCTURE>3B</CODE_STRUCTURE>")
    sec = p.section("Élève dans deux divisions")
    assert "onglet Scolarité" in sec and "ELEVE_ID 1001" in sec
    p.assert_no_personal_data()
    # the first division is kept
    [pupil] = [x for x in people(server, "ELV") if key("1001") in x["ENTPersonJointure"]]
    assert [c.rsplit("$", 1)[1] for c in pupil["ENTEleveClasses"]] == ["3A"]
    sdn = f"ENTStructureUAI={UAI},ou=structures,{server.base}"
    [c3b] = search(server, "(&(objectClass=ENTClasse)(cn=3B))", sdn)
    assert pupil["dn"] not in c3b["member"]


def test_sts_individu_en_double(env: Settings, server: LdapServer) -> None:
    name = "sts_individu_en_double.xml"
    school(env.landing, STS=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    p = pages(summary)
    [r] = p.rejected("unique")
    assert (r["file"], r["line"], r["element"]) == (name, line_of(name, 'ID="9002"', 2),
                                                    "INDIVIDU")
    sec = p.section("Identifiant en double")
    assert "INDIVIDU ID 9002" in sec and "STS-web" in sec
    p.assert_no_personal_data()
    ens = [t for t in people(server, "ENS") if f"{PREFIX}$STS${UAI}$9002" in
           t["ENTPersonJointure"]]
    assert [t["sn"] for t in ens] == [["ROUX"]]


def test_sts_date_naissance_francaise(env: Settings, server: LdapServer) -> None:
    name = "sts_date_naissance_francaise.xml"
    school(env.landing, STS=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    p = pages(summary)
    [r] = p.rejected("date_format")
    assert (r["file"], r["line"], r["element"]) == (name, line_of(name, 'ID="9002"'),
                                                    "INDIVIDU")
    sec = p.section("Date de naissance invalide")
    assert "STS-web › Individus" in sec and "INDIVIDU 9002" in sec
    assert "Enregistrement non conforme" not in p.titles()
    p.assert_no_personal_data()
    assert f"{PREFIX}$STS${UAI}$9002" not in jointures(server, "ENS")


def test_responsables_element_inconnu(env: Settings, server: LdapServer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """``RESPONSABLES/RESPONSABLE``: every guardian link is lost; a warning says where."""
    name = "responsables_element_inconnu.xml"
    school(env.landing, RESPONSABLES=name)
    with caplog.at_level(logging.WARNING):
        summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["schools"][UAI]["status"] == "ok"
    p = pages(summary)
    [w] = p.report["warnings"]
    assert (w["file"], w["line"], w["element"], w["rule"]) == (
        name, line_of(name, "<RESPONSABLE>"), "RESPONSABLES/RESPONSABLE", "unknown_element")
    assert "3 time(s)" in w["message"] and "RESPONSABLE_ELEVE" in w["message"]
    assert p.report["warning_count"] == 1 and p.report["rejected"] == []
    assert "RESPONSABLES/RESPONSABLE" in p.html.split("Warnings", 1)[1]
    sec = p.section("Avertissement : Élément XML inconnu ignoré")
    assert at_line(w["line"]) in sec and "<td>3</td>" in sec and name in sec
    assert "rien à corriger" not in p.retours
    p.assert_no_personal_data()
    logged = [r.getMessage() for r in caplog.records if "unknown <RESPONSABLE>" in r.getMessage()]
    assert logged and f"first at line {w['line']}" in logged[0]
    assert not any(s in caplog.text for s in ("MARTIN", "Claire", "DURAND", "Paul"))
    assert people(server, "TUT") == []  # no link read: no legal guardian


def test_structures_mef_element_inconnu(env: Settings, server: LdapServer) -> None:
    name = "structures_mef_element_inconnu.xml"
    school(env.landing, STRUCTURES=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    p = pages(summary)
    [w] = p.report["warnings"]
    assert (w["file"], w["line"], w["element"]) == (
        name, line_of(name, "<MEF><CODE_MEF>"), "MEFS_APPARTENANCE/MEF")
    assert "MEF_APPARTENANCE" in w["message"]
    assert "MEFS_APPARTENANCE/MEF" in p.section("Avertissement : Élément XML inconnu ignoré")
    # the class itself is there, with its pupils
    sdn = f"ENTStructureUAI={UAI},ou=structures,{server.base}"
    assert search(server, "(&(objectClass=ENTClasse)(cn=3A))", sdn)


def test_eleves_nom_bidi(env: Settings, server: LdapServer) -> None:
    """Bidi overrides and zero-width characters are removed from names, and reported."""
    name = "eleves_nom_bidi.xml"
    school(env.landing, ELEVES=name)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["schools"][UAI]["status"] == "ok"
    by_key = {k: x for x in people(server, "ELV") for k in x["ENTPersonJointure"]}
    assert by_key[key("1001")]["sn"] == ["MARNITR"]
    assert by_key[key("1001")]["givenName"] == ["Zoé"]
    assert by_key[key("1002")]["givenName"] == ["Hélène"]
    assert by_key[key("1003")]["sn"] == ["N'DIAYE-PETIT"]  # apostrophe and hyphen kept
    for x in by_key.values():
        for attr in ("sn", "givenName", "cn", "displayName"):
            for v in x.get(attr, []):
                assert not re.search("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]", v)
    p = pages(summary)
    ws = sorted(p.report["warnings"], key=lambda w: w["line"])
    assert [w["rule"] for w in ws] == ["invisible_characters"] * 2
    assert [w["line"] for w in ws] == [line_of(name, 'ELEVE_ID="1001"'),
                                       line_of(name, 'ELEVE_ID="1002"')]
    assert "last_name" in ws[0]["message"] and "first_name" in ws[0]["message"]
    assert "first_name" in ws[1]["message"] and "last_name" not in ws[1]["message"]
    sec = p.section("Avertissement : Caractères invisibles retirés d'un nom")
    assert "ELEVE_ID 1001" in sec and "ELEVE_ID 1002" in sec and "onglet Identité" in sec
    assert p.report["rejected"] == []
    p.assert_no_personal_data()


# ------------------------------------------------------------------------------------------
# A pupils export that cannot be used: its school untouched, the guardians' file left alone
# ------------------------------------------------------------------------------------------

MANY = [Pupil(str(1001 + i), f"NOM{i}", f"Prenom{i}", "3A" if i % 2 else "3B")
        for i in range(8)]
FAMILIES = [Guardian(str(501 + i), f"PARENT{i}", f"Prenom{i}", [str(1001 + i)])
            for i in range(8)]
#: the guardians' export of the next nights: one new e-mail address
FAMILIES_2 = [Guardian(g.personne_id, g.last, g.first, g.pupils,
                       email="parent0@example.org" if g.personne_id == "501" else None)
              for g in FAMILIES]


@pytest.mark.parametrize("case, refused", [("eleves_tronque.xml", False),
                                           ("eleves_doctype.xml", True)])
def test_a_refused_pupils_file_is_the_schools_one_problem(env: Settings, server: LdapServer,
                                                          case: str, refused: bool) -> None:
    school(env.landing, pupils=MANY, guardians=FAMILIES)
    assert pipeline.run_sync(env, RunRequest(ACADEMY))["status"] == "success"
    sdn = f"ENTStructureUAI={UAI},ou=structures,{server.base}"
    before = sorted((e["dn"], sorted(e.get("entryCSN", [])))
                    for e in search(server, "(objectClass=*)", f"ou=people,{server.base}",
                                    ["entryCSN"]) + search(server, "(objectClass=*)", sdn,
                                                           ["entryCSN"]))
    # next night: the pupils export cannot be used; the guardians' export is fine (8 links
    # to pupils it cannot find: past the error budget of 5)
    d = school(env.landing, date="02/10/2026", pupils=MANY, guardians=FAMILIES_2, ELEVES=case)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success"
    assert summary["schools"][UAI]["status"] == "quarantined"
    # one problem: the pupils file; the guardians' file is not quarantined, it stays
    assert [q["file"] for q in summary["quarantined"]] == ([] if refused else [str(d / case)])
    assert (d / EXPORTS["RESPONSABLES"]).exists()
    p = pages(summary)
    assert list(p.report["quarantine"]) == [case]
    assert ("DOCTYPE" if refused else "malformed or truncated") in p.report["quarantine"][case]
    assert p.report["rejected"] == [] and "unknown_pupil" not in p.report["rules"]
    assert "Fichiers non traités" in p.retours and case in p.retours
    assert "Responsable sans élève" not in p.retours
    after = sorted((e["dn"], sorted(e.get("entryCSN", [])))
                   for e in search(server, "(objectClass=*)", f"ou=people,{server.base}",
                                   ["entryCSN"]) + search(server, "(objectClass=*)", sdn,
                                                          ["entryCSN"]))
    assert after == before  # the school is untouched
    assert not search(server, "(mail=parent0@example.org)", f"ou=people,{server.base}")
    # the night after, a good pupils export again (the same as the first night's), the
    # guardians' export left in place: it is read and applied
    (d / case).unlink(missing_ok=True)
    write_school(env.landing / "night3", ACADEMY, UAI, MANY, FAMILIES, TEACHERS)
    shutil.copyfile(env.landing / "night3" / ACADEMY / UAI / EXPORTS["ELEVES"],
                    d / EXPORTS["ELEVES"])
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI]["status"] == "ok"
    assert pages(again).report["quarantine"] == {}
    assert search(server, "(mail=parent0@example.org)", f"ou=people,{server.base}")


# ------------------------------------------------------------------------------------------
# entsync check
# ------------------------------------------------------------------------------------------


def test_check_json_counts_the_school(env: Settings, server: LdapServer) -> None:
    school(env.landing)
    cli_env = {**os.environ, "ENTSYNC_LANDING": str(env.landing),
               "ENTSYNC_WORKDIR": str(env.workdir), "ENTSYNC_STATE_URL": env.state_url,
               "PYTHONPATH": str(REPO), **server.env()}
    r = subprocess.run([sys.executable, "-m", "etl.cli", "check", "--academy", ACADEMY,
                        "--json"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    counts = json.loads(r.stdout)["schools"][UAI]["counts"]
    assert counts["schools"] == 1
    assert counts["persons"] == len(PUPILS) + 2 + len(TEACHERS)
