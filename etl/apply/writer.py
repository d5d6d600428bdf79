"""The applier: writes a plan into the LDAP directory with ldap3.

- several connections, each in its own thread, keep many operations in flight: each
  connection pipelines ``window`` requests (sent without waiting, answers taken as they come,
  matched by message id), the connections' threads share a wave's changes and hand their
  outcomes to the caller's thread in batches (one future per change, as before, cost a thread
  hand-off and ~25 context switches per entry);
- parents before children: the plan is applied kind by kind (ous, schools, people, groups);
- transient errors (server busy or unavailable, a dropped connection) are retried with a
  reconnect and backoff; anything else fails that change and is reported;
- a directory that is down stops the apply: after ``max_connect_failures`` consecutive
  connection failures (a connection lost, a reconnect or bind that gets no answer; one thread
  probes with backoff while the others wait, any answer of the server resets the count) every
  thread stops, the changes not written are counted ``left`` (``on_left``: the rest of the
  plan is read, not written) and ``ApplyResult.stopped`` says why. A change the server
  answered with an error (a constraint violation...) is ``failed``, never a reason to stop;
- where the directory disagrees with the state DB (an add that finds the entry, a modify that
  finds none, a value already there or already gone) the entry is read back and the change is
  recomputed against what is really there, so a rerun after a crash converges; only the
  attributes the sync owns are recomputed (``etl.plan.owned``): the others are not its own
  and survive;
- each applied change is handed to ``on_applied`` (the journal and the state DB), in order of
  completion;
- the write requests are encoded by ``etl.apply.wire`` (plain BER) rather than ldap3's pyasn1
  objects, whose CPU cost bounded the initial load once several writes were in flight; bind,
  TLS, reads and the connection stay ldap3's;
- LDAP transactions (RFC 5805: a batch of ``txn_size`` operations, one durable commit instead
  of one disk flush per entry) are implemented but OFF by default
  (``ENTSYNC_LDAP_TRANSACTIONS=auto|on`` turns them on): Debian 12's slapd 2.5.13 segfaults
  under them, on one connection or several, committed or failed batches alike
  (``python -m bench.txn_stress`` reproduces it). A batch is atomic; one that does not commit
  is replayed change by change through the path above.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.core.results import RESULT_CODES

from etl.apply import wire as ldapwire
from etl.errors import DirectoryUnavailable
from etl.plan.diff import Change, apply_order, diff_attrs, wave_key
from etl.plan.owned import owned_view
from etl.runtime.interrupts import deferred_interrupts

log = logging.getLogger(__name__)

#: a change, whether it was written, and the server's result
Outcome = tuple[Change, bool, dict[str, Any]]

TRANSIENT_RESULTS = {51, 52, 80}  # busy, unavailable, other (e.g. mdb write contention)
RESULT_NO_SUCH_OBJECT = 32
RESULT_ALREADY_EXISTS = 68
RESULT_NO_SUCH_ATTRIBUTE = 16
RESULT_VALUE_EXISTS = 20
#: failed changes described in ApplyResult.errors (the others are counted in ``failed``)
MAX_ERRORS_KEPT = 1000
#: write requests in flight per connection: enough to keep slapd's single writer busy while
#: the answers travel back; more only queues in slapd's threads
WINDOW = 8
#: outcomes handed from a connection's thread to the caller at a time
EMIT_EVERY = 64

#: RFC 5805: Start Transaction / End Transaction extended operations, transaction control
TXN_START = "1.3.6.1.1.21.1"
TXN_END = "1.3.6.1.1.21.3"
TXN_CONTROL = "1.3.6.1.1.21.2"


def _structural(attrs: dict[str, list[str]]) -> str | None:
    """Which of a class or a group an entry is (None: neither)."""
    oc = {v.lower() for v in attrs.get("objectClass", [])}
    return "class" if "entclasse" in oc else "group" if "entgroupe" in oc else None


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def txn_end_value(txn_id: bytes, commit: bool = True) -> bytes:
    """BER of txnEndReq ::= SEQUENCE { commit BOOLEAN DEFAULT TRUE, identifier OCTET STRING }."""
    body = (b"" if commit else b"\x01\x01\x00") + b"\x04" + _ber_length(len(txn_id)) + txn_id
    return b"\x30" + _ber_length(len(body)) + body


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
    #: RFC 5805 transactions: "off" (default: Debian 12's slapd 2.5.13 segfaults with them,
    #: see the module doc), "auto" (when the root DSE announces them) or "on"
    #: (``Settings.ldap.transactions``, ENTSYNC_LDAP_TRANSACTIONS)
    transactions: str = "off"
    #: operations per transaction (``Settings.ldap.txn_size``, ENTSYNC_LDAP_TXN_SIZE)
    txn_size: int = 500
    #: consecutive connection failures after which the directory is taken for down and the
    #: apply stops (``Settings.ldap.max_connect_failures``, ENTSYNC_LDAP_MAX_CONNECT_FAILURES)
    max_connect_failures: int = 5


@dataclass
class ApplyResult:
    applied: int = 0
    failed: int = 0
    reconciled: int = 0  # changes recomputed against the directory's real content
    retries: int = 0
    transactions: int = 0  # committed RFC 5805 transactions
    txn_fallbacks: int = 0  # batches replayed change by change after a failed commit
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: changes not written because the directory went down (neither applied nor failed)
    left: int = 0
    #: why the apply stopped before the end (the directory is down), None when it did not
    stopped: str | None = None
    #: connection failures counted towards ``max_connect_failures`` (consecutive runs of them)
    connection_failures: int = 0
    #: the signal (SIGINT, SIGTERM) that stopped the apply (``etl.runtime.interrupts``): the
    #: stage journals what was written, then raises it
    interrupted: int | None = None


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


class DirectoryWriter:
    """Writes changes with a pool of ldap3 connections."""

    def __init__(self, target: LdapTarget, workers: int = 4, max_retries: int = 5,
                 chunk_size: int = 2000, window: int = WINDOW) -> None:
        self.target = target
        self.workers = max(1, workers)
        #: requests in flight on each connection (pipelined, answers taken as they come)
        self.window = max(1, window)
        #: changes read from the stream and in flight at a time (what apply holds)
        self.chunk_size = max(1, chunk_size)
        self.max_retries = max_retries
        self._local = threading.local()
        self._conns: list[ldap3.Connection] = []
        self._lock = threading.Lock()
        self._msg_id = 1 << 30
        self._txn_lock = threading.Lock()
        self._txn: bool | None = None if target.transactions == "auto" else (
            target.transactions in ("on", "yes", "true", "1"))
        #: the circuit breaker (``_lost``): consecutive connection failures before giving up
        self.max_connect_failures = max(1, target.max_connect_failures)
        self._probe_lock = threading.Lock()  # one thread probes a lost directory at a time
        self._failures = 0  # consecutive connection failures, no answer in between
        self._recovered = 0  # reconnects that followed a failure
        self._down: str | None = None  # set once the directory is taken for down
        self.connection_failures = 0

    def supports_transactions(self) -> bool:
        """Whether batches go in RFC 5805 transactions: forced by the target's setting, or
        announced by the server's root DSE (supportedExtension Start and End Transaction)."""
        if self._txn is None:
            found: list[bytes] = []

            def root_dse(c: ldap3.Connection) -> Any:
                st, result, resp, req = c.search("", "(objectClass=*)", search_scope=ldap3.BASE,
                                                 attributes=["supportedExtension"])
                for item in resp or []:
                    if item.get("type") == "searchResEntry":
                        found.extend(item["raw_attributes"].get("supportedExtension", []))
                return st, result, resp, req

            r = self._call(root_dse, ApplyResult())
            names = {x.decode("ascii", "replace") for x in found}
            self._txn = r["result"] == 0 and {TXN_START, TXN_END} <= names
            log.info("LDAP transactions (RFC 5805): %s", "used" if self._txn else
                     "not offered by the server")
        return self._txn

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

    # -- the directory lost: the circuit breaker ---------------------------------------------
    @property
    def down(self) -> str | None:
        """Why the directory was taken for down (the apply stops), None while it answers."""
        return self._down

    def _left(self) -> dict[str, Any]:
        """The outcome of a change not written because the directory is down."""
        return {"result": -1, "description": "directory unavailable", "message": self._down,
                "left": True}

    @staticmethod
    def _backoff(failures: int) -> float:
        """Seconds before the next reconnect after ``failures`` consecutive failures: 0.5, 1,
        2, 4... (8 at most), ~7.5 s in all for the default 5: a restarted slapd is waited
        for, a dead one is not."""
        return float(min(0.5 * 2 ** (failures - 1), 8.0))

    def _lost(self, err: BaseException, seen: int) -> bool:
        """After this thread's connection failed (and was reset): reconnect, one thread at a
        time with backoff, the others waiting here. True once this thread has a connection
        again; False when the directory is taken for down (``max_connect_failures``
        consecutive failures) or already was. ``seen``: ``_recovered`` when the failure
        happened (another thread's reconnect since then: try again at once, uncounted)."""
        with self._probe_lock:
            while True:
                if self._down is not None:
                    return False
                if self._recovered == seen:
                    self._failures += 1
                    self.connection_failures += 1
                    if self._failures >= self.max_connect_failures:
                        self._down = (f"directory {self.target.url} unreachable: "
                                      f"{self._failures} consecutive connection failures "
                                      f"(last: {type(err).__name__}: {err})")
                        log.error("%s: stopping the apply", self._down)
                        return False
                    time.sleep(self._backoff(self._failures))
                seen = self._recovered
                try:
                    self._conn()
                except (LDAPException, OSError) as e:
                    self._reset()
                    err = e
                    continue
                self._failures = 0
                self._recovered += 1
                return True

    # -- one operation, retried when transient ---------------------------------------------
    def _call(self, fn: Callable[[ldap3.Connection], Any], res: ApplyResult) -> dict[str, Any]:
        """``fn`` on the thread's connection: a transient result retried with backoff, a lost
        connection reconnected (``_lost``); the outcome ``_left()`` once the directory is
        down."""
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            if self._down is not None:
                return self._left()
            try:
                _status, result, _resp, _req = fn(self._conn())
            except (LDAPException, OSError) as e:
                seen = self._recovered
                self._reset()
                if attempt == self.max_retries:
                    return {"result": -1, "description": "connection", "message": str(e)}
                res.retries += 1
                if not self._lost(e, seen):
                    return self._left()
                continue  # on the new connection (``_lost`` waited)
            self._failures = 0  # the server answered
            if result["result"] not in TRANSIENT_RESULTS or attempt == self.max_retries:
                return dict(result)
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
        if r.get("left"):
            raise DirectoryUnavailable(r.get("message") or "directory unavailable")
        if r["result"] == RESULT_NO_SUCH_OBJECT:
            return None
        if r["result"] != 0:
            raise LDAPException(f"read of {dn} failed: {r.get('description')}")
        return out

    def apply_batch(self, batch: list[Change], res: ApplyResult) -> list[Outcome]:
        """One transaction for the batch; replayed change by change if it does not commit."""
        with self._txn_lock:  # one transaction at a time (slapd 2.5: see _try_transaction)
            done = self._try_transaction(batch, res)
        if done:
            res.transactions += 1
            return [(ch, True, {"result": 0}) for ch in batch]
        res.txn_fallbacks += 1
        return [(ch, *self.apply_one(ch, res)) for ch in batch]

    def _try_transaction(self, batch: list[Change], res: ApplyResult) -> bool:
        """True when the whole batch committed; False when it must be replayed one by one (a
        change the directory refused, or the connection lost: nothing of it was committed, or
        the replay finds it there and reconciles)."""
        try:
            c = self._conn()
            _st, r, _resp, _req = c.extended(TXN_START)
            if r["result"] != 0:
                if r["result"] in TRANSIENT_RESULTS:
                    return False
                log.warning("LDAP Start Transaction refused (%s): writing one by one",
                            r.get("description"))
                self._txn = False
                return False
            txn_id = r.get("responseValue") or b""
            # the batch in one write, encoded by etl.apply.wire; the server queues each
            # operation and answers at once (see that module for why not ldap3 here)
            ctl = [ldapwire.control(TXN_CONTROL, True, txn_id)]
            requests = [ldapwire.message(self._next_id(), self._request(ch), ctl)
                        for ch in batch]
            # one request in flight at a time, one transaction at a time: slapd 2.5.13's
            # transaction code segfaults when the operations of a transaction arrive at once
            # (slapd runs a connection's operations in parallel threads), and now and then
            # when transactions run on several connections at once (tests/test_apply_txn.py
            # and `python -m bench.txn_stress` reproduce both)
            ok = True
            for req in requests:
                c.socket.sendall(req)
                (answer,) = ldapwire.read_results(c.socket, 1)
                if answer.code != 0:
                    ok = False
                    break
            _st, r, _resp, _req = c.extended(TXN_END, txn_end_value(txn_id, commit=ok),
                                             no_encode=True)
            return ok and r["result"] == 0
        except (LDAPException, OSError):
            self._reset()
            return False

    def _next_id(self) -> int:
        """Message ids of the hand-encoded requests: their own range, far above ldap3's."""
        with self._lock:
            self._msg_id = self._msg_id + 1 if self._msg_id < 2**31 - 2 else 1 << 30
            return self._msg_id

    def _write(self, op: bytes) -> Callable[[ldap3.Connection], Any]:
        """One hand-encoded write request (etl.apply.wire) on the thread's connection, answered
        like ldap3's SAFE_SYNC calls: (ok, result dict, None, None)."""

        def call(c: ldap3.Connection) -> Any:
            c.socket.sendall(ldapwire.message(self._next_id(), op))
            (a,) = ldapwire.read_results(c.socket, 1)
            result = {"result": a.code, "description": RESULT_CODES.get(a.code, str(a.code)),
                      "message": a.message, "dn": a.matched_dn}
            return a.code == 0, result, None, None

        return call

    @staticmethod
    def _request(ch: Change) -> bytes:
        """The change's write request (etl.apply.wire), as a transaction or the sync sends it."""
        if ch.op == "add":
            return ldapwire.add_request(ch.dn, ch.attrs)
        if ch.op == "modify":
            return ldapwire.modify_request(ch.dn, ch.mods)
        if ch.op == "delete":
            return ldapwire.delete_request(ch.dn)
        raise ValueError(ch.op)

    def _stream_worker(self, todo: deque[Change], res: ApplyResult,
                       emit: Callable[[list[Outcome]], None]) -> None:
        """Write changes taken from ``todo`` (shared by the connections' threads) on this
        thread's connection, ``window`` requests in flight, each answer taken as it comes.

        Only a success is final here: a change the server refused or answered with a
        transient code, and every change in flight when the connection failed, is written
        again once the window is empty by ``apply_one`` (retries with backoff, the entry read
        back and the change recomputed when the directory disagrees, the error reported). A
        lost connection is reconnected (``_lost``) and the rest goes on pipelined; once the
        directory is taken for down, what this thread holds is handed back ``left``."""
        again: list[Change] = []
        done: list[Outcome] = []
        inflight: dict[int, Change] = {}
        while self._down is None:
            inflight = {}
            try:
                c = self._conn()
                reader = ldapwire.ResultReader(c.socket)
                while True:
                    out: list[bytes] = []
                    while len(inflight) + len(out) < self.window:
                        try:
                            ch = todo.popleft()
                        except IndexError:
                            break
                        mid = self._next_id()
                        inflight[mid] = ch
                        out.append(ldapwire.message(mid, self._request(ch)))
                    if out:
                        c.socket.sendall(b"".join(out))
                    if not inflight:
                        break
                    for r in reader.read():
                        ch = inflight.pop(r.message_id)
                        if r.code == 0:
                            done.append((ch, True, {"result": 0}))
                        else:
                            again.append(ch)
                    self._failures = 0  # the server answered
                    if len(done) >= EMIT_EVERY:
                        emit(done)
                        done = []
                break  # nothing left to take
            except KeyError:  # an answer to no request of ours: the rest one by one
                self._reset()
                again.extend(inflight.values())
                break
            except (LDAPException, OSError) as e:
                seen = self._recovered
                self._reset()
                again.extend(inflight.values())
                if not self._lost(e, seen):
                    break
        emit(done)
        for ch in again:
            emit([(ch, *self.apply_one(ch, res))])
        while True:  # after a stray answer: one by one; the directory down: each one left
            try:
                ch = todo.popleft()
            except IndexError:
                return
            emit([(ch, *self.apply_one(ch, res))])

    def apply_one(self, ch: Change, res: ApplyResult) -> tuple[bool, dict[str, Any]]:
        if ch.op == "add":
            r = self._call(self._write(ldapwire.add_request(ch.dn, ch.attrs)), res)
            if r["result"] == RESULT_ALREADY_EXISTS:
                return self._reconcile(ch, res)
        elif ch.op == "modify":
            r = self._call(self._write(ldapwire.modify_request(ch.dn, ch.mods)), res)
            if r["result"] in (RESULT_NO_SUCH_OBJECT, RESULT_NO_SUCH_ATTRIBUTE,
                               RESULT_VALUE_EXISTS):
                return self._reconcile(ch, res)
        elif ch.op == "delete":
            r = self._call(self._write(ldapwire.delete_request(ch.dn)), res)
            if r["result"] == RESULT_NO_SUCH_OBJECT:
                return True, {"result": 0}
        else:
            raise ValueError(ch.op)
        return r["result"] == 0, r

    def _reconcile(self, ch: Change, res: ApplyResult) -> tuple[bool, dict[str, Any]]:
        """The directory is not what the state DB says: diff against what is really there."""
        res.reconciled += 1
        target = ch.after or ch.attrs
        try:
            actual = self.read_entry(ch.dn, res)
        except DirectoryUnavailable:
            return False, self._left()
        except LDAPException as e:
            return False, {"result": -1, "description": "read back failed", "message": str(e)}
        if actual is None:
            r = self._call(self._write(ldapwire.add_request(ch.dn, target)), res)
            return r["result"] == 0, r
        if _structural(actual) != _structural(target):
            # a group where a class is wanted (or the reverse): LDAP cannot change an entry's
            # structural class in place, it is replaced (``etl.plan.scope.retype_changes``)
            r = self._call(self._write(ldapwire.delete_request(ch.dn)), res)
            if r["result"] not in (0, RESULT_NO_SUCH_OBJECT):
                return False, r
            r = self._call(self._write(ldapwire.add_request(ch.dn, target)), res)
            return r["result"] == 0, r
        # only what the sync owns (``etl.plan.owned``): a foreign attribute (a
        # ``preferredLanguage`` the ENT set, an auxiliary class) is never written over
        mods = diff_attrs(owned_view(actual, also=target), target)
        if not mods:
            return True, {"result": 0}
        r = self._call(self._write(ldapwire.modify_request(ch.dn, mods)), res)
        return r["result"] == 0, r

    def apply(self, changes: Iterable[Change],
              on_applied: Callable[[Change], None] | None = None,
              on_failed: Callable[[Change, dict[str, Any]], None] | None = None,
              on_left: Callable[[Change], None] | None = None) -> ApplyResult:
        """Apply wave by wave (``etl.plan.diff.wave_key``: parents first for writes, children first
        for deletes); within a wave, ``workers`` in flight, ``chunk_size`` changes at a time.
        Each change ends in exactly one of ``on_applied``, ``on_failed`` (the directory
        refused it) and ``on_left`` (not written: the directory went down, ``stopped``).

        A list is put in apply order first; any other iterable (a plan file read line by
        line) must come in apply order already (``etl.plan.diff.apply_order``, how the plan file
        lists them) and is consumed chunk by chunk, never held whole: a change out of order
        stops the apply (ValueError) before it is written. A wave ends before the next starts.
        """
        res = ApplyResult()
        stream: Iterator[Change] = iter(apply_order(changes) if isinstance(changes, list)
                                        else changes)
        first = next(stream, None)
        if first is None:
            self.close()
            return res

        def left(ch: Change) -> None:
            res.left += 1
            if on_left:
                on_left(ch)
        txn = self.supports_transactions()
        size = max(1, self.target.txn_size)

        def outcomes(fut: Any, todo: list[Change]) -> list[Outcome]:
            try:
                out: list[Outcome] = fut.result()
                return out
            except (LDAPException, OSError) as e:
                return [(ch, False, {"result": -1, "message": str(e)}) for ch in todo]

        def handle(ch: Change, ok: bool, r: dict[str, Any]) -> None:
            if ok:
                res.applied += 1
                if on_applied:
                    on_applied(ch)
                return
            if r.get("left"):
                left(ch)
                return
            res.failed += 1
            if len(res.errors) < MAX_ERRORS_KEPT:
                res.errors.append({"dn": ch.dn, "op": ch.op, "result": r.get("result"),
                                   "description": r.get("description"),
                                   "message": r.get("message")})
            log.error("LDAP %s of %s failed: %s %s", ch.op, ch.dn,
                      r.get("description"), r.get("message"))
            if on_failed:
                on_failed(ch, r)

        def pipelined(pool: ThreadPoolExecutor, level: list[Change]) -> None:
            """The level's changes shared by the connections' threads (``_stream_worker``);
            their outcomes handled here, in this thread, as they come."""
            todo = deque(level)
            outcomes_q: queue.SimpleQueue[list[Outcome] | None] = queue.SimpleQueue()

            def work() -> None:
                try:
                    self._stream_worker(todo, res, outcomes_q.put)
                finally:
                    outcomes_q.put(None)  # this thread is done

            futs = [pool.submit(work) for _ in range(min(self.workers, len(level)))]
            running = len(futs)
            while running:
                batch = outcomes_q.get()
                if stop.requested:  # SIGINT/SIGTERM: nothing more is sent; what is in
                    todo.clear()  # flight is still answered, handled and journaled
                if batch is None:
                    running -= 1
                    continue
                for outcome in batch:
                    handle(*outcome)
            for f in futs:
                f.result()  # a thread's unexpected error stops the apply

        def run(pool: ThreadPoolExecutor, level: list[Change]) -> None:
            if not (txn and len(level) > 1):
                pipelined(pool, level)
                return
            # spread the chunk over the connections, in batches of at most `size`
            n = max(1, min(size, -(-len(level) // self.workers)))
            parts = [level[i:i + n] for i in range(0, len(level), n)]
            futs = {pool.submit(self.apply_batch, part, res): part for part in parts}
            for fut in as_completed(futs):
                for outcome in outcomes(fut, futs.pop(fut)):
                    handle(*outcome)
                if stop.requested:  # batches not started are left; started ones end
                    for f in list(futs):
                        if f.cancel():
                            for ch in futs.pop(f):
                                left(ch)

        with deferred_interrupts() as stop, \
                ThreadPoolExecutor(self.workers, thread_name_prefix="ldap") as pool:
            chunk: list[Change] = [first]
            key = wave_key(first)
            stopped = False
            for ch in stream:
                k = wave_key(ch)
                if k < key:
                    run(pool, chunk)
                    self.close()
                    raise ValueError(f"changes not in apply order: {ch.op} of {ch.dn} after "
                                     f"wave {key}")
                if k != key or len(chunk) >= self.chunk_size:
                    run(pool, chunk)  # the chunk completes before the next one starts
                    chunk, key = [], k
                    if self._down is not None or stop.requested:
                        stopped = True
                        left(ch)
                        break
                chunk.append(ch)
            if not stopped:
                run(pool, chunk)
        if self._down is not None or stop.requested:
            for ch in stream:  # the rest of the plan: read, counted, not written
                left(ch)
            res.stopped = self._down or stop.describe()
            res.interrupted = stop.signum
        res.connection_failures = self.connection_failures
        self.close()
        return res
