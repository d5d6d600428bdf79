"""SFTP delivery against a real SFTP server (paramiko's server side, on a loopback port): the
files land under their names, the md5 last; a server whose host key is not the configured one
gets nothing."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etl.config import GarSettings
from etl.errors import GarDeliveryError
from etl.gar.deliver import deliver

paramiko = pytest.importorskip("paramiko")


class _Server(paramiko.ServerInterface):  # type: ignore[misc]
    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == ("gar", "s3cret")
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


class _Handle(paramiko.SFTPHandle):  # type: ignore[misc]
    def stat(self) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


def _sftp_interface(root: Path, log: list[str]) -> type:
    class Files(paramiko.SFTPServerInterface):  # type: ignore[misc]
        def _path(self, p: str) -> Path:
            return root / p.lstrip("/")

        def canonicalize(self, path: str) -> str:
            return "/" + path.lstrip("/")

        def open(self, path: str, flags: int, attr: Any) -> Any:
            fd = os.open(self._path(path), flags, 0o644)
            h = _Handle(flags)
            h.filename = path
            h.readfile = h.writefile = os.fdopen(fd, "r+b" if flags & os.O_RDWR else "wb"
                                                 if flags & os.O_WRONLY else "rb")
            log.append(f"open {path}")
            return h

        def stat(self, path: str) -> Any:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._path(path)))

        lstat = stat

        def posix_rename(self, old: str, new: str) -> int:
            os.replace(self._path(old), self._path(new))
            log.append(f"rename {old} -> {new}")
            return paramiko.SFTP_OK

    return Files


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[dict[str, Any]]:
    key = paramiko.Ed25519Key.from_private_key_file(str(_keyfile(tmp_path / "host")))
    root, log = tmp_path / "remote", []
    (root / "in").mkdir(parents=True)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _sftp_interface(root, log))
            try:
                t.start_server(server=_Server())
            except (paramiko.SSHException, EOFError):
                continue

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield {"port": port, "root": root, "log": log,
           "host_key": f"{key.get_name()} {key.get_base64()}"}
    stop.set()
    lsock.close()


def _keyfile(path: Path) -> Path:
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def _files(tmp_path: Path) -> list[Path]:
    a, m = tmp_path / "E_2D.tar.gz", tmp_path / "E_2D.md5"
    a.write_bytes(b"\x1f\x8b archive")
    m.write_text("0123456789abcdef0123456789abcdef")
    return [a, m]


def test_sftp_delivery_with_the_host_key_configured(sftp: dict[str, Any],
                                                    tmp_path: Path) -> None:
    gar = GarSettings(sftp_password="s3cret", sftp_host_key=sftp["host_key"])
    files = _files(tmp_path)
    res = deliver(files, f"sftp://gar@127.0.0.1:{sftp['port']}/in", gar)
    assert res["target"] == f"sftp://127.0.0.1:{sftp['port']}/in"
    for f in files:
        assert (sftp["root"] / "in" / f.name).read_bytes() == f.read_bytes()
    assert sftp["log"] == ["open /in/E_2D.tar.gz.part",
                           "rename /in/E_2D.tar.gz.part -> /in/E_2D.tar.gz",
                           "open /in/E_2D.md5.part", "rename /in/E_2D.md5.part -> /in/E_2D.md5"]

    known = tmp_path / "known_hosts"  # the same through a known_hosts file
    known.write_text(f"[127.0.0.1]:{sftp['port']} {sftp['host_key']}\n")
    deliver(files, f"sftp://127.0.0.1:{sftp['port']}/in",
            GarSettings(sftp_user="gar", sftp_password="s3cret", sftp_known_hosts=str(known)))


def test_another_host_key_or_a_bad_login_sends_nothing(sftp: dict[str, Any],
                                                       tmp_path: Path) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(_keyfile(tmp_path / "other")))
    files = _files(tmp_path)
    target = f"sftp://gar@127.0.0.1:{sftp['port']}/in"
    with pytest.raises(GarDeliveryError, match="host key is not the one configured") as err:
        deliver(files, target, GarSettings(
            sftp_password="s3cret", sftp_host_key=f"{other.get_name()} {other.get_base64()}"))
    assert not err.value.transient
    with pytest.raises(GarDeliveryError) as err:
        deliver(files, target, GarSettings(sftp_password="wrong",
                                           sftp_host_key=sftp["host_key"]))
    assert "s3cret" not in str(err.value) and "wrong" not in str(err.value)
    assert sftp["log"] == [] and list((sftp["root"] / "in").iterdir()) == []


def test_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    with pytest.raises(GarDeliveryError) as err:
        deliver(_files(tmp_path), f"sftp://gar@127.0.0.1:{port}/in",
                GarSettings(sftp_password="x", sftp_host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"
                            "AAAAIEGJNP7B9D+1K0U+3aJqY6Wv9r0iVqV6pC7s8wQnUo5v"))
    assert err.value.transient
