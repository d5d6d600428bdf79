"""One run of an academy's sync, stage by stage: what the CLI and the DAG tasks both call.

Each stage takes and returns small JSON-able values (paths, ids, counts) so Airflow's XCom
carries nothing else; the data itself goes through the staging folder and the state DB.

start -> discover -> read_validate_schools (per group of schools) -> reconcile -> apply -> finish
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from etl import staging
from etl.apply.stage import apply_plan
from etl.approve.decide import decide, pending_approvals
from etl.config import Settings, get_academy
from etl.discover.tonight import discover_files
from etl.errors import RunLocked
from etl.plan.reconcile import CATEGORIES, reconcile
from etl.report import metrics
from etl.runtime.cpu import goes_first, yield_cpu
from etl.store.db import session_factory
from etl.store.locks import new_run_id
from etl.store.models import (
    Run,
    utcnow,
)
from etl.validate.school import read_validate_schools

#: the stages, as the CLI and the DAG tasks call them
__all__ = ["apply_plan", "decide", "discover_files", "fail_run", "finish_run", "heartbeat",
           "last_runs", "new_run_id", "pending_approvals", "read_validate_schools", "reconcile",
           "run_sync", "start_run", "yield_cpu"]

log = logging.getLogger(__name__)


def start_run(settings: Settings, academy_code: str, dry_run: bool = False,
              trigger: str = "cli", run_id: str | None = None) -> str:
    """Open a run in the state DB (this process its holder, heartbeating: ``etl.store.locks``) and
    return its id. A run the academy's lock refuses is closed ``refused``."""
    from etl.store import locks

    get_academy(academy_code)
    rid = run_id or new_run_id(academy_code)
    locks.register_run(settings, academy_code, rid, dry_run, trigger)
    if not dry_run:
        try:
            locks.acquire(settings, academy_code, rid,
                          locks.DAG if trigger == "airflow" else locks.PROCESS)
        except RunLocked as e:
            locks.refuse_run(settings, rid, str(e))
            raise
    log.info("run %s started for %s (dry_run=%s)", rid, academy_code, dry_run)
    return rid


def acquire_lock(settings: Settings, academy_code: str, run_id: str) -> None:
    """One writing run per academy at a time (the lock lives in the state DB, so it holds
    across Airflow workers), held by this process (``etl.store.locks.acquire``: a lock whose run
    ended or whose holder is dead is taken over at once)."""
    from etl.store import locks

    locks.acquire(settings, academy_code, run_id)


def heartbeat(settings: Settings, academy_code: str, run_id: str) -> None:
    """Refresh the run's lock and keep beating from this process (``etl.store.locks.heartbeat``)."""
    from etl.store import locks

    locks.heartbeat(settings, academy_code, run_id)


def release_lock(settings: Settings, academy_code: str, run_id: str) -> None:
    from etl.store import locks

    locks.release(settings, academy_code, run_id)




def finish_run(settings: Settings, academy_code: str, run_id: str, discovered: dict[str, Any],
               schools: list[dict[str, Any]], reconciled: dict[str, Any] | None,
               applied: dict[str, Any] | None, dry_run: bool = False) -> dict[str, Any]:
    """The run's summary and plan report: state DB, ``reports/<run_id>/summary.json`` and
    ``report.html``."""
    from etl.report.page import write_run_report

    metrics.stage_start()
    t0 = time.monotonic()
    rec = reconciled or {}
    per_school: dict[str, dict[str, Any]] = {}
    plan_counts = rec.get("per_school", {})
    guards = rec.get("guards", {})
    held = rec.get("held", {})
    zero = dict.fromkeys((*CATEGORIES, "unchanged"), 0)
    for r in schools:
        if not r:
            continue
        pc = plan_counts.get(r["uai"], {})
        per_school[r["uai"]] = {
            "status": "awaiting_approval" if r["uai"] in held else r["status"],
            **{k: pc.get(k, 0) for k in zero}, "rejected": r.get("rejected", 0),
            "report": r.get("report"), "guards": guards.get(r["uai"], []),
        }
        if r.get("error"):
            per_school[r["uai"]]["error"] = r["error"]
        if r.get("reason"):  # a file changed since discovery
            per_school[r["uai"]]["reason"] = r["reason"]
        if r["uai"] in held:
            per_school[r["uai"]]["held"] = held[r["uai"]]["guards"]
    for uai, pc in plan_counts.items():
        if uai not in per_school:  # not synced tonight; its groups lose someone disabled
            per_school[uai] = {"status": "collateral", **{k: pc.get(k, 0) for k in zero},
                               "rejected": 0, "guards": guards.get(uai, [])}
    for uai, why in discovered.get("held", {}).items():
        if uai in held or per_school.get(uai, {}).get("status") not in (None, "ok",
                                                                        "unchanged"):
            continue  # its plan awaits approval (older_export), or it was not read
        per_school[uai] = {"status": "held", "reason": why, **zero, "rejected": 0,
                           "guards": [{"guard": "older_export", "tripped": True,
                                       "detail": why}]}
    for uai in discovered.get("already_applied", []):
        per_school[uai] = {"status": "already_applied", **zero, "rejected": 0}
    written = _count_writes(per_school, plan_counts, held, applied, dry_run)
    quarantined = [q for r in schools if r for q in r.get("quarantined", [])]
    failed = bool(applied and (applied.get("failed") or applied.get("stopped"))) or any(
        r and r.get("status") == "error" for r in schools)
    if failed:
        status = "failed"
    elif dry_run:
        status = "dry_run"
    elif held:
        status = "awaiting_approval"
    else:
        status = "success"
    summary: dict[str, Any] = {
        "run_id": run_id, "academy": academy_code, "status": status, "dry_run": dry_run,
        "mode": rec.get("mode"), "schools": per_school, "quarantined": quarantined,
        "rejected_files": discovered.get("rejected", []),
        "changes": rec.get("changes", 0),
        "held_changes": sum(sum(v["counts"].get(k, 0) for k in CATEGORIES)
                            for v in held.values()),
        "applied": (applied or {}).get("applied", 0),
        "failed": (applied or {}).get("failed", 0),
        **written,
        "errors": (applied or {}).get("errors", []),
        "matches": rec.get("matches", {}),
        "duplicates": rec.get("duplicates", []),
    }
    out = settings.reports_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), "utf-8")
    write_run_report(summary, out / "report.html")
    for name in ("summary.json", "report.html"):  # a copy any worker or operator can read
        staging.copy_in(settings, out / name, f"{run_id}/reports/{name}")
    summary["report_dir"] = str(out)
    summary["staged_reports"] = f"{run_id}/reports"
    run_seconds = 0.0
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None and run.status == "abandoned":  # taken over meanwhile: it stays so
            run.summary = {**summary, "abandoned": (run.summary or {}).get("abandoned"),
                           "finished_after_abandoned": status}
            log.warning("run %s ended after it was closed as abandoned: left abandoned",
                        run_id)
        elif run is not None:
            run.status, run.ended_at, run.summary = status, utcnow(), summary
            run_seconds = (run.ended_at - run.started_at).total_seconds()
    release_lock(settings, academy_code, run_id)
    by_status: dict[str, int] = defaultdict(int)
    for x in per_school.values():
        by_status[str(x["status"])] += 1
    metrics.record(settings, run_id, academy_code, "report", {
        "duration_s": time.monotonic() - t0, "run_duration_s": run_seconds,
        "changes": summary["changes"], "changes_held": summary["held_changes"],
        "applied": summary["applied"], "failed": summary["failed"],
        "pending": summary["pending"],
        **{f"written.{k}": v for k, v in summary["written"].items()},
        **{f"failed.{k}": v for k, v in summary["failed_by"].items()},
        "files_quarantined": len(quarantined),
        "records_read": sum(int(r.get("records_read", 0)) for r in schools if r),
        "records_rejected": sum(int(r.get("rejected", 0)) for r in schools if r),
        **{f"schools.{k}": v for k, v in sorted(by_status.items())},
    })
    metrics.record_schools(settings, run_id, academy_code, "report", {
        u: {"written": x["written"], "failed": x["failed"], "pending": x["pending"],
            **{f"written.{k}": x.get(k, 0) for k in CATEGORIES}}
        for u, x in per_school.items() if x.get("written") or x.get("failed")
        or x.get("pending")})
    metrics.count_run(settings, academy_code, status)
    # counts, not a line per school (680 schools at the region's size): each school's own
    # are in the report and `entsync status`; a non-ok school is named apart
    log.info("run %s %s: %d schools (%s); %s: %s; failed %d, pending %d", run_id, status,
             len(per_school), ", ".join(f"{n} {k}" for k, n in sorted(by_status.items())),
             "planned (dry run)" if dry_run else "written",
             ", ".join(f"{k} {sum(int(x.get(k, 0)) for x in per_school.values())}"
                       for k in CATEGORIES), summary["failed"], summary["pending"])
    if summary.get("error"):
        log.error("run %s: %s", run_id, summary["error"])
    others = sorted(u for u, x in per_school.items()
                    if x.get("status") not in ("ok", "unchanged", "already_applied"))
    if others:
        log.info("run %s: schools not ok: %s", run_id,
                 ", ".join(f"{u} ({per_school[u]['status']})" for u in others))
    return summary


#: per-school statuses the apply's outcome may turn into ``partial`` or ``failed``
_WRITING_STATUSES = ("ok", "collateral", "unchanged")


def _count_writes(per_school: dict[str, dict[str, Any]], plan_counts: dict[str, Any],
                  held: dict[str, Any], applied: dict[str, Any] | None,
                  dry_run: bool) -> dict[str, Any]:
    """Turn the plan's per-school counts into what was written (``finish_run``).

    Per school: ``planned`` (the plan's counts by category), the category counts themselves
    (``created``...) as written (a dry run: as planned, nothing is written), ``written``,
    ``failed`` (the directory refused) and ``pending`` (held for approval, or left when the
    directory went down) with their categories in ``failed_by`` and ``pending_by``. A school
    with failed or left writes is ``partial`` (some of its changes written) or ``failed``
    (none). The run's totals are returned."""
    tally = (applied or {}).get("written_counts") or {}
    by_school = tally.get("schools") or {}
    zero = dict.fromkeys(CATEGORIES, 0)
    totals = {k: dict(zero) for k in ("planned", "written", "failed_by", "pending_by")}
    for uai, s in per_school.items():
        pc = plan_counts.get(uai, {})
        planned = {k: int(pc.get(k, 0)) for k in CATEGORIES}
        w = by_school.get(uai) or {}
        done = dict(zero) if dry_run else {k: int(w.get("written", {}).get(k, 0))
                                           for k in CATEGORIES}
        bad = {k: int(w.get("failed", {}).get(k, 0)) for k in CATEGORIES}
        if uai in held:
            waiting = dict(planned)
        else:
            waiting = {k: int(w.get("left", {}).get(k, 0)) for k in CATEGORIES}
        s.update({k: planned[k] if dry_run else done[k] for k in CATEGORIES})
        s.update(planned=planned, written=sum(done.values()), failed=sum(bad.values()),
                 pending=sum(waiting.values()), failed_by=bad, pending_by=waiting)
        if uai not in held and s.get("status") in _WRITING_STATUSES and (
                s["failed"] or s["pending"]):
            s["status"] = "partial" if s["written"] else "failed"
        for k in CATEGORIES:
            totals["planned"][k] += planned[k]
            totals["written"][k] += done[k]
            totals["failed_by"][k] += bad[k]
            totals["pending_by"][k] += waiting[k]
    out: dict[str, Any] = {**totals, "pending": sum(totals["pending_by"].values())}
    if applied and applied.get("stopped"):
        out["left"] = int(applied.get("left", 0))
        out["connection_failures"] = int(applied.get("connection_failures", 0))
        out["error"] = (f"{applied['stopped']}; {applied.get('applied', 0)} changes written, "
                        f"{applied.get('failed', 0)} failed, {out['left']} left: run the sync "
                        "again once the directory answers")
    return out


def fail_run(settings: Settings, run_id: str, reason: str) -> None:
    """Mark a run failed (a crash, or an Airflow task that gave up)."""
    closed = False
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None and run.status in ("running", "awaiting_approval"):
            run.status, run.ended_at = "failed", utcnow()
            run.summary = {**(run.summary or {}), "error": reason[:2000]}
            closed = True
        academy = run.academy if run is not None else None
    if academy:
        release_lock(settings, academy, run_id)
        if closed:
            metrics.count_run(settings, academy, "failed")




def run_sync(settings: Settings, academy_code: str, dry_run: bool = False,
             schools: list[str] | None = None, trigger: str = "cli", workers: int = 4,
             mode: str | None = None, today: dt.date | None = None) -> dict[str, Any]:
    """The whole sync in one process (what the DAG does task by task)."""
    yield_cpu(settings)
    run_id = start_run(settings, academy_code, dry_run, trigger)
    try:
        disc = discover_files(settings, academy_code, run_id, schools, today)
        from etl.runtime.cpuslots import cpu_slot

        # a CPU slot found free is kept from reading to the plan: an academy that has read
        # is not put behind one that has not for its planning (and its first write)
        with cpu_slot(settings.cpu_slots if goes_first(settings, academy_code, dry_run)
                      else 0):
            results = read_validate_schools(settings, academy_code, run_id, disc["schools"],
                                            dry_run)
            rec = reconcile(settings, academy_code, run_id, results, dry_run, mode, today)
        app = apply_plan(settings, academy_code, run_id, rec["plan"], dry_run=dry_run,
                         workers=workers)
        return finish_run(settings, academy_code, run_id, disc, results, rec, app, dry_run)
    except BaseException as e:
        fail_run(settings, run_id, f"{type(e).__name__}: {e}")
        raise


def last_runs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent runs, newest first."""
    with session_factory(settings.state_url)() as s:
        rows = s.scalars(select(Run).order_by(Run.started_at.desc()).limit(limit))
        return [{"run_id": r.id, "academy": r.academy, "status": r.status,
                 "started_at": r.started_at.isoformat()} for r in rows]
