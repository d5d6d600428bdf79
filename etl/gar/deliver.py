"""Delivering the GAR export: the ``.tar.gz`` then its ``.md5``, to a folder or by SFTP.

A target is a folder (a path or ``file://``) or ``sftp://host[:port]/dir``. Each file is
written under a ``.part`` name and renamed once complete, the ``.md5`` last, so the GAR never
picks up half a file. SFTP goes through paramiko directly: the server's host key must be the
one configured (a known_hosts file or the key itself), never accepted on first sight
(fsspec's SFTP filesystem would add unknown keys silently). Credentials come from the
environment (``ENTSYNC_GAR_SFTP_*``) or the DAG's Airflow connection, never the repository.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from etl.config import GarSettings
from etl.errors import ConfigError, GarDeliveryError


def parse_target(target: str) -> tuple[str, dict[str, Any]]:
    """``("folder", {"path"})`` or ``("sftp", {"host", "port", "user", "path"})``."""
    t = target.strip()
    u = urlsplit(t)
    if u.scheme in ("", "file"):
        return "folder", {"path": Path(unquote(u.path) if u.scheme else t)}
    if u.scheme == "sftp":
        if not u.hostname:
            raise ConfigError(f"GAR target {target!r}: no host")
        return "sftp", {"host": u.hostname, "port": u.port or 22,
                        "user": unquote(u.username) if u.username else None,
                        "path": unquote(u.path) or "."}
    raise ConfigError(f"GAR target {target!r}: a folder or sftp://host[:port]/dir")


def deliver(files: list[Path], target: str, gar: GarSettings) -> dict[str, Any]:
    """Send ``files`` (in order) to ``target``; what was sent where (no credential)."""
    kind, where = parse_target(target)
    if kind == "folder":
        _to_folder(files, where["path"])
        shown = str(where["path"])
    else:
        _to_sftp(files, where, gar)
        shown = f"sftp://{where['host']}:{where['port']}{where['path']}"
    return {"target": shown, "files": [f.name for f in files]}


def _to_folder(files: list[Path], folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            part = folder / (f.name + ".part")
            shutil.copyfile(f, part)
            os.replace(part, folder / f.name)
    except OSError as e:
        raise GarDeliveryError(f"GAR delivery to {folder} failed: {e.strerror or e}") from e


def _host_keys(client: Any, host: str, port: int, gar: GarSettings) -> None:
    """The host keys the server must present: the known_hosts file, and/or the key given
    (``ENTSYNC_GAR_SFTP_HOST_KEY``: ``<type> <base64>``, as in known_hosts)."""
    import paramiko

    if not (gar.sftp_known_hosts or gar.sftp_host_key):
        raise ConfigError("GAR SFTP delivery needs the server's host key: set "
                          "ENTSYNC_GAR_SFTP_KNOWN_HOSTS (a known_hosts file) or "
                          "ENTSYNC_GAR_SFTP_HOST_KEY (or the connection's extra host_key)")
    if gar.sftp_known_hosts:
        try:
            client.load_host_keys(gar.sftp_known_hosts)
        except OSError as e:
            raise ConfigError(f"ENTSYNC_GAR_SFTP_KNOWN_HOSTS: {e.strerror or e}") from e
    if gar.sftp_host_key:
        try:
            ktype, b64 = gar.sftp_host_key.split()[:2]
            key = paramiko.PKey.from_type_string(ktype, base64.b64decode(b64))
        except (ValueError, paramiko.SSHException) as e:
            raise ConfigError("ENTSYNC_GAR_SFTP_HOST_KEY: not '<type> <base64>'") from e
        name = host if port == 22 else f"[{host}]:{port}"
        client.get_host_keys().add(name, ktype, key)


def _to_sftp(files: list[Path], where: dict[str, Any], gar: GarSettings) -> None:
    import paramiko

    host, port, path = where["host"], where["port"], where["path"]
    user = where["user"] or gar.sftp_user
    if not user:
        raise ConfigError("GAR SFTP delivery: no login (ENTSYNC_GAR_SFTP_USER or the "
                          "connection's login)")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    _host_keys(client, host, port, gar)
    try:
        client.connect(host, port=port, username=user, password=gar.sftp_password,
                       key_filename=gar.sftp_key_file, look_for_keys=False, allow_agent=False,
                       timeout=30, banner_timeout=30, auth_timeout=30)
    except paramiko.BadHostKeyException as e:
        raise GarDeliveryError(f"GAR SFTP {host}:{port}: the host key is not the one "
                               "configured: nothing sent") from e
    except paramiko.SSHException as e:  # an unknown host key, a refused login
        raise GarDeliveryError(f"GAR SFTP {host}:{port}: {e}: nothing sent") from e
    except OSError as e:
        raise GarDeliveryError(f"GAR SFTP {host}:{port} unreachable: {e.strerror or e}",
                               transient=True) from e
    try:
        sftp = client.open_sftp()
        for f in files:
            remote = f"{path.rstrip('/')}/{f.name}"
            sftp.put(str(f), remote + ".part", confirm=True)
            sftp.posix_rename(remote + ".part", remote)
        sftp.close()
    except (OSError, paramiko.SSHException) as e:
        raise GarDeliveryError(f"GAR SFTP upload to {host}:{port}{path} failed: {e}",
                               transient=isinstance(e, (EOFError, ConnectionError))) from e
    finally:
        client.close()


__all__ = ["deliver", "parse_target"]
