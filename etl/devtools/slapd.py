"""Start, find and stop a throwaway OpenLDAP slapd that holds an ENT directory.

Tests, development and benchmarks need a real directory server with the project's schema
(`schemas/entsync.schema`), indexes, syncprov overlay and ACLs (`schemas/slapd.conf.in`),
without systemd or the Debian configuration. Everything lives in one folder:

    <dir>/slapd.conf      rendered from the template on every start
    <dir>/data/           the mdb database (survives restarts)
    <dir>/run/            pid file, args file, ldapi socket, slapd.stderr (slapd's errors)
    <dir>/admin.secret    the rootdn password (mode 0600, no trailing newline: `ldapsearch -y`)
    <dir>/entsync.secret  the sync's service account `cn=entsync,ou=services,<base>` (0600)
    <dir>/reader.secret   the consumers' read-only account `cn=reader,ou=services,<base>` (0600)
    <dir>/tls/            with `tls=True`: a throwaway CA (ca.pem) and the server's certificate
                          and key (server.pem, server.key 0600), SAN 127.0.0.1 and localhost
    <dir>/port, <dir>/base, <dir>/ldaps_port (with TLS)

Least privilege: the sync binds as the service account, whose ACLs allow writing only under
`ou=people` and `ou=structures` (schools, their classes and groups); consumers bind as the
reader, which can read entries but never a password hash. `LdapServer.env()` exports the
service account; the rootdn stays available as `root_dn`/`root_password` for admin tasks.

With TLS, slapd answers StartTLS on ldap:// and TLS on ldaps://; `env()` then exports
ENTSYNC_LDAP_CA_FILE so that the sync verifies the server certificate.

Starting is idempotent: a slapd already running from the folder is reused, and the passwords,
port, certificates and data of a previous start are kept. Passwords are never logged.
"""

from __future__ import annotations

import base64
import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn, parse_dn

from etl.errors import SlapdError
from etl.resources import schemas_dir
from etl.runtime.fslock import exclusive

log = logging.getLogger(__name__)

ENTSYNC_SCHEMA = schemas_dir() / "entsync.schema"
SLAPD_CONF_TEMPLATE = schemas_dir() / "slapd.conf.in"
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


#: the accounts a throwaway directory has, by name: (RDN value under ou=services, secret file)
SERVICE_ACCOUNTS = {"service": ("entsync", "entsync.secret"), "reader": ("reader", "reader.secret")}


@dataclass(frozen=True)
class LdapServer:
    """Where a running throwaway slapd answers and the accounts to bind with.

    ``bind_dn``/``password`` are the sync's service account (what ``env()`` exports);
    ``root_dn``/``root_password`` the rootdn (admin tasks and tests only); ``reader_dn``/
    ``reader_password`` the read-only consumer account. ``ca_file`` and ``ldaps_url`` are set
    when the server was started with TLS.
    """

    dir: Path
    port: int
    url: str
    ldapi_url: str
    base: str
    bind_dn: str
    password: str = field(repr=False)
    root_dn: str = ""
    root_password: str = field(default="", repr=False)
    reader_dn: str = ""
    reader_password: str = field(default="", repr=False)
    ca_file: Path | None = None
    ldaps_url: str | None = None

    def env(self, account: str = "service") -> dict[str, str]:
        """The ENTSYNC_LDAP_* variables the sync reads its directory settings from.

        ``account`` is ``service`` (default: what the sync must use), ``reader`` or ``root``.
        """
        creds = {
            "service": (self.bind_dn, self.password),
            "reader": (self.reader_dn, self.reader_password),
            "root": (self.root_dn, self.root_password),
        }
        if account not in creds:
            raise ValueError(f"unknown account {account!r}: service, reader or root")
        dn, password = creds[account]
        out = {
            "ENTSYNC_LDAP_URL": self.url,
            "ENTSYNC_LDAP_BIND_DN": dn,
            "ENTSYNC_LDAP_PASSWORD": password,
            "ENTSYNC_LDAP_BASE": self.base,
        }
        if self.ca_file is not None:
            out["ENTSYNC_LDAP_CA_FILE"] = str(self.ca_file)
        return out

    @property
    def password_file(self) -> Path:
        """File holding just the service account's password (`ldapsearch -y`)."""
        return self.dir / SERVICE_ACCOUNTS["service"][1]

    @property
    def root_password_file(self) -> Path:
        """File holding just the rootdn password (never put it on a command line)."""
        return self.dir / "admin.secret"

    @property
    def reader_password_file(self) -> Path:
        return self.dir / SERVICE_ACCOUNTS["reader"][1]


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


def _account_dn(account: str, base: str) -> str:
    return f"cn={escape_rdn(SERVICE_ACCOUNTS[account][0])},ou=services,{base}"


def _tls_dir(dir: Path) -> Path:
    return dir / "tls"


def _ldaps_port_file(dir: Path) -> Path:
    return dir / "ldaps_port"


def _ldaps_url(port: int) -> str:
    return f"ldaps://127.0.0.1:{port}"


def _read_or_create_password(dir: Path, path: Path | None = None) -> str:
    """The password kept in `path` (default admin.secret), created (0600) on first use."""
    path = path or _secret_file(dir)
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


def render_slapd_conf(dir: Path, base: str, password: str, tls: bool = False) -> str:
    """slapd.conf for the folder: the template with paths, suffix and password hash filled in.

    Template lines starting with ``@IF_TLS@`` are kept (without the marker) only with ``tls``.
    """
    tls_dir = _tls_dir(dir)
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
        "SERVICE_DN": _account_dn("service", base),
        "READER_DN": _account_dn("reader", base),
        "TLS_CA_FILE": str(tls_dir / "ca.pem"),
        "TLS_CERT_FILE": str(tls_dir / "server.pem"),
        "TLS_KEY_FILE": str(tls_dir / "server.key"),
    }
    for name, value in values.items():
        if '"' in value or "\n" in value:
            raise SlapdError(f"{name} cannot hold a double quote or a newline: {value!r}")
    lines = []
    for line in SLAPD_CONF_TEMPLATE.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            continue
        if line.startswith("@IF_TLS@"):
            if not tls:
                continue
            line = line[len("@IF_TLS@") :]
        lines.append(line)
    template = "".join(lines)
    unknown = {m.group() for m in _TOKEN.finditer(template) if m.group(1) not in values}
    if unknown:
        raise SlapdError(f"unknown tokens {sorted(unknown)} in {SLAPD_CONF_TEMPLATE}")
    # One pass, so that a value holding "@X@" (a path) is never substituted again.
    text = _TOKEN.sub(lambda m: values[m.group(1)], template)
    return text


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (keys), replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _san(name: str) -> Any:
    """A subject alternative name: an IP address when it parses as one, else a DNS name."""
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _tls_material_ok(tls_dir: Path) -> bool:
    """Whether the CA and server certificate exist and stay valid for at least a day."""
    import datetime as dt

    from cryptography import x509

    try:
        for name in ("ca.pem", "server.pem"):
            cert = x509.load_pem_x509_certificate((tls_dir / name).read_bytes())
            if cert.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
                return False
        return (tls_dir / "server.key").is_file()
    except (OSError, ValueError):
        return False


TLS_NAMES = ("localhost", "127.0.0.1")


def ensure_tls_material(dir: Path, names: tuple[str, ...] = TLS_NAMES) -> Path:
    """A throwaway CA and a server certificate for ``names`` (default 127.0.0.1 and localhost,
    as subject alternative names) in ``<dir>/tls``.

    Kept across restarts while valid. The CA key is not kept: nothing else is ever signed
    with it. Returns the CA file clients must trust.
    """
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    tls_dir = _tls_dir(dir)
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _tls_material_ok(tls_dir):
        return tls_dir / "ca.pem"
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=365)
    tag = secrets.token_hex(4)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"entsync throwaway CA {tag}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([_san(name) for name in names]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(
        tls_dir / "server.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    (tls_dir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls_dir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    log.info("created a throwaway CA and server certificate in %s", tls_dir)
    return tls_dir / "ca.pem"


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
        service = (dir / SERVICE_ACCOUNTS["service"][1]).read_text(encoding="utf-8").strip()
        reader = (dir / SERVICE_ACCOUNTS["reader"][1]).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    if not base or not password or not service or not reader:
        return None
    ldaps_port: int | None = None
    try:
        ldaps_port = int(_ldaps_port_file(dir).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        ldaps_port = None
    ca = _tls_dir(dir) / "ca.pem"
    tls = ldaps_port is not None and ca.is_file()
    return LdapServer(
        dir=dir,
        port=port,
        url=_ldap_url(port),
        ldapi_url=_ldapi_url(dir),
        base=base,
        bind_dn=_account_dn("service", base),
        password=service,
        root_dn=_root_dn(base),
        root_password=password,
        reader_dn=_account_dn("reader", base),
        reader_password=reader,
        ca_file=ca if tls else None,
        ldaps_url=_ldaps_url(ldaps_port) if tls and ldaps_port else None,
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


def _bind_works(url: str, dn: str, password: str) -> bool:
    conn = ldap3.Connection(
        ldap3.Server(url, get_info=ldap3.NONE, connect_timeout=5),
        user=dn,
        password=password,
        receive_timeout=10,
        raise_exceptions=False,
    )
    try:
        return bool(conn.bind())
    except (LDAPException, OSError):
        return False
    finally:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()


def _ensure_base_entries(info: LdapServer) -> None:
    """Create the suffix entry, ou=people, ou=structures and the service accounts if missing.

    A service account whose password no longer matches its secret file gets it reset.
    """
    conn = ldap3.Connection(
        ldap3.Server(info.url, get_info=ldap3.NONE, connect_timeout=5),
        user=info.root_dn,
        password=info.root_password,
        receive_timeout=10,
        raise_exceptions=False,
    )
    if not conn.bind():
        raise SlapdError(f"cannot bind to {info.url} as {info.root_dn}: {conn.result}")
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
            (f"ou=services,{info.base}", ["top", "organizationalUnit"], {"ou": "services"}),
        ]
        accounts = [
            (info.bind_dn, info.password, "entsync sync: writes ou=people and ou=structures"),
            (info.reader_dn, info.reader_password, "ENT consumers: read-only, no password hashes"),
        ]
        for dn, password, description in accounts:
            cn = parse_dn(dn)[0][1]
            entries.append(
                (
                    dn,
                    ["top", "applicationProcess", "simpleSecurityObject"],
                    {"cn": cn, "description": description, "userPassword": ssha_hash(password)},
                )
            )
        for dn, classes, attrs in entries:
            if conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"]):
                continue
            if not conn.add(dn, classes, attrs):
                raise SlapdError(f"cannot create {dn}: {conn.result}")
            log.info("created %s", dn)
        for dn, password, _description in accounts:
            if not _bind_works(info.url, dn, password):
                changes = {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha_hash(password)])]}
                if not conn.modify(dn, changes):
                    raise SlapdError(f"cannot reset the password of {dn}: {conn.result}")
                log.info("reset the password of %s to its secret file", dn)
    finally:
        conn.unbind()


def start_slapd(
    dir: Path, port: int | None = None, base: str = DEFAULT_BASE, tls: bool = False
) -> LdapServer:
    """Start (or find already running) the slapd whose files live in `dir`; see module doc.

    With ``tls`` slapd also gets a throwaway CA and certificate, offers StartTLS on its
    ldap:// port and listens on an ldaps:// port.
    """
    ensure_slapd_installed()
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    with exclusive(dir / ".lock"):
        running = server_info(dir) if is_running(dir) else None
        if running is not None:
            if running.base != base:
                raise SlapdError(f"slapd from {dir} already serves {running.base!r}, not {base!r}")
            if tls and running.ca_file is None:
                raise SlapdError(f"slapd from {dir} already runs without TLS: stop it first")
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
        service_pw = _read_or_create_password(dir, dir / SERVICE_ACCOUNTS["service"][1])
        reader_pw = _read_or_create_password(dir, dir / SERVICE_ACCOUNTS["reader"][1])
        port = _choose_port(dir, port)
        ca_file: Path | None = None
        ldaps_port: int | None = None
        if tls:
            ca_file = ensure_tls_material(dir)
            ldaps_port = _choose_ldaps_port(dir, port)
        else:
            with contextlib.suppress(FileNotFoundError):
                _ldaps_port_file(dir).unlink()

        conf = _conf_path(dir)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_slapd_conf(dir, base, password, tls=tls))

        slapd, slaptest = find_program("slapd"), find_program("slaptest")
        assert slapd is not None and slaptest is not None  # ensure_slapd_installed checked
        _run_slaptest(slaptest, conf)

        url, ldapi_url = _ldap_url(port), _ldapi_url(dir)
        urls = [url]
        if ldaps_port is not None:
            urls.append(_ldaps_url(ldaps_port))
        urls.append(ldapi_url)
        for p in (port, ldaps_port):
            if p is not None and not _port_is_free(p):
                raise SlapdError(f"cannot start slapd from {dir}: port {p} is already in use")
        started = time.monotonic()
        with open(_run_dir(dir) / "slapd.stderr", "wb") as err:
            # `-d none` keeps slapd in the foreground printing only errors, so startup and
            # runtime failures land in run/slapd.stderr (a detached slapd has no stderr, and
            # no syslog runs here). Own process group: a Ctrl-C on the caller does not reach
            # it. Not its own session: Linux's autogroup scheduling gives each session a
            # group, and the CPU of a group competes with the other groups' whatever their
            # tasks' niceness; slapd in a session of its own waited for the CPU behind the
            # sync's reading and planning (both cores busy: 10x fewer commits per second,
            # `python -m bench.sched`), in the caller's it comes first (ENTSYNC_NICE).
            proc = subprocess.Popen(
                [slapd, "-d", "none", "-f", str(conf), "-h", " ".join(urls)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                process_group=0,
            )
        _children[proc.pid] = proc
        info = LdapServer(
            dir=dir,
            port=port,
            url=url,
            ldapi_url=ldapi_url,
            base=base,
            bind_dn=_account_dn("service", base),
            password=service_pw,
            root_dn=_root_dn(base),
            root_password=password,
            reader_dn=_account_dn("reader", base),
            reader_password=reader_pw,
            ca_file=ca_file,
            ldaps_url=_ldaps_url(ldaps_port) if ldaps_port is not None else None,
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
            " ".join(urls[:-1]),
            proc.pid,
            time.monotonic() - started,
        )
        return info


def _choose_ldaps_port(dir: Path, port: int) -> int:
    """The ldaps port of the previous start if still free, else a free one (never `port`)."""
    try:
        stored = int(_ldaps_port_file(dir).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        stored = 0
    chosen = stored if stored > 0 and stored != port and _port_is_free(stored) else 0
    while not chosen or chosen == port:
        chosen = _free_port()
    _ldaps_port_file(dir).write_text(f"{chosen}\n", encoding="utf-8")
    return chosen


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
    with exclusive(dir / ".lock"):
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
