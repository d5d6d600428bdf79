"""The writer's circuit breaker: a directory that does not answer stops the apply after
``max_connect_failures`` consecutive connection failures (every change then counted left,
once), while writes the directory refuses (it answers) never stop it."""

from __future__ import annotations

import socket

import pytest

from etl.apply.stage import ldap_target_from_settings
from etl.apply.writer import DirectoryWriter, LdapTarget
from etl.config import Settings
from etl.devtools.slapd import LdapServer
from etl.errors import ConfigError, DirectoryUnavailable, is_transient
from etl.plan.diff import Change
from tests.integration.test_ldap_error_log import _refused
from tests.ldap_fixture import Refuser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _people(n: int) -> list[Change]:
    out = []
    for i in range(n):
        dn = f"uid=t{i:04d},ou=people,dc=ent,dc=grandest,dc=fr"
        attrs = {"objectClass": ["top", "inetOrgPerson"], "uid": [f"t{i:04d}"], "sn": ["x"],
                 "cn": ["x"]}
        out.append(Change("add", dn, "person", "0670001A", "create", attrs=attrs, after=attrs))
    return out


def test_a_directory_that_never_answers_stops_the_apply_after_n_attempts() -> None:
    port = _free_port()
    refuser = Refuser(port)  # accepts and hangs up: each connection is one attempt
    try:
        target = LdapTarget(url=f"ldap://127.0.0.1:{port}", bind_dn="cn=x", password="x",
                            transactions="off", max_connect_failures=2)
        changes = _people(50)
        left: list[str] = []
        writer = DirectoryWriter(target, workers=4, chunk_size=10)
        res = writer.apply(changes, on_applied=lambda ch: pytest.fail("nothing can be written"),
                           on_failed=lambda ch, r: pytest.fail(f"not failed: {r}"),
                           on_left=lambda ch: left.append(ch.dn))
    finally:
        refuser.close()
    assert res.stopped and "2 consecutive connection failures" in res.stopped
    assert res.applied == 0 and res.failed == 0 and res.left == 50
    assert sorted(left) == sorted(c.dn for c in changes)  # each one once, the rest read
    assert res.connection_failures == 2
    # each thread's first connection, then one probe at a time: never a retry per change
    assert refuser.attempts <= 2 + 4 - 1, refuser.attempts
    assert writer.down == res.stopped


@pytest.mark.ldap
def test_refused_writes_never_trip_the_breaker(slapd: LdapServer) -> None:
    target = LdapTarget(url=slapd.url, bind_dn=slapd.bind_dn, password=slapd.password,
                        base=slapd.base, max_connect_failures=1)
    changes = _refused(slapd)
    res = DirectoryWriter(target, workers=2).apply(changes)
    assert res.stopped is None and res.left == 0
    assert res.failed == len(changes) and res.connection_failures == 0


def test_the_limit_is_a_setting() -> None:
    env = {"ENTSYNC_LDAP_URL": "ldap://127.0.0.1:1", "ENTSYNC_LDAP_BIND_DN": "cn=x",
           "ENTSYNC_LDAP_PASSWORD": "x"}
    assert ldap_target_from_settings(Settings.from_env(env)).max_connect_failures == 5
    st = Settings.from_env({**env, "ENTSYNC_LDAP_MAX_CONNECT_FAILURES": "12"})
    assert ldap_target_from_settings(st).max_connect_failures == 12
    for bad in ("0", "x", "-3"):
        with pytest.raises(ConfigError, match="ENTSYNC_LDAP_MAX_CONNECT_FAILURES"):
            Settings.from_env({**env, "ENTSYNC_LDAP_MAX_CONNECT_FAILURES": bad})
    # a stopped apply is worth another attempt later (Airflow retries an approval on it)
    assert is_transient(DirectoryUnavailable("directory down"))
