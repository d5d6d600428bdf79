"""The applier: writes a plan into the LDAP directory with ldap3.

- several connections, each in its own thread, keep many operations in flight;
- parents before children: the plan is applied kind by kind (ous, schools, people, groups);
- transient errors (server busy or unavailable, a dropped connection) are retried with a
  reconnect and backoff; anything else fails that change and is reported;
- where the directory disagrees with the state DB (an add that finds the entry, a modify that
  finds none, a value already there or already gone) the entry is read back and the change is
  recomputed against what is really there, so a rerun after a crash converges;
- each applied change is handed to ``on_applied`` (the journal and the state DB), in order of
  completion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from etl.plan import KIND_ORDER, Change, diff_attrs

log = logging.getLogger(__name__)

TRANSIENT_RESULTS = {51, 52, 80}  # busy, unavailable, other (e.g. mdb write contention)
RESULT_NO_SUCH_OBJECT = 32
RESULT_ALREADY_EXISTS = 68
RESULT_NO_SUCH_ATTRIBUTE = 16
RESULT_VALUE_EXISTS = 20


@dataclass
class LdapTarget:
    """Where and as whom the sync writes. ``ca_file``: the CA the server's certificate must
    chain to; with it an ldap:// URL is upgraded with StartTLS (``start_tls`` forces StartTLS
    against the system CAs). ldaps:// is always verified (system CAs when no ``ca_file``)."""

    url: str
    bind_dn: str
    password: str = field(repr=False)
    base: str = "dc=ent,dc=grandest,dc=fr"
    ca_file: str | None = None
    start_tls: bool = False


@dataclass
class ApplyResult:
    applied: int = 0
    failed: int = 0
    reconciled: int = 0  # changes recomputed against the directory's real content
    retries: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def connect(target: LdapTarget) -> ldap3.Connection:
    """A bound connection (SAFE_SYNC strategy: one per thread).

    TLS is verified: CERT_REQUIRED against ``ca_file`` (or the system CAs) and the host name
    of the URL checked against the certificate's names (SAN). A certificate, StartTLS or
    credentials problem raises DirectoryError, which the writer does not retry; a server that
    cannot be reached raises LDAPException (transient: the writer reconnects and retries).
    """
    import contextlib
    import os
    import ssl

    from ldap3.core.exceptions import (
        LDAPCertificateError,
        LDAPSocketOpenError,
        LDAPStartTLSError,
    )

    from etl.errors import DirectoryError

    # bind results no retry can fix: confidentiality required, wrong password, not allowed
    fatal_bind_results = {13, 48, 49, 50, 53}
    url = target.url.rstrip("/")
    ldaps = url.lower().startswith("ldaps://")
    start_tls = not ldaps and (bool(target.ca_file) or target.start_tls)
    if target.ca_file and not os.path.isfile(target.ca_file):
        raise DirectoryError(f"LDAP CA file {target.ca_file} does not exist or is not a file")
    tls = None
    if ldaps or start_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=target.ca_file)
    server = ldap3.Server(url, get_info=ldap3.NONE, connect_timeout=10, tls=tls)
    conn = ldap3.Connection(server, user=target.bind_dn, password=target.password,
                            client_strategy=ldap3.SAFE_SYNC, auto_bind=False,
                            receive_timeout=60, raise_exceptions=False)
    how = "LDAPS" if ldaps else "StartTLS"
    ca = target.ca_file or "the system CAs"
    try:
        conn.open()
        if start_tls:
            conn.start_tls()
    except (LDAPStartTLSError, LDAPCertificateError) as e:
        raise DirectoryError(f"{how} to {url} failed: the server certificate is not trusted "
                             f"by {ca} or does not name the host ({e})") from e
    except LDAPSocketOpenError as e:
        text = str(e).lower()
        if tls is not None and any(m in text for m in ("certificate", "ssl", "tls")):
            raise DirectoryError(f"{how} to {url} failed: the server certificate is not "
                                 f"trusted by {ca} or does not name the host ({e})") from e
        raise
    # SAFE_SYNC returns (status, result, response, request): a tuple is always truthy
    bound = conn.bind()
    ok, result = (bound[0], bound[1]) if isinstance(bound, tuple) else (bound, conn.result)
    if not ok:
        result = result or {}
        why = result.get("description") if result else "no answer"
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()
        if result.get("result") in fatal_bind_results:
            raise DirectoryError(f"bind as {target.bind_dn} to {url} refused: {why}")
        raise LDAPException(f"bind as {target.bind_dn} to {url} failed: {why}")
    return conn


def _mods_to_ldap3(mods: dict[str, dict[str, list[str]]]) -> dict[str, list[tuple[Any, list[str]]]]:
    out: dict[str, list[tuple[Any, list[str]]]] = {}
    for attr, m in mods.items():
        ops: list[tuple[Any, list[str]]] = []
        if "replace" in m:
            ops.append((ldap3.MODIFY_REPLACE, m["replace"]))
        if "delete" in m:
            ops.append((ldap3.MODIFY_DELETE, m["delete"]))
        if "add" in m:
            ops.append((ldap3.MODIFY_ADD, m["add"]))
        out[attr] = ops
    return out


class DirectoryWriter:
    """Writes changes with a pool of ldap3 connections."""

    def __init__(self, target: LdapTarget, workers: int = 4, max_retries: int = 5) -> None:
        self.target = target
        self.workers = max(1, workers)
        self.max_retries = max_retries
        self._local = threading.local()
        self._conns: list[ldap3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> ldap3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = connect(self.target)
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    def _reset(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            try:
                c.unbind()
            except (LDAPException, OSError):
                pass
        self._local.conn = None

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                try:
                    c.unbind()
                except (LDAPException, OSError):
                    pass
            self._conns.clear()

    # -- one operation, retried when transient ---------------------------------------------
    def _call(self, fn: Callable[[ldap3.Connection], Any], res: ApplyResult) -> dict[str, Any]:
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            try:
                _status, result, _resp, _req = fn(self._conn())
                if result["result"] not in TRANSIENT_RESULTS or attempt == self.max_retries:
                    return dict(result)
            except (LDAPException, OSError) as e:
                if attempt == self.max_retries:
                    return {"result": -1, "description": "connection", "message": str(e)}
                self._reset()
            res.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        return {"result": -1, "description": "unreachable", "message": ""}

    def read_entry(self, dn: str, res: ApplyResult) -> dict[str, list[str]] | None:
        """The entry as the directory has it (user attributes), or None."""
        out: dict[str, list[str]] = {}

        def search(c: ldap3.Connection) -> Any:
            st, result, resp, req = c.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                                             attributes=["*"])
            out.clear()
            for item in resp or []:
                if item.get("type") == "searchResEntry":
                    for k, v in item["raw_attributes"].items():
                        out[k] = [x.decode("utf-8") for x in v]
            return st, result, resp, req

        r = self._call(search, res)
        if r["result"] == RESULT_NO_SUCH_OBJECT:
            return None
        if r["result"] != 0:
            raise LDAPException(f"read of {dn} failed: {r.get('description')}")
        return out

    def apply_one(self, ch: Change, res: ApplyResult) -> tuple[bool, dict[str, Any]]:
        if ch.op == "add":
            r = self._call(lambda c: c.add(ch.dn, attributes=ch.attrs), res)
            if r["result"] == RESULT_ALREADY_EXISTS:
                return self._reconcile(ch, res)
        elif ch.op == "modify":
            r = self._call(lambda c: c.modify(ch.dn, _mods_to_ldap3(ch.mods)), res)
            if r["result"] in (RESULT_NO_SUCH_OBJECT, RESULT_NO_SUCH_ATTRIBUTE,
                               RESULT_VALUE_EXISTS):
                return self._reconcile(ch, res)
        elif ch.op == "delete":
            r = self._call(lambda c: c.delete(ch.dn), res)
            if r["result"] == RESULT_NO_SUCH_OBJECT:
                return True, {"result": 0}
        else:
            raise ValueError(ch.op)
        return r["result"] == 0, r

    def _reconcile(self, ch: Change, res: ApplyResult) -> tuple[bool, dict[str, Any]]:
        """The directory is not what the state DB says: diff against what is really there."""
        res.reconciled += 1
        target = ch.after or ch.attrs
        actual = self.read_entry(ch.dn, res)
        if actual is None:
            r = self._call(lambda c: c.add(ch.dn, attributes=target), res)
            return r["result"] == 0, r
        mods = diff_attrs(actual, target)
        if not mods:
            return True, {"result": 0}
        r = self._call(lambda c: c.modify(ch.dn, _mods_to_ldap3(mods)), res)
        return r["result"] == 0, r

    def apply(self, changes: Iterable[Change],
              on_applied: Callable[[Change], None] | None = None,
              on_failed: Callable[[Change, dict[str, Any]], None] | None = None) -> ApplyResult:
        """Apply kind by kind (parents first); within a kind, ``workers`` in flight."""
        res = ApplyResult()
        changes = list(changes)
        writes = [c for c in changes if c.op != "delete"]
        deletes = [c for c in changes if c.op == "delete"]
        # parents first for writes; children first for deletes (a school's groups before it)
        waves: list[list[Change]] = []
        ordered = sorted(writes, key=lambda c: (KIND_ORDER.get(c.kind, 9), c.dn.count(",")))
        for _, wave in groupby(ordered, key=lambda c: (KIND_ORDER.get(c.kind, 9),
                                                       c.dn.count(","))):
            waves.append(list(wave))
        ordered = sorted(deletes, key=lambda c: (-KIND_ORDER.get(c.kind, 9), -c.dn.count(",")))
        for _, wave in groupby(ordered, key=lambda c: (-KIND_ORDER.get(c.kind, 9),
                                                       -c.dn.count(","))):
            waves.append(list(wave))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ldap") as pool:
            for level in waves:
                futs = {pool.submit(self.apply_one, ch, res): ch for ch in level}
                for fut in as_completed(futs):
                    ch = futs[fut]
                    try:
                        ok, r = fut.result()
                    except (LDAPException, OSError) as e:
                        ok, r = False, {"result": -1, "message": str(e)}
                    if ok:
                        res.applied += 1
                        if on_applied:
                            on_applied(ch)
                    else:
                        res.failed += 1
                        err = {"dn": ch.dn, "op": ch.op, "result": r.get("result"),
                               "description": r.get("description"),
                               "message": r.get("message")}
                        res.errors.append(err)
                        log.error("LDAP %s of %s failed: %s %s", ch.op, ch.dn,
                                  r.get("description"), r.get("message"))
                        if on_failed:
                            on_failed(ch, r)
        self.close()
        return res
