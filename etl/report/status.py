"""``entsync status``: per academy, the last run and the last known state of each school.

Everything comes from the state DB (runs and their summaries, run metrics, source files,
approvals, school state): no personal data, only ids, statuses, dates and counts.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from etl.config import Settings, load_academies
from etl.store.db import session_factory
from etl.store.models import Approval, Run, RunMetric, SchoolState, SourceFile

CHANGE_KEYS = ("created", "updated", "disabled", "restored", "deleted", "unchanged")
STAGES = ("discover", "read_validate", "reconcile", "apply", "absences", "report")
#: how many of an academy's most recent runs are searched for a school's last status
RUN_SCAN = 500


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t is not None else None


def _run_view(s: Any, run: Run, settings: Settings | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = dict(run.summary or {})
    status = run.status
    if status == "running" and settings is not None:
        from etl.store.locks import run_alive

        alive, why = run_alive(settings, run)
        if not alive:  # its process ended: closed as such by the next run or `entsync unlock`
            status, summary["error"] = "abandoned", f"abandoned: {why}"
    durations: dict[str, float] = defaultdict(float)
    records: dict[str, float] = {}
    for stage, name, value in s.execute(
            select(RunMetric.stage, RunMetric.name, RunMetric.value)
            .where(RunMetric.run_id == run.id)):
        if name == "duration_s":
            durations[stage] += value  # read_validate: the sum over the schools
        elif stage == "report" and name in ("records_read", "records_rejected"):
            records[name] = value
    total = ((run.ended_at - run.started_at).total_seconds()
             if run.ended_at is not None else None)
    return {
        "run_id": run.id, "status": status, "trigger": run.trigger,
        "dry_run": bool(run.dry_run), "mode": summary.get("mode"),
        "started_at": _iso(run.started_at), "ended_at": _iso(run.ended_at),
        "duration_s": round(total, 3) if total is not None else None,
        "stage_durations_s": {k: round(durations[k], 3) for k in STAGES if k in durations},
        "counts": {
            "schools": len(summary.get("schools") or {}),
            "changes": summary.get("changes", 0), "held_changes": summary.get("held_changes", 0),
            "applied": summary.get("applied", 0), "failed": summary.get("failed", 0),
            "quarantined_files": len(summary.get("quarantined") or []),
            "rejected_files": len(summary.get("rejected_files") or []),
            "records_read": int(records.get("records_read", 0)),
            "records_rejected": int(records.get("records_rejected", 0)),
            # never merged automatically (INE conflicts among them): the run report lists them
            "suspected_duplicates": summary.get("duplicates_total",
                                                len(summary.get("duplicates") or [])),
        },
        # where each quarantined file is kept (its reason file beside it)
        "quarantined": [{"file": q.get("file"), "school": q.get("uai"),
                         "reason": q.get("reason"), "path": q.get("moved_to"),
                         "reason_file": q.get("reason_file")}
                        for q in summary.get("quarantined") or [] if isinstance(q, dict)],
        **({"error": str(summary["error"])[:300]} if summary.get("error") else {}),
    }


def academy_status(settings: Settings, academy: str) -> dict[str, Any]:
    """The academy's last run and, per school, its last status in a run that wrote (dry runs
    and checks do not count), last applied export date and that run's change counts."""
    with session_factory(settings.state_url)() as s:
        # an `entsync unlock` is journaled as a run of its own: not the academy's last run
        last = s.scalars(select(Run).where(Run.academy == academy,
                                           Run.trigger.is_distinct_from("unlock"))
                         .order_by(Run.started_at.desc(), Run.id.desc()).limit(1)).first()
        schools: dict[str, dict[str, Any]] = {}
        runs = s.scalars(select(Run).where(Run.academy == academy, Run.dry_run.is_(False))
                         .order_by(Run.started_at.desc(), Run.id.desc()).limit(RUN_SCAN))
        for run in runs:
            per_school: Any = (run.summary or {}).get("schools") or {}
            for uai, v in per_school.items():
                if uai in schools or not isinstance(v, dict):
                    continue
                schools[uai] = {
                    "uai": uai, "status": v.get("status"), "run_id": run.id,
                    "run_started_at": _iso(run.started_at),
                    "changes": {k: int(v.get(k, 0)) for k in CHANGE_KEYS},
                    "rejected_records": int(v.get("rejected", 0)),
                    "pending_run": v.get("pending_run"),
                }
        # a held school's fate: the approval decided after the run's summary was written
        # (a night that left the school waiting names the run whose plan waits)
        decided = {(a.run_id, a.uai): a for a in s.scalars(
            select(Approval).where(Approval.academy == academy))}
        for uai, x in schools.items():
            a = decided.get((x.pop("pending_run", None) or x["run_id"], uai))
            if a is None:
                continue
            if x["status"] == "awaiting_approval" and a.status != "pending":
                x["status"] = a.status
            if a.status != "pending":
                x["decision"] = {"run_id": a.run_id, "decision": a.status,
                                 "by": a.decided_by, "at": _iso(a.decided_at)}
            else:
                x["awaiting_since"] = _iso(a.created_at)
                x["pending_run"] = a.run_id
        # the export date of the LAST document applied per kind (an older export approved
        # by an operator is the reference from then on)
        applied: dict[str, dict[str, str]] = defaultdict(dict)
        last_ids = (select(func.max(SourceFile.id))
                    .where(SourceFile.academy == academy, SourceFile.status == "applied",
                           SourceFile.uai.is_not(None), SourceFile.export_date.is_not(None))
                    .group_by(SourceFile.uai, SourceFile.kind))
        for uai, kind, date in s.execute(
                select(SourceFile.uai, SourceFile.kind, SourceFile.export_date)
                .where(SourceFile.id.in_(last_ids))):
            if uai and date:
                applied[uai][kind or "?"] = date
        states = {row.uai: row for row in s.scalars(
            select(SchoolState).where(SchoolState.academy == academy))}
        for uai in set(applied) | set(states):
            schools.setdefault(uai, {"uai": uai, "status": None, "run_id": None,
                                     "run_started_at": None, "changes": {},
                                     "rejected_records": 0})
        for uai, x in schools.items():
            # export dates (HORODATAGE / DATE_EXPORT; a file's time when it has none) of the
            # last applied exports, per kind, and the latest of them
            per_kind = applied.get(uai, {})
            x["last_applied_exports"] = dict(sorted(per_kind.items()))
            x["last_applied_export"] = max(per_kind.values()) if per_kind else None
            state = states.get(uai)
            x["last_applied_run"] = state.run_id if state is not None else None
            x["last_applied_at"] = _iso(state.updated_at) if state is not None else None
        from etl.store.locks import lock_view

        return {"academy": academy, "last_run": _run_view(s, last, settings) if last else None,
                "lock": lock_view(settings, s, academy),
                "schools": [schools[u] for u in sorted(schools)]}


def status(settings: Settings, academy: str | None = None) -> dict[str, Any]:
    codes = [academy] if academy else list(load_academies())
    return {"academies": [academy_status(settings, c) for c in codes]}


def status_table(out: dict[str, Any]) -> str:
    lines: list[str] = []
    for a in out["academies"]:
        r = a["last_run"]
        if r is None:
            lines.append(f"{a['academy']}: no run yet")
        else:
            c = r["counts"]
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["stage_durations_s"].items())
            dur = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "-"
            lines.append(f"{a['academy']}: last run {r['run_id']} ({r['trigger']}"
                         f"{', dry run' if r['dry_run'] else ''}) {r['status']}")
            lines.append(f"  started {r['started_at']}  ended {r['ended_at'] or '-'}  "
                         f"took {dur}" + (f" ({stages})" if stages else ""))
            lines.append(f"  schools {c['schools']}, records read {c['records_read']}, "
                         f"rejected {c['records_rejected']}, changes {c['changes']} "
                         f"(held {c['held_changes']}), applied {c['applied']}, "
                         f"failed {c['failed']}, quarantined files {c['quarantined_files']}"
                         + (f", suspected duplicates {c['suspected_duplicates']}"
                            if c.get("suspected_duplicates") else ""))
            if r["status"] == "abandoned" and r.get("error"):
                lines.append(f"  {r['error']}")
            for q in r.get("quarantined", []):
                lines.append(f"  quarantined {q['file']} (school {q['school'] or '-'}): "
                             f"{q['reason']} -> {q['path'] or 'not kept'}")
        lk = a.get("lock")
        if lk:
            lines.append(f"  lock: run {lk['run_id']} since {lk['acquired_at']} "
                         f"({'alive' if lk['alive'] else 'holder dead'}: {lk['why']})")
        if a["schools"]:
            lines.append(f"  {'school':9} {'last status':18} {'last applied export':20} "
                         f"{'created':>7} {'updated':>7} {'disabled':>8} {'rejected':>8}  run")
        for x in a["schools"]:
            ch = x["changes"]
            lines.append(f"  {x['uai']:9} {x['status'] or '-':18} "
                         f"{(x['last_applied_export'] or '-')[:19]:20} "
                         f"{ch.get('created', 0):>7} {ch.get('updated', 0):>7} "
                         f"{ch.get('disabled', 0):>8} {x['rejected_records']:>8}  "
                         f"{x['run_id'] or '-'}")
            d = x.get("decision")
            if d:
                lines.append(f"  {'':9} {d['decision']} by {d['by']} at {d['at']} "
                             f"(plan of run {d['run_id']})")
            elif x.get("pending_run"):
                lines.append(f"  {'':9} awaiting approval since {x['awaiting_since']} "
                             f"(plan of run {x['pending_run']})")
    return "\n".join(lines)
