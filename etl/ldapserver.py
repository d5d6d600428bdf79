"""Start, find and stop a throwaway OpenLDAP slapd that holds an ENT directory.

Tests, development and benchmarks need a real directory server with the project's schema
(`schemas/entsync.schema`), indexes, syncprov overlay and ACLs (`schemas/slapd.conf.in`),
without systemd or the Debian configuration. Everything lives in one folder:

    <dir>/slapd.conf      rendered from the template on every start
    <dir>/data/           the mdb database (survives restarts)
    <dir>/run/            pid file, args file, ldapi socket, slapd.stderr (slapd's errors)
    <dir>/admin.secret    the rootdn password (mode 0600, no trailing newline: `ldapsearch -y`)
    <dir>/port, <dir>/base

Starting is idempotent: a slapd already running from the folder is reused, and the password,
port and data of a previous start are kept. The password is never logged.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTSYNC_SCHEMA = REPO_ROOT / "schemas" / "entsync.schema"
SLAPD_CONF_TEMPLATE = REPO_ROOT / "schemas" / "slapd.conf.in"
LDAP_SCHEMA_DIR = Path("/etc/ldap/schema")
LDAP_MODULE_DIR = Path("/usr/lib/ldap")

DEFAULT_BASE = "dc=ent,dc=grandest,dc=fr"
MAXSIZE_BYTES = 8 * 1024**3
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
DEBIAN_PACKAGES = "slapd ldap-utils"
# Places slapd/slaptest live on Debian even when /usr/sbin is not on PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_TOKEN = re.compile(r"@([A-Z][A-Z_]*)@")
# slapd processes this Python process started, so that stopping them also reaps them.
_children: dict[int, subprocess.Popen[bytes]] = {}
# sun_path is 108 bytes on Linux; keep a margin.
_MAX_SOCKET_PATH = 100


class SlapdError(RuntimeError):
    """slapd is missing, its configuration is rejected, or it does not start or answer."""


@dataclass(frozen=True)
class LdapServer:
    """Where a running throwaway slapd answers and how to bind to it as its admin."""

    dir: Path
    port: int
    url: str
    ldapi_url: str
    base: str
    bind_dn: str
    password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """The ENTSYNC_LDAP_* variables the sync reads its directory settings from."""
        return {
            "ENTSYNC_LDAP_URL": self.url,
            "ENTSYNC_LDAP_BIND_DN": self.bind_dn,
            "ENTSYNC_LDAP_PASSWORD": self.password,
            "ENTSYNC_LDAP_BASE": self.base,
        }

    @property
    def password_file(self) -> Path:
        """File holding just the password, for `ldapsearch -y` (never put it on a command line)."""
        return self.dir / "admin.secret"


# --------------------------------------------------------------------------------------------
# Installation and files
# --------------------------------------------------------------------------------------------


def find_program(name: str) -> str | None:
    """Path of an OpenLDAP program, looking in the sbin folders too."""
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    return shutil.which(name, path=search_path)


def ensure_slapd_installed() -> None:
    """Fail with the Debian packages to install when slapd or slaptest is missing."""
    missing = [name for name in ("slapd", "slaptest") if find_program(name) is None]
    if missing:
        raise SlapdError(
            f"OpenLDAP server programs not found: {', '.join(missing)} (looked in PATH and "
            f"{', '.join(_SBIN_DIRS)}). Install the Debian packages: "
            f"apt-get install {DEBIAN_PACKAGES}"
        )
    for path in (ENTSYNC_SCHEMA, SLAPD_CONF_TEMPLATE, LDAP_SCHEMA_DIR / "core.schema"):
        if not path.is_file():
            raise SlapdError(f"missing {path}: needed to configure slapd")


def ssha_hash(password: str) -> str:
    """`{SSHA}` hash of a password, as `slappasswd -s` makes it, for `rootpw`."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 (SSHA is SHA-1)
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _conf_path(dir: Path) -> Path:
    return dir / "slapd.conf"


def _data_dir(dir: Path) -> Path:
    return dir / "data"


def _run_dir(dir: Path) -> Path:
    return dir / "run"


def _pid_file(dir: Path) -> Path:
    return _run_dir(dir) / "slapd.pid"


def _secret_file(dir: Path) -> Path:
    return dir / "admin.secret"


def _port_file(dir: Path) -> Path:
    return dir / "port"


def _base_file(dir: Path) -> Path:
    return dir / "base"


def _ldapi_path(dir: Path) -> Path:
    """The ldapi socket: in the run folder unless that path is too long for a socket."""
    path = _run_dir(dir) / "ldapi"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"entsync-slapd-{digest}.ldapi"


def _ldapi_url(dir: Path) -> str:
    return "ldapi://" + quote(str(_ldapi_path(dir)), safe="")


def _ldap_url(port: int) -> str:
    return f"ldap://127.0.0.1:{port}"


def _root_dn(base: str) -> str:
    return f"cn=admin,{base}"


def _read_or_create_password(dir: Path) -> str:
    path = _secret_file(dir)
    if path.exists():
        os.chmod(path, 0o600)
        password = path.read_text(encoding="utf-8").strip()
        if password:
            return password
        path.unlink()
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password)  # no newline: `ldapsearch -y` sends the whole file
    return password


def _port_is_free(port: int) -> bool:
    """Whether slapd could listen on the port (SO_REUSEADDR as slapd: TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _choose_port(dir: Path, port: int | None) -> int:
    """The requested port, else the one of the previous start if still free, else a free one."""
    if port is None:
        try:
            stored = int(_port_file(dir).read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            stored = 0
        port = stored if stored > 0 and _port_is_free(stored) else _free_port()
    _port_file(dir).write_text(f"{port}\n", encoding="utf-8")
    return port


def render_slapd_conf(dir: Path, base: str, password: str) -> str:
    """slapd.conf for the folder: the template with paths, suffix and password hash filled in."""
    values = {
        "LDAP_SCHEMA_DIR": str(LDAP_SCHEMA_DIR),
        "ENTSYNC_SCHEMA": str(ENTSYNC_SCHEMA),
        "MODULE_DIR": str(LDAP_MODULE_DIR),
        "RUN_DIR": str(_run_dir(dir)),
        "DATA_DIR": str(_data_dir(dir)),
        "MAXSIZE": str(MAXSIZE_BYTES),
        "BASE": base,
        "ROOT_DN": _root_dn(base),
        "ROOT_PW_HASH": ssha_hash(password),
    }
    for name, value in values.items():
        if '"' in value or "\n" in value:
            raise SlapdError(f"{name} cannot hold a double quote or a newline: {value!r}")
    template = "".join(
        line
        for line in SLAPD_CONF_TEMPLATE.read_text(encoding="utf-8").splitlines(keepends=True)
        if not line.lstrip().startswith("#")
    )
    unknown = {m.group() for m in _TOKEN.finditer(template) if m.group(1) not in values}
    if unknown:
        raise SlapdError(f"unknown tokens {sorted(unknown)} in {SLAPD_CONF_TEMPLATE}")
    # One pass, so that a value holding "@X@" (a path) is never substituted again.
    text = _TOKEN.sub(lambda m: values[m.group(1)], template)
    return text


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _is_live_slapd(pid: int) -> bool:
    """Whether pid is a running (not zombie) slapd: a recycled pid must never be signalled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X"):
        return False
    return bool(cmdline) and os.path.basename(cmdline[0]) == b"slapd"


def _running_pid(dir: Path) -> int | None:
    try:
        pid = int(_pid_file(dir).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _is_live_slapd(pid) else None


def is_running(dir: Path) -> bool:
    """Whether a slapd started from this folder is running."""
    return _running_pid(dir) is not None


def server_info(dir: Path) -> LdapServer | None:
    """Connection details of the slapd folder, running or not; None if it was never set up."""
    try:
        port = int(_port_file(dir).read_text(encoding="utf-8").strip())
        base = _base_file(dir).read_text(encoding="utf-8").strip()
        password = _secret_file(dir).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    if not base or not password:
        return None
    return LdapServer(
        dir=dir,
        port=port,
        url=_ldap_url(port),
        ldapi_url=_ldapi_url(dir),
        base=base,
        bind_dn=_root_dn(base),
        password=password,
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _diagnostics(dir: Path) -> str:
    parts = []
    for path in (_run_dir(dir) / "slapd.stderr",):
        tail = _tail(path)
        if tail:
            parts.append(f"--- {path} (tail) ---\n{tail}")
    return "\n".join(parts) or "(slapd wrote nothing)"


def _clean_stale_files(dir: Path) -> None:
    """Remove the pid file and socket a killed slapd left behind."""
    for path in (_pid_file(dir), _run_dir(dir) / "slapd.args", _ldapi_path(dir)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _locked(dir: Path) -> Iterator[None]:
    """Serialize start/stop on one folder (parallel test workers, concurrent tasks)."""
    with open(dir / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_slaptest(slaptest: str, conf: Path) -> None:
    result = subprocess.run(
        [slaptest, "-u", "-f", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise SlapdError(
            f"slaptest rejected {conf} (rc {result.returncode}):\n"
            f"{(result.stderr + result.stdout).strip()}"
        )


def _answers(url: str, port: int, base: str) -> bool:
    """Whether a slapd serving `base` answers an anonymous bind and a root DSE read."""
    try:  # cheap probe first: ldap3 leaks its socket when the connection is refused
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    server = ldap3.Server(url, get_info=ldap3.NONE, connect_timeout=1)
    conn = ldap3.Connection(server, receive_timeout=2, raise_exceptions=False)
    try:
        if not conn.bind():
            return False
        found = conn.search(
            "", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["namingContexts"]
        )
        if not found or not conn.response:
            return False
        contexts = conn.response[0].get("attributes", {}).get("namingContexts", [])
        return any(str(context).lower() == base.lower() for context in contexts)
    except (LDAPException, OSError):
        return False
    finally:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()


def _wait_until_answering(proc: subprocess.Popen[bytes], dir: Path, port: int, base: str) -> None:
    """Poll until slapd answers; fail fast with its stderr if it exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    url = _ldap_url(port)
    while not _answers(url, port, base):
        rc = proc.poll()
        if rc is not None:
            _children.pop(proc.pid, None)
            raise SlapdError(
                f"slapd from {dir} exited during startup (rc {rc}) on {url}\n" + _diagnostics(dir)
            )
        if time.monotonic() >= deadline:
            raise SlapdError(
                f"slapd from {dir} did not answer on {url} within {START_TIMEOUT_S:.0f} s\n"
                + _diagnostics(dir)
            )
        time.sleep(0.05)
    if proc.poll() is not None:  # what answered is another server on the same port
        _children.pop(proc.pid, None)
        raise SlapdError(f"slapd from {dir} exited during startup on {url}\n" + _diagnostics(dir))


def _ensure_base_entries(info: LdapServer) -> None:
    """Create the suffix entry, ou=people and ou=structures when missing."""
    conn = ldap3.Connection(
        ldap3.Server(info.url, get_info=ldap3.NONE, connect_timeout=5),
        user=info.bind_dn,
        password=info.password,
        receive_timeout=10,
        raise_exceptions=False,
    )
    if not conn.bind():
        raise SlapdError(f"cannot bind to {info.url} as {info.bind_dn}: {conn.result}")
    try:
        attr, value, _sep = parse_dn(info.base)[0]
        rdn_attr = attr.lower()
        base_classes: dict[str, list[str]] = {
            "dc": ["top", "dcObject", "organization"],
            "o": ["top", "organization"],
            "ou": ["top", "organizationalUnit"],
        }
        if rdn_attr not in base_classes:
            raise SlapdError(f"base {info.base!r} must start with dc=, o= or ou=")
        base_attrs: dict[str, str] = {rdn_attr: value}
        if rdn_attr == "dc":
            base_attrs["o"] = value
        entries: list[tuple[str, list[str], dict[str, str]]] = [
            (info.base, base_classes[rdn_attr], base_attrs),
            (f"ou=people,{info.base}", ["top", "organizationalUnit"], {"ou": "people"}),
            (f"ou=structures,{info.base}", ["top", "organizationalUnit"], {"ou": "structures"}),
        ]
        for dn, classes, attrs in entries:
            if conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"]):
                continue
            if not conn.add(dn, classes, attrs):
                raise SlapdError(f"cannot create {dn}: {conn.result}")
            log.info("created %s", dn)
    finally:
        conn.unbind()


def start_slapd(dir: Path, port: int | None = None, base: str = DEFAULT_BASE) -> LdapServer:
    """Start (or find already running) the slapd whose files live in `dir`; see module doc."""
    ensure_slapd_installed()
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    with _locked(dir):
        running = server_info(dir) if is_running(dir) else None
        if running is not None:
            if running.base != base:
                raise SlapdError(f"slapd from {dir} already serves {running.base!r}, not {base!r}")
            if port is not None and port != running.port:
                log.warning("slapd from %s already runs on port %d", dir, running.port)
            return running

        _clean_stale_files(dir)
        for sub in (_data_dir(dir), _run_dir(dir)):
            sub.mkdir(mode=0o700, exist_ok=True)
        try:
            stored_base = _base_file(dir).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            stored_base = ""
        if stored_base and stored_base != base and any(_data_dir(dir).iterdir()):
            raise SlapdError(
                f"the database in {_data_dir(dir)} holds {stored_base!r}, not {base!r}: "
                "use another folder"
            )
        _base_file(dir).write_text(f"{base}\n", encoding="utf-8")
        password = _read_or_create_password(dir)
        port = _choose_port(dir, port)

        conf = _conf_path(dir)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_slapd_conf(dir, base, password))

        slapd, slaptest = find_program("slapd"), find_program("slaptest")
        assert slapd is not None and slaptest is not None  # ensure_slapd_installed checked
        _run_slaptest(slaptest, conf)

        url, ldapi_url = _ldap_url(port), _ldapi_url(dir)
        if not _port_is_free(port):
            raise SlapdError(f"cannot start slapd from {dir}: port {port} is already in use")
        started = time.monotonic()
        with open(_run_dir(dir) / "slapd.stderr", "wb") as err:
            # `-d none` keeps slapd in the foreground printing only errors, so startup and
            # runtime failures land in run/slapd.stderr (a detached slapd has no stderr, and
            # no syslog runs here). Own session: a Ctrl-C on the caller does not reach it.
            proc = subprocess.Popen(
                [slapd, "-d", "none", "-f", str(conf), "-h", f"{url} {ldapi_url}"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        _children[proc.pid] = proc
        info = LdapServer(
            dir=dir,
            port=port,
            url=url,
            ldapi_url=ldapi_url,
            base=base,
            bind_dn=_root_dn(base),
            password=password,
        )
        try:
            _wait_until_answering(proc, dir, port, base)
            _ensure_base_entries(info)
        except BaseException:
            # Never leave a half-started slapd behind: it is ours, stop it.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            _children.pop(proc.pid, None)
            _clean_stale_files(dir)
            raise
        log.info(
            "slapd from %s listening on %s (pid %d) after %.2f s",
            dir,
            url,
            proc.pid,
            time.monotonic() - started,
        )
        return info


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_live_slapd(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_slapd(dir: Path) -> bool:
    """Stop the slapd started from `dir` (SIGINT, SIGKILL after 15 s); False if none ran."""
    dir = Path(dir).resolve()
    if not dir.is_dir():
        return False
    with _locked(dir):
        pid = _running_pid(dir)
        if pid is None:
            _clean_stale_files(dir)
            return False
        os.kill(pid, signal.SIGINT)
        if not _wait_gone(pid, STOP_TIMEOUT_S):
            log.warning(
                "slapd pid %d from %s ignored SIGINT for %.0f s: killing it",
                pid,
                dir,
                STOP_TIMEOUT_S,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        child = _children.pop(pid, None)
        if child is not None:
            child.wait()
        _clean_stale_files(dir)
        log.info("stopped slapd pid %d from %s", pid, dir)
        return True
