"""What the stages hand each other: typed values whose JSON form is what XCom carries.

Each contract is a msgspec Struct; ``to_json()`` gives the JSON value (a dict, key for key
what the stages handed each other as plain dicts before they were typed), ``from_json()``
rebuilds the typed value on the other side (an unknown key is an error, not dropped). A key
a stage sometimes leaves out is ``UNSET`` (left out of the JSON), not ``None`` (``null``).

start -> discover (``Discovery``, ``ReadGroup``) -> read_validate (``SchoolResult``)
      -> reconcile (``Reconciled``) -> apply (``Applied``) -> finish (the run's summary,
      ``RunOutcome`` for the DAG) -> review (``ReviewRequest``)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Self

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "UNSET",
    "Applied",
    "ApprovalPanel",
    "ApprovalRequest",
    "Contract",
    "Discovery",
    "DocRef",
    "GroupSchool",
    "HeldPlan",
    "ReadGroup",
    "Reconciled",
    "RejectedFile",
    "ReviewRequest",
    "RunOutcome",
    "RunRef",
    "RunRequest",
    "RunStatus",
    "SchoolResult",
    "SchoolStatus",
    "UnsetType",
    "dump_all",
]


class RunStatus(StrEnum):
    """A sync run's status (``runs.status``, the summary's ``status``)."""

    RUNNING = "running"
    SUCCESS = "success"
    DRY_RUN = "dry_run"
    FAILED = "failed"
    AWAITING_APPROVAL = "awaiting_approval"
    #: the academy's lock was held by another live run
    REFUSED = "refused"
    #: closed by a takeover or ``entsync unlock`` (its holder died or hung)
    ABANDONED = "abandoned"
    UNDONE = "undone"


class SchoolStatus(StrEnum):
    """A school's status in a run: what read_validate says, then what the summary says."""

    OK = "ok"
    QUARANTINED = "quarantined"
    #: same content as the last applied exports: nothing to validate
    UNCHANGED = "unchanged"
    #: an unexpected error reading it: left untouched, the run fails
    ERROR = "error"
    #: a file changed since discovery: left untouched, read again next run
    FILE_CHANGED = "file_changed"
    AWAITING_APPROVAL = "awaiting_approval"
    #: not read tonight, but its groups lose someone disabled
    COLLATERAL = "collateral"
    #: an export older than the one applied (discovery's ``older_export``)
    HELD = "held"
    #: a held plan decided after the run (``etl.approve.decide.record_decisions``)
    APPROVED = "approved"
    REJECTED = "rejected"
    #: a held plan closed by a newer export of the school (``etl.approve.waiting``)
    SUPERSEDED = "superseded"
    #: every chosen export was applied before
    ALREADY_APPLIED = "already_applied"
    #: some of its changes written, some failed or left
    PARTIAL = "partial"
    FAILED = "failed"


#: the school statuses whose entries a run writes (a held school's wait for review)
WRITTEN_STATUSES = (SchoolStatus.OK, SchoolStatus.QUARANTINED, SchoolStatus.COLLATERAL)


class Contract(msgspec.Struct, forbid_unknown_fields=True):
    """A value handed from one stage to the next, JSON-able for Airflow's XCom."""

    def to_json(self) -> dict[str, Any]:
        """The JSON value (dicts, lists, strings, numbers), ``UNSET`` fields left out."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | Self) -> Self:
        """The typed value of ``to_json()``'s output (a typed value passes as is)."""
        if isinstance(data, cls):
            return data
        return msgspec.convert(data, cls)


def dump_all(values: Iterable[Contract]) -> list[dict[str, Any]]:
    """A list of contracts as one JSON list (a task's XCom)."""
    return [v.to_json() for v in values]


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


class RunRequest(Contract, kw_only=False):
    """One sync of an academy, as ``run_sync`` runs it (the CLI's ``entsync sync``):
    ``RunRequest("ac-reims", dry_run=True)``."""

    academy: str
    dry_run: bool = False
    #: only these UAIs (None: every school with exports tonight)
    schools: list[str] | None = None
    trigger: str = "cli"
    workers: int = 4
    #: the run's operation mode (None: the academy's configuration)
    mode: str | None = None
    #: the run's day when not today (tests, replays): the end of it is "now" for export dates
    today: dt.date | None = None


class RunRef(Contract, kw_only=True):
    """The run a stage works for: what every stage after discover is told."""

    academy: str
    run_id: str
    dry_run: bool = False


# ------------------------------------------------------------------------------------------
# discover
# ------------------------------------------------------------------------------------------


class RejectedFile(Contract, kw_only=True):
    """A file discovery refused (no UAI, a DOCTYPE, rejected by an operator...)."""

    file: str
    uai: str | None
    reason: str | None


class Discovery(Contract, kw_only=True):
    """Tonight's exports chosen: the schools to read and what was refused or held.

    ``schools`` maps a UAI to its documents (``etl.discover.landing.Discovered`` as dicts);
    the DAG's XCom ``run`` leaves it out (``without_schools``): the read groups carry it."""

    run_id: str
    schools: dict[str, list[dict[str, Any]]] | UnsetType = UNSET
    rejected: list[RejectedFile]
    #: UAI -> why its plan waits for approval (an export older than the one applied)
    held: dict[str, str]
    #: schools whose every chosen export was applied before
    already_applied: list[str]
    #: UAI -> the source left aside for it tonight: both its own exports and the AAF came,
    #: the authoritative one was read (``academies.toml`` ``source``)
    ignored_sources: dict[str, str] = msgspec.field(default_factory=dict)
    #: what the academy's AAF feed brought (``etl.discover.aaf.AafNight.summary``)
    aaf: dict[str, Any] | UnsetType = UNSET
    #: UAI -> the run whose plan of the same exports awaits approval: not read tonight
    #: (``etl.approve.waiting``)
    awaiting: dict[str, str] = {}

    def school_docs(self) -> dict[str, list[dict[str, Any]]]:
        return {} if isinstance(self.schools, UnsetType) else self.schools

    def without_schools(self) -> Discovery:
        return msgspec.structs.replace(self, schools=UNSET)


class GroupSchool(Contract, kw_only=True):
    """One school of a read group: its documents, its name when its STS-web export gives it."""

    uai: str
    docs: list[dict[str, Any]]
    name: str | None


class ReadGroup(Contract, kw_only=True):
    """Schools read together (one mapped read_validate task): labelled by the first one."""

    uai: str
    name: str | None
    schools: list[GroupSchool]
    #: more than one school (the task's label says how many)
    more: bool
    #: the group's tag when the night is streamed (``etl.plan.stream``: each group planned and
    #: written by its own task, the absences after the last); empty: planned whole
    stream: str = ""

    def docs(self) -> dict[str, list[dict[str, Any]]]:
        """UAI -> documents, what ``read_validate_schools`` reads."""
        return {x.uai: x.docs for x in self.schools}


# ------------------------------------------------------------------------------------------
# read_validate
# ------------------------------------------------------------------------------------------


class DocRef(Contract, kw_only=True):
    """A document a school's result was read from (what apply marks applied)."""

    path: str
    member: str | None
    sha256: str | None
    content_sha256: str | None
    kind: str | None


class SchoolResult(Contract, kw_only=True):
    """One school read and validated: its staged tables, its reports, its counts."""

    uai: str
    status: SchoolStatus
    #: the error type and text (status ``error``)
    error: str | UnsetType = UNSET
    #: why its file changed since discovery (status ``file_changed``)
    reason: str | UnsetType = UNSET
    #: the staged tables' reference in the staging area (status ``ok``)
    staged: str | None
    school_year: int | None
    records_read: int | UnsetType = UNSET
    counts: dict[str, int]
    rejected: int
    quarantined: list[dict[str, Any]]
    report: str | None
    report_json: str | None
    feedback: str | UnsetType = UNSET
    fingerprint: str | UnsetType | None = UNSET
    #: the earliest leaving date still ahead (ISO): discovery reads the school again then
    reread_on: str | UnsetType | None = UNSET
    #: people whose record was rejected: skipped, not absent
    protected: list[str] | UnsetType = UNSET
    #: a school read from the AAF: the types its state covers, those a Complet brought, the
    #: guards discovery trips (``etl.discover.aaf``)
    aaf: dict[str, Any] | UnsetType = UNSET
    docs: list[DocRef]
    #: the school's name when its STS-web export gives it
    name: str | UnsetType | None = UNSET
    #: the exports read: {"file", "kind", "export_date", "records"} (its French page)
    exports: list[dict[str, Any]] | UnsetType = UNSET


# ------------------------------------------------------------------------------------------
# reconcile
# ------------------------------------------------------------------------------------------


class HeldPlan(Contract, kw_only=True):
    """A school's plan a guard held: it waits for approval, checked by its hash."""

    plan: str
    hash: str
    guards: list[dict[str, Any]]
    counts: dict[str, int]


class Reconciled(Contract, kw_only=True):
    """The academy's plan (a reference in the staging area), its counts and held plans."""

    plan: str
    changes: int
    #: UAI -> changes by category (``etl.plan.reconcile.CATEGORIES``) and ``unchanged``
    per_school: dict[str, dict[str, int]]
    by_kind_op: dict[str, int]
    held: dict[str, HeldPlan]
    mode: str
    absent: int
    #: UAI -> every guard evaluated
    guards: dict[str, list[dict[str, Any]]]
    new_identities: int
    skipped: dict[str, int]
    matches: dict[str, int]
    duplicates: list[dict[str, Any]]


# ------------------------------------------------------------------------------------------
# apply
# ------------------------------------------------------------------------------------------


class Applied(Contract, kw_only=True):
    """What an apply wrote, failed and left (a dry run: only what was planned)."""

    applied: int
    failed: int
    dry_run: bool | UnsetType = UNSET
    planned: int | UnsetType = UNSET
    reconciled: int | UnsetType = UNSET
    retries: int | UnsetType = UNSET
    errors: list[dict[str, Any]] | UnsetType = UNSET
    failed_schools: list[str] | UnsetType = UNSET
    #: {"schools": {uai: {written|failed|left: {category: n}}}, "total": {...}}
    written_counts: dict[str, Any] | UnsetType = UNSET
    #: the directory went down: changes not written, why, connection failures counted
    left: int | UnsetType = UNSET
    stopped: str | UnsetType = UNSET
    connection_failures: int | UnsetType = UNSET


class StreamedGroup(Contract, kw_only=True):
    """One group of a streamed night, planned and written (``etl.run.plan_write_group``)."""

    reconciled: Reconciled
    applied: Applied


# ------------------------------------------------------------------------------------------
# finish and review
# ------------------------------------------------------------------------------------------


class RunOutcome(Contract, kw_only=True):
    """The run closed, as the DAG's report task returns it (its publish task's input)."""

    run_id: str
    status: RunStatus
    changes: int
    applied: int
    report_dir: str
    #: the schools whose entries this run wrote (held ones wait for review)
    written: list[str]


class ReviewRequest(Contract, kw_only=True):
    """What a guard held tonight, as the approver sees it."""

    run_id: str
    #: the held schools' UAIs, comma-separated (the approval's subject)
    uais: str
    #: markdown: per school its counts, the guards that tripped, its plan and hash
    body: str


class ApprovalRequest(Contract, kw_only=True):
    """One held school's plan to decide (the conf of an ``ent_approval__*`` DAG run): the
    night's sync run, the school, the hash of the plan shown."""

    run_id: str
    uai: str
    plan_hash: str

    @property
    def dag_run_id(self) -> str:
        """The approval DAG run's id: one per held plan (triggering it twice is a no-op)."""
        return f"approval__{self.run_id}__{self.uai}"


class ApprovalPanel(Contract, kw_only=True):
    """What the approver reads in *Required actions* (``etl.approve.panel``)."""

    subject: str
    #: markdown: counts per action and profile, guards with value and limit, sample DNs, the
    #: report link, the plan's hash, the default and its deadline
    body: str
    #: when no answer counts as Reject (ISO 8601, UTC)
    deadline: str


def results_of(values: Sequence[Mapping[str, Any] | SchoolResult | None]) -> list[SchoolResult]:
    """School results from their JSON (or typed) form, the empty ones left out."""
    return [SchoolResult.from_json(v) for v in values if v]
