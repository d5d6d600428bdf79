"""One person, one account: the cross-school matching rules against a real slapd."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer
from etl.plan import files as plan_files
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.integration.test_lifecycle import ACADEMY, NOV, UAI, UAI_2
from tests.integration.test_sync import search

pytestmark = pytest.mark.ldap


def people(server: LdapServer, flt: str) -> list[dict]:
    return search(server, flt, f"ou=people,{server.base}")


def test_guardian_of_pupils_in_two_schools_has_one_account(env: Settings,
                                                           server: LdapServer) -> None:
    # same parent, a child in each school; each school's database gives her its own id
    write_school(env.landing, ACADEMY, UAI,
                 [Pupil("11", "KELLER", "Emma", "6A", ine="111111111AA")],
                 [Guardian("501", "KELLER", "Sophie", ["11"], email="s.keller@example.org")], [])
    write_school(env.landing, ACADEMY, UAI_2,
                 [Pupil("22", "KELLER", "Hugo", "2NDE1", ine="222222222BB")],
                 [Guardian("9001", "Keller", "Sophie ", ["22"], email="S.Keller@example.org")],
                 [])
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    assert s["status"] == "success"
    assert s["matches"].get("guardian_name_email") == 1
    tut = people(server, "(ENTPersonProfils=National_TUT)")
    assert len(tut) == 1
    kids = {p["dn"] for p in people(server, "(ENTPersonProfils=National_ELV)")}
    assert set(tut[0]["ENTAuxPersRelEleveEleve"]) == kids and len(kids) == 2
    assert {j.split("$")[2] for j in tut[0]["ENTPersonJointure"]} == {UAI, UAI_2}
    for p in people(server, "(ENTPersonProfils=National_ELV)"):
        assert p["ENTElevePersRelEleve"] == tut[0]["uid"]


def test_same_name_guardians_without_shared_evidence_are_not_merged(
        env: Settings, server: LdapServer) -> None:
    write_school(env.landing, ACADEMY, UAI, [Pupil("11", "MARTIN", "Emma", "6A")],
                 [Guardian("501", "MARTIN", "Julie", ["11"], email="julie1@example.org")], [])
    write_school(env.landing, ACADEMY, UAI_2, [Pupil("22", "MARTIN", "Léo", "6A")],
                 [Guardian("601", "MARTIN", "Julie", ["22"], email="julie2@example.org")], [])
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    tut = people(server, "(ENTPersonProfils=National_TUT)")
    assert len(tut) == 2
    assert len({t["ENTPersonLogin"][0] for t in tut}) == 2
    dup = [d for d in s["duplicates"] if d["rule"] == "guardian_name"]
    assert dup and set(dup[0]["uids"]) <= {t["uid"][0] for t in tut}


def test_teacher_in_two_schools_has_one_account_with_both_schools_classes(
        env: Settings, server: LdapServer) -> None:
    write_school(env.landing, ACADEMY, UAI, [Pupil("11", "A", "B", "6A")], [],
                 [Teacher("8949", "DURAND", "Michel", ["6A"], birth="1975-03-12")])
    write_school(env.landing, ACADEMY, UAI_2, [Pupil("22", "C", "D", "2NDE1")], [],
                 [Teacher("31", "DURAND", "Michel", ["2NDE1"], birth="1975-03-12"),
                  Teacher("32", "DURAND", "Michel", ["2NDE1"], birth="1980-01-01")])
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    assert s["matches"].get("staff_name_birth") == 1
    ens = people(server, "(ENTPersonProfils=National_ENS)")
    assert len(ens) == 2  # the namesake born in 1980 is someone else
    same = next(e for e in ens if len(e["ENTPersonJointure"]) == 2)
    assert {c.split(",")[0] for c in same["ENTAuxEnsClasses"]} == {
        f"ENTStructureUAI={UAI}", f"ENTStructureUAI={UAI_2}"}
    for uai, code in ((UAI, "6A"), (UAI_2, "2NDE1")):
        cls = search(server, f"(cn={code})", f"ENTStructureUAI={uai},ou=structures,{server.base}")
        assert same["dn"] in cls[0]["member"]
    assert any(d["rule"] == "same_name" for d in s["duplicates"])


def test_homonym_pupils_in_one_school_get_two_accounts_and_are_reported(
        env: Settings, server: LdapServer) -> None:
    write_school(env.landing, ACADEMY, UAI,
                 [Pupil("11", "MULLER", "Lucas", "6A", ine="333333333CC", birth="02/03/2014"),
                  Pupil("12", "MÜLLER", "Lucas", "6B", ine="444444444DD", birth="09/10/2014")],
                 [], [])
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    elv = people(server, "(ENTPersonProfils=National_ELV)")
    assert len(elv) == 2
    assert sorted(p["ENTPersonLogin"][0] for p in elv) == ["lucas.muller", "lucas.muller2"]
    pair = [d for d in s["duplicates"] if d["rule"] == "same_name"]
    assert len(pair) == 1 and set(pair[0]["uids"]) == {p["uid"][0] for p in elv}
    report = (Path(s["report_dir"]) / "report.html").read_text()
    assert "Suspected duplicates" in report and pair[0]["uids"][0] in report
    assert "MULLER" not in report and "Lucas" not in report  # the report names no one


def test_merge_two_accounts_then_undo(env: Settings, server: LdapServer) -> None:
    from etl.ops.merge import merge_accounts
    from etl.ops.undo import undo_run
    from tests.integration.test_lifecycle import dump

    # the same mother, no shared e-mail or mobile: two accounts, reported as suspects
    write_school(env.landing, ACADEMY, UAI, [Pupil("11", "MARTIN", "Emma", "6A")],
                 [Guardian("501", "MARTIN", "Julie", ["11"])], [])
    write_school(env.landing, ACADEMY, UAI_2, [Pupil("22", "MARTIN", "Léo", "6A")],
                 [Guardian("601", "MARTIN", "Julie", ["22"])], [])
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    keep, other = next(d for d in s["duplicates"] if d["rule"] == "guardian_name")["uids"]
    before = dump(server)
    login = people(server, f"(uid={keep})")[0]["ENTPersonLogin"]
    res = merge_accounts(env, keep, other)
    assert res["failed"] == 0
    tut = people(server, "(ENTPersonProfils=National_TUT)")
    assert [t["uid"][0] for t in tut] == [keep] and tut[0]["ENTPersonLogin"] == login
    assert len(tut[0]["ENTAuxPersRelEleveEleve"]) == 2
    for p in people(server, "(ENTPersonProfils=National_ELV)"):
        assert p["ENTElevePersRelEleve"] == [keep]
    # the next night keeps them merged (both source keys now point to the kept account)
    for uai in (UAI, UAI_2):
        for f in (env.landing / ACADEMY / uai).iterdir():
            f.unlink()
    write_school(env.landing, ACADEMY, UAI, [Pupil("11", "MARTIN", "Emma", "6A")],
                 [Guardian("501", "MARTIN", "Julie", ["11"])], [], date="02/10/2026")
    write_school(env.landing, ACADEMY, UAI_2, [Pupil("22", "MARTIN", "Léo", "6A")],
                 [Guardian("601", "MARTIN", "Julie", ["22"])], [], date="02/10/2026")
    again = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    _header, planned = plan_files.read_plan_file(env, f"{again['run_id']}/plan.json")
    assert again["changes"] == 0, [(c.dn, c.op, c.mods) for c in planned]
    # undo of the merge puts the directory back as it was
    undo_run(env, res["run_id"])
    assert dump(server) == before


def test_flush_adds_new_keys_and_grows_known_ones(state_url: str) -> None:
    """The match keys a run saw are stored: new ones added, a known one's strong evidence
    (hashed e-mail, mobile, pupils) grown with tonight's, never shrunk; other rows untouched."""
    from sqlalchemy import select

    from etl.match.identity import IdentityDecisions, write_identities
    from etl.match.matcher import Matcher, match_key
    from etl.plan.stored import StoredView
    from etl.store.db import session_factory
    from etl.store.models import MatchKey

    def guardian(email: str | None, mobile: str | None = None) -> dict:
        return {"profile": "TUT", "person_key": "k1", "last_name": "Martin",
                "first_name": "Anne", "email": email, "mobile": mobile}

    staff = {"profile": "ENS", "person_key": "s1", "last_name": "Durand",
             "first_name": "Paul", "birth_date": "1970-01-02"}
    Session = session_factory(state_url)
    with Session() as s, s.begin():
        m = Matcher(StoredView(s, ACADEMY), "run-1")
        m.remember(guardian("a@x.fr"), "u1", ["p1"])
        m.remember(staff, "u2")
        new, grown = m.key_updates()
        write_identities(s, ACADEMY, IdentityDecisions(match_keys_new=new,
                                                       match_keys_grown=grown))
    with Session() as s, s.begin():
        m = Matcher(StoredView(s, ACADEMY), "run-2")
        m.remember(guardian("b@x.fr", "0612345678"), "u1")
        m.remember(guardian(None), "u3")  # same name, another account: a new row
        m.remember(staff, "u2")  # nothing new: unchanged
        new, grown = m.key_updates()
        write_identities(s, ACADEMY, IdentityDecisions(match_keys_new=new,
                                                       match_keys_grown=grown))
    with Session() as s:
        rows = {(r.kind, r.uid): (r.key, sorted(r.strong), r.run_id)
                for r in s.scalars(select(MatchKey))}
    gkey = match_key(guardian(None))
    assert gkey is not None
    assert set(rows) == {("guardian", "u1"), ("guardian", "u3"), ("staff", "u2")}
    key, strong, run = rows[("guardian", "u1")]
    assert key == gkey[1] and run == "run-1" and "pupil:p1" in strong and len(strong) == 4
    assert {t.split(":")[0] for t in strong} == {"email", "mobile", "pupil"}
    assert rows[("guardian", "u3")][1:] == ([], "run-2")
    assert rows[("staff", "u2")][1:] == ([], "run-1")


@pytest.mark.parametrize(("a", "b", "why"), [
    # the same child, written another way: accents, case, hyphens, a usage name, particles
    (("2012-05-03", ("ROUSSEAU",), "Léa"), ("2012-05-03", ("Rousseau",), "LEA"), None),
    (("2012-05-03", ("ROUSSEAU-MARTIN", "ROUSSEAU"), "Léa"),
     ("2012-05-03", ("ROUSSEAU",), "Léa"), None),
    (("2012-05-03", ("MARTIN", "ROUSSEAU"), "Léa"), ("2012-05-03", ("ROUSSEAU",), "Léa"), None),
    (("2012-05-03", ("DE LA FONTAINE",), "Jean-Pierre"),
     ("2012-05-03", ("Delafontaine",), "Jean Pierre"), None),
    (("2012-05-03", ("N'DIAYE",), "Moussa"), ("2012-05-03", ("NDIAYE",), "Moussa"), None),
    (("2012-05-03", ("KLEIN",), "Marie"), ("2012-05-03", ("KLEIN",), "Marie-Lou"), None),
    (("2012-05-03", ("KLEIN",), "Tom"), (None, ("KLEIN",), "Tom"), None),  # nothing to compare
    # two children
    (("2012-05-03", ("ROUSSEAU",), "Léa"), ("2011-09-14", ("KLEIN",), "Tom"), "birth_date"),
    (("2012-05-03", ("ROUSSEAU",), "Léa"), ("2012-05-04", ("ROUSSEAU",), "Léa"), "birth_date"),
    (("2011-09-14", ("KLEIN",), "Tom"), ("2011-09-14", ("KLEIN",), "Léo"), "name"),  # twins
    (("2011-09-14", ("KLEIN",), "Marie-Lou"), ("2011-09-14", ("KLEIN",), "Marie-Anne"), "name"),
    (("2011-09-14", ("DE GAULLE",), "Anne"), ("2011-09-14", ("DE LA FONTAINE",), "Anne"),
     "name"),  # a shared particle is not a shared name
    (("2011-09-14", ("ROUSSEAU",), "Léa"), ("2011-09-14", ("KLEIN",), "Léa"), "name"),
])
def test_records_of_one_ine_agree_only_when_birth_date_and_names_do(
        a: tuple, b: tuple, why: str | None) -> None:
    from etl.match.matcher import PupilFacts, disagreement

    assert disagreement(PupilFacts(*a), PupilFacts(*b)) == why
    assert disagreement(PupilFacts(*b), PupilFacts(*a)) == why


def test_facts_of_a_stored_entry_read_its_birth_date_and_names() -> None:
    from etl.match.matcher import PupilFacts, entry_facts, row_facts

    stored = entry_facts({"sn": ["ROUSSEAU"], "givenName": ["Léa"],
                          "ENTPersonDateNaissance": ["03/05/2012"]})
    assert stored == PupilFacts("2012-05-03", ("ROUSSEAU",), "Léa")
    assert entry_facts({"sn": ["?"], "givenName": ["?"]}) == PupilFacts(None, (), None)
    row = row_facts({"birth_date": "2012-05-03", "last_name": "ROUSSEAU-MARTIN",
                     "birth_name": "ROUSSEAU", "first_name": "Lea"})
    assert row == PupilFacts("2012-05-03", ("ROUSSEAU-MARTIN", "ROUSSEAU"), "Lea")


def test_one_ine_shared_tonight_conflicts_only_when_its_records_disagree() -> None:
    from etl.match.matcher import shared_ine_conflicts

    def r(key: str, ine: str, birth: str, last: str, first: str) -> dict:
        return {"person_key": key, "uai": "0671234C", "profile": "ELV", "ine": ine,
                "birth_date": birth, "last_name": last, "birth_name": last, "first_name": first}

    rows = [r("a", "X", "2012-05-03", "ROUSSEAU", "Léa"), r("b", "X", "2011-09-14", "KLEIN", "Tom"),
            r("c", "Y", "2012-01-01", "MARTIN", "Zoé"), r("d", "Y", "2012-01-01", "Martin", "Zoe"),
            r("e", "Z", "2013-01-01", "SEUL", "Ana"),
            {"person_key": "g", "uai": "0671234C", "profile": "TUT", "ine": "X"}]
    out = shared_ine_conflicts(rows, {"X", "Y"})
    assert sorted(out) == [0, 1]
    assert (out[0].person_key, out[0].reason, out[0].others) == ("a", "birth_date", ["b"])
    assert out[1].others == ["a"] and out[1].stored_uid is None
    assert shared_ine_conflicts(rows, set()) == {}


@pytest.mark.parametrize("group", [16, 1], ids=["whole", "streamed"])
def test_a_run_of_many_suspected_duplicates_keeps_the_first_by_rule_and_files_them_all(
        env: Settings, server: LdapServer, monkeypatch: pytest.MonkeyPatch, group: int) -> None:
    """The summary (state DB, ``--json``, the report) holds the first
    ``DUPLICATES_IN_SUMMARY`` suspected duplicates, those of the rules to look at first
    before same names; how many in all and by rule; and every one in ``duplicates.jsonl``
    beside the report (a first load at scale 1.0 finds ~200,000 in Nancy-Metz). A streamed
    night's groups stage theirs as they go (``spill_duplicates``): the same report."""
    import dataclasses
    import json

    monkeypatch.setattr(pipeline, "DUPLICATES_IN_SUMMARY", 2)
    env = dataclasses.replace(env, plan_group=group, read_ahead=0)
    write_school(env.landing, ACADEMY, UAI,
                 [Pupil(str(10 + i), "MULLER", "Lucas", "6A", birth=f"0{i + 1}/03/2014")
                  for i in range(3)]
                 + [Pupil(str(20 + i), "DUPONT", "Zoé", "6B", birth=f"0{i + 1}/04/2014")
                    for i in range(2)],
                 [Guardian("501", "MARTIN", "Julie", ["10"], email="julie1@example.org")], [])
    write_school(env.landing, ACADEMY, UAI_2, [Pupil("31", "MARTIN", "Léo", "6A")],
                 [Guardian("601", "MARTIN", "Julie", ["31"], email="julie2@example.org")], [])
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    assert s["duplicates_by_rule"] == {"guardian_name": 1, "same_name": 2}
    assert s["duplicates_total"] == 3 and s["duplicates_file"] == "duplicates.jsonl"
    assert [d["rule"] for d in s["duplicates"]] == ["guardian_name", "same_name"]
    lines = (Path(s["report_dir"]) / "duplicates.jsonl").read_text("utf-8").splitlines()
    every = [json.loads(x) for x in lines]
    assert sorted(d["rule"] for d in every) == ["guardian_name", "same_name", "same_name"]
    assert all(d in every for d in s["duplicates"])
    report = (Path(s["report_dir"]) / "report.html").read_text()
    assert "3 in all (guardian_name 1, same_name 2)" in report and "duplicates.jsonl" in report
    assert "MULLER" not in "\n".join(lines) and "Julie" not in "\n".join(lines)
    saved = json.loads((Path(s["report_dir"]) / "summary.json").read_text("utf-8"))
    assert saved["duplicates_total"] == 3 and len(saved["duplicates"]) == 2
    from etl import staging

    assert staging.exists(env, f"{s['run_id']}/{pipeline.DUPLICATES_DIR}") == (group == 1)
