"""Held plans: listed, approved (applied exactly as shown), rejected, or superseded by a newer
export; each decision recorded in the run's summary and report."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from etl import staging
from etl.apply.stage import _apply_changes
from etl.config import Settings
from etl.discover.tonight import OPERATOR_REJECTED
from etl.errors import ApprovalRefused
from etl.report import metrics
from etl.store import locks
from etl.store.db import session_factory
from etl.store.models import (
    Approval,
    Run,
    SourceFile,
    utcnow,
)

#: an approval's statuses once decided (``approvals.status``; pending before)
DECIDED = ("approved", "rejected", "superseded")

log = logging.getLogger(__name__)


def pending_approvals(settings: Settings, run_id: str | None = None) -> list[dict[str, Any]]:
    with session_factory(settings.state_url)() as s:
        q = select(Approval).where(Approval.status == "pending")
        if run_id:
            q = q.where(Approval.run_id == run_id)
        return [{"run_id": a.run_id, "academy": a.academy, "uai": a.uai, "guards": a.guards,
                 "summary": a.summary, "plan_hash": a.plan_hash, "created_at":
                 a.created_at.isoformat()} for a in s.scalars(q.order_by(Approval.id))]


def decide(settings: Settings, run_id: str, approve: bool, uai: str | None = None,
           by: str = "cli", expected_hash: str | None = None,
           workers: int = 4) -> dict[str, Any]:
    """Approve (apply exactly the held plan that was shown) or reject held schools of a run."""
    Session = session_factory(settings.state_url)
    with Session() as s:
        q = select(Approval).where(Approval.run_id == run_id, Approval.status == "pending")
        if uai:
            q = q.where(Approval.uai == uai.upper())
        pending = list(s.scalars(q))
        run = s.get(Run, run_id)
    if run is None:
        raise ApprovalRefused(f"no run {run_id}")
    if not pending:
        with Session() as s:
            q2 = select(Approval).where(Approval.run_id == run_id)
            if uai:
                q2 = q2.where(Approval.uai == uai.upper())
            seen = "; ".join(f"{a.uai} {a.status} by {a.decided_by}" for a in s.scalars(q2))
        raise ApprovalRefused(f"run {run_id} has no school awaiting approval"
                              + (f" for {uai}" if uai else "") + (f" ({seen})" if seen else ""))
    results: dict[str, Any] = {}
    for a in pending:
        with tempfile.TemporaryFile() as spool:
            # the exact bytes hashed are the bytes applied: copied aside while hashed, then
            # read back from the copy (never the whole plan in memory)
            digest = _spool(settings, a.plan_path, spool)
            if digest != a.plan_hash or (expected_hash and expected_hash != a.plan_hash):
                raise ApprovalRefused(f"held plan of {a.uai} in {run_id} differs from the one "
                                      "shown (hash mismatch): refusing to apply it")
            if approve:
                results[a.uai] = _approve(settings, a, run, spool, workers)
            else:
                results[a.uai] = {"decision": "rejected"}
        at = utcnow()
        with Session() as s, s.begin():
            row = s.get(Approval, a.id)
            assert row is not None
            row.status = "approved" if approve else "rejected"
            row.decided_at, row.decided_by = at, by
            if not approve:
                _drop_rejected_exports(s, a, by)
        log.info("school %s of run %s %s by %s", a.uai, run_id,
                 "approved" if approve else "rejected", by)
        record_decisions(settings, run_id, {a.uai: {
            "decision": "approved" if approve else "rejected", "by": by, "at": _iso(at),
            **{k: v for k, v in results[a.uai].items() if k in ("applied", "failed")},
            "written_counts": (results[a.uai].get("written_counts") or {}).get(
                "schools", {}).get(a.uai)}})
    return {"run_id": run_id, "schools": results}


def _iso(t: dt.datetime) -> str:
    """A state DB time (naive UTC) as ISO 8601 with its offset: what the summaries say."""
    return t.replace(tzinfo=dt.UTC).isoformat(timespec="seconds")


def _close_run_if_decided(s: Any, run_id: str, failed: bool) -> str | None:
    """The run's status once no school of it awaits approval any more (``success``, or
    ``failed`` when an approved plan failed to write); None while some still wait."""
    left = s.scalar(select(func.count()).select_from(Approval).where(
        Approval.run_id == run_id, Approval.status == "pending"))
    r = s.get(Run, run_id)
    if r is None or left:
        return None
    if r.status == "awaiting_approval":
        r.status = "failed" if failed else "success"
    return str(r.status)


def record_decisions(settings: Settings, run_id: str,
                     decisions: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Write decisions into the run's summary (state DB, ``summary.json``, ``report.html``
    re-rendered, their staged copies): ``decisions: {uai: {decision, by, at}}``, the school's
    status (``approved``, ``rejected``, ``superseded``), what an approval wrote (counts and
    ``applied``), and the run's status once nothing of it awaits approval. Returns the new
    summary (None: no such run)."""
    from etl.report.page import write_run_report

    Session = session_factory(settings.state_url)
    with Session() as s, s.begin():
        row = s.get(Run, run_id)
        if row is None:
            return None
        summary: dict[str, Any] = json.loads(json.dumps(row.summary or {}))
        done = dict(summary.get("decisions") or {})
        schools = summary.setdefault("schools", {})
        for uai, d in decisions.items():
            done[uai] = {k: d[k] for k in ("decision", "by", "at") if k in d}
            sch = schools.setdefault(uai, {})
            if sch.get("status") in (None, "awaiting_approval"):
                sch["status"] = d["decision"]
            pending = int(sch.get("pending", 0) or 0)
            # the run's totals by category follow the school's (the report's tables)
            totals_pending = summary.setdefault("pending_by", {})
            for k, n in (sch.get("pending_by") or {}).items():
                totals_pending[k] = max(0, int(totals_pending.get(k, 0) or 0) - int(n or 0))
            sch["pending"], sch["pending_by"] = 0, {k: 0 for k in sch.get("pending_by") or {}}
            summary["pending"] = max(0, int(summary.get("pending", 0) or 0) - pending)
            if d["decision"] == "approved":
                wc = d.get("written_counts") or {}
                totals_written = summary.setdefault("written", {})
                for k, n in (wc.get("written") or {}).items():
                    sch[k] = int(n)
                    totals_written[k] = int(totals_written.get(k, 0) or 0) + int(n)
                sch["written"] = int(d.get("applied", 0) or 0)
                sch["failed"] = int(d.get("failed", 0) or 0)
                summary["applied"] = int(summary.get("applied", 0) or 0) + sch["written"]
                summary["failed"] = int(summary.get("failed", 0) or 0) + sch["failed"]
        summary["decisions"] = dict(sorted(done.items()))
        # an approved plan that failed to write fails the run (whichever decision came last)
        failed = any(schools.get(u, {}).get("failed") for u, d in done.items()
                     if d.get("decision") == "approved")
        status = _close_run_if_decided(s, run_id, failed)
        if status is not None:
            summary["status"] = status
        row.summary = summary
    out = settings.reports_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in summary.items() if k not in ("report_dir", "staged_reports")}
    (out / "summary.json").write_text(json.dumps(public, indent=2, ensure_ascii=False), "utf-8")
    write_run_report(public, out / "report.html")
    for name in ("summary.json", "report.html"):
        staging.copy_in(settings, out / name, f"{run_id}/reports/{name}")
    _refresh_pages(settings, run_id, {**summary, "run_id": run_id})
    return summary


def _refresh_pages(settings: Settings, run_id: str, summary: dict[str, Any]) -> None:
    """The schools' French pages and the academy's history say the decision too. A page that
    cannot be written is logged, never a failed decision (the decision is recorded)."""
    from etl.report.history import write_history
    from etl.report.schools import refresh_school_pages

    try:
        refresh_school_pages(settings, summary)
        academy = summary.get("academy")
        if academy:
            write_history(settings, str(academy), run_id)
    except (OSError, ValueError, KeyError) as e:
        log.error("pages of run %s not refreshed after the decision: %s", run_id,
                  type(e).__name__)


def supersede(settings: Settings, academy: str, uai: str, by_run: str) -> list[str]:
    """Close the school's pending approvals (of runs before ``by_run``) as ``superseded``: a
    newer export of the school is planned in ``by_run``, the older plan is out of date.
    Returns the runs whose approval was closed (their summaries and reports say so)."""
    at = utcnow()
    with session_factory(settings.state_url)() as s, s.begin():
        rows = list(s.scalars(select(Approval).where(
            Approval.academy == academy, Approval.uai == uai, Approval.status == "pending",
            Approval.run_id != by_run)))
        for a in rows:
            a.status, a.decided_at, a.decided_by = "superseded", at, f"run {by_run}"
    for a in rows:
        log.info("school %s of run %s: its held plan superseded by run %s", uai, a.run_id,
                 by_run)
        record_decisions(settings, a.run_id, {uai: {"decision": "superseded",
                                                   "by": f"run {by_run}", "at": _iso(at)}})
    return [a.run_id for a in rows]


def _drop_rejected_exports(s: Any, a: Approval, by: str) -> None:
    """A rejected plan held because an export is older than the applied one: that export
    (its sha256, for that school and kind) is not proposed again (``_discover_files``); a
    newer export of the school is read as usual."""
    if not any(g.get("guard") == "older_export" for g in a.guards or []):
        return
    for f in list(s.scalars(select(SourceFile).where(
            SourceFile.run_id == a.run_id, SourceFile.uai == a.uai,
            SourceFile.status == "held"))):
        s.add(SourceFile(run_id=a.run_id, academy=f.academy, uai=f.uai, kind=f.kind,
                         sha256=f.sha256, content_sha256=f.content_sha256, path=f.path,
                         member=f.member, school_year=f.school_year,
                         export_date=f.export_date, status=OPERATOR_REJECTED,
                         reason=f"held plan rejected by {by}"))


def _spool(settings: Settings, ref: str, out: Any) -> str:
    """Copy a staged file into ``out`` (a binary file) a chunk at a time; the sha256 of the
    bytes copied (of no bytes when the file is missing). ``out`` is left at its start."""
    h = hashlib.sha256()
    if staging.exists(settings, ref):
        with staging.path(settings, ref).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
    out.seek(0)
    return h.hexdigest()


def _approve(settings: Settings, a: Approval, run: Run, plan_file: Any,
             workers: int) -> dict[str, Any]:
    """Apply an approved held plan (``plan_file``: its verified bytes, opened)."""
    from etl.plan.diff import read_plan

    run_id = run.id
    # one writer per academy: a nightly run writing the academy makes this raise RunLocked
    # (a retry applies the plan once that run ends, unless it synced the school: see below),
    # and no run starts writing while the plan is applied
    locks.acquire(settings, a.academy, run_id)
    try:
        with session_factory(settings.state_url)() as s:
            later = s.scalar(select(func.count()).select_from(SourceFile).join(
                Run, Run.id == SourceFile.run_id).where(
                SourceFile.academy == a.academy, SourceFile.uai == a.uai,
                SourceFile.status == "applied", Run.started_at > run.started_at))
        if later:
            raise ApprovalRefused(f"school {a.uai} was synced by a later run: the plan held "
                                  f"in {run_id} is out of date; approve the newer run's plan "
                                  "instead")
        metrics.stage_start()
        t0 = time.monotonic()
        header, changes = read_plan(plan_file)
        res = _apply_changes(settings, a.academy, run_id, header, changes, workers)
        if res.get("stopped"):  # the approval stays pending: approving again converges
            from etl.errors import DirectoryUnavailable

            raise DirectoryUnavailable(
                f"{res['stopped']}; school {a.uai} of {run_id}: {res['applied']} changes "
                f"written, {res.get('left', 0)} left: approve again once the directory answers")
    finally:
        locks.release(settings, a.academy, run_id)
    metrics.record(settings, run_id, a.academy, "approval", {
        "duration_s": time.monotonic() - t0, "applied": res.get("applied", 0),
        "failed": res.get("failed", 0)}, uai=a.uai)
    return {"decision": "approved", **res}
