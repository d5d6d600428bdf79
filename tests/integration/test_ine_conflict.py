"""One INE, two children: an INE identifies a pupil only when the records agree (same birth
date, names that match). Against a real slapd, from hand-written exports in fixtures/siecle."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.slapd import LdapServer
from tests.conftest import FIXTURES
from tests.integration.test_lifecycle import NOV
from tests.integration.test_sync import search

pytestmark = pytest.mark.ldap
ACADEMY = "ac-strasbourg"
PREFIX = "AC-STRASBOURG"
UAI_1 = "0671234C"
UAI_2 = "0680020C"
INE = "060012345AB"
#: what a report or a log line about these records must never show
PERSONAL = ("ROUSSEAU", "KLEIN", "Léa", "Tom", "Léo", "2012", "2011", INE, "03/05", "14/09")


def drop(env: Settings, fixture: str, uai: str) -> None:
    d = env.landing / ACADEMY / uai
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "siecle" / fixture, d / "ElevesSansAdresses.xml")


def sync(env: Settings) -> dict[str, Any]:
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV))
    assert s["status"] == "success", s
    return s


def pupil(server: LdapServer, uai: str, eleve_id: str) -> dict[str, Any]:
    found = search(server, f"(ENTPersonJointure={PREFIX}$SIECLE${uai}${eleve_id})",
                   f"ou=people,{server.base}")
    assert len(found) == 1, found
    return found[0]


def pupils(server: LdapServer) -> list[dict[str, Any]]:
    return search(server, "(ENTPersonProfils=National_ELV)", f"ou=people,{server.base}")


def members(server: LdapServer, uai: str, code: str) -> set[str]:
    found = search(server, f"(cn={code})", f"ou=groups,ENTStructureUAI={uai},ou=structures,"
                   f"{server.base}")
    assert len(found) == 1, found
    return set(found[0].get("member", []))


def school_pages(s: dict[str, Any], uai: str) -> tuple[dict[str, Any], str, str]:
    d = Path(s["report_dir"]) / "schools" / uai
    return (json.loads((d / f"validation_{uai}.json").read_text("utf-8")),
            (d / f"validation_{uai}.html").read_text("utf-8"),
            html.unescape((d / f"retours_{uai}.html").read_text("utf-8")))


def conflicts(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in s["duplicates"] if d["rule"] == "ine_conflict"]


def no_personal_data(*texts: str) -> None:
    for t in texts:
        for word in PERSONAL:
            assert word not in t, word


def test_one_export_two_children_one_ine_get_two_accounts_each_with_its_class(
        env: Settings, server: LdapServer, caplog: pytest.LogCaptureFixture) -> None:
    drop(env, "eleves_ine_partage_deux_enfants.xml", UAI_1)
    s = sync(env)
    lea, tom = pupil(server, UAI_1, "600001"), pupil(server, UAI_1, "600002")
    assert lea["dn"] != tom["dn"] and len(pupils(server)) == 2
    assert lea["ENTPersonLogin"] == ["lea.rousseau"] and tom["ENTPersonLogin"] == ["tom.klein"]
    sdn = f"ENTStructureUAI={UAI_1},ou=structures,{server.base}"
    assert lea["ENTEleveClasses"] == [f"{sdn}$5A"] and tom["ENTEleveClasses"] == [f"{sdn}$4B"]
    assert members(server, UAI_1, "5A") == {lea["dn"]}
    assert members(server, UAI_1, "4B") == {tom["dn"]}
    assert lea["ENTPersonDateNaissance"] == ["03/05/2012"]
    assert tom["ENTPersonDateNaissance"] == ["14/09/2011"]
    # neither is identified by an INE that is known to be wrong for one of them
    for p in (lea, tom):
        assert "ENTEleveINE" not in p
        assert all("$INE$" not in j for j in p["ENTPersonJointure"])
    # the run report's suspected duplicates
    (c,) = conflicts(s)
    assert set(c["uids"]) == {lea["uid"][0], tom["uid"][0]}
    assert set(c["records"]) == {f"{PREFIX}$SIECLE${UAI_1}$600001",
                                 f"{PREFIX}$SIECLE${UAI_1}$600002"}
    assert "birth dates" in c["evidence"] and c["action"].startswith("not merged")
    report = (Path(s["report_dir"]) / "report.html").read_text("utf-8")
    assert "ine_conflict" in report and lea["uid"][0] in report and tom["uid"][0] in report
    assert f"{PREFIX}$SIECLE${UAI_1}$600001" in report and f"SIECLE${UAI_1}$600002" in report
    # the school's validation report and French page name both records, with the screen
    data, vhtml, page = school_pages(s, UAI_1)
    found = {f["person_key"]: f for f in data["identity"]}
    assert set(found) == {f"{PREFIX}$SIECLE${UAI_1}$600001", f"{PREFIX}$SIECLE${UAI_1}$600002"}
    assert all(f["rule"] == "ine_conflict" and f["file"] == "ElevesSansAdresses.xml"
               and f["line"] for f in found.values())
    assert data["rejected_count"] == 0  # nothing rejected: both pupils have their account
    assert "ine_conflict" in vhtml and "600002" in vhtml
    assert "Même INE pour deux élèves différents" in page
    assert "onglet Scolarité : vérifier l'INE" in page and "onglet Identité" in page
    assert "ELEVE_ID 600002 ; même INE que ELEVE_ID 600001 (0671234C)" in page
    assert "date de naissance différente" in page
    no_personal_data(report, vhtml, page, json.dumps(s), caplog.text)


def test_after_the_conflict_nights_are_stable(env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_deux_enfants.xml", UAI_1)
    sync(env)
    before = {p["dn"]: p for p in pupils(server)}
    # the same file again: already applied; a new export of the same content: unchanged
    assert sync(env)["applied"] == 0
    (env.landing / ACADEMY / UAI_1 / "ElevesSansAdresses.xml").unlink()
    text = (FIXTURES / "siecle" / "eleves_ine_partage_deux_enfants.xml").read_text("utf-8")
    (env.landing / ACADEMY / UAI_1 / "export2.xml").write_text(
        text.replace("01/10/2026 06:30:00", "02/10/2026 06:30:00")
        .replace("<DATE_EXPORT>01/10/2026", "<DATE_EXPORT>02/10/2026"), "utf-8")
    again = sync(env)
    assert again["changes"] == 0 and again["applied"] == 0
    # a real change elsewhere in the file: the school is read and matched again, no flip-flop
    (env.landing / ACADEMY / UAI_1 / "export2.xml").write_text(
        text.replace("01/10/2026", "03/10/2026").replace("<CODE_SEXE>1", "<CODE_SEXE>2"),
        "utf-8")
    third = sync(env)
    after = {p["dn"]: p for p in pupils(server)}
    assert set(after) == set(before)
    assert {dn: (p["ENTPersonJointure"], p["ENTEleveClasses"]) for dn, p in after.items()} == {
        dn: (p["ENTPersonJointure"], p["ENTEleveClasses"]) for dn, p in before.items()}
    assert len(conflicts(third)) == 1  # still reported while SIECLE says so


def test_two_schools_one_night_one_ine_two_children(env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_ecole_1.xml", UAI_1)
    drop(env, "eleves_ine_partage_ecole_2.xml", UAI_2)
    s = sync(env)
    lea, tom = pupil(server, UAI_1, "600001"), pupil(server, UAI_2, "700002")
    assert lea["dn"] != tom["dn"] and len(pupils(server)) == 2
    assert lea["ENTPersonStructRattach"] == [f"ENTStructureUAI={UAI_1},ou=structures,"
                                             f"{server.base}"]
    assert all(UAI_2 in c for c in tom["ENTEleveClasses"])
    assert members(server, UAI_1, "5A") == {lea["dn"]}
    assert members(server, UAI_2, "4B") == {tom["dn"]}
    (c,) = conflicts(s)
    assert set(c["uids"]) == {lea["uid"][0], tom["uid"][0]}
    # each school's page names its own record and the other school's
    for uai, mine, other in ((UAI_1, "600001", f"700002 ({UAI_2})"),
                             (UAI_2, "700002", f"600001 ({UAI_1})")):
        data, vhtml, page = school_pages(s, uai)
        assert [f["person_key"].rsplit("$", 1)[1] for f in data["identity"]] == [mine]
        assert f"ELEVE_ID {mine} ; même INE que ELEVE_ID {other}" in page
        no_personal_data(page, vhtml)


def test_ine_of_an_existing_account_with_another_birth_date_is_not_taken_over(
        env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_ecole_1.xml", UAI_1)
    sync(env)
    lea = pupil(server, UAI_1, "600001")
    assert lea["ENTEleveINE"] == [INE] and f"{PREFIX}$INE${INE}" in lea["ENTPersonJointure"]
    # night 2: only school 2 sends its export; its pupil holds Léa's INE, born another year
    drop(env, "eleves_ine_partage_ecole_2.xml", UAI_2)
    s = sync(env)
    tom = pupil(server, UAI_2, "700002")
    assert tom["dn"] != lea["dn"] and tom["ENTPersonLogin"] == ["tom.klein"]
    assert "ENTEleveINE" not in tom and all("$INE$" not in j for j in tom["ENTPersonJointure"])
    assert tom["ENTEleveClasses"] == [f"ENTStructureUAI={UAI_2},ou=structures,{server.base}$4B"]
    assert pupil(server, UAI_1, "600001") == lea  # Léa's account is untouched
    assert members(server, UAI_2, "4B") == {tom["dn"]}
    (c,) = conflicts(s)
    assert set(c["uids"]) == {lea["uid"][0], tom["uid"][0]}
    assert c["source"] == f"{PREFIX}$SIECLE${UAI_2}$700002"
    data, _html, page = school_pages(s, UAI_2)
    assert [f["person_key"] for f in data["identity"]] == [f"{PREFIX}$SIECLE${UAI_2}$700002"]
    assert f"ELEVE_ID 700002 ; même INE qu'un compte existant, ELEVE_ID 600001 ({UAI_1}) : " \
        "date de naissance différente" in page
    no_personal_data(page, _html, json.dumps(s))
    # night 3: school 2 again (a changed export): Tom stays in his own account
    text = (FIXTURES / "siecle" / "eleves_ine_partage_ecole_2.xml").read_text("utf-8")
    (env.landing / ACADEMY / UAI_2 / "ElevesSansAdresses.xml").write_text(
        text.replace("01/10/2026", "05/10/2026").replace("<CODE_SEXE>1", "<CODE_SEXE>2"),
        "utf-8")
    third = sync(env)
    assert third["schools"][UAI_2]["updated"] == 1
    again = pupil(server, UAI_2, "700002")
    assert again["ENTPersonSexe"] == ["F"]
    assert [again[k] for k in ("dn", "ENTPersonJointure", "ENTEleveClasses")] == [
        tom[k] for k in ("dn", "ENTPersonJointure", "ENTEleveClasses")]
    assert pupil(server, UAI_1, "600001") == lea
    assert len(conflicts(third)) == 1


def test_same_child_moving_school_keeps_one_account(env: Settings, server: LdapServer) -> None:
    # same INE, same birth date, the name typed without accent and a usage name added
    drop(env, "eleves_ine_partage_ecole_1.xml", UAI_1)
    sync(env)
    before = pupil(server, UAI_1, "600001")
    drop(env, "eleves_ine_meme_enfant_ecole_2.xml", UAI_2)
    s = sync(env)
    after = pupil(server, UAI_2, "700001")
    assert after["dn"] == before["dn"] and after["ENTPersonLogin"] == before["ENTPersonLogin"]
    assert len(pupils(server)) == 1 and after["ENTEleveINE"] == [INE]
    assert {c.split(",")[0] for c in after["ENTEleveClasses"]} == {
        f"ENTStructureUAI={UAI_1}", f"ENTStructureUAI={UAI_2}"}
    assert after["dn"] in members(server, UAI_2, "5B")
    assert not conflicts(s) and s["matches"].get("ine") == 1


def test_same_child_listed_by_two_schools_the_same_night_is_one_account(
        env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_ecole_1.xml", UAI_1)
    drop(env, "eleves_ine_meme_enfant_ecole_2.xml", UAI_2)
    s = sync(env)
    (one,) = pupils(server)
    assert set(one["ENTPersonJointure"]) == {f"{PREFIX}$INE${INE}",
                                             f"{PREFIX}$SIECLE${UAI_1}$600001",
                                             f"{PREFIX}$SIECLE${UAI_2}$700001"}
    assert not conflicts(s)


def test_twins_with_one_ine_same_birth_date_different_first_names_are_two_accounts(
        env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_jumeaux.xml", UAI_1)
    s = sync(env)
    tom, leo = pupil(server, UAI_1, "600011"), pupil(server, UAI_1, "600012")
    assert tom["dn"] != leo["dn"]
    assert members(server, UAI_1, "4B") == {tom["dn"]}
    assert members(server, UAI_1, "4A") == {leo["dn"]}
    (c,) = conflicts(s)
    assert "different names" in c["evidence"]
    _data, _html, page = school_pages(s, UAI_1)
    assert "même date de naissance, nom différent" in page


def test_account_holding_the_ine_keeps_it_when_another_child_shows_up_with_it(
        env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_ecole_1.xml", UAI_1)
    sync(env)
    lea = pupil(server, UAI_1, "600001")
    # night 2: both schools read (school 1's export changed in a field no entry holds)
    text = (FIXTURES / "siecle" / "eleves_ine_partage_ecole_1.xml").read_text("utf-8")
    (env.landing / ACADEMY / UAI_1 / "ElevesSansAdresses.xml").write_text(
        text.replace("01/10/2026", "02/10/2026").replace("<DATE_ENTREE>01/09/2026",
                                                          "<DATE_ENTREE>02/09/2026"), "utf-8")
    drop(env, "eleves_ine_partage_ecole_2.xml", UAI_2)
    s = sync(env)
    assert s["schools"][UAI_1]["status"] == "ok" and s["schools"][UAI_1]["updated"] == 0
    assert pupil(server, UAI_1, "600001") == lea  # still the INE's account, untouched
    tom = pupil(server, UAI_2, "700002")
    assert tom["dn"] != lea["dn"] and "ENTEleveINE" not in tom
    (c,) = conflicts(s)
    assert set(c["uids"]) == {lea["uid"][0], tom["uid"][0]}
    for uai in (UAI_1, UAI_2):
        assert len(school_pages(s, uai)[0]["identity"]) == 1


def test_an_account_an_earlier_version_merged_through_the_ine_is_split(
        env: Settings, server: LdapServer) -> None:
    from sqlalchemy import update

    from etl.ops.merge import merge_accounts
    from etl.store.db import session_factory
    from etl.store.models import Identity

    drop(env, "eleves_ine_partage_deux_enfants.xml", UAI_1)
    sync(env)
    lea, tom = pupil(server, UAI_1, "600001"), pupil(server, UAI_1, "600002")
    merge_accounts(env, lea["uid"][0], tom["uid"][0])  # an operator's decision: kept
    text = (FIXTURES / "siecle" / "eleves_ine_partage_deux_enfants.xml").read_text("utf-8")

    def night(day: int) -> dict[str, Any]:
        (env.landing / ACADEMY / UAI_1 / "ElevesSansAdresses.xml").write_text(
            text.replace("01/10/2026", f"{day:02d}/10/2026").replace(
                "<DATE_ENTREE>01/09/2026", f"<DATE_ENTREE>{day:02d}/09/2026"), "utf-8")
        return sync(env)

    s = night(2)
    assert pupil(server, UAI_1, "600002")["dn"] == lea["dn"] and len(pupils(server)) == 1
    assert conflicts(s)[0]["action"].endswith("kept")
    # what the old code left: Tom's key attached to Léa's account as a plain source key
    with session_factory(env.state_url)() as db, db.begin():
        db.execute(update(Identity).where(Identity.jointure.like("%$600002"))
                   .values(rule="source_key"))
    s = night(3)
    lea2, tom2 = pupil(server, UAI_1, "600001"), pupil(server, UAI_1, "600002")
    assert lea2["dn"] == lea["dn"] and tom2["dn"] != lea["dn"]
    assert members(server, UAI_1, "5A") == {lea["dn"]}
    assert members(server, UAI_1, "4B") == {tom2["dn"]}
    assert lea2["ENTPersonJointure"] == [f"{PREFIX}$SIECLE${UAI_1}$600001"]
    assert tom2["ENTPersonDateNaissance"] == ["14/09/2011"]
    (c,) = conflicts(s)
    assert c["action"].startswith("split") and set(c["uids"]) == {lea["uid"][0],
                                                                  tom2["uid"][0]}
    # and from then on, stable
    s = night(4)
    assert pupil(server, UAI_1, "600002")["dn"] == tom2["dn"] and len(pupils(server)) == 2
    assert conflicts(s)[0]["action"].startswith("not merged")


def test_when_the_school_corrects_the_other_childs_ine_the_ine_goes_to_its_owner(
        env: Settings, server: LdapServer) -> None:
    drop(env, "eleves_ine_partage_ecole_1.xml", UAI_1)
    sync(env)
    drop(env, "eleves_ine_partage_ecole_2.xml", UAI_2)
    sync(env)
    lea, tom = pupil(server, UAI_1, "600001"), pupil(server, UAI_2, "700002")
    assert lea["ENTEleveINE"] == [INE] and "ENTEleveINE" not in tom
    # night 3: school 1 finds Léa's INE was the wrong one and corrects it; school 2 is quiet
    text = (FIXTURES / "siecle" / "eleves_ine_partage_ecole_1.xml").read_text("utf-8")
    (env.landing / ACADEMY / UAI_1 / "ElevesSansAdresses.xml").write_text(
        text.replace("01/10/2026", "03/10/2026").replace(INE, "060099999ZZ"), "utf-8")
    sync(env)
    lea = pupil(server, UAI_1, "600001")
    assert lea["ENTEleveINE"] == ["060099999ZZ"]
    assert f"{PREFIX}$INE$060099999ZZ" in lea["ENTPersonJointure"]
    assert all(INE not in j for j in lea["ENTPersonJointure"])
    # night 4: school 2's next export: Tom's INE is his now, in his own account
    text2 = (FIXTURES / "siecle" / "eleves_ine_partage_ecole_2.xml").read_text("utf-8")
    (env.landing / ACADEMY / UAI_2 / "ElevesSansAdresses.xml").write_text(
        text2.replace("01/10/2026", "04/10/2026").replace("<DATE_ENTREE>01/09/2026",
                                                           "<DATE_ENTREE>02/09/2026"), "utf-8")
    s = sync(env)
    tom2 = pupil(server, UAI_2, "700002")
    assert tom2["dn"] == tom["dn"] and tom2["ENTEleveINE"] == [INE]
    assert f"{PREFIX}$INE${INE}" in tom2["ENTPersonJointure"]
    assert pupil(server, UAI_1, "600001") == lea
    assert not conflicts(s)
    # and it stays so
    (env.landing / ACADEMY / UAI_2 / "ElevesSansAdresses.xml").write_text(
        text2.replace("01/10/2026", "05/10/2026").replace("<DATE_ENTREE>01/09/2026",
                                                           "<DATE_ENTREE>03/09/2026"), "utf-8")
    s = sync(env)
    assert s["changes"] == 0 and not conflicts(s)


def test_cli_sync_tells_of_the_conflict_and_names_no_one(env: Settings,
                                                         server: LdapServer) -> None:
    import os
    import subprocess
    import sys

    drop(env, "eleves_ine_partage_deux_enfants.xml", UAI_1)
    cli_env = {**os.environ, "ENTSYNC_LANDING": str(env.landing),
               "ENTSYNC_WORKDIR": str(env.workdir), "ENTSYNC_STATE_URL": env.state_url,
               **server.env()}
    r = subprocess.run([sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY],
                       env=cli_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "suspected duplicates: ine_conflict 1" in r.stdout
    assert len(pupils(server)) == 2
    st = subprocess.run([sys.executable, "-m", "etl.cli", "status", "--academy", ACADEMY,
                         "--json"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert st.returncode == 0, st.stderr[-3000:]
    assert json.loads(st.stdout)["academies"][0]["last_run"]["counts"][
        "suspected_duplicates"] == 1
    no_personal_data(r.stdout, r.stderr, st.stdout)
