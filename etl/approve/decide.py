"""Held plans: listed, approved (applied exactly as shown) or rejected."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
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
        raise ApprovalRefused(f"run {run_id} has no school awaiting approval"
                              + (f" for {uai}" if uai else ""))
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
        with Session() as s, s.begin():
            row = s.get(Approval, a.id)
            assert row is not None
            row.status = "approved" if approve else "rejected"
            row.decided_at, row.decided_by = utcnow(), by
            if not approve:
                _drop_rejected_exports(s, a, by)
        log.info("school %s of run %s %s by %s", a.uai, run_id,
                 "approved" if approve else "rejected", by)
    with Session() as s, s.begin():
        left = s.scalar(select(func.count()).select_from(Approval).where(
            Approval.run_id == run_id, Approval.status == "pending"))
        r = s.get(Run, run_id)
        if r is not None and not left and r.status == "awaiting_approval":
            failed = any(v.get("failed") for v in results.values())
            r.status = "failed" if failed else "success"
    return {"run_id": run_id, "schools": results}


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
