"""etl.errors.is_transient: which failures the Airflow DAGs retry (the rest fail at once)."""

from __future__ import annotations

import errno
import sqlite3

import ldap3.core.exceptions as lx
import pytest
import sqlalchemy.exc as sx

from etl.errors import (
    ApprovalRefused,
    ConfigError,
    DirectoryError,
    EntsyncError,
    ErrorBudgetExceeded,
    FileRejected,
    MergeRefused,
    PlanFormatError,
    RecordRejected,
    ReportNotFound,
    RunLocked,
    SlapdError,
    StateDBError,
    UndoRefused,
    is_transient,
)


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as e:  # the chained exception is the value
        return e


TRANSIENT = [
    lx.LDAPException("LDAP server at ldap://dir:389 cannot be reached"),
    lx.LDAPSocketOpenError("socket connection error while opening: [Errno 111] refused"),
    lx.LDAPSocketReceiveError("error receiving data"),
    lx.LDAPSessionTerminatedByServerError("session terminated by server"),
    lx.LDAPResponseTimeoutError("no response from server"),
    lx.LDAPMaximumRetriesError("max retries reached"),
    lx.LDAPBusyResult("busy"),
    lx.LDAPUnavailableResult("unavailable"),
    lx.LDAPTimeLimitExceededResult("time limit"),
    sx.OperationalError("UPDATE runs", {}, sqlite3.OperationalError("database is locked")),
    sx.TimeoutError("QueuePool limit reached"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    TimeoutError("timed out"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    RunLocked("academy ac-reims is being written by run ac-reims-1"),
    StateDBError("state DB postgresql://h/db: connection refused", transient=True),
    _chained(RuntimeError("apply gave up"), lx.LDAPSocketOpenError("refused")),
]

PERMANENT = [
    FileRejected("ELEVES.xml", "no UAJ (school UAI) in PARAMETRES"),
    RecordRejected("ELEVES.xml", "0670001A", 12, "ELEVE", "required", "NOM missing"),
    ErrorBudgetExceeded("too many bad records"),
    ConfigError("unknown academy ac-nowhere"),
    DirectoryError("bind as cn=entsync to ldap://dir refused: invalidCredentials"),
    DirectoryError("LDAPS to ldaps://dir failed: the server certificate is not trusted"),
    ApprovalRefused("held plan of 0670001A differs from the one shown"),
    UndoRefused("run r1 was already undone"),
    MergeRefused("the two uids are the same"),
    SlapdError("cannot start slapd from var/slapd: port 3890 is already in use"),
    ReportNotFound("../summary.json"),
    PlanFormatError("unknown plan format 'entsync-plan-lines/99'"),
    EntsyncError("run r1: 3 changes failed"),
    StateDBError("state DB: its schema cannot be migrated"),
    lx.LDAPInvalidCredentialsResult("invalid credentials"),
    lx.LDAPInsufficientAccessRightsResult("insufficient access"),
    lx.LDAPInvalidDnError("bad dn"),
    lx.LDAPCertificateError("certificate verify failed"),
    lx.LDAPStartTLSError("start tls failed"),
    sx.IntegrityError("INSERT logins", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
    sx.ProgrammingError("SELECT", {}, sqlite3.ProgrammingError("no such table")),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),
    PermissionError(errno.EACCES, "Permission denied"),
    KeyError("plan"),
    ValueError("bad value"),
    # a deliberate pipeline error keeps its own verdict even when a network error caused it
    _chained(DirectoryError("StartTLS failed: certificate"), lx.LDAPSocketOpenError("ssl")),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_failures_no_retry_can_fix_are_not(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_a_cause_cycle_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert is_transient(a) is False


def test_every_refusal_is_an_entsync_error_and_keeps_its_builtin_base() -> None:
    """One hierarchy: the CLI's ``except EntsyncError`` sees them all; code that caught the
    built-in base (a RuntimeError from slapd, a LookupError for a report) still does."""
    for cls in (ApprovalRefused, UndoRefused, MergeRefused, SlapdError, ReportNotFound):
        assert issubclass(cls, EntsyncError)
    assert issubclass(SlapdError, RuntimeError)
    assert issubclass(ReportNotFound, LookupError)


@pytest.mark.parametrize(("where", "argv", "exc", "line"), [
    ("etl.ops.undo.undo_run", ["undo", "r1"], UndoRefused("run r1 was already undone"),
     "entsync: run r1 was already undone"),
    ("etl.ops.merge.merge_accounts", ["merge", "u1", "u1"],
     MergeRefused("the two uids are the same"), "entsync: the two uids are the same"),
    # slapd's diagnostics span lines: still reported as before, on one line
    ("etl.devtools.slapd.start_slapd", ["ldap", "up", "--dir", "x"],
     SlapdError("slapd from x exited during startup\nlog: ..."),
     "entsync: unexpected error: SlapdError (entsync -v shows where)"),
])
def test_the_cli_reports_each_refusal_on_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str,
        argv: list[str], exc: Exception, line: str) -> None:
    from etl import cli

    def refuse(*_a: object, **_k: object) -> None:
        raise exc

    monkeypatch.setattr(where, refuse)
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [line]
