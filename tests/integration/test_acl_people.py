"""What a person's own bind reads in the shipped slapd configuration (schemas/slapd.conf.in).

Accounts may set a password and bind: a pupil or a guardian then reads his own entry whole,
and of everyone else only the public attributes the ENT's screens show (names, login,
profile, schools, classes and groups, subjects): never another person's birth date,
e-mail, INE, sex, source keys or guardian links, not even through a search filter, and no
DISABLED account at all. The consumer accounts below ou=services keep reading everything
but password hashes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import ENTSYNC_SCHEMA, LdapServer, ssha_hash, start_slapd, stop_slapd
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.ldap_fixture import admin_connection, bound_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI = "0510002" + uai_check_letter("0510002")
INSUFFICIENT_ACCESS = 50

#: what anyone bound may read of another person (lower case), the README's list
PUBLIC = {"objectclass", "uid", "entpersonlogin", "sn", "givenname", "cn", "displayname",
          "entpersonprofils", "entpersonstructrattach", "entsyncstructures",
          "enteleveclasses", "entelevegroupes", "entauxensclasses", "entauxensgroupes",
          "entauxensclassesprincipal", "entauxensmatiereenseignetab"}
#: what must never be read of another person, whatever the ACL's shape
NEVER = {"entpersondatenaissance", "mail", "enteleveine", "entpersonjointure",
         "entelevepersreleleve", "entauxpersreleleveeleve", "entpersonsexe", "entelevemef",
         "entpersonfonctions", "entsyncstatus", "entsyncdisabledat", "userpassword",
         "postaladdress", "homepostaladdress", "street", "l", "postalcode", "telephonenumber",
         "mobile", "homephone"}

BIRTHS = {"1": "01/02/2012", "2": "03/04/2011", "3": "05/06/2013"}
MAILS = {"501": "claire.martin@example.org", "502": "paul.petit@example.org"}
INES = {"1": "070876696HA", "2": "111111111AA", "3": "222222222BB"}


def _schema_attributes() -> set[str]:
    """Every attribute the project's schema defines (lower case)."""
    text = Path(ENTSYNC_SCHEMA).read_text(encoding="utf-8")
    return {m.lower() for m in re.findall(r"NAME '([A-Za-z0-9-]+)'", text)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    folder = tmp_path_factory.mktemp("acl-people-slapd")
    info = start_slapd(folder)
    try:
        yield info
    finally:
        stop_slapd(folder)


@pytest.fixture(scope="module")
def people(server: LdapServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A school synced by the service account; a pupil and a guardian given a password by
    the admin (as an ENT's password reset would), a third pupil DISABLED."""
    tmp = tmp_path_factory.mktemp("acl-people-sync")
    env = Settings.from_env({
        "ENTSYNC_LANDING": str(tmp / "landing"), "ENTSYNC_WORKDIR": str(tmp / "work"),
        "ENTSYNC_STATE_URL": f"sqlite:///{tmp / 'state.db'}", **server.env()})
    write_school(env.landing, ACADEMY, UAI,
                 [Pupil("1", "MARTIN", "Zoé", "3A", ine=INES["1"], birth=BIRTHS["1"]),
                  Pupil("2", "PETIT", "Léo", "3A", ine=INES["2"], birth=BIRTHS["2"]),
                  Pupil("3", "DURAND", "Lou", "3B", ine=INES["3"], birth=BIRTHS["3"])],
                 [Guardian("501", "MARTIN", "Claire", ["1"], email=MAILS["501"]),
                  Guardian("502", "PETIT", "Paul", ["2"], email=MAILS["502"])],
                 [Teacher("9001", "LEBLANC", "Henri", ["3A"], head_of=["3A"])])
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success" and summary["failed"] == 0, summary
    admin = admin_connection(server)
    try:
        dns: dict[str, str] = {}
        for who, flt in (("pupil", "(ENTEleveINE=070876696HA)"), ("other_pupil",
                         "(ENTEleveINE=111111111AA)"), ("disabled", "(ENTEleveINE=222222222BB)"),
                         ("guardian", f"(mail={MAILS['501']})"),
                         ("other_guardian", f"(mail={MAILS['502']})"),
                         ("teacher", "(ENTPersonProfils=National_ENS)")):
            admin.search(f"ou=people,{server.base}", flt, attributes=["uid"])
            assert len(admin.response) == 1, (who, admin.response)
            dns[who] = admin.response[0]["dn"]
        for who in ("pupil", "guardian"):
            assert admin.modify(dns[who], {"userPassword": [
                (ldap3.MODIFY_REPLACE, [ssha_hash(f"{who}-pw-1")])]}), admin.result
        assert admin.modify(dns["disabled"], {"entSyncStatus": [
            (ldap3.MODIFY_REPLACE, ["DISABLED"])]}), admin.result
        # a second consumer account, as an ENT adds one per backend (CAS, messaging...)
        assert admin.add(f"cn=cas,ou=services,{server.base}",
                         ["top", "applicationProcess", "simpleSecurityObject"],
                         {"cn": "cas", "userPassword": ssha_hash("cas-pw-1")}), admin.result
    finally:
        admin.unbind()
    return dns


def _bind(server: LdapServer, people: dict[str, str], who: str) -> ldap3.Connection:
    if who == "reader":
        dn, pw = server.reader_dn, server.reader_password
    elif who == "cas":
        dn, pw = f"cn=cas,ou=services,{server.base}", "cas-pw-1"
    else:
        dn, pw = people[who], f"{who}-pw-1"
    conn = bound_connection(server, dn, pw)
    assert conn.bound, (who, conn.result)
    return conn


def _everything(conn: ldap3.Connection, base: str, flt: str = "(objectClass=*)"
                ) -> dict[str, dict[str, list[str]]]:
    """Every entry the bind finds below ``base``, paged, user and operational attributes."""
    out: dict[str, dict[str, list[str]]] = {}
    for e in conn.extend.standard.paged_search(base, flt, ldap3.SUBTREE,
                                               attributes=["*", "+"], paged_size=2,
                                               generator=True):
        if e.get("type") == "searchResEntry":
            out[e["dn"].lower()] = {k.lower(): [x.decode("utf-8") for x in v]
                                    for k, v in e["raw_attributes"].items()}
    return out


@pytest.mark.parametrize("who", ["pupil", "guardian"])
def test_a_person_reads_no_one_elses_personal_data(server: LdapServer, people: dict[str, str],
                                                   who: str) -> None:
    conn = _bind(server, people, who)
    try:
        seen = _everything(conn, server.base)
    finally:
        conn.unbind()
    me = people[who].lower()
    others = {dn: a for dn, a in seen.items()
              if dn.endswith(f",ou=people,{server.base}".lower()) and dn != me}
    assert people["other_pupil"].lower() in others and people["teacher"].lower() in others
    for dn, attrs in others.items():
        assert not set(attrs) & NEVER, (dn, sorted(set(attrs) & NEVER))
        assert set(attrs) <= PUBLIC, (dn, sorted(set(attrs) - PUBLIC))
    # nor anywhere else in the directory: no value of anyone's birth date, e-mail or INE
    # (the INE is also inside a source key)
    secrets = set(BIRTHS.values()) | set(MAILS.values()) | set(INES.values())
    mine = seen.get(me, {})
    for dn, attrs in seen.items():
        if dn == me:
            continue
        values = {v for vs in attrs.values() for v in vs}
        leaked = {s for s in secrets for v in values if s in v}
        assert not leaked, (dn, leaked)
    assert mine, "own entry not found"


@pytest.mark.parametrize("who", ["pupil", "guardian"])
def test_no_personal_data_through_a_search_filter(server: LdapServer, people: dict[str, str],
                                                  who: str) -> None:
    conn = _bind(server, people, who)
    try:
        me = people[who].lower()
        for flt in (f"(ENTPersonDateNaissance={BIRTHS['2']})", "(ENTPersonDateNaissance=*)",
                    f"(mail={MAILS['502']})", "(mail=*)", "(ENTEleveINE=*)",
                    f"(ENTPersonJointure=*{INES['2']})", "(ENTPersonSexe=*)",
                    "(ENTElevePersRelEleve=*)", "(ENTAuxPersRelEleveEleve=*)",
                    "(!(ENTPersonDateNaissance=01/01/1900))",
                    f"(|(uid=*)(ENTPersonDateNaissance={BIRTHS['2']}))"):
            found = set(_everything(conn, f"ou=people,{server.base}", flt)) - {
                f"ou=people,{server.base}".lower()}  # it has no birth date: true for a "!"
            if flt.startswith("(|"):  # uid is public: everyone active, birth date or not
                assert people["other_pupil"].lower() in found
                continue
            assert found <= {me}, (flt, found)
    finally:
        conn.unbind()


def test_a_pupil_reads_his_own_entry_whole(server: LdapServer, people: dict[str, str]) -> None:
    conn = _bind(server, people, "pupil")
    try:
        me = _everything(conn, people["pupil"])[people["pupil"].lower()]
        assert me["entpersondatenaissance"] == [BIRTHS["1"]]
        assert me["enteleveine"] == [INES["1"]]
        assert me["entelevepersreleleve"]  # his guardian's uid
        assert any(INES["1"] in j for j in me["entpersonjointure"])
        assert "userpassword" not in me  # settable and usable, never readable
        # ... and only his: the same attributes of another pupil are not there
        other = _everything(conn, people["other_pupil"])[people["other_pupil"].lower()]
        assert not {"entpersondatenaissance", "enteleveine", "entelevepersreleleve",
                    "entpersonjointure"} & set(other), sorted(other)
        # he may change his password, nothing else of his entry
        conn.modify(people["pupil"], {"userPassword": [
            (ldap3.MODIFY_REPLACE, [ssha_hash("pupil-pw-1")])]})
        assert conn.result["result"] == 0, conn.result
        conn.modify(people["pupil"], {"sn": [(ldap3.MODIFY_REPLACE, ["X"])]})
        assert conn.result["result"] == INSUFFICIENT_ACCESS
        conn.modify(people["other_pupil"], {"userPassword": [(ldap3.MODIFY_REPLACE, ["x"])]})
        assert conn.result["result"] == INSUFFICIENT_ACCESS
    finally:
        conn.unbind()


def test_a_guardian_reads_his_own_entry_and_his_childs_public_attributes(
        server: LdapServer, people: dict[str, str]) -> None:
    conn = _bind(server, people, "guardian")
    try:
        seen = _everything(conn, f"ou=people,{server.base}")
    finally:
        conn.unbind()
    me = seen[people["guardian"].lower()]
    assert me["mail"] == [MAILS["501"]]
    assert [x.lower() for x in me["entauxpersreleleveeleve"]] == [people["pupil"].lower()]
    child = seen[people["pupil"].lower()]
    assert child["sn"] == ["MARTIN"] and child["givenname"] == ["Zoé"]
    assert child["entpersonprofils"] == ["National_ELV"]
    assert child["entpersonstructrattach"] and child["enteleveclasses"]
    assert "entpersondatenaissance" not in child and "enteleveine" not in child


def test_other_peoples_public_attributes_and_the_school_are_readable(
        server: LdapServer, people: dict[str, str]) -> None:
    conn = _bind(server, people, "pupil")
    try:
        seen = _everything(conn, server.base)
    finally:
        conn.unbind()
    other = seen[people["other_pupil"].lower()]
    for name in ("uid", "entpersonlogin", "sn", "givenname", "cn", "displayname",
                 "entpersonprofils", "entpersonstructrattach", "enteleveclasses"):
        assert other.get(name), name
    assert "entpersondatenaissance" not in other and "entpersonjointure" not in other
    teacher = seen[people["teacher"].lower()]
    assert teacher["entauxensclasses"] and teacher["entauxensclassesprincipal"]
    assert "entpersondatenaissance" not in teacher
    school = f"ENTStructureUAI={UAI},ou=structures,{server.base}".lower()
    assert seen[school]["entstructureuai"] == [UAI]
    klass = seen[f"cn=3a,ou=groups,{school}"]
    assert people["other_pupil"].lower() in {m.lower() for m in klass["member"]}


def test_a_disabled_account_is_seen_by_consumers_only(server: LdapServer,
                                                      people: dict[str, str]) -> None:
    for who, visible in (("pupil", False), ("guardian", False), ("reader", True)):
        conn = _bind(server, people, who)
        try:
            found = _everything(conn, f"ou=people,{server.base}")
        finally:
            conn.unbind()
        assert (people["disabled"].lower() in found) is visible, who


@pytest.mark.parametrize("who", ["reader", "cas"])
def test_consumer_accounts_keep_reading_everything_but_hashes(
        server: LdapServer, people: dict[str, str], who: str) -> None:
    conn = _bind(server, people, who)
    try:
        seen = _everything(conn, f"ou=people,{server.base}")
    finally:
        conn.unbind()
    other = seen[people["other_pupil"].lower()]
    assert other["entpersondatenaissance"] == [BIRTHS["2"]]
    assert other["enteleveine"] == [INES["2"]] and other["entelevepersreleleve"]
    assert seen[people["other_guardian"].lower()]["mail"] == [MAILS["502"]]
    assert not any("userpassword" in a for a in seen.values())
    # what a consumer reads, a person's bind does not
    conn = _bind(server, people, "pupil")
    try:
        as_pupil = _everything(conn, people["other_pupil"])[people["other_pupil"].lower()]
    finally:
        conn.unbind()
    assert set(other) - set(as_pupil) >= {"entpersondatenaissance", "enteleveine"}


def test_the_public_list_is_a_whitelist_of_the_schema() -> None:
    """Every attribute of the project's schema is either public or private, and the ACL
    names exactly the public ones: a new attribute is private until someone says otherwise."""
    conf = Path(ENTSYNC_SCHEMA).parent / "slapd.conf.in"
    text = conf.read_text(encoding="utf-8")
    lists = re.findall(r'access to dn\.children="ou=people,@BASE@"\s+attrs=(\S+)', text)
    assert len(lists) == 1, lists
    granted = {a.lower() for a in lists[0].split(",")} - {"entry"}
    assert granted == PUBLIC
    assert not granted & NEVER
    assert {"entpersondatenaissance", "enteleveine", "entpersonjointure",
            "entelevepersreleleve", "entauxpersreleleveeleve"} <= _schema_attributes()
