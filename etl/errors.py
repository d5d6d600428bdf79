"""One exception hierarchy for the whole pipeline.

``FileRejected`` quarantines a whole file (its school is left untouched);
``RecordRejected`` skips one record within the error budget. Both carry where the problem
is (file, school, line) and never the personal data of the record itself.
"""

from __future__ import annotations

import errno
import socket


class EntsyncError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ConfigError(EntsyncError):
    """Missing or inconsistent configuration."""


class FileRejected(EntsyncError):
    """A file that cannot be used at all: it is quarantined whole."""

    def __init__(
        self, file: str, reason: str, *, uai: str | None = None, line: int | None = None
    ) -> None:
        self.file = file
        self.reason = reason
        self.uai = uai
        self.line = line
        where = file + (f":{line}" if line else "") + (f" (school {uai})" if uai else "")
        super().__init__(f"{where}: {reason}")


class FileChanged(EntsyncError):
    """A file is not what discovery recorded (another sha256 or size, gone, or no longer a
    regular file): its school is left untouched this run, the file is not quarantined (the
    next run discovers it again)."""

    def __init__(self, file: str, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: {reason}")


class RecordRejected(EntsyncError):
    """One bad record: reported, skipped, counted against the error budget."""

    def __init__(
        self, file: str, uai: str | None, line: int | None, element: str, rule: str, message: str,
        source_key: str | None = None, cascade: bool = False, field: str | None = None,
    ) -> None:
        self.file, self.uai, self.line = file, uai, line
        self.element, self.rule, self.message = element, rule, message
        #: the person's source key when the record named one: a rejected record is skipped,
        #: never taken for an absence
        self.source_key = source_key
        #: removed only because what it points at was rejected (not a problem of its own)
        self.cascade = cascade
        #: the canonical column at fault when the message does not say (e.g. birth_date)
        self.field = field
        super().__init__(f"{file}:{line} (school {uai}) {element}: {rule}: {message}")

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "file": self.file,
            "uai": self.uai,
            "line": self.line,
            "element": self.element,
            "rule": self.rule,
            "message": self.message,
        }
        if self.cascade:
            out["cascade"] = True
        if self.field:
            out["field"] = self.field
        return out


class RecordWarning:
    """Something a reader or the normalizer noticed and worked around (an unknown element
    skipped, invisible characters removed): reported to the school, never rejected nor
    counted against a budget. Names the record by file, line, element and keys only."""

    def __init__(self, file: str, uai: str | None, line: int | None, element: str, rule: str,
                 message: str) -> None:
        self.file, self.uai, self.line = file, uai, line
        self.element, self.rule, self.message = element, rule, message

    def __repr__(self) -> str:
        return f"RecordWarning({self.file}:{self.line} {self.element}: {self.rule})"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "uai": self.uai, "line": self.line,
                "element": self.element, "rule": self.rule, "message": self.message}


class ErrorBudgetExceeded(EntsyncError):
    """Too many bad records in one file: the file is quarantined instead."""


class DirectoryError(EntsyncError):
    """The LDAP directory refused an operation that is not transient."""


class DirectoryUnavailable(DirectoryError):
    """The directory stopped answering (several consecutive connection failures): the apply
    stopped, what was not written is left for a rerun. Transient: a later attempt converges."""


class RunLocked(EntsyncError):
    """Another run holds the academy's lock."""


class StateNotAdopted(EntsyncError):
    """The state DB knows nothing of an academy whose part of the directory is populated (a
    new or wrong state DB): the sync refuses to write until ``entsync audit --academy A
    --adopt`` rebuilds its rows from the directory. The CLI exits 5."""

    exit_code = 5


class ApprovalRefused(EntsyncError):
    """The held plan cannot be applied (changed, decided, or overtaken by a later run)."""


class UndoRefused(EntsyncError):
    """The run cannot be undone safely."""


class MergeRefused(EntsyncError):
    """The two accounts cannot be merged."""


class SlapdError(EntsyncError, RuntimeError):
    """The project's own slapd (``etl.devtools.slapd``) is missing, its configuration is
    rejected, or it does not start or answer. A RuntimeError too, as it always was; its
    message may carry slapd's diagnostics over several lines, so the CLI keeps reporting it
    as an unexpected error (one line, ``-v`` shows it)."""


class ReportNotFound(EntsyncError, LookupError):
    """No such report (or a path that may not be served: the caller answers 404 either way):
    ``etl.report.page.resolve_report_file``. A LookupError too, as it always was."""


class PlanFormatError(EntsyncError, ValueError):
    """A plan file this version does not read (``etl.plan.diff.read_plan``): an unknown
    format, or the older one-document form. A ValueError too, as it always was."""


class GarExportInvalid(EntsyncError):
    """A GAR export file the GAR-ENT schema refuses (``etl.gar.validate``): the export is not
    delivered. Names the file, the record (uid or DN) and the schema's rule; exit code 4."""

    def __init__(self, file: str, record: str, rule: str, line: int | None = None) -> None:
        self.file, self.record, self.rule, self.line = file, record, rule, line
        where = file + (f":{line}" if line else "")
        super().__init__(f"GAR export invalid, not delivered: {where}: {record}: {rule}")


class GarDeliveryError(EntsyncError):
    """The GAR export could not be delivered to its target (``etl.gar.deliver``): the server
    unreachable, a host key not the one configured, a login refused, a folder not writable.
    ``transient``: whether a later attempt may succeed (a server down or busy)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class StateDBError(EntsyncError):
    """The state DB cannot be opened, migrated or used (``etl.store.db``): unreachable,
    locked, unwritable, or a schema this version does not know. ``transient``: whether a
    later attempt may succeed (a server down or busy, a lock)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# Retry policy: which failures a later attempt can fix
# --------------------------------------------------------------------------------------------

#: errno values of a network or server that is down, busy or slow (worth another attempt);
#: a missing file or a permission (also OSError) never comes right by itself
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, n) for n in (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH", "EHOSTDOWN", "ENETUNREACH",
        "ENETDOWN", "ENETRESET", "ETIMEDOUT", "EPIPE", "EAGAIN", "EBUSY", "ESTALE")
    if hasattr(errno, n))


def _ldap_transient(exc: BaseException) -> bool | None:
    """True/False for an ldap3 exception, None for anything else."""
    try:
        import ldap3.core.exceptions as lx
    except ImportError:  # pragma: no cover - ldap3 is a dependency
        return None
    if not isinstance(exc, lx.LDAPException):
        return None
    if type(exc) is lx.LDAPException:
        # what etl.apply.writer raises for a server that cannot be reached or a bind that failed for
        # a reason other than the credentials (those are DirectoryError)
        return True
    transient = (lx.LDAPCommunicationError, lx.LDAPResponseTimeoutError,
                 lx.LDAPMaximumRetriesError, lx.LDAPServerPoolExhaustedError,
                 lx.LDAPBusyResult, lx.LDAPUnavailableResult, lx.LDAPTimeLimitExceededResult,
                 lx.LDAPAdminLimitExceededResult)
    return isinstance(exc, transient) and not isinstance(exc, lx.LDAPReferralError)


def _sql_transient(exc: BaseException) -> bool | None:
    """True/False for a SQLAlchemy exception, None for anything else."""
    try:
        import sqlalchemy.exc as sx
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    if not isinstance(exc, sx.SQLAlchemyError):
        return None
    # OperationalError: database locked, connection lost, server restarting; TimeoutError: the
    # connection pool is exhausted; a connection the driver invalidated is worth a new one
    if isinstance(exc, (sx.OperationalError, sx.TimeoutError)):
        return True
    return bool(isinstance(exc, sx.DBAPIError) and exc.connection_invalidated)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt later may succeed where this one failed.

    Transient: the directory or the state DB unreachable, busy or slow (ldap3 communication
    errors and busy/unavailable/time-limit results, the plain ``LDAPException`` etl.apply.writer
    raises for a server it cannot reach; SQLAlchemy ``OperationalError``; network
    ``OSError``s such as a refused or reset connection), and ``RunLocked`` (the other run
    ends), ``DirectoryUnavailable`` (the apply stopped on a directory that went down).
    Everything else is not: a rejected file, a configuration error, bad directory
    credentials or an untrusted certificate (``DirectoryError``), a refused approval, a bug.
    An error raised ``from`` a transient one is transient, unless it is an ``EntsyncError``,
    whose class decides (a ``StateDBError`` or ``GarDeliveryError`` is when its ``transient``
    says so).
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, EntsyncError):
            return isinstance(cur, (RunLocked, DirectoryUnavailable)) or (
                isinstance(cur, (StateDBError, GarDeliveryError)) and cur.transient)
        for check in (_ldap_transient, _sql_transient):
            verdict = check(cur)
            if verdict is not None:
                return verdict
        if isinstance(cur, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)):
            return True
        if isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNOS:
            return True
        cur = cur.__cause__
    return False
