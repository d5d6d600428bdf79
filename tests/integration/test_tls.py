"""Transport security: the sync talks to slapd over StartTLS or LDAPS and verifies the server
certificate (CA file, host name); a certificate it cannot trust stops the run with a clear
error before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl import run as pipeline
from etl.apply.writer import LdapTarget, connect
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import (
    LdapServer,
    ensure_tls_material,
    render_slapd_conf,
    start_slapd,
    stop_slapd,
)
from etl.errors import DirectoryError
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.ldap_fixture import admin_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
UAI = "0510001" + uai_check_letter("0510001")


@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    folder = tmp_path_factory.mktemp("tls-slapd")
    server = start_slapd(folder, tls=True)
    try:
        yield server
    finally:
        stop_slapd(folder)


def _settings(tmp_path: Path, env: dict[str, str]) -> Settings:
    return Settings.from_env({
        "ENTSYNC_LANDING": str(tmp_path / "landing"),
        "ENTSYNC_WORKDIR": str(tmp_path / "work"),
        "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        **env,
    })


def _school(landing: Path, uai: str, academy: str = ACADEMY) -> None:
    write_school(landing, academy, uai,
                 [Pupil("1", "MARTIN", "Zoé", "3A", ine="070876696HA")],
                 [Guardian("501", "MARTIN", "Claire", ["1"])],
                 [Teacher("9001", "LEBLANC", "Henri", ["3A"])])


def _people_of(server: LdapServer, uai: str) -> int:
    conn = admin_connection(server)
    try:
        sdn = f"ENTStructureUAI={uai},ou=structures,{server.base}"
        conn.search(f"ou=people,{server.base}", f"(ENTPersonStructRattach={sdn})",
                    attributes=["1.1"])
        return len([e for e in conn.response if e.get("type") == "searchResEntry"])
    finally:
        conn.unbind()


def test_server_has_ca_ldaps_url_and_exports_the_ca(tls_slapd: LdapServer) -> None:
    assert tls_slapd.ca_file is not None and tls_slapd.ca_file.is_file()
    assert tls_slapd.ldaps_url and tls_slapd.ldaps_url.startswith("ldaps://127.0.0.1:")
    assert tls_slapd.env()["ENTSYNC_LDAP_CA_FILE"] == str(tls_slapd.ca_file)
    key = tls_slapd.dir / "tls" / "server.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    conf = (tls_slapd.dir / "slapd.conf").read_text()
    assert "TLSCertificateFile" in conf and "TLSCACertificateFile" in conf


def test_conf_without_tls_has_no_tls_lines(tmp_path: Path) -> None:
    conf = render_slapd_conf(tmp_path, "dc=ent,dc=grandest,dc=fr", "pw")
    assert "TLS" not in conf and "@IF_TLS@" not in conf


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_both_san_names_verify(tls_slapd: LdapServer, host: str) -> None:
    assert tls_slapd.ldaps_url is not None
    for url in (tls_slapd.url, tls_slapd.ldaps_url):
        target = LdapTarget(url.replace("127.0.0.1", host), tls_slapd.bind_dn,
                            tls_slapd.password, tls_slapd.base, str(tls_slapd.ca_file))
        conn = connect(target)
        try:
            assert conn.tls_started or conn.server.ssl
            _st, result, _resp, _req = conn.extended("1.3.6.1.4.1.4203.1.11.3")  # whoami
            assert result["result"] == 0
        finally:
            conn.unbind()


def test_sync_over_starttls(tmp_path: Path, tls_slapd: LdapServer) -> None:
    env = _settings(tmp_path, tls_slapd.env())
    assert env.ldap.url and env.ldap.url.startswith("ldap://") and env.ldap.ca_file
    _school(env.landing, UAI)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success", summary
    assert summary["applied"] > 0 and summary["failed"] == 0
    assert _people_of(tls_slapd, UAI) == 3


def test_sync_over_ldaps(tmp_path: Path, tls_slapd: LdapServer) -> None:
    # another academy than the StartTLS test's: each test has a state DB of its own, and a
    # fresh state DB refuses to write an academy the directory already holds
    uai = "0670002" + uai_check_letter("0670002")
    assert tls_slapd.ldaps_url is not None
    env = _settings(tmp_path, {**tls_slapd.env(), "ENTSYNC_LDAP_URL": tls_slapd.ldaps_url})
    _school(env.landing, uai, "ac-strasbourg")
    summary = pipeline.run_sync(env, RunRequest("ac-strasbourg"))
    assert summary["status"] == "success", summary
    assert summary["applied"] > 0 and summary["failed"] == 0
    assert _people_of(tls_slapd, uai) == 3


@pytest.mark.parametrize("use_ldaps", [False, True], ids=["starttls", "ldaps"])
def test_wrong_ca_stops_the_run_before_any_write(tmp_path: Path, tls_slapd: LdapServer,
                                                 use_ldaps: bool) -> None:
    other_ca = ensure_tls_material(tmp_path / "other")  # a CA that never signed slapd's cert
    uai = "0510003" + uai_check_letter("0510003")
    env_vars = {**tls_slapd.env(), "ENTSYNC_LDAP_CA_FILE": str(other_ca)}
    if use_ldaps:
        assert tls_slapd.ldaps_url is not None
        env_vars["ENTSYNC_LDAP_URL"] = tls_slapd.ldaps_url
    env = _settings(tmp_path, env_vars)
    _school(env.landing, uai)
    with pytest.raises(DirectoryError, match=r"certificate is not trusted by .*other/tls/ca\.pem"):
        pipeline.run_sync(env, RunRequest(ACADEMY))
    assert _people_of(tls_slapd, uai) == 0
    assert pipeline.last_runs(env)[0]["status"] == "failed"


def test_certificate_not_naming_the_host_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "slapd"
    ca = ensure_tls_material(folder, names=("ent.example.invalid",))
    server = start_slapd(folder, tls=True)  # keeps the (valid) material already there
    try:
        assert server.ca_file == ca and server.ldaps_url is not None
        for url in (server.url, server.ldaps_url):
            target = LdapTarget(url, server.bind_dn, server.password, server.base, str(ca))
            with pytest.raises(DirectoryError, match="does not name the host"):
                connect(target)
    finally:
        stop_slapd(folder)


def test_plain_ldap_without_ca_still_works_and_bad_password_is_not_retried(
        tls_slapd: LdapServer) -> None:
    conn = connect(LdapTarget(tls_slapd.url, tls_slapd.bind_dn, tls_slapd.password,
                              tls_slapd.base))
    assert not conn.tls_started
    conn.unbind()
    with pytest.raises(DirectoryError, match="refused: invalidCredentials"):
        connect(LdapTarget(tls_slapd.url, tls_slapd.bind_dn, "wrong", tls_slapd.base,
                           str(tls_slapd.ca_file)))
    with pytest.raises(DirectoryError, match="does not exist"):
        connect(LdapTarget(tls_slapd.url, tls_slapd.bind_dn, tls_slapd.password,
                           tls_slapd.base, "/nonexistent/ca.pem"))


def test_cli_ldap_up_tls_prints_the_ca(tmp_path: Path) -> None:
    folder = tmp_path / "cli-slapd"
    cmd = [sys.executable, "-m", "etl.cli", "ldap"]
    r = subprocess.run([*cmd, "up", "--dir", str(folder), "--tls"], capture_output=True,
                       text=True, timeout=60, env=os.environ.copy())
    try:
        assert r.returncode == 0, r.stderr
        exports = dict(line[len("export "):].split("=", 1) for line in r.stdout.splitlines()
                       if line.startswith("export "))
        assert exports["ENTSYNC_LDAP_CA_FILE"].strip("'") == str(folder.resolve() / "tls/ca.pem")
        assert "cn=entsync,ou=services" in exports["ENTSYNC_LDAP_BIND_DN"]
        assert "ldaps://127.0.0.1:" in r.stdout
        root_pw = (folder / "admin.secret").read_text()
        assert root_pw not in r.stdout + r.stderr
    finally:
        down = subprocess.run([*cmd, "down", "--dir", str(folder)], capture_output=True,
                              text=True, timeout=60)
    assert down.stdout.strip() == "stopped"
