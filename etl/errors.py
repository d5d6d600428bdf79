"""One exception hierarchy for the whole pipeline.

``FileRejected`` quarantines a whole file (its school is left untouched);
``RecordRejected`` skips one record within the error budget. Both carry where the problem
is (file, school, line) and never the personal data of the record itself.
"""

from __future__ import annotations


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


class RecordRejected(EntsyncError):
    """One bad record: reported, skipped, counted against the error budget."""

    def __init__(
        self, file: str, uai: str | None, line: int | None, element: str, rule: str, message: str,
        source_key: str | None = None,
    ) -> None:
        self.file, self.uai, self.line = file, uai, line
        self.element, self.rule, self.message = element, rule, message
        #: the person's source key when the record named one: a rejected record is skipped,
        #: never taken for an absence
        self.source_key = source_key
        super().__init__(f"{file}:{line} (school {uai}) {element}: {rule}: {message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "uai": self.uai,
            "line": self.line,
            "element": self.element,
            "rule": self.rule,
            "message": self.message,
        }


class ErrorBudgetExceeded(EntsyncError):
    """Too many bad records in one file: the file is quarantined instead."""


class DirectoryError(EntsyncError):
    """The LDAP directory refused an operation that is not transient."""


class RunLocked(EntsyncError):
    """Another run holds the academy's lock."""
