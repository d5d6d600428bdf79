"""Least privilege in the shipped slapd configuration (schemas/slapd.conf.in).

The sync binds as ``cn=entsync,ou=services,<base>``: it writes below ou=people and
ou=structures only and never reads a password hash. Consumers bind as
``cn=reader,ou=services,<base>``: read-only, no password hashes. Anonymous clients read
nothing but the root DSE.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.ldap_fixture import admin_connection, bound_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI = "0510001" + uai_check_letter("0510001")
INSUFFICIENT_ACCESS = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    folder = tmp_path_factory.mktemp("acl-slapd")
    info = start_slapd(folder)
    try:
        yield info
    finally:
        stop_slapd(folder)


@pytest.fixture(scope="module")
def synced(server: LdapServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A school synced with the service account; one pupil given a password by the admin."""
    tmp = tmp_path_factory.mktemp("acl-sync")
    env = Settings.from_env({
        "ENTSYNC_LANDING": str(tmp / "landing"), "ENTSYNC_WORKDIR": str(tmp / "work"),
        "ENTSYNC_STATE_URL": f"sqlite:///{tmp / 'state.db'}", **server.env()})
    assert env.ldap.bind_dn == server.bind_dn != server.root_dn
    write_school(env.landing, ACADEMY, UAI,
                 [Pupil("1", "MARTIN", "Zoé", "3A"), Pupil("2", "PETIT", "Léo", "3A")],
                 [Guardian("501", "MARTIN", "Claire", ["1"])],
                 [Teacher("9001", "LEBLANC", "Henri", ["3A"])])
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success" and summary["failed"] == 0, summary
    # a second night: a name change (modify) and a pupil moved to a new class (add, member
    # delete and add)
    write_school(env.landing, ACADEMY, UAI,
                 [Pupil("1", "MARTIN-LOPEZ", "Zoé", "3A"), Pupil("2", "PETIT", "Léo", "3B")],
                 [Guardian("501", "MARTIN", "Claire", ["1"])],
                 [Teacher("9001", "LEBLANC", "Henri", ["3A"])], date="02/10/2026")
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["status"] == "success" and again["failed"] == 0 and again["applied"] > 0
    admin = admin_connection(server)
    try:
        admin.search(f"ou=people,{server.base}", "(sn=MARTIN-LOPEZ)", attributes=["uid"])
        pupil = admin.response[0]["dn"]
        assert admin.modify(pupil, {"userPassword": [(ldap3.MODIFY_REPLACE, ["Pupil-pw-1"])]})
    finally:
        admin.unbind()
    return {"pupil": pupil, "school": f"ENTStructureUAI={UAI},ou=structures,{server.base}"}


def _conn(server: LdapServer, who: str) -> ldap3.Connection:
    creds = {"service": (server.bind_dn, server.password),
             "reader": (server.reader_dn, server.reader_password),
             "anonymous": (None, None)}
    dn, pw = creds[who]
    conn = bound_connection(server, dn, pw)
    assert conn.bound
    return conn


def _entries(conn: ldap3.Connection, base: str, flt: str = "(objectClass=*)",
             attrs: list[str] | None = None) -> list[dict[str, object]]:
    conn.search(base, flt, attributes=attrs or ["*"])
    return [e for e in conn.response or [] if e.get("type") == "searchResEntry"]


def test_service_account_synced_the_school(server: LdapServer, synced: dict[str, str]) -> None:
    conn = _conn(server, "service")
    try:
        assert conn.extend.standard.who_am_i() == f"dn:{server.bind_dn}"
        people = _entries(conn, f"ou=people,{server.base}", "(objectClass=ENTPerson)", ["sn"])
        assert sorted(e["attributes"]["sn"][0] for e in people) == [
            "LEBLANC", "MARTIN", "MARTIN-LOPEZ", "PETIT"]
        assert _entries(conn, synced["school"], "(objectClass=ENTClasse)", ["cn"])
    finally:
        conn.unbind()


def _writes_outside(conn: ldap3.Connection, server: LdapServer) -> list[tuple[str, int]]:
    """Result codes of writes nobody but the rootdn may do."""
    base = server.base
    tries = [
        ("modify base", lambda: conn.modify(base, {"o": [(ldap3.MODIFY_REPLACE, ["evil"])]})),
        ("add ou=evil", lambda: conn.add(f"ou=evil,{base}", ["organizationalUnit"],
                                         {"ou": "evil"})),
        ("add service", lambda: conn.add(f"cn=evil,ou=services,{base}",
                                         ["applicationProcess"], {"cn": "evil"})),
        ("modify reader", lambda: conn.modify(server.reader_dn, {"description": [
            (ldap3.MODIFY_REPLACE, ["pwned"])]})),
        ("delete ou=people", lambda: conn.delete(f"ou=people,{base}")),
        ("rename ou=people", lambda: conn.modify_dn(f"ou=people,{base}", "ou=gens")),
    ]
    out = []
    for name, op in tries:
        op()
        out.append((name, conn.result["result"]))
    return out


def test_service_account_cannot_write_outside_people_and_structures(
        server: LdapServer, synced: dict[str, str]) -> None:
    conn = _conn(server, "service")
    try:
        results = _writes_outside(conn, server)
        assert all(code == INSUFFICIENT_ACCESS for _n, code in results), results
        conn.delete(server.reader_dn)
        assert conn.result["result"] == INSUFFICIENT_ACCESS
    finally:
        conn.unbind()
    admin = admin_connection(server)
    try:
        assert not _entries(admin, f"ou=evil,{server.base}")
        assert _entries(admin, server.base, attrs=["o"])[0]["attributes"]["o"] != ["evil"]
    finally:
        admin.unbind()


def test_service_account_cannot_read_password_hashes(server: LdapServer,
                                                     synced: dict[str, str]) -> None:
    conn = _conn(server, "service")
    try:
        for dn in (synced["pupil"], server.reader_dn, server.bind_dn):
            found = _entries(conn, dn, attrs=["*", "userPassword"])
            assert found and not found[0]["attributes"].get("userPassword"), dn
        # nor find it by filtering on the hash
        assert not _entries(conn, f"ou=people,{server.base}", "(userPassword=*)")
    finally:
        conn.unbind()


def test_reader_reads_entries_but_no_hash_and_writes_nothing(server: LdapServer,
                                                             synced: dict[str, str]) -> None:
    conn = _conn(server, "reader")
    try:
        pupil = _entries(conn, synced["pupil"], attrs=["*", "userPassword"])[0]["attributes"]
        assert pupil["sn"] == ["MARTIN-LOPEZ"] and not pupil.get("userPassword")
        assert not _entries(conn, f"ou=people,{server.base}", "(userPassword=*)")
        assert len(_entries(conn, synced["school"])) >= 3  # school, ou=groups, class
        results = _writes_outside(conn, server)
        inside = [
            ("modify pupil", lambda: conn.modify(synced["pupil"], {"sn": [
                (ldap3.MODIFY_REPLACE, ["X"])]})),
            ("add person", lambda: conn.add(f"uid=evil,ou=people,{server.base}",
                                            ["inetOrgPerson"], {"sn": "x", "cn": "x"})),
            ("delete pupil", lambda: conn.delete(synced["pupil"])),
            ("modify class", lambda: conn.modify(f"cn=3A,ou=groups,{synced['school']}", {
                "description": [(ldap3.MODIFY_REPLACE, ["X"])]})),
            ("set password", lambda: conn.modify(synced["pupil"], {"userPassword": [
                (ldap3.MODIFY_REPLACE, ["x"])]})),
        ]
        for name, op in inside:
            op()
            results.append((name, conn.result["result"]))
        assert all(code == INSUFFICIENT_ACCESS for _n, code in results), results
    finally:
        conn.unbind()
    admin = admin_connection(server)
    try:
        assert _entries(admin, synced["pupil"], attrs=["sn"])[0]["attributes"]["sn"] == [
            "MARTIN-LOPEZ"]
    finally:
        admin.unbind()


def test_anonymous_reads_no_people(server: LdapServer, synced: dict[str, str]) -> None:
    conn = _conn(server, "anonymous")
    try:
        assert not _entries(conn, f"ou=people,{server.base}")
        assert not _entries(conn, synced["pupil"])
        assert not _entries(conn, server.base)
        conn.add(f"uid=evil,ou=people,{server.base}", ["inetOrgPerson"], {"sn": "x", "cn": "x"})
        assert conn.result["result"] != 0
    finally:
        conn.unbind()


def test_people_still_bind_with_their_password(server: LdapServer,
                                               synced: dict[str, str]) -> None:
    conn = bound_connection(server, synced["pupil"], "Pupil-pw-1")
    try:
        assert conn.bound
    finally:
        conn.unbind()


def test_secret_files_are_private(server: LdapServer) -> None:
    for path in (server.password_file, server.reader_password_file, server.root_password_file):
        assert Path(path).stat().st_mode & 0o077 == 0
    assert server.password_file.read_text() == server.password
