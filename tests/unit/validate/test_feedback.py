"""Academy feedback (`etl.validate.feedback`): what a school reads about its rejected records."""

from __future__ import annotations

import json
import re
from pathlib import Path

from etl import run as pipeline
from etl.config import Settings
from etl.devtools.generate import uai_check_letter
from etl.validate.feedback import advice_for, record_reference, write_school_feedback
from tests.builders import Guardian, Pupil, Teacher, structures_xml, write_school, write_zip

ACADEMY = "ac-reims"
UAI = "0510003" + uai_check_letter("0510003")
NAMES = ("<script>O'BRIEN", "Zoé", "MARTIN", "Léa", "DURAND", "LEBLANC")


def _validation_json(tmp_path: Path) -> Path:
    """A real validation report: one school's exports read and validated (no directory)."""
    landing = tmp_path / "landing"
    pupils = [
        Pupil("1001", "<script>O'BRIEN", "Zoé", "3A", ine="123"),  # INE invalide
        Pupil("1002", "MARTIN", "Léa", "9Z", ine="070876696HA"),  # division inconnue
        Pupil("1003", "DURAND", "Paul", "3A", birth=None),  # type: ignore[arg-type]
        Pupil("1004", "PETIT", "Jules", "3A", ine="111111111AA"),
    ]
    guardians = [Guardian("501", "MARTIN", "Claire", ["1002"]),
                 Guardian("502", "ROUX", "Eva", ["9999"])]  # responsable sans élève
    teachers = [Teacher("9001", "LEBLANC", "Henri", ["3A"])]
    d = write_school(landing, ACADEMY, UAI, pupils, guardians, teachers)
    # the Structures export knows 3A only
    write_zip(d / "ExportXML_Structures.zip", "Structures.xml", structures_xml(UAI, ["3A"], []))
    st = Settings.from_env({"ENTSYNC_LANDING": str(landing),
                            "ENTSYNC_WORKDIR": str(tmp_path / "work"),
                            "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"})
    run_id = pipeline.start_run(st, ACADEMY, dry_run=True, trigger="test")
    disc = pipeline.discover_files(st, ACADEMY, run_id)
    (res,) = pipeline.read_validate_schools(st, ACADEMY, run_id,
                                            {UAI: disc.school_docs()[UAI]}, dry_run=True)
    assert res.status == "ok" and res.rejected >= 4, res
    return Path(str(res.report_json))


def test_feedback_page_explains_each_rule_and_shows_no_name(tmp_path: Path) -> None:
    vjson = _validation_json(tmp_path)
    report = json.loads(vjson.read_text("utf-8"))
    rules = set(report["rules"])
    assert {"ine_format", "unknown_division", "required", "unknown_pupil"} <= rules, rules

    out = write_school_feedback(vjson, vjson.parent, "Collège Jean Moulin <Reims>")
    assert out == vjson.parent / f"retours_{UAI}.html"
    page = out.read_text("utf-8")
    assert '<html lang="fr">' in page
    assert "Collège Jean Moulin &lt;Reims&gt;" in page and "<Reims>" not in page
    for title, screen in (
        ("INE invalide", "onglet Scolarité"),
        ("Division ou groupe inconnu", "SIECLE › Structures"),
        ("Date de naissance manquante", "onglet Identité"),
        ("Responsable sans élève", "onglet Responsables"),
    ):
        section = page.split(f"<h2>{title}", 1)
        assert len(section) == 2, f"no section {title!r}"
        assert screen in section[1].split("<h2>", 1)[0], f"{title}: no {screen!r}"
    assert "STS-web" in page
    # each record as SIECLE finds it (class and INE), the export by its SIECLE name; file,
    # line and SIECLE number as a technical detail; never a name nor a birth date
    assert "élève de 9Z, INE 070876696HA" in page
    assert "ElevesSansAdresses" in page and "ResponsablesAvecAdresses.xml" in page
    lines = {str(r["line"]) for r in report["rejected"] if r["line"]}
    assert all(f"ligne <span class=line>{n}</span>" in page for n in lines)
    assert "ELEVE_ID 1001" in page or "ELEVE_ID 1002" in page
    text = re.sub(r"<[^>]+>", " ", page)
    for name in (*NAMES, "ROUX", "Claire", "Henri", "PETIT"):
        assert name.lower() not in text.lower().replace("retours", ""), name
    for secret in ("111111111AA", "01/02/2012", "2012-02-01"):  # an INE of no problem
        assert secret not in page
    assert "<script>" not in page


def test_clean_school_and_quarantined_file(tmp_path: Path) -> None:
    clean = tmp_path / "validation_0510003X.json"
    clean.write_text(json.dumps({"uai": "0510003X", "rejected": [], "quarantine": {}}))
    page = write_school_feedback(clean, tmp_path / "out", None).read_text("utf-8")
    assert "rien à corriger" in page

    q = tmp_path / "validation_q.json"
    q.write_text(json.dumps({"uai": "0510003X", "rejected": [], "quarantine": {
        "ElevesSansAdresses.xml": "error budget exceeded: 9 of 10 records rejected"}}))
    page = write_school_feedback(q, tmp_path / "out", "Lycée <b>").read_text("utf-8")
    assert "Fichiers non traités" in page and "error budget exceeded" in page
    assert "Trop d&#x27;enregistrements de ce fichier ne sont pas conformes (9 sur 10)" in page
    assert "puis refaire l&#x27;export" in page and "rien à corriger" not in page
    assert "Lycée &lt;b&gt;" in page


def test_advice_and_references() -> None:
    assert advice_for("required", "person SIECLE$0510003X$7: birth_date is missing").title \
        == "Date de naissance manquante"
    assert advice_for("required", "link a -> b: level is missing").title.startswith("Niveau")
    assert "STS-web › Services d'enseignement" in advice_for("teacher_without_service").where
    assert "STS-web" in advice_for("unknown_structure").where
    assert advice_for("no_such_rule").title == "Enregistrement non conforme"
    assert record_reference("person SIECLE$0510003X$1002: x") == "ELEVE_ID 1002"
    assert record_reference("link SIECLE$0510003X$9 -> SIECLE-RESP$0510003X$502: y") \
        == "ELEVE_ID 9 → PERSONNE_ID 502"
    assert record_reference("person SIECLE-RESP$0510003X$502: z") == "PERSONNE_ID 502"
    assert record_reference("ELEVE_ID 77 appears twice") == "ELEVE_ID 77"
    assert record_reference("person INE$070876696HA: sex is not M or F") == ""


def test_every_rejection_a_reader_makes_has_its_own_advice(tmp_path: Path) -> None:
    """Each rule a reader can reject a record with is explained to the school (not the
    generic "Enregistrement non conforme"), and names the record when it has a number."""
    from etl.discover.xmlsafe import XmlSource
    from etl.read.siecle import (
        read_siecle_eleves,
        read_siecle_responsables,
        read_siecle_structures,
    )
    from etl.read.sts import read_sts
    from etl.validate.feedback import _FALLBACK, is_cascade
    from tests.builders import header

    head = header(UAI, 2026, "01/10/2026")
    docs = {
        "eleves.xml": (read_siecle_eleves, (
            f"<BEE_ELEVES>{head}<DONNEES><ELEVES>"
            "<ELEVE><NOM_DE_FAMILLE>X</NOM_DE_FAMILLE></ELEVE>"
            '<ELEVE ELEVE_ID="7"><DATE_NAISS>2012-05-03</DATE_NAISS></ELEVE>'
            '<ELEVE ELEVE_ID="8"><DATE_NAISS>03/05/2012</DATE_NAISS></ELEVE>'
            '<ELEVE ELEVE_ID="8"><DATE_NAISS>03/05/2012</DATE_NAISS></ELEVE>'
            "</ELEVES><STRUCTURES>"
            '<STRUCTURES_ELEVE ELEVE_ID="8"><STRUCTURE><CODE_STRUCTURE>3A</CODE_STRUCTURE>'
            "<TYPE_STRUCTURE>D</TYPE_STRUCTURE></STRUCTURE><STRUCTURE><CODE_STRUCTURE>3B"
            "</CODE_STRUCTURE><TYPE_STRUCTURE>D</TYPE_STRUCTURE></STRUCTURE>"
            "</STRUCTURES_ELEVE></STRUCTURES></DONNEES></BEE_ELEVES>"),
            {"required", "date_format", "unique", "one_division"}),
        "responsables.xml": (read_siecle_responsables, (
            f"<BEE_RESPONSABLES>{head}<DONNEES><PERSONNES><PERSONNE/>"
            '<PERSONNE PERSONNE_ID="5"/><PERSONNE PERSONNE_ID="5"/></PERSONNES>'
            "<RESPONSABLES><RESPONSABLE_ELEVE><ELEVE_ID>8</ELEVE_ID></RESPONSABLE_ELEVE>"
            "</RESPONSABLES></DONNEES></BEE_RESPONSABLES>"), {"required", "unique"}),
        "structures.xml": (read_siecle_structures, (
            f"<BEE_STRUCTURES>{head}<DONNEES><DIVISIONS><DIVISION/></DIVISIONS><GROUPES>"
            "<GROUPE/></GROUPES></DONNEES></BEE_STRUCTURES>"), {"required"}),
        "sts.xml": (read_sts, (
            f'<STS_EDT><PARAMETRES><UAJ CODE="{UAI}"/></PARAMETRES><DONNEES><INDIVIDUS>'
            '<INDIVIDU/><INDIVIDU ID="9"><DATE_NAISSANCE>06/05/1980</DATE_NAISSANCE>'
            '</INDIVIDU><INDIVIDU ID="4"/><INDIVIDU ID="4"/></INDIVIDUS><STRUCTURE>'
            "<DIVISIONS><DIVISION/></DIVISIONS></STRUCTURE></DONNEES></STS_EDT>"),
            {"required", "date_format", "unique"}),
    }
    for name, (reader, text, rules) in docs.items():
        path = tmp_path / name
        path.write_text(text, "utf-8")
        res = reader(XmlSource(path), UAI)
        assert {r.rule for r in res.rejected} == rules, (name, res.rejected)
        for r in res.rejected:
            d = r.as_dict()
            adv = advice_for(r.rule, r.message, r.field or "")
            assert adv != _FALLBACK, (name, r.rule, r.message)
            assert not is_cascade(d)
            if re.search(r"\b(ELEVE_ID|PERSONNE_ID|ID)=\"[0-9]+\"", text) and r.rule != "required":
                assert record_reference(r.message), (name, r.message)
def test_ine_conflicts_reach_a_school_page_that_has_nothing_rejected(tmp_path: Path) -> None:
    """Kept records (each has its account) whose INE is another child's: their own section,
    with both record numbers and the screens; added twice, listed once."""
    from etl.validate.feedback import add_identity_findings

    vjson = tmp_path / f"validation_{UAI}.json"
    vhtml = tmp_path / f"validation_{UAI}.html"
    page = tmp_path / f"retours_{UAI}.html"
    vjson.write_text(json.dumps({"uai": UAI, "rejected": [], "quarantine": {}}), "utf-8")
    vhtml.write_text("<html><body><h1>Validation</h1></body></html>", "utf-8")
    key = f"AC-REIMS$SIECLE${UAI}$600002"
    finding = {"uai": UAI, "person_key": key, "element": "ELEVE", "rule": "ine_conflict",
               "reason": "birth_date", "others": [f"AC-REIMS$SIECLE${UAI}$600001"],
               "stored": False, "file": "ElevesSansAdresses.xml", "line": 24,
               "message": f"{key}: its INE is also held by AC-REIMS$SIECLE${UAI}$600001"}
    for _ in range(2):
        add_identity_findings(vjson, vhtml, page, [finding])
    text = page.read_text("utf-8")
    assert "Aucun enregistrement écarté" not in text and "0 enregistrement" not in text
    assert text.count("Même INE pour deux élèves différents (1)") == 1
    assert f"ELEVE_ID 600002 ; même INE que ELEVE_ID 600001 ({UAI}) : date de naissance " \
           "différente" in text
    assert "onglet Scolarité : vérifier l&#x27;INE" in text and "onglet Identité" in text
    assert json.loads(vjson.read_text("utf-8"))["identity"] == [finding]
    v = vhtml.read_text("utf-8")
    assert v.count("Identity conflicts") == 1 and "ine_conflict" in v and v.endswith("</html>")
    assert advice_for("ine_conflict").title == "Même INE pour deux élèves différents"
