"""Pytest plugin: a real slapd for the whole test session, and admin connections to it.

Register it in tests/conftest.py with `pytest_plugins = ["tests.ldap_fixture"]` (or run pytest
with `-p tests.ldap_fixture`). There is deliberately no skip when slapd is not installed: the
fixture fails with the error naming the Debian packages, so a CI without slapd is red, not
silently green.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import ldap3
import pytest

from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """A slapd with the project's schema, started on a free port in a session temp folder."""
    folder = tmp_path_factory.mktemp("slapd")
    server = start_slapd(folder)
    try:
        yield server
    finally:
        stop_slapd(folder)


def admin_connection(server: LdapServer) -> ldap3.Connection:
    """An ldap3 connection bound as the directory admin, the rootdn (results, not exceptions,
    on errors). The sync itself binds as the service account (``server.env()``)."""
    return ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE, connect_timeout=5),
        user=server.root_dn,
        password=server.root_password,
        auto_bind=True,
        raise_exceptions=False,
        receive_timeout=30,
    )


def bound_connection(server: LdapServer, dn: str | None, password: str | None
                     ) -> ldap3.Connection:
    """An ldap3 connection bound as ``dn`` (anonymous when None); results, not exceptions."""
    return ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE, connect_timeout=5),
        user=dn,
        password=password,
        auto_bind=True,
        raise_exceptions=False,
        receive_timeout=30,
    )


@pytest.fixture
def ldap_conn(slapd: LdapServer) -> Iterator[ldap3.Connection]:
    """A fresh admin connection to the session slapd, unbound after the test."""
    conn = admin_connection(slapd)
    try:
        yield conn
    finally:
        conn.unbind()


class Refuser:
    """Listens where slapd did once it is dead and closes every connection at once, counting
    them: each is one reconnect attempt of the sync (a dead directory, a port still open)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(1000):  # slapd's threads may still be closing its socket
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.01)
        else:
            raise AssertionError(f"port {port} still taken after slapd was killed")
        self.sock.listen(64)
        self.attempts = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            if self._stop:
                conn.close()
                return
            self.attempts += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            socket.create_connection(self.sock.getsockname(), timeout=1).close()
        self._thread.join(timeout=5)
        self.sock.close()
