"""The apply stage: a plan's changes written to the directory and journaled."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from etl.apply.journal import Journal
from etl.config import Settings
from etl.contracts import Applied
from etl.errors import ConfigError
from etl.plan.files import read_plan_file
from etl.plan.reconcile import _CAT_KEY, CATEGORIES
from etl.report import metrics
from etl.runtime.cpu import full_collections_deferred
from etl.runtime.interrupts import interrupt
from etl.runtime.progress import Progress
from etl.store import locks
from etl.store.db import session_factory
from etl.store.models import (
    AcademyLock,
    SchoolState,
    SourceFile,
    utcnow,
)

log = logging.getLogger(__name__)


def ldap_target_from_settings(settings: Settings) -> Any:
    from etl.apply.writer import LdapTarget

    l = settings.ldap  # noqa: E741
    if not (l.url and l.bind_dn and l.password):
        raise ConfigError("LDAP connection not configured: set ENTSYNC_LDAP_URL, "
                          "ENTSYNC_LDAP_BIND_DN and ENTSYNC_LDAP_PASSWORD (or an Airflow "
                          "connection)")
    return LdapTarget(url=l.url, bind_dn=l.bind_dn, password=l.password, base=l.base,
                      ca_file=l.ca_file, max_connect_failures=l.max_connect_failures,
                      transactions=l.transactions, txn_size=l.txn_size)


def _apply_changes(settings: Settings, academy_code: str, run_id: str, plan: dict[str, Any],
                   changes: Iterable[Any], workers: int = 4) -> dict[str, Any]:
    """Write a plan's changes, journal them, remember what was written, and for each school
    written without failure mark its files applied and keep its counts for the guards.
    ``plan``: the plan file's header; ``changes``: its changes in apply order, consumed as a
    stream (``read_plan_file``). What was written, failed and left (the directory went down:
    ``stopped``) is counted per school and category (``written_counts``)."""
    from etl.apply.writer import DirectoryWriter
    from etl.discover.aaf import commit_school
    from etl.plan.diff import Change

    target = ldap_target_from_settings(settings)
    Session = session_factory(settings.state_url)
    failed_schools: set[str] = set()
    tally = WriteTally()
    with Session() as s:
        journal = Journal(s, academy_code, run_id)
    pending: list[Change] = []
    last_flush = [time.monotonic()]

    def flush() -> None:
        if not pending:
            return
        with Session() as s, s.begin():
            journal.record(s, pending)
            lock = s.get(AcademyLock, academy_code)
            if lock is not None and lock.run_id == run_id:
                lock.heartbeat_at = utcnow()
        pending.clear()
        last_flush[0] = time.monotonic()

    progress = Progress(f"apply {academy_code}", int(plan.get("change_count", 0)) or None,
                        "changes")

    def on_applied(ch: Change) -> None:
        progress.add()
        # small batches, at least every second: a worker killed mid-apply leaves few applied
        # changes unjournaled (the rerun finds them in the directory and journals them)
        tally.add("written", ch)
        pending.append(ch)
        if len(pending) >= 100 or time.monotonic() - last_flush[0] > 1.0:
            flush()

    def on_failed(ch: Change, _r: dict[str, Any]) -> None:
        progress.add()
        tally.add("failed", ch)
        if ch.uai:
            failed_schools.add(ch.uai)

    def on_left(ch: Change) -> None:
        tally.add("left", ch)
        if ch.uai:
            failed_schools.add(ch.uai)  # its files are read again by the rerun

    writer = DirectoryWriter(target, workers=workers)
    try:
        res = writer.apply(changes, on_applied=on_applied, on_failed=on_failed,
                           on_left=on_left)
    finally:
        flush()
        progress.close()
    with Session() as s, s.begin():
        for uai, docs in plan.get("docs", {}).items():
            if uai in failed_schools or res.stopped:
                continue  # read again by the next run (a stopped apply: every school)
            for d in docs:
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai,
                                 kind=d["kind"], sha256=d["sha256"], path=d["path"],
                                 content_sha256=d.get("content_sha256"),
                                 member=d["member"], status="applied",
                                 export_date=_export_date_of(s, run_id, d["sha256"])))
            # a school read from the AAF: its AAF state moves on to what was applied
            if any(d["kind"] == "AAF" for d in docs):
                commit_school(settings, s, academy_code, uai,
                              str(plan.get("run_id") or run_id))
            if uai in plan.get("unchanged", []):
                continue  # same content as last time: its state stays as it was
            c = plan.get("school_counts", {}).get(uai, {})
            s.merge(SchoolState(fingerprint=plan.get("fingerprints", {}).get(uai),
                                reread_on=plan.get("reread_on", {}).get(uai),
                                academy=academy_code, uai=uai, pupils=c.get("ELV", 0),
                                guardians=c.get("TUT", 0),
                                staff=sum(v for k, v in c.items() if k not in ("ELV", "TUT")),
                                school_year=plan.get("school_years", {}).get(uai),
                                run_id=run_id, updated_at=utcnow()))
    log.info("apply %s: %d applied, %d failed, %d reconciled against the directory", run_id,
             res.applied, res.failed, res.reconciled)
    out: dict[str, Any] = {
        "applied": res.applied, "failed": res.failed, "reconciled": res.reconciled,
        "retries": res.retries, "errors": res.errors[:50],
        "failed_schools": sorted(failed_schools), **tally.as_dict()}
    if res.interrupted is not None:  # journaled and recorded above: now the interrupt
        log.error("apply %s %s: %d changes written, %d failed, %d left for a rerun", run_id,
                  res.stopped, res.applied, res.failed, res.left)
        raise interrupt(res.interrupted)
    if res.stopped:
        out.update(left=res.left, stopped=res.stopped,
                   connection_failures=res.connection_failures)
        log.error("apply %s stopped, the directory is down: %d changes written, %d failed, "
                  "%d left for a rerun", run_id, res.applied, res.failed, res.left)
    return out


class WriteTally:
    """What an apply wrote, what the directory refused and what it left (the directory went
    down), per school and per category (``CATEGORIES``): the run's summary counts these, not
    the plan."""

    def __init__(self) -> None:
        self.schools: dict[str, dict[str, dict[str, int]]] = {}
        self.totals: dict[str, dict[str, int]] = {
            k: dict.fromkeys(CATEGORIES, 0) for k in ("written", "failed", "left")}

    def add(self, outcome: str, ch: Any) -> None:
        cat = _CAT_KEY.get(ch.category, "updated")
        self.totals[outcome][cat] += 1
        if not ch.uai:
            return
        school = self.schools.get(ch.uai)
        if school is None:
            school = self.schools[ch.uai] = {
                k: dict.fromkeys(CATEGORIES, 0) for k in ("written", "failed", "left")}
        school[outcome][cat] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"written_counts": {"schools": self.schools, "total": self.totals}}


def apply_plan(settings: Settings, academy_code: str, run_id: str, plan_path: str, *,
               dry_run: bool = False, workers: int = 4) -> Applied:
    """Write the plan of the schools that passed the guards (held schools wait).
    ``plan_path``: the plan's reference in the staging area (``Reconciled.plan``)."""
    metrics.stage_start()
    t0 = time.monotonic()
    header, changes = read_plan_file(settings, plan_path)
    planned = int(header.get("change_count", 0))
    locks.heartbeat(settings, academy_code, run_id)  # this process beats while it writes
    if dry_run:
        out: dict[str, Any] = {"applied": 0, "failed": 0, "dry_run": True,
                               "planned": planned}
    else:
        with full_collections_deferred():  # the changes stream through: freed by refcount
            out = _apply_changes(settings, academy_code, run_id, header, changes, workers)
    metrics.record(settings, run_id, academy_code, "apply", {
        "duration_s": time.monotonic() - t0, "planned": planned,
        **{k: out.get(k, 0) for k in ("applied", "failed", "reconciled", "retries", "left",
                                      "connection_failures")},
        "schools_failed": len(out.get("failed_schools") or []),
    })
    return Applied.from_json(out)


def _export_date_of(s: Any, run_id: str, sha: str) -> str | None:
    found: str | None = s.scalar(select(SourceFile.export_date).where(
        SourceFile.run_id == run_id, SourceFile.sha256 == sha).limit(1))
    return found
