"""The state database: what the pipeline remembers between nights.

- ``runs``: one row per run (academy, status, summary);
- ``source_files``: every export seen (sha256, kind, school, export date, status), so a file
  already applied is not applied twice and an older export never overrides a newer one;
- ``identities`` / ``accounts`` / ``logins``: source keys -> stable opaque uid; logins are
  registered forever (never reused, even after deletion);
- ``entries``: what the pipeline last wrote for each DN and its content hash, so a quiet night
  is planned without reading the directory back;
- ``journal``: every change applied (run, DN, operation, before/after);
- ``rejections``: records skipped, with file, school, line and rule;
- ``aaf_records`` / ``aaf_schools``: the AAF feed's records last applied per school and where
  each school's Complet/Delta chain stands (``etl.discover.aaf``).

Schema changes go through Alembic (``etl/state/migrations``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


def table(model: type[Base]) -> Table:
    """A mapped class's table, for Core bulk inserts: ``insert(table(M))`` with a list of
    rows skips the ORM's bulk path (``insert(M)``), much slower for the journal and a first
    load's identities."""
    t = model.__table__
    assert isinstance(t, Table)
    return t


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    academy: Mapped[str] = mapped_column(String(32), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(24), default="running")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    trigger: Mapped[str | None] = mapped_column(String(32))  # cli, airflow
    summary: Mapped[dict[str, object] | None] = mapped_column(JSON)
    #: when its staged files (tables, plans) were deleted (``etl.ops.retention.purge_staging``)
    staging_purged_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    #: who works on it (kind, host, pid, ...) and its last heartbeat: a ``running`` run whose
    #: holder is dead is ``abandoned`` (``etl.store.locks``)
    holder: Mapped[dict[str, object] | None] = mapped_column(JSON)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class SourceFile(Base):
    __tablename__ = "source_files"
    __table_args__ = (
        Index("ix_source_files_school_kind", "academy", "uai", "kind"),
        Index("ix_source_files_sha", "academy", "sha256"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    academy: Mapped[str] = mapped_column(String(32))
    uai: Mapped[str | None] = mapped_column(String(8))
    kind: Mapped[str | None] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64))
    #: sha256 of the bytes past the export's header (etl.discover.xmlsafe.digests): a re-export of
    #: content already applied is recognised without being read
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    member: Mapped[str | None] = mapped_column(Text)
    school_year: Mapped[int | None] = mapped_column(Integer)
    export_date: Mapped[str | None] = mapped_column(String(32))
    # discovered, read, applied, quarantined, rejected, skipped_applied, superseded
    status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Identity(Base):
    """A source key (jointure) -> the uid of the account it belongs to."""

    __tablename__ = "identities"
    jointure: Mapped[str] = mapped_column(String(255), primary_key=True)
    uid: Mapped[str] = mapped_column(ForeignKey("accounts.uid"), index=True)
    rule: Mapped[str] = mapped_column(String(32), default="source_key")
    created_run: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Account(Base):
    __tablename__ = "accounts"
    uid: Mapped[str] = mapped_column(String(32), primary_key=True)
    academy: Mapped[str] = mapped_column(String(32), index=True)
    profile: Mapped[str] = mapped_column(String(8))
    login: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Login(Base):
    """Every login ever handed out; rows are never deleted so a login is never reused."""

    __tablename__ = "logins"
    login: Mapped[str] = mapped_column(String(64), primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), index=True)
    assigned_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Entry(Base):
    """What the pipeline last wrote at a DN (attributes as written, and their hash)."""

    __tablename__ = "entries"
    dn: Mapped[str] = mapped_column(String(512), primary_key=True)
    academy: Mapped[str] = mapped_column(String(32), index=True)
    uai: Mapped[str | None] = mapped_column(String(8), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # person, school, class, group, ou
    uid: Mapped[str | None] = mapped_column(String(32), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    attrs: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class JournalEntry(Base):
    __tablename__ = "journal"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    dn: Mapped[str] = mapped_column(String(512), index=True)
    op: Mapped[str] = mapped_column(String(16))  # add, modify, delete
    before: Mapped[dict[str, list[str]] | None] = mapped_column(JSON)
    after: Mapped[dict[str, list[str]] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="applied")
    applied_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Rejection(Base):
    __tablename__ = "rejections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    file: Mapped[str] = mapped_column(Text)
    uai: Mapped[str | None] = mapped_column(String(8))
    line: Mapped[int | None] = mapped_column(Integer)
    element: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)


class AcademyLock(Base):
    """One writing run per academy (``etl.store.locks``): the run, its holder (kind ``process`` or
    ``dag``, host, pid, process start time, boot id, pid namespace) and its heartbeat."""

    __tablename__ = "academy_locks"
    academy: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    holder: Mapped[dict[str, object] | None] = mapped_column(JSON)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Approval(Base):
    """A school's changes held by a guard, waiting for a human decision."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    academy: Mapped[str] = mapped_column(String(32))
    uai: Mapped[str] = mapped_column(String(8))
    plan_path: Mapped[str] = mapped_column(Text)
    plan_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # approved, rejected
    guards: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    summary: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))


class SchoolState(Base):
    """What the last applied run knew of a school: the reference for the guards."""

    __tablename__ = "school_state"
    academy: Mapped[str] = mapped_column(String(32), primary_key=True)
    uai: Mapped[str] = mapped_column(String(8), primary_key=True)
    pupils: Mapped[int] = mapped_column(Integer, default=0)
    guardians: Mapped[int] = mapped_column(Integer, default=0)
    staff: Mapped[int] = mapped_column(Integer, default=0)
    school_year: Mapped[int | None] = mapped_column(Integer)
    #: content fingerprint of the school's normalized tables last applied: an export with the
    #: same content (a new file, same data) is recognised and skips validation and planning
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: the earliest leaving date still ahead when the school was last read (ISO date): from
    #: then on its exports are read again even when their content did not change
    reread_on: Mapped[str | None] = mapped_column(String(10))
    run_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class MatchKey(Base):
    """Matching keys of an account (hashed: no name in clear), for the cross-school rules:
    staff by (family name, first name, birth date); guardians by (family name, first name)
    plus a strong shared attribute (e-mail, mobile, a pupil already linked)."""

    __tablename__ = "match_keys"
    academy: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # staff, guardian
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), primary_key=True)
    strong: Mapped[list[str]] = mapped_column(JSON, default=list)
    run_id: Mapped[str | None] = mapped_column(String(64))


class RunMetric(Base):
    """A number measured during a run, at a stage boundary: durations, records read and
    rejected, changes by kind and operation. Counts and timings only, never personal data."""

    __tablename__ = "run_metrics"
    __table_args__ = (Index("ix_run_metrics_run_stage", "run_id", "stage"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    academy: Mapped[str] = mapped_column(String(32))
    #: discover, read_validate, reconcile, apply, report
    stage: Mapped[str] = mapped_column(String(24))
    uai: Mapped[str | None] = mapped_column(String(8))  # per-school stages only
    name: Mapped[str] = mapped_column(String(64))  # duration_s, records_read, changes.person.add
    value: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AafStateRecord(Base):
    """The AAF records last applied for a school (``etl.discover.aaf``): each record of the
    academy's feed (a pupil, a guardian, a staff member, the school itself) under every
    school it touched, whole (a Delta's ``modifyRequest`` replaced attributes merged in), with
    the date of the file it last came from. A school's rows change only when its plan was
    applied: a held school keeps the records it was last applied from."""

    __tablename__ = "aaf_records"
    academy: Mapped[str] = mapped_column(String(32), primary_key=True)
    uai: Mapped[str] = mapped_column(String(8), primary_key=True)
    category: Mapped[str] = mapped_column(String(24), primary_key=True)
    identifier: Mapped[str] = mapped_column(String(64), primary_key=True)
    attrs: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    #: the document it last came from: ``YYYY-MM-DD/C`` (a Complet) or ``/D`` (a Delta)
    #: (``etl.discover.aafstate.stamp``), its file part and line
    stamp: Mapped[str] = mapped_column(String(12))
    file: Mapped[str | None] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(64))


class AafSchool(Base):
    """Where a school's AAF state stands, per AAF type (``EtabEducNat``, ``Eleve``,
    ``PersRelEleve``, ``PersEducNat``): the date of the Complet it rests on and of the last
    document (Complet or Delta) applied. A Delta is applied on top of this state, in date
    order; one no later than ``applied_stamp`` was applied already."""

    __tablename__ = "aaf_schools"
    academy: Mapped[str] = mapped_column(String(32), primary_key=True)
    uai: Mapped[str] = mapped_column(String(8), primary_key=True)
    type: Mapped[str] = mapped_column(String(24), primary_key=True)
    complet_date: Mapped[str | None] = mapped_column(String(10))
    #: the stamp of the last document applied (``etl.discover.aafstate.stamp``)
    applied_stamp: Mapped[str | None] = mapped_column(String(12))
    run_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
