"""The throwaway slapd (etl/ldapserver.py) and the ENT schema it serves (schemas/).

Integration tests are marked `ldap` and use the session slapd of tests/ldap_fixture.py; they
fail (never skip) when slapd is not installed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from etl.devtools import slapd as ldapserver
from etl.devtools.slapd import (
    LdapServer,
    find_program,
    is_running,
    render_slapd_conf,
    server_info,
    ssha_hash,
    start_slapd,
    stop_slapd,
)
from tests.ldap_fixture import admin_connection

UAI = "0671234X"
SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
# BER syncRequestValue ::= SEQUENCE { mode ENUMERATED refreshOnly(1) }
SYNC_REQUEST_REFRESH_ONLY = b"\x30\x03\x0a\x01\x01"


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _uid(prefix: str) -> str:
    """An opaque, never-reused uid (as the sync generates them: not derived from a name)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _add(conn: ldap3.Connection, dn: str, classes: list[str], attrs: dict[str, object]) -> None:
    ok = conn.add(dn, classes, attrs)
    assert ok, f"add {dn} failed: {conn.result}"


def _search(
    conn: ldap3.Connection, base: str, flt: str, attrs: list[str] | None = None
) -> list[dict[str, Any]]:
    conn.search(base, flt, search_scope=ldap3.SUBTREE, attributes=attrs or [ldap3.ALL_ATTRIBUTES])
    assert conn.result["result"] == 0, conn.result
    return [r for r in conn.response if r["type"] == "searchResEntry"]


def _dns(conn: ldap3.Connection, base: str, flt: str) -> set[str]:
    return {r["dn"].lower() for r in _search(conn, base, flt, ["1.1"])}


def _person_classes(profile_class: str) -> list[str]:
    return ["top", "inetOrgPerson", "ENTPerson", profile_class, "entSyncAccount"]


def _bind_ok(server: LdapServer, dn: str, password: str) -> bool:
    conn = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE),
        user=dn,
        password=password,
        raise_exceptions=False,
    )
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


@pytest.fixture
def school_dn(ldap_conn: ldap3.Connection, slapd: LdapServer) -> str:
    """The school 0671234X with its ou=groups, created once per session (idempotent)."""
    dn = f"ENTStructureUAI={UAI},ou=structures,{slapd.base}"
    if not ldap_conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE):
        _add(
            ldap_conn,
            dn,
            ["top", "ENTEtablissement", "entSyncObject"],
            {
                "ENTStructureUAI": UAI,
                "ENTStructureNomCourant": "COLLEGE JEAN MONNET",
                "ENTStructureTypeStruct": "COLLEGE",
                "ENTStructureAcademie": "AC-STRASBOURG",
                "entSyncSourceHash": "sha256:00",
            },
        )
        _add(ldap_conn, f"ou=groups,{dn}", ["top", "organizationalUnit"], {"ou": "groups"})
    return dn


def _add_pupil(conn: ldap3.Connection, slapd: LdapServer, school: str, **extra: object) -> str:
    uid = _uid("e")
    dn = f"uid={uid},ou=people,{slapd.base}"
    attrs: dict[str, object] = {
        "uid": uid,
        "ENTPersonLogin": f"camille.martin{uid[-6:]}",
        "cn": "Camille MARTIN",
        "sn": "MARTIN",
        "givenName": "Camille",
        "displayName": "MARTIN Camille",
        "ENTPersonJointure": [
            f"AC-STRASBOURG$SIECLE${UAI}${uid[-7:]}",
            f"AC-STRASBOURG$INE$0708{uid[-7:]}HA",
        ],
        "ENTPersonProfils": "National_ELV",
        "ENTPersonStructRattach": school,
        "ENTPersonDateNaissance": "03/05/2011",
        "ENTPersonSexe": "F",
        "ENTEleveINE": f"0708{uid[-7:]}HA",
        "ENTEleveMEF": "10310019110",
        "ENTEleveClasses": f"{school}$3A",
        "ENTEleveGroupes": [f"{school}$3A-ANGLAIS", f"{school}$LATIN"],
        "entSyncStatus": "ACTIVE",
        "entSyncSourceHash": "sha256:0123abcd",
        "entSyncStructures": school,
    }
    attrs.update(extra)
    _add(conn, dn, _person_classes("ENTEleve"), attrs)
    return dn


# ------------------------------------------------------------------------------------------
# Pure parts (no slapd)
# ------------------------------------------------------------------------------------------


def test_ssha_hash_is_salted_sha1_of_the_password() -> None:
    hashed = ssha_hash("s3cret")
    assert hashed.startswith("{SSHA}")
    raw = base64.b64decode(hashed[len("{SSHA}") :])
    digest, salt = raw[:20], raw[20:]
    assert len(salt) == 8
    assert hashlib.sha1(b"s3cret" + salt).digest() == digest
    assert ssha_hash("s3cret") != hashed  # a fresh salt each time


def test_rendered_conf_is_durable_with_syncprov_and_indexes(tmp_path: Path) -> None:
    conf = render_slapd_conf(tmp_path, "dc=ent,dc=grandest,dc=fr", "pw")
    lines = [line.split("#")[0].strip() for line in conf.splitlines()]
    lines = [line for line in lines if line]
    assert not any(line.startswith("dbnosync") for line in lines)
    assert "overlay         syncprov" in lines
    assert "syncprov-checkpoint 100 10" in lines
    assert 'suffix          "dc=ent,dc=grandest,dc=fr"' in lines
    assert 'rootdn          "cn=admin,dc=ent,dc=grandest,dc=fr"' in lines
    indexed = {line.split()[1] for line in lines if line.startswith("index ")}
    for attr in ("objectClass", "uid", "ENTPersonLogin", "ENTPersonJointure", "member"):
        assert attr in indexed
    assert "pw" not in conf.split()  # only the hash is written
    assert "@" not in "".join(lines)
    assert str(ldapserver.ENTSYNC_SCHEMA) in conf


def test_server_repr_and_env_hide_nothing_but_the_password_from_logs(tmp_path: Path) -> None:
    server = LdapServer(
        dir=tmp_path,
        port=3890,
        url="ldap://127.0.0.1:3890",
        ldapi_url="ldapi://%2Ftmp%2Fx",
        base="dc=ent,dc=grandest,dc=fr",
        bind_dn="cn=entsync,ou=services,dc=ent,dc=grandest,dc=fr",
        password="hunter2-secret",
        root_dn="cn=admin,dc=ent,dc=grandest,dc=fr",
        root_password="root-secret",
        reader_dn="cn=reader,ou=services,dc=ent,dc=grandest,dc=fr",
        reader_password="reader-secret",
    )
    for secret in ("hunter2-secret", "root-secret", "reader-secret"):
        assert secret not in repr(server)
    # the sync gets the service account, never the rootdn
    assert server.env() == {
        "ENTSYNC_LDAP_URL": "ldap://127.0.0.1:3890",
        "ENTSYNC_LDAP_BIND_DN": "cn=entsync,ou=services,dc=ent,dc=grandest,dc=fr",
        "ENTSYNC_LDAP_PASSWORD": "hunter2-secret",
        "ENTSYNC_LDAP_BASE": "dc=ent,dc=grandest,dc=fr",
    }
    assert server.env("root")["ENTSYNC_LDAP_BIND_DN"] == "cn=admin,dc=ent,dc=grandest,dc=fr"
    assert server.env("reader")["ENTSYNC_LDAP_PASSWORD"] == "reader-secret"
    assert not server.env()["ENTSYNC_LDAP_URL"].endswith("/")
    with_tls = dataclasses.replace(server, ca_file=tmp_path / "ca.pem")
    assert with_tls.env()["ENTSYNC_LDAP_CA_FILE"] == str(tmp_path / "ca.pem")


def test_missing_slapd_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(ldapserver, "_SBIN_DIRS", ("/nonexistent-sbin",))
    with pytest.raises(RuntimeError, match="apt-get install slapd ldap-utils"):
        ldapserver.ensure_slapd_installed()


def test_ldapi_socket_path_is_percent_encoded_and_short(tmp_path: Path) -> None:
    assert (
        ldapserver._ldapi_url(Path("/srv/a b/slapd"))
        == "ldapi://%2Fsrv%2Fa%20b%2Fslapd%2Frun%2Fldapi"
    )
    deep = tmp_path.joinpath(*(["d" * 30] * 5))
    assert len(os.fsencode(ldapserver._ldapi_path(deep))) <= 100


def test_server_info_of_an_empty_folder_is_none(tmp_path: Path) -> None:
    assert server_info(tmp_path) is None
    assert not is_running(tmp_path)
    assert stop_slapd(tmp_path) is False


# ------------------------------------------------------------------------------------------
# The server itself
# ------------------------------------------------------------------------------------------


@pytest.mark.ldap
def test_slaptest_accepts_the_rendered_conf(slapd: LdapServer) -> None:
    slaptest = find_program("slaptest")
    assert slaptest is not None
    result = subprocess.run(
        [slaptest, "-u", "-f", str(slapd.dir / "slapd.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.ldap
def test_slapd_stays_in_the_callers_session_in_a_process_group_of_its_own(
        tmp_path: Path) -> None:
    """In the caller's session: Linux's autogroup scheduling makes a group of each session, and
    in a session of its own slapd waited for the CPU behind the sync's reading and planning
    whatever their niceness (``python -m bench.sched``). In its own process group: a Ctrl-C
    on the caller does not stop it."""
    folder = tmp_path / "session-slapd"
    start_slapd(folder)
    try:
        pid = int((folder / "run" / "slapd.pid").read_text())
        assert os.getsid(pid) == os.getsid(0)
        assert os.getpgid(pid) != os.getpgid(0)
    finally:
        stop_slapd(folder)


@pytest.mark.ldap
def test_start_stop_restart_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    folder = tmp_path / "own-slapd"
    first = start_slapd(folder)
    try:
        pid = int((folder / "run" / "slapd.pid").read_text())
        assert start_slapd(folder) == first  # already running: same server, same process
        assert int((folder / "run" / "slapd.pid").read_text()) == pid
        assert server_info(folder) == first
        for secret in ("admin.secret", "entsync.secret", "reader.secret"):
            assert stat.S_IMODE((folder / secret).stat().st_mode) == 0o600
            assert not (folder / secret).read_text().endswith("\n")
        assert first.url == f"ldap://127.0.0.1:{first.port}"

        conn = admin_connection(first)
        dn = f"ou=kept,{first.base}"
        _add(conn, dn, ["top", "organizationalUnit"], {"ou": "kept"})
        conn.unbind()

        assert stop_slapd(folder) is True
        assert not is_running(folder)
        assert stop_slapd(folder) is False
        assert not (folder / "run" / "slapd.pid").exists()

        again = start_slapd(folder)
        assert again.root_password == first.root_password  # admin.secret reused
        assert again.password == first.password  # entsync.secret reused
        assert again.port == first.port  # port kept while free
        assert int((folder / "run" / "slapd.pid").read_text()) != pid
        conn = admin_connection(again)
        assert conn.search(dn, "(ou=kept)", search_scope=ldap3.BASE)  # data persisted
        assert conn.search(f"ou=people,{again.base}", "(objectClass=*)", ldap3.BASE)
        conn.unbind()
    finally:
        stop_slapd(folder)
    assert not is_running(folder)


@pytest.mark.ldap
def test_start_on_a_busy_port_fails_clearly(slapd: LdapServer, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=f"port {slapd.port} is already in use"):
        start_slapd(tmp_path / "other", port=slapd.port)
    assert not is_running(tmp_path / "other")


@pytest.mark.ldap
def test_slapd_dying_at_startup_reports_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ldapserver, "_ldapi_url", lambda _dir: "ldapi://%2Fnonexistent%2Fs")
    with pytest.raises(RuntimeError, match=r"exited during startup(.|\n)*bind"):
        start_slapd(tmp_path / "broken")
    assert not is_running(tmp_path / "broken")


@pytest.mark.ldap
def test_base_entries_exist(ldap_conn: ldap3.Connection, slapd: LdapServer) -> None:
    for dn in (slapd.base, f"ou=people,{slapd.base}", f"ou=structures,{slapd.base}"):
        assert ldap_conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE), dn


# ------------------------------------------------------------------------------------------
# The schema (contract v1)
# ------------------------------------------------------------------------------------------


@pytest.mark.ldap
def test_pupil_is_found_by_jointure_and_login(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    dn = _add_pupil(ldap_conn, slapd, school_dn)
    people = f"ou=people,{slapd.base}"
    entry = _search(ldap_conn, dn, "(objectClass=ENTEleve)")[0]
    attrs = entry["attributes"]
    jointures = attrs["ENTPersonJointure"]
    login = attrs["ENTPersonLogin"][0]

    for jointure in jointures:
        flt = f"(ENTPersonJointure={escape_filter_chars(jointure)})"
        assert _dns(ldap_conn, people, flt) == {dn.lower()}
    # Source keys and logins compare case-insensitively.
    flt = f"(ENTPersonJointure={escape_filter_chars(jointures[0].lower())})"
    assert _dns(ldap_conn, people, flt) == {dn.lower()}
    flt = f"(&(objectClass=ENTPerson)(ENTPersonLogin={escape_filter_chars(login.upper())}))"
    assert _dns(ldap_conn, people, flt) == {dn.lower()}
    assert _dns(ldap_conn, people, f"(ENTPersonStructRattach={school_dn})") >= {dn.lower()}
    assert _dns(ldap_conn, people, f"(ENTEleveClasses={escape_filter_chars(school_dn)}$3A)") >= {
        dn.lower()
    }
    assert attrs["ENTPersonDateNaissance"] == ["03/05/2011"]
    assert attrs["entSyncStatus"] == ["ACTIVE"]


@pytest.mark.ldap
def test_login_is_single_valued_and_status_is_required(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    dn = _add_pupil(ldap_conn, slapd, school_dn)
    ok = ldap_conn.modify(dn, {"ENTPersonLogin": [(ldap3.MODIFY_ADD, ["second.login"])]})
    assert not ok and ldap_conn.result["description"] == "constraintViolation"

    uid = _uid("e")
    ok = ldap_conn.add(
        f"uid={uid},ou=people,{slapd.base}",
        _person_classes("ENTEleve"),
        {"uid": uid, "ENTPersonLogin": f"x{uid}", "cn": "X", "sn": "X"},
    )
    assert not ok and ldap_conn.result["description"] == "objectClassViolation"


@pytest.mark.ldap
def test_guardian_and_teacher(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    people = f"ou=people,{slapd.base}"
    pupil = _add_pupil(ldap_conn, slapd, school_dn)
    other_school = f"ENTStructureUAI=0670001A,ou=structures,{slapd.base}"

    guardian_uid = _uid("t")
    guardian = f"uid={guardian_uid},{people}"
    _add(
        ldap_conn,
        guardian,
        _person_classes("ENTAuxPersRelEleve"),
        {
            "uid": guardian_uid,
            "ENTPersonLogin": f"jean.martin{guardian_uid[-6:]}",
            "cn": "Jean MARTIN",
            "sn": "MARTIN",
            "givenName": "Jean",
            "ENTPersonJointure": f"AC-STRASBOURG$SIECLE$RESP${guardian_uid[-7:]}",
            "ENTPersonProfils": "National_TUT",
            "ENTPersonStructRattach": school_dn,
            "ENTAuxPersRelEleveEleve": [pupil],
            "mail": "jean.martin@example.org",
            "entSyncStatus": "ACTIVE",
        },
    )
    assert ldap_conn.modify(
        pupil, {"ENTElevePersRelEleve": [(ldap3.MODIFY_ADD, [guardian_uid])]}
    ), ldap_conn.result

    teacher_uid = _uid("p")
    teacher = f"uid={teacher_uid},{people}"
    _add(
        ldap_conn,
        teacher,
        _person_classes("ENTAuxEnseignant"),
        {
            "uid": teacher_uid,
            "ENTPersonLogin": f"claire.dupont{teacher_uid[-6:]}",
            "cn": "Claire DUPONT",
            "sn": "DUPONT",
            "givenName": "Claire",
            "ENTPersonJointure": [
                f"AC-STRASBOURG$STS${UAI}${teacher_uid[-7:]}",
                f"AC-STRASBOURG$STS$0670001A${teacher_uid[-7:]}",
            ],
            "ENTPersonProfils": "National_ENS",
            "ENTPersonStructRattach": school_dn,
            "ENTPersonFonctions": [f"{UAI}$ENS$L1300$MATHEMATIQUES", "0670001A$ENS$L1300"],
            "ENTAuxEnsClasses": [f"{school_dn}$3A", f"{other_school}$4B"],
            "ENTAuxEnsGroupes": f"{school_dn}$LATIN",
            "ENTAuxEnsClassesPrincipal": f"{school_dn}$3A",
            "ENTAuxEnsMatiereEnseignEtab": [f"{UAI}$MATHEMATIQUES", "0670001A$MATHEMATIQUES"],
            "entSyncStatus": "ACTIVE",
            "entSyncStructures": [school_dn, other_school],
        },
    )

    flt = f"(ENTAuxPersRelEleveEleve={escape_filter_chars(pupil)})"
    assert _dns(ldap_conn, people, flt) == {guardian.lower()}
    assert _dns(ldap_conn, people, f"(ENTElevePersRelEleve={guardian_uid})") == {pupil.lower()}
    jointure = f"AC-STRASBOURG$STS$0670001A${teacher_uid[-7:]}"
    assert _dns(ldap_conn, people, f"(ENTPersonJointure={jointure})") == {teacher.lower()}
    login = f"claire.dupont{teacher_uid[-6:]}"
    assert _dns(ldap_conn, people, f"(ENTPersonLogin={login})") == {teacher.lower()}
    assert teacher.lower() in _dns(
        ldap_conn, people, f"(&(ENTPersonProfils=National_ENS)(entSyncStructures={other_school}))"
    )


@pytest.mark.ldap
def test_school_and_class_with_members(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    structures = f"ou=structures,{slapd.base}"
    assert _dns(ldap_conn, structures, f"(ENTStructureUAI={UAI.lower()})") == {school_dn.lower()}
    school = _search(ldap_conn, school_dn, "(objectClass=ENTEtablissement)")[0]["attributes"]
    assert school["ENTStructureNomCourant"] == ["COLLEGE JEAN MONNET"]

    pupil = _add_pupil(ldap_conn, slapd, school_dn)
    code = _uid("3A-")  # a fresh class per run of the test in the shared session slapd
    class_dn = f"cn={escape_rdn(code)},ou=groups,{school_dn}"
    _add(
        ldap_conn,
        class_dn,
        ["top", "ENTClasse", "entSyncObject"],
        {
            "cn": code,
            "member": [pupil, f"cn=placeholder,ou=groups,{school_dn}"],
            "ENTStructureAnneeScolaire": "2025-2026",
            "ENTStructureUAI": UAI,
        },
    )
    group_dn = f"cn={escape_rdn(code)}-LATIN,ou=groups,{school_dn}"
    _add(ldap_conn, group_dn, ["top", "ENTGroupe"], {"cn": f"{code}-LATIN", "member": pupil})

    found = _dns(ldap_conn, school_dn, f"(&(objectClass=groupOfNames)(member={pupil}))")
    assert found == {class_dn.lower(), group_dn.lower()}
    assert _dns(ldap_conn, school_dn, f"(&(objectClass=ENTClasse)(cn={code}))") == {
        class_dn.lower()
    }
    # Removing the pupil (disabled account) leaves the placeholder member.
    assert ldap_conn.modify(class_dn, {"member": [(ldap3.MODIFY_DELETE, [pupil])]})
    assert _dns(ldap_conn, school_dn, f"(member={pupil})") == {group_dn.lower()}


@pytest.mark.ldap
def test_ldap_special_characters_survive_add_and_read_back(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    nasty = 'O\'Brien* (Jr) \\ a,b + c=d; <e> "f" #g é'
    pupil = _add_pupil(ldap_conn, slapd, school_dn, sn=nasty, displayName=nasty)
    people = f"ou=people,{slapd.base}"
    assert _dns(ldap_conn, people, f"(sn={escape_filter_chars(nasty)})") == {pupil.lower()}
    entry = _search(ldap_conn, pupil, "(objectClass=*)", ["sn", "displayName"])[0]
    assert entry["attributes"] == {"sn": [nasty], "displayName": [nasty]}

    # ... and as a DN component (a class code from a hostile export).
    class_dn = f"cn={escape_rdn(nasty)},ou=groups,{school_dn}"
    _add(ldap_conn, class_dn, ["top", "ENTGroupe"], {"cn": nasty, "member": pupil})
    entry = _search(ldap_conn, school_dn, f"(cn={escape_filter_chars(nasty)})", ["cn"])[0]
    assert entry["attributes"] == {"cn": [nasty]}
    assert ldap_conn.search(entry["dn"], "(objectClass=ENTGroupe)", ldap3.BASE)
    assert ldap_conn.delete(class_dn), ldap_conn.result


# ------------------------------------------------------------------------------------------
# ACLs
# ------------------------------------------------------------------------------------------


@pytest.mark.ldap
def test_disabled_account_cannot_authenticate(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    pupil = _add_pupil(ldap_conn, slapd, school_dn, userPassword="Pupil-pw-123")
    assert _bind_ok(slapd, pupil, "Pupil-pw-123")
    assert not _bind_ok(slapd, pupil, "wrong")

    changes = {
        "entSyncStatus": [(ldap3.MODIFY_REPLACE, ["DISABLED"])],
        "entSyncDisabledAt": [(ldap3.MODIFY_REPLACE, ["20250301020000Z"])],
    }
    assert ldap_conn.modify(pupil, changes), ldap_conn.result
    assert not _bind_ok(slapd, pupil, "Pupil-pw-123")
    people = f"ou=people,{slapd.base}"
    flt = "(&(entSyncStatus=DISABLED)(entSyncDisabledAt<=20250401000000Z))"
    assert pupil.lower() in _dns(ldap_conn, people, flt)

    assert ldap_conn.modify(pupil, {"entSyncStatus": [(ldap3.MODIFY_REPLACE, ["ACTIVE"])]})
    assert _bind_ok(slapd, pupil, "Pupil-pw-123")


@pytest.mark.ldap
def test_passwords_are_unreadable_and_anonymous_sees_only_the_root_dse(
    ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str
) -> None:
    reader = _add_pupil(ldap_conn, slapd, school_dn, userPassword="Reader-pw-1")
    other = _add_pupil(ldap_conn, slapd, school_dn, userPassword="Other-pw-1")

    user = ldap3.Connection(
        ldap3.Server(slapd.url, get_info=ldap3.NONE),
        user=reader,
        password="Reader-pw-1",
        auto_bind=True,
        raise_exceptions=False,
    )
    try:
        entry = _search(user, other, "(objectClass=*)", ["*"])[0]["attributes"]
        assert not entry.get("userPassword") and entry["uid"]
        mine = _search(user, reader, "(objectClass=*)", ["userPassword"])[0]["attributes"]
        assert not mine.get("userPassword")  # not even one's own hash
        assert user.modify(reader, {"userPassword": [(ldap3.MODIFY_REPLACE, ["Reader-pw-2"])]})
    finally:
        user.unbind()
    assert _bind_ok(slapd, reader, "Reader-pw-2")

    anonymous = ldap3.Connection(
        ldap3.Server(slapd.url, get_info=ldap3.NONE), auto_bind=True, raise_exceptions=False
    )
    try:
        assert anonymous.search("", "(objectClass=*)", ldap3.BASE, attributes=["namingContexts"])
        assert not anonymous.search(slapd.base, "(objectClass=*)", ldap3.SUBTREE)
        assert not anonymous.response
    finally:
        anonymous.unbind()


@pytest.mark.ldap
@pytest.mark.skipif(os.geteuid() != 0, reason="ldapi EXTERNAL maps only root to the admin")
def test_local_root_is_admin_over_ldapi(slapd: LdapServer) -> None:
    result = subprocess.run(
        ["ldapwhoami", "-Q", "-Y", "EXTERNAL", "-H", slapd.ldapi_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lower() == f"dn:{slapd.root_dn}".lower()


# ------------------------------------------------------------------------------------------
# syncprov (RFC 4533)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def one_pupil(ldap_conn: ldap3.Connection, slapd: LdapServer, school_dn: str) -> Iterator[str]:
    yield _add_pupil(ldap_conn, slapd, school_dn)


@pytest.mark.ldap
def test_sync_refresh_only_search_with_ldap3(
    ldap_conn: ldap3.Connection, slapd: LdapServer, one_pupil: str
) -> None:
    ldap_conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["supportedControl"])
    assert SYNC_REQUEST_OID in ldap_conn.response[0]["attributes"]["supportedControl"]

    ldap_conn.search(
        f"ou=people,{slapd.base}",
        "(objectClass=ENTPerson)",
        attributes=["uid"],
        dereference_aliases=ldap3.DEREF_NEVER,  # RFC 4533: syncprov refuses DEREF_ALWAYS
        controls=[(SYNC_REQUEST_OID, True, SYNC_REQUEST_REFRESH_ONLY)],
    )
    assert ldap_conn.result["result"] == 0, ldap_conn.result
    entries = [r for r in ldap_conn.response if r["type"] == "searchResEntry"]
    assert one_pupil.lower() in {e["dn"].lower() for e in entries}
    assert all(SYNC_STATE_OID in e.get("controls", {}) for e in entries)
    assert SYNC_DONE_OID in ldap_conn.result.get("controls", {})  # carries the cookie


@pytest.mark.ldap
def test_sync_refresh_only_search_with_ldapsearch(slapd: LdapServer, one_pupil: str) -> None:
    ldapsearch = find_program("ldapsearch")
    assert ldapsearch is not None, "ldapsearch missing: apt-get install ldap-utils"
    result = subprocess.run(
        [
            ldapsearch, "-x", "-LLL", "-o", "ldif-wrap=no", "-H", slapd.url, "-D", slapd.reader_dn,
            "-y", str(slapd.reader_password_file), "-b", slapd.base, "-E", "sync=ro",
            "(objectClass=*)", "1.1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dns = [line[4:].lower() for line in result.stdout.splitlines() if line.startswith("dn: ")]
    assert slapd.base.lower() in dns
    assert one_pupil.lower() in dns
    assert slapd.reader_password not in result.stdout + result.stderr
