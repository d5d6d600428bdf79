"""Validation of one school's canonical tables: each rule, the error budget, the reports."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from etl.discover.xmlsafe import XmlSource
from etl.read.canonical import Tables, frame, missing, values
from etl.read.siecle import read_siecle_eleves
from etl.validate.rules import load_specs, validate_school, write_validation_report
from tests.paths import FIXTURES, REPO

UAI = "0750654D"
ELEVES = "ElevesSansAdresses.xml"
RESP = "ResponsablesAvecAdresses.xml"
STS = f"sts_emp_{UAI}_2026.xml"
STRUCT = "Structures.xml"
FIXTURES = FIXTURES / "validation"
CASCADE = "rejected or quarantined"
#: personal data in the clean school: none of it may reach a report
NAMES = ("Zorglubova", "Ludmilla", "Quertinmont", "Anatole", "Brindejonc", "Philomène",
         "Tournesol", "Cunégonde", "Haddock", "Archibald", "Castafiore", "Bianca",
         "Lampion", "Séraphin")


def pk(i: str) -> str:
    return f"SIECLE${UAI}${i}"


def gk(i: str) -> str:
    return f"SIECLE-RESP${UAI}${i}"


def tk(i: str) -> str:
    return f"STS${UAI}${i}"


def clean_school() -> Tables:
    """3 pupils (E3 in no class), 3 guardians (R3 linked to nobody), a teacher and a head."""
    persons = frame("persons", {
        "person_key": [pk("E1"), pk("E2"), pk("E3"), gk("R1"), gk("R2"), gk("R3"), tk("T1"),
                       tk("D1")],
        "uai": [UAI] * 8,
        "profile": ["ELV", "ELV", "ELV", "TUT", "TUT", "TUT", "ENS", "DIR"],
        "source": ["SIECLE"] * 6 + ["STS", "STS"],
        "source_id": ["E1", "E2", "E3", "R1", "R2", "R3", "T1", "D1"],
        "ine": ["123456789AB", "1234567890A", None, None, None, None, None, None],
        "last_name": ["Zorglubova", "Quertinmont", "Brindejonc", "Tournesol", "Haddock",
                      "Castafiore", "Lampion", "Tournesol"],
        "first_name": ["Ludmilla", "Anatole", "Philomène", "Cunégonde", "Archibald", "Bianca",
                       "Séraphin", "Cunégonde"],
        "birth_date": ["2013-03-02", "2012-07-14", "2012-11-30", None, None, None,
                       "1975-01-01", None],
        "sex": ["F", "M", "F", "F", "M", None, "M", "F"],
        "email": [None, "zorglub@example.org", None, "cunegonde.t@example.org", None, None,
                  None, None],
        "has_left": [False] * 8,
        "file": [ELEVES, ELEVES, ELEVES, RESP, RESP, RESP, STS, STS],
        "line": [10, 20, 30, 5, 15, 25, 100, 110],
    })
    structures = frame("structures", {
        "uai": [UAI] * 3, "code": ["3A", "G1", "4B"], "kind": ["D", "G", "D"],
        "label": ["3A", "G1", "4B"], "source": ["STS"] * 3, "file": [STS] * 3,
        "line": [200, 210, 220],
    })
    memberships = frame("memberships", {
        "uai": [UAI] * 4,
        "person_key": [pk("E1"), pk("E1"), pk("E2"), tk("T1")],
        "code": ["3A", "G1", "3A", "3A"],
        "kind": ["D", "G", "D", "D"],
        "role": ["pupil", "pupil", "pupil", "teacher"],
        "head_teacher": [False, False, False, True],
        "file": [ELEVES, ELEVES, ELEVES, STS],
        "line": [40, 41, 42, 205],
    })
    links = frame("guardian_links", {
        "uai": [UAI] * 3,
        "pupil_key": [pk("E1"), pk("E2"), pk("E2")],
        "guardian_key": [gk("R1"), gk("R1"), gk("R2")],
        "level": ["1", "1", "3"],
        "legal": [True, True, False],
        "file": [RESP] * 3,
        "line": [50, 51, 52],
    })
    return Tables(persons=persons, structures=structures, memberships=memberships,
                  guardian_links=links)


def _set(table: str, row: int, col: str, value: object) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        df = t[table]
        if isinstance(df[col].dtype, pd.CategoricalDtype) and not missing(value) \
                and value not in df[col].cat.categories:  # code-like columns are categorical
            df[col] = df[col].cat.add_categories([value])
        df.loc[row, col] = value
    return mutate


def own_rules(outcome) -> list[str]:
    """Rules of the rejections that are not mere consequences of another rejection."""
    return sorted(r.rule for r in outcome.rejected if CASCADE not in r.message)


def test_clean_input_gives_no_rejection():
    tables = clean_school()
    out = validate_school(tables, UAI)
    assert out.rejected == []
    assert out.quarantine == {}
    assert all(c["success"] for c in out.checks)
    for name in ("persons", "structures", "memberships", "guardian_links"):
        assert len(out.tables[name]) == len(tables[name])
    # one check per expectation of every suite, plus the reference checks
    n_expectations = sum(len(load_specs(t)) for t in
                         ("persons", "structures", "memberships", "guardian_links"))
    assert len([c for c in out.checks if c["check"] != "reference"]) >= n_expectations
    assert {c["rule"] for c in out.checks} >= {"unknown_division", "unknown_pupil",
                                                 "unknown_guardian", "unknown_structure",
                                                 "unknown_person"}


def test_input_is_not_modified():
    tables = clean_school()
    _set("persons", 0, "ine", "BAD")(tables)
    validate_school(tables, UAI)
    assert tables["persons"].loc[0, "ine"] == "BAD"


# (table, row, column, value, expected rule, row dropped?)
DROPPING = [
    ("persons", 7, "person_key", None, "required"),
    ("persons", 7, "last_name", None, "required"),
    ("persons", 7, "last_name", "", "not_empty"),
    ("persons", 7, "first_name", "  ", "not_empty"),
    ("persons", 7, "first_name", None, "required"),
    ("persons", 2, "birth_date", None, "required"),
    ("persons", 2, "birth_date", "2012-13-30", "date_format"),
    ("persons", 2, "birth_date", "30/11/2012", "date_format"),
    ("persons", 7, "uai", "75-654", "uai_format"),
    ("persons", 7, "uai", "0671234X", "wrong_school"),
    ("memberships", 1, "code", None, "required"),
    ("memberships", 1, "person_key", None, "required"),
    ("memberships", 1, "kind", "X", "kind_code"),
    ("memberships", 1, "role", "admin", "role_code"),
    ("memberships", 1, "person_key", pk("E404"), "unknown_person"),
    ("memberships", 2, "code", "9Z", "unknown_division"),
    ("memberships", 3, "code", "9Z", "unknown_structure"),
    ("guardian_links", 2, "pupil_key", None, "required"),
    ("guardian_links", 2, "guardian_key", None, "required"),
    ("guardian_links", 2, "level", None, "required"),
    ("guardian_links", 2, "level", "4", "level_code"),
    ("guardian_links", 2, "pupil_key", pk("E404"), "unknown_pupil"),
    ("guardian_links", 2, "pupil_key", gk("R3"), "unknown_pupil"),
    ("guardian_links", 2, "guardian_key", gk("R404"), "unknown_guardian"),
    ("guardian_links", 2, "guardian_key", pk("E3"), "unknown_guardian"),
    ("structures", 2, "code", None, "required"),
    ("structures", 2, "code", "ABCDEFGHI", "code_length"),
    ("structures", 2, "kind", "X", "kind_code"),
    ("structures", 2, "uai", "0750654", "uai_format"),
]


@pytest.mark.parametrize(("table", "row", "col", "value", "rule"), DROPPING)
def test_each_rule_catches_its_case_and_drops_the_row(table, row, col, value, rule):
    tables = clean_school()
    _set(table, row, col, value)(tables)
    out = validate_school(tables, UAI)
    assert own_rules(out) == [rule]
    rej = out.rejected[0]
    assert (rej.file, rej.uai, rej.line) == (tables[table].loc[row, "file"], UAI,
                                             tables[table].loc[row, "line"])
    assert len(out.tables[table]) == len(tables[table]) - 1
    assert out.quarantine == {}
    failed = [c for c in out.checks if not c["success"]]
    assert {c["rule"] for c in failed} == {rule}


def test_a_group_no_list_of_groups_has_is_kept_with_a_warning():
    """Issue 18: a pupil's group missing from the lists of structures is not refused (SIECLE
    says the pupil is in it); a list of groups having come, the school is warned."""
    tables = clean_school()
    _set("memberships", 1, "code", "9Z")(tables)
    out = validate_school(tables, UAI)
    assert out.rejected == []
    assert len(out.tables["memberships"]) == len(tables["memberships"])
    assert [(w.rule, w.file, w.line) for w in out.warnings] == [("unknown_group", ELEVES, 41)]
    assert out.as_dict()["warnings"][0]["rule"] == "unknown_group"
    # with no list of groups at all there is nothing to check it against: no warning
    tables = clean_school()
    _set("memberships", 1, "code", "9Z")(tables)
    tables["structures"] = tables["structures"][tables["structures"]["kind"] == "D"]
    out = validate_school(tables, UAI)
    assert out.rejected == [] and out.warnings == []


@pytest.mark.parametrize(("col", "value", "rule"), [
    ("ine", "12345-ABC", "ine_format"),
    ("ine", "12345678901", "ine_format"),
    ("email", "not-an-address", "email_format"),
    ("email", "a b@example.org", "email_format"),
    ("email", "a@example.org\n", "email_format"),
    ("ine", "123456789AB\n", "ine_format"),
    ("sex", "X", "sex_code"),
])
def test_bad_optional_value_is_blanked_and_the_person_kept(col, value, rule):
    tables = clean_school()
    _set("persons", 1, col, value)(tables)
    out = validate_school(tables, UAI)
    assert own_rules(out) == [rule]
    assert value not in out.rejected[0].message
    persons = out.tables["persons"]
    assert len(persons) == len(tables["persons"])
    kept = persons[persons["person_key"] == pk("E2")].iloc[0]
    assert missing(kept[col])
    # the person's other data and links are untouched
    assert len(out.tables["memberships"]) == len(tables["memberships"])


def test_pupil_rules_do_not_apply_to_other_profiles():
    tables = clean_school()
    _set("persons", 6, "birth_date", None)(tables)  # a teacher
    _set("persons", 3, "birth_date", "unknown")(tables)  # a guardian
    out = validate_school(tables, UAI)
    assert out.rejected == []


def test_a_rejected_pupil_takes_its_memberships_and_links_without_counting_them():
    tables = clean_school()
    _set("persons", 1, "birth_date", None)(tables)  # E2: in 3A, two guardian links
    out = validate_school(tables, UAI)
    assert own_rules(out) == ["required"]
    cascaded = sorted(r.rule for r in out.rejected if CASCADE in r.message)
    assert cascaded == ["unknown_person", "unknown_pupil", "unknown_pupil"]
    assert pk("E2") not in set(out.tables["memberships"]["person_key"])
    assert pk("E2") not in set(out.tables["guardian_links"]["pupil_key"])


def test_without_structures_the_pupil_division_check_is_skipped():
    tables = clean_school()
    tables["structures"] = tables["structures"].iloc[0:0]
    tables["memberships"] = tables["memberships"][tables["memberships"]["role"] == "pupil"]
    out = validate_school(tables, UAI)
    assert out.rejected == []
    assert len(out.tables["memberships"]) == 3


def test_duplicate_person_key_quarantines_the_later_file():
    tables = clean_school()
    again = tables["persons"].iloc[[0]].assign(file="ElevesAvecAdresses.xml", line=12)
    tables["persons"] = pd.concat([tables["persons"], again], ignore_index=True)
    out = validate_school(tables, UAI)
    assert list(out.quarantine) == ["ElevesAvecAdresses.xml"]
    assert "person_key unique" in out.quarantine["ElevesAvecAdresses.xml"]
    assert own_rules(out) == ["unique"]
    persons = out.tables["persons"]
    assert list(persons["person_key"]).count(pk("E1")) == 1
    assert "ElevesAvecAdresses.xml" not in set(persons["file"])


def test_duplicate_person_key_within_one_file_quarantines_it():
    tables = clean_school()
    tables["persons"] = pd.concat([tables["persons"], tables["persons"].iloc[[7]]],
                                  ignore_index=True)
    out = validate_school(tables, UAI)
    assert list(out.quarantine) == [STS]
    assert STS not in set(out.tables["persons"]["file"])
    assert STS not in set(out.tables["structures"]["file"])
    # the pupils' classes came from the quarantined STS file: nothing is left to check against
    assert len(out.tables["memberships"]) == 3


def _big_school(n_pupils: int) -> Tables:
    ids = [f"E{i}" for i in range(n_pupils)]
    persons = frame("persons", {
        "person_key": [pk(i) for i in ids] + [gk("R1")],
        "uai": [UAI] * (n_pupils + 1),
        "profile": ["ELV"] * n_pupils + ["TUT"],
        "source": ["SIECLE"] * (n_pupils + 1),
        "source_id": [*ids, "R1"],
        "last_name": ["Zorglubova"] * n_pupils + ["Haddock"],
        "first_name": ["Ludmilla"] * n_pupils + ["Archibald"],
        "birth_date": ["2013-03-02"] * n_pupils + [None],
        "has_left": [False] * (n_pupils + 1),
        "file": [ELEVES] * n_pupils + [RESP],
        "line": list(range(n_pupils + 1)),
    })
    links = frame("guardian_links", {
        "uai": [UAI] * n_pupils, "pupil_key": [pk(i) for i in ids],
        "guardian_key": [gk("R1")] * n_pupils, "level": ["1"] * n_pupils,
        "legal": [True] * n_pupils, "file": [RESP] * n_pupils,
        "line": list(range(100, 100 + n_pupils)),
    })
    structures = frame("structures", {"uai": [UAI], "code": ["3A"], "kind": ["D"],
                                      "file": [STRUCT], "line": [1]})
    memberships = frame("memberships", {
        "uai": [UAI] * n_pupils, "person_key": [pk(i) for i in ids],
        "code": ["3A"] * n_pupils, "kind": ["D"] * n_pupils, "role": ["pupil"] * n_pupils,
        "head_teacher": [False] * n_pupils, "file": [ELEVES] * n_pupils,
        "line": list(range(n_pupils)),
    })
    return Tables(persons=persons, guardian_links=links, structures=structures,
                  memberships=memberships)


def test_error_budget_exceeded_quarantines_the_file_and_keeps_the_others():
    tables = _big_school(10)
    for i in range(6):  # 6 > max(5, 0.02 * 10)
        tables["persons"].loc[i, "birth_date"] = None
    out = validate_school(tables, UAI, file_records={ELEVES: 10, RESP: 11, STRUCT: 1})
    assert list(out.quarantine) == [ELEVES]
    reason = out.quarantine[ELEVES]
    assert reason.startswith("error budget exceeded: 6 of 10 records rejected")
    assert "required" in reason
    assert ELEVES not in set(out.tables["persons"]["file"])
    assert out.tables["memberships"].empty
    # the guardians' file stays; its links now point at nothing and go, uncounted
    assert RESP not in out.quarantine
    assert list(out.tables["persons"]["person_key"]) == [gk("R1")]
    assert out.tables["guardian_links"].empty
    assert len(out.tables["structures"]) == 1


def test_within_budget_only_the_bad_records_go():
    tables = _big_school(10)
    for i in range(5):  # 5 is not > max(5, ...)
        tables["persons"].loc[i, "birth_date"] = None
    out = validate_school(tables, UAI)
    assert out.quarantine == {}
    assert len(out.tables["persons"]) == 6


def test_budget_uses_row_counts_by_file_when_records_unknown():
    tables = _big_school(400)
    for i in range(9):  # 9 > max(5, 0.02 * 800 rows of ElevesSansAdresses) is false
        tables["persons"].loc[i, "birth_date"] = None
    assert validate_school(tables, UAI).quarantine == {}
    out = validate_school(tables, UAI, file_records={ELEVES: 400})  # 9 > 8
    assert list(out.quarantine) == [ELEVES]


def test_reports_are_written_without_personal_data(tmp_path):
    tables = clean_school()
    for col, value in (("ine", "12345-ABC"), ("email", "not-an-address"),
                       ("birth_date", "2012/07/14"), ("last_name", "")):
        _set("persons", 1, col, value)(tables)
    _set("persons", 0, "email", "zorg lub@example.org")(tables)
    _set("persons", 7, "first_name", None)(tables)
    _set("memberships", 3, "code", "<b>9Z</b>")(tables)
    out = validate_school(tables, UAI)
    assert len(out.rejected) >= 6
    html_path, json_path = write_validation_report(out, tmp_path)
    page = html_path.read_text(encoding="utf-8")
    doc = json_path.read_text(encoding="utf-8")
    for text in (page, doc):
        for secret in (*NAMES, "2012/07/14", "12345-ABC", "not-an-address", "zorg lub",
                       "2013-03-02", "cunegonde.t@example.org"):
            assert secret not in text, secret
    assert "<b>9Z</b>" not in page and "&lt;b&gt;9Z&lt;/b&gt;" in page
    assert UAI in page and "email_format" in page and "ine_format" in page
    data = json.loads(doc)
    assert data["uai"] == UAI
    assert data["rejected_count"] == len(out.rejected)
    assert {"file", "uai", "line", "element", "rule", "message"} <= set(data["rejected"][0])
    assert data["summary"]["persons"]["input"] == 8


def test_from_fixture_xml_invalid_ine_is_blanked():
    res = read_siecle_eleves(XmlSource(FIXTURES / "eleves_ine_invalide.xml"), UAI)
    out = validate_school(res.tables, UAI,
                          file_records={"eleves_ine_invalide.xml": res.records})
    assert [(r.rule, r.line, r.element) for r in out.rejected] == [("ine_format", 18, "ELEVE")]
    assert values(out.tables["persons"]["ine"]) == ["123456789AB", None]
    assert len(out.tables["memberships"]) == 2  # no structures read: division check skipped


def test_from_fixture_xml_pupil_without_birth_date_is_rejected():
    res = read_siecle_eleves(XmlSource(FIXTURES / "eleves_sans_date_naissance.xml"), UAI)
    out = validate_school(res.tables, UAI)
    assert [(r.rule, r.line) for r in out.rejected] == [("required", 10)]
    assert "SIECLE$0750654D$2001" in out.rejected[0].message
    assert list(out.tables["persons"]["source_id"]) == ["2002"]


def test_importing_validate_does_not_import_great_expectations():
    import subprocess
    import sys

    code = ("import sys, etl.validate.rules; "
            "print(any(m.startswith('great_expectations') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    assert done.stdout.strip() == "False"


def test_schools_checked_together_get_the_results_they_get_alone():
    """run_suites (one GX run per table for several schools, then only the failed rules
    school by school) gives each school exactly what validate_school gives it alone: every
    rule broken in a school of its own, clean schools beside them, a school with no
    guardian links, and a key repeated across two schools (unique in each, not in both)."""
    from etl.validate.rules import _passed_checks, _prepare, _run_suite, run_suites

    schools = []
    for table, row, col, value, _rule in DROPPING:
        t = clean_school()
        _set(table, row, col, value)(t)
        schools.append(t)
    no_links = clean_school()
    no_links["guardian_links"] = no_links["guardian_links"].iloc[0:0]
    schools += [clean_school(), no_links, clean_school()]
    together = run_suites(schools)
    alone = [{t: _run_suite(t, _prepare(s)[t]) for t in ("persons", "structures",
                                                           "memberships", "guardian_links")}
             for s in schools]
    assert together == alone
    unique = next(c.check_id for c in load_specs("persons") if c.rule == "unique")
    assert together[-1]["persons"][unique] == (True, [])  # unique in each school ...
    both = pd.concat([_prepare(s)["persons"] for s in schools[-3:]], ignore_index=True)
    assert unique not in _passed_checks("persons", both)  # ... though not in all of them
    gx_rules = {(c.table, c.rule) for t in ("persons", "structures", "memberships",
                                             "guardian_links") for c in load_specs(t)}
    for (table, _row, _col, _value, rule), res in zip(DROPPING, together, strict=False):
        failed = {check for r in res.values() for check, (ok, _rows) in r.items() if not ok}
        assert bool(failed) == ((table, rule) in gx_rules), rule
    out = validate_school(schools[0], UAI, suite_results=together[0])
    assert own_rules(out) == [DROPPING[0][4]]
