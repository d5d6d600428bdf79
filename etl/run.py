"""One run of an academy's sync, stage by stage: what the CLI and the DAG tasks both call.

Each stage takes and returns small typed values (``etl.contracts``: references, ids, counts)
whose JSON form is all Airflow's XCom carries; the data itself goes through the staging folder
and the state DB. ``open_run``, ``close_run``, ``review_request`` and ``decide_held`` are the
DAG tasks' calls around the stages.

start -> discover -> read_validate_schools (per group of schools) -> reconcile -> apply -> finish
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import msgspec
from sqlalchemy import select

from etl import staging
from etl.apply.stage import apply_plan
from etl.approve.decide import decide, pending_approvals
from etl.approve.waiting import wait_or_supersede
from etl.audit.adopt import require_adopted
from etl.config import Settings, get_academy
from etl.contracts import (
    WRITTEN_STATUSES,
    Applied,
    ApprovalPanel,
    ApprovalRequest,
    Discovery,
    GroupSchool,
    HeldPlan,
    ReadGroup,
    Reconciled,
    ReviewRequest,
    RunOutcome,
    RunRef,
    RunRequest,
    RunStatus,
    SchoolResult,
    SchoolStatus,
    StreamedGroup,
    UnsetType,
)
from etl.discover.tonight import discover_files
from etl.errors import RunLocked
from etl.plan.reconcile import CATEGORIES, reconcile
from etl.report import metrics
from etl.runtime.ahead import ReadAhead
from etl.runtime.cpu import goes_first, yield_cpu
from etl.store.db import session_factory
from etl.store.locks import new_run_id
from etl.store.models import (
    Run,
    utcnow,
)
from etl.validate.school import read_validate_schools

#: the stages, as the CLI and the DAG tasks call them
__all__ = ["apply_plan", "approval_panel", "approval_requests", "close_run", "decide",
           "decide_held", "decide_request", "discover_files", "fail_run",
           "finish_run", "heartbeat", "last_runs", "new_run_id", "open_run",
           "pending_approvals", "purge_academy", "read_groups", "read_validate_schools",
           "reconcile", "review_request", "run_sync", "start_run", "yield_cpu"]

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


def heartbeat(settings: Settings, academy_code: str, run_id: str) -> None:
    """Refresh the run's lock and keep beating from this process (``etl.store.locks.heartbeat``)."""
    from etl.store import locks

    locks.heartbeat(settings, academy_code, run_id)


def release_lock(settings: Settings, academy_code: str, run_id: str) -> None:
    from etl.store import locks

    locks.release(settings, academy_code, run_id)




#: suspected duplicates a run's summary and report list (the first by rule: INE conflicts,
#: staff, guardians, same names); all of them are in ``reports/<run_id>/duplicates.jsonl``. A
#: first load at scale 1.0 finds ~200,000 in Nancy-Metz (homonyms): held in the summary they
#: made a 46 MB row in the state DB, a 44 MB page and the run's memory peak
DUPLICATES_IN_SUMMARY = 500
DUPLICATES_FILE = "duplicates.jsonl"
#: the staged folder of a streamed run's groups' suspected duplicates
DUPLICATES_DIR = "duplicates"
#: the order in which the summary keeps them (what a school or the ops team must look at first)
_DUPLICATE_RULES = ("ine_conflict", "staff_name_birth", "guardian_name", "same_name")


def duplicates_digest(every: Iterable[dict[str, Any]], sink: TextIO | None = None
                      ) -> dict[str, Any]:
    """The summary's part of the run's suspected duplicates, read once as they come: the first
    ``DUPLICATES_IN_SUMMARY`` by rule (``duplicates``), how many in all and by rule, and the
    file that lists them all when the summary does not; ``sink`` gets every one, a line
    each."""
    order = {r: i for i, r in enumerate(_DUPLICATE_RULES)}
    firsts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_rule: dict[str, int] = defaultdict(int)
    total = 0
    for d in every:
        total += 1
        rule = str(d.get("rule"))
        by_rule[rule] += 1
        rank = order.get(rule, len(order))
        if len(firsts[rank]) < DUPLICATES_IN_SUMMARY:
            firsts[rank].append(d)
        if sink is not None:
            sink.write(json.dumps(d, ensure_ascii=False) + "\n")
    out: dict[str, Any] = {
        "duplicates": [d for r in sorted(firsts) for d in firsts[r]][:DUPLICATES_IN_SUMMARY],
        "duplicates_total": total, "duplicates_by_rule": dict(sorted(by_rule.items()))}
    if total > DUPLICATES_IN_SUMMARY:
        out["duplicates_file"] = DUPLICATES_FILE
    return out


def spill_duplicates(settings: Settings, run_id: str, tag: str, rec: Reconciled
                     ) -> Reconciled:
    """A streamed group's suspected duplicates, staged (``<run>/duplicates/<tag>.jsonl``) and
    let go: the run's report reads them back (``every_duplicate``), its groups do not hold
    them (Nancy-Metz's first load at 1.0: ~10,000 a group, 197,756 in all)."""
    if not rec.duplicates:
        return rec
    staging.write_chunks(settings, f"{run_id}/{DUPLICATES_DIR}/{tag}.jsonl",
                         (json.dumps(d, ensure_ascii=False).encode() + b"\n"
                          for d in rec.duplicates))
    return msgspec.structs.replace(rec, duplicates=[])


def every_duplicate(settings: Settings, run_id: str, reconciled: Reconciled | None
                    ) -> Iterator[dict[str, Any]]:
    """The run's suspected duplicates: its groups' staged ones in their order, then the
    plan's own."""
    folder = f"{run_id}/{DUPLICATES_DIR}"
    if staging.exists(settings, folder):
        for name in sorted(staging.children(settings, folder)):
            if name.endswith(".jsonl"):
                for line in staging.read_bytes(settings, f"{folder}/{name}").splitlines():
                    if line.strip():
                        yield json.loads(line)
    if reconciled is not None:
        yield from reconciled.duplicates


def finish_run(settings: Settings, run: RunRef, discovered: Discovery,
               schools: Sequence[SchoolResult], reconciled: Reconciled | None = None,
               applied: Applied | None = None) -> dict[str, Any]:
    """The run's summary and plan report: state DB, ``reports/<run_id>/summary.json`` and
    ``report.html``. The summary (returned) is that file's content: a document with a row
    per school, what ``entsync sync --json`` prints."""
    from etl.report.page import write_run_report

    academy_code, run_id, dry_run = run.academy, run.run_id, run.dry_run
    metrics.stage_start()
    t0 = time.monotonic()
    per_school: dict[str, dict[str, Any]] = {}
    plan_counts = reconciled.per_school if reconciled is not None else {}
    guards = reconciled.guards if reconciled is not None else {}
    held = reconciled.held if reconciled is not None else {}
    zero = dict.fromkeys((*CATEGORIES, "unchanged"), 0)
    for r in schools:
        pc = plan_counts.get(r.uai, {})
        per_school[r.uai] = {
            "status": SchoolStatus.AWAITING_APPROVAL.value if r.uai in held else r.status.value,
            **{k: pc.get(k, 0) for k in zero}, "rejected": r.rejected,
            "report": r.report, "guards": guards.get(r.uai, []),
        }
        if r.error:
            per_school[r.uai]["error"] = r.error
        if r.reason:  # a file changed since discovery
            per_school[r.uai]["reason"] = r.reason
        if r.uai in held:
            per_school[r.uai]["held"] = held[r.uai].guards
    for uai, pc in plan_counts.items():
        if uai not in per_school:  # not synced tonight; its groups lose someone disabled
            per_school[uai] = {"status": SchoolStatus.COLLATERAL.value,
                               **{k: pc.get(k, 0) for k in zero},
                               "rejected": 0, "guards": guards.get(uai, [])}
    for uai, why in discovered.held.items():
        if uai in held or per_school.get(uai, {}).get("status") not in (
                None, SchoolStatus.OK, SchoolStatus.UNCHANGED):
            continue  # its plan awaits approval (older_export), or it was not read
        per_school[uai] = {"status": SchoolStatus.HELD.value, "reason": why, **zero,
                           "rejected": 0, "guards": [{"guard": "older_export", "tripped": True,
                                                      "detail": why}]}
    for uai in discovered.already_applied:
        per_school[uai] = {"status": SchoolStatus.ALREADY_APPLIED.value, **zero, "rejected": 0}
    for uai, why in discovered.ignored_sources.items():  # both sources came: one was read
        if uai in per_school:
            per_school[uai]["ignored_source"] = why
    for uai, pending_run in discovered.awaiting.items():  # not read: its plan awaits approval
        per_school[uai] = {"status": SchoolStatus.AWAITING_APPROVAL.value, **zero,
                           "rejected": 0, "pending_run": pending_run,
                           "reason": f"its plan of run {pending_run} (the same exports) "
                                     "awaits approval"}
    written = _count_writes(per_school, plan_counts, held, applied, dry_run)
    quarantined = [q for r in schools for q in r.quarantined]
    failed = bool(applied and (applied.failed or applied.stopped)) or any(
        r.status == SchoolStatus.ERROR for r in schools)
    if failed:
        status = RunStatus.FAILED
    elif dry_run:
        status = RunStatus.DRY_RUN
    elif held:
        status = RunStatus.AWAITING_APPROVAL
    else:
        status = RunStatus.SUCCESS
    errors = applied.errors if applied is not None and applied.errors else []
    out = settings.reports_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    with (out / DUPLICATES_FILE).open("w", encoding="utf-8") as sink:
        dups = duplicates_digest(every_duplicate(settings, run_id, reconciled), sink)
    if not dups["duplicates_total"]:
        (out / DUPLICATES_FILE).unlink()
    summary: dict[str, Any] = {
        "run_id": run_id, "academy": academy_code, "status": status.value, "dry_run": dry_run,
        "mode": reconciled.mode if reconciled is not None else None, "schools": per_school,
        "quarantined": quarantined,
        "rejected_files": [f.to_json() for f in discovered.rejected],
        "changes": reconciled.changes if reconciled is not None else 0,
        "held_changes": sum(sum(v.counts.get(k, 0) for k in CATEGORIES)
                            for v in held.values()),
        "applied": applied.applied if applied is not None else 0,
        "failed": applied.failed if applied is not None else 0,
        **written,
        "errors": list(errors),
        "matches": reconciled.matches if reconciled is not None else {},
        **dups,
        "ignored_sources": dict(discovered.ignored_sources),
        **({} if isinstance(discovered.aaf, UnsetType) else {"aaf": discovered.aaf}),
    }
    _school_pages(settings, summary, schools)  # names, times, links, the schools' pages
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), "utf-8")
    write_run_report(summary, out / "report.html")
    names = ["summary.json", "report.html"]
    if dups["duplicates_total"]:  # all of them, one a line (the summary holds the first)
        names.append(DUPLICATES_FILE)
    for name in names:  # a copy any worker or operator can read
        staging.copy_in(settings, out / name, f"{run_id}/reports/{name}")
    summary["report_dir"] = str(out)
    summary["staged_reports"] = f"{run_id}/reports"
    run_seconds = 0.0
    with session_factory(settings.state_url)() as s, s.begin():
        row = s.get(Run, run_id)
        if row is not None and row.status == RunStatus.ABANDONED:  # taken over: it stays so
            row.summary = {**summary, "abandoned": (row.summary or {}).get("abandoned"),
                           "finished_after_abandoned": status.value}
            log.warning("run %s ended after it was closed as abandoned: left abandoned",
                        run_id)
        elif row is not None:
            row.status, row.ended_at, row.summary = status.value, utcnow(), summary
            run_seconds = (row.ended_at - row.started_at).total_seconds()
    release_lock(settings, academy_code, run_id)
    _history(settings, academy_code, run_id)
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
        "records_read": sum(int(r.records_read or 0) for r in schools),
        "records_rejected": sum(r.rejected for r in schools),
        **{f"schools.{k}": v for k, v in sorted(by_status.items())},
    })
    metrics.record_schools(settings, run_id, academy_code, "report", {
        u: {"written": x["written"], "failed": x["failed"], "pending": x["pending"],
            **{f"written.{k}": x.get(k, 0) for k in CATEGORIES}}
        for u, x in per_school.items() if x.get("written") or x.get("failed")
        or x.get("pending")})
    metrics.count_run(settings, academy_code, status.value)
    # counts, not a line per school (680 schools at the region's size): each school's own
    # are in the report and `entsync status`; a non-ok school is named apart
    log.info("run %s %s: %d schools (%s); %s: %s; failed %d, pending %d", run_id, status.value,
             len(per_school), ", ".join(f"{n} {k}" for k, n in sorted(by_status.items())),
             "planned (dry run)" if dry_run else "written",
             ", ".join(f"{k} {sum(int(x.get(k, 0)) for x in per_school.values())}"
                       for k in CATEGORIES), summary["failed"], summary["pending"])
    if summary.get("error"):
        log.error("run %s: %s", run_id, summary["error"])
    others = sorted(u for u, x in per_school.items()
                    if x.get("status") not in (SchoolStatus.OK, SchoolStatus.UNCHANGED,
                                               SchoolStatus.ALREADY_APPLIED))
    if others:
        log.info("run %s: schools not ok: %s", run_id,
                 ", ".join(f"{u} ({per_school[u]['status']})" for u in others))
    return summary


def _school_pages(settings: Settings, summary: dict[str, Any],
                  schools: Sequence[SchoolResult]) -> None:
    """The run report's times and links (``etl.report.page.run_context``), and each school's
    French page of the whole night, their index and delivery (``etl.report.schools``): added
    to the summary. A page that cannot be written is logged, never fails the run."""
    from etl.report.page import run_context
    from etl.report.schools import write_school_pages

    try:
        summary.update(run_context(settings, summary["run_id"]))
        write_school_pages(settings, summary, schools)
        summary["history"] = "history.html"
    except (OSError, ValueError) as e:
        log.error("run %s: the schools' pages could not be written: %s", summary["run_id"],
                  type(e).__name__)


def _history(settings: Settings, academy_code: str, run_id: str) -> None:
    """The academy's history page (``etl.report.history``), once the run is in the state DB."""
    from etl.report.history import write_history

    try:
        write_history(settings, academy_code, run_id)
    except (OSError, ValueError) as e:
        log.error("run %s: the history page could not be written: %s", run_id,
                  type(e).__name__)


#: per-school statuses the apply's outcome may turn into ``partial`` or ``failed``
_WRITING_STATUSES = (SchoolStatus.OK, SchoolStatus.COLLATERAL, SchoolStatus.UNCHANGED)


def _count_writes(per_school: dict[str, dict[str, Any]], plan_counts: dict[str, Any],
                  held: Mapping[str, Any], applied: Applied | None,
                  dry_run: bool) -> dict[str, Any]:
    """Turn the plan's per-school counts into what was written (``finish_run``).

    Per school: ``planned`` (the plan's counts by category), the category counts themselves
    (``created``...) as written (a dry run: as planned, nothing is written), ``written``,
    ``failed`` (the directory refused) and ``pending`` (held for approval, or left when the
    directory went down) with their categories in ``failed_by`` and ``pending_by``. A school
    with failed or left writes is ``partial`` (some of its changes written) or ``failed``
    (none). The run's totals are returned."""
    tally = (applied.written_counts if applied is not None else None) or {}
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
            s["status"] = (SchoolStatus.PARTIAL if s["written"] else SchoolStatus.FAILED).value
        for k in CATEGORIES:
            totals["planned"][k] += planned[k]
            totals["written"][k] += done[k]
            totals["failed_by"][k] += bad[k]
            totals["pending_by"][k] += waiting[k]
    out: dict[str, Any] = {**totals, "pending": sum(totals["pending_by"].values())}
    if applied is not None and applied.stopped:
        out["left"] = int(applied.left or 0)
        out["connection_failures"] = int(applied.connection_failures or 0)
        out["error"] = (f"{applied.stopped}; {applied.applied} changes written, "
                        f"{applied.failed} failed, {out['left']} left: run the sync "
                        "again once the directory answers")
    return out


def fail_run(settings: Settings, run_id: str, reason: str) -> None:
    """Mark a run failed (a crash, or an Airflow task that gave up)."""
    closed = False
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None and run.status in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL):
            run.status, run.ended_at = RunStatus.FAILED.value, utcnow()
            run.summary = {**(run.summary or {}), "error": reason[:2000]}
            closed = True
        academy = run.academy if run is not None else None
    if academy:
        release_lock(settings, academy, run_id)
        if closed:
            metrics.count_run(settings, academy, RunStatus.FAILED.value)




def run_sync(settings: Settings, request: RunRequest) -> dict[str, Any]:
    """The whole sync in one process (what the DAG does task by task); the run's summary
    (``finish_run``)."""
    q = request
    yield_cpu(settings)
    run_id = start_run(settings, q.academy, q.dry_run, q.trigger)
    try:
        if not q.dry_run:
            require_adopted(settings, get_academy(q.academy))
        disc = wait_or_supersede(settings, q.academy, discover_files(
            settings, q.academy, run_id, q.schools, q.today), q.dry_run)
        from etl.runtime.cpuslots import cpu_slot

        # a CPU slot found free is kept from reading to the plan: an academy that has read
        # is not put behind one that has not for its planning (and its first write). A
        # streamed night asks for one at each group's reading and planning, and lets it go
        # while the group is written: the academies write in turn
        first = goes_first(settings, q.academy, q.dry_run)
        slots = settings.cpu_slots if first else 0
        if (q.dry_run or not settings.plan_group
                or len(disc.school_docs()) <= settings.plan_group):  # one group: whole
            with cpu_slot(slots):
                results = read_validate_schools(settings, q.academy, run_id,
                                                disc.school_docs(), q.dry_run)
                rec = reconcile(settings, q.academy, run_id, results, q.dry_run, q.mode,
                                q.today)
            app = apply_plan(settings, q.academy, run_id, rec.plan, dry_run=q.dry_run,
                             workers=q.workers)
        else:
            results, rec, app = _streamed(settings, q, run_id, disc, first)
        return finish_run(settings, RunRef(academy=q.academy, run_id=run_id,
                                           dry_run=q.dry_run), disc, results, rec, app)
    except BaseException as e:
        fail_run(settings, run_id, f"{type(e).__name__}: {e}")
        raise


def _streamed(settings: Settings, q: RunRequest, run_id: str, disc: Discovery,
              first: bool = False) -> tuple[list[SchoolResult], Reconciled, Applied]:
    """A sync group by group (``etl.plan.stream``): each group of ``settings.plan_group``
    schools planned and written, the next one read meanwhile in a process of its own
    (``etl.runtime.ahead``, unless ``settings.read_ahead`` is off: from the first group on a
    first load and on a night of more than ``READ_AHEAD_GROUPS`` groups, from the second on a
    night whose first group was heavy, ``heavy_night``; never on a light night of fewer
    groups); the absences judged and written after the last. A group whose
    apply stopped (the directory went down) stops the run there: no absence is judged on a
    night not read to its end."""
    from etl.plan.stream import plan_order

    docs = disc.school_docs()
    uais = list(docs)
    size = settings.plan_group
    groups = plan_order(stream_groups(uais, size), settings.plan_order, run_id)
    run = RunRef(academy=q.academy, run_id=run_id)
    results: list[SchoolResult] = []
    parts: list[StreamedGroup] = []
    with contextlib.ExitStack() as stack:
        ahead: ReadAhead | None = None
        submitted = False
        for k, group in enumerate(groups):
            if submitted and ahead is not None:
                res, submitted = ahead.result(), False
            else:
                res = None
            if ahead is None and settings.read_ahead and reads_ahead(
                    k, len(groups), first, parts[0] if parts else None, results):
                ahead = stack.enter_context(ReadAhead(settings, q.academy, run_id))
            if ahead is not None and k + 1 < len(groups):  # read while this one is
                ahead.submit({u: docs[u] for u in groups[k + 1]})
                submitted = True
            if res is None:
                res = read_validate_schools(settings, q.academy, run_id,
                                            {u: docs[u] for u in group}, first=first,
                                            lead=first and k == 0)
            results += res
            parts.append(plan_write_group(settings, run, res, f"{k:04d}", q.mode, q.today,
                                          q.workers, first, lead=first and k == 0))
            if _stopped(parts[-1].applied):
                return results, *merged_night(parts)
    rec = reconcile_night(settings, run, results, parts, q.mode, q.today)
    app = apply_plan(settings, q.academy, run_id, rec.plan, workers=q.workers)
    return results, *merged_night(parts, rec, app)


#: the share of the first group's records its plan changes above which a night that is not a
#: first load reads its next groups ahead (la rentrée: about one change a record; a 2 % night:
#: a few in a hundred)
READ_AHEAD_MIN_SHARE = 0.25
#: groups left to read from which any night reads them ahead (a light night's too): the
#: reader's start (~4 s of CPU) is paid once, each group read while the one before is planned
#: and written saves about its reading's time where a core is free (an academy of 12 groups
#: or more at scale 1.0: Reims, Strasbourg, Nancy-Metz; none at 0.1)
READ_AHEAD_GROUPS = 8


def reads_ahead(k: int, groups: int, first: bool, first_group: StreamedGroup | None,
                read: Sequence[SchoolResult]) -> bool:
    """Whether a streamed night starts reading ahead at its group ``k`` (of ``groups``): a
    next group to read, and a first load, or at least ``READ_AHEAD_GROUPS`` groups left to
    read, or (from the second group) a heavy night (``heavy_night``)."""
    if k + 1 >= groups:
        return False
    if first or groups - k - 1 >= READ_AHEAD_GROUPS:
        return True
    return k > 0 and first_group is not None and heavy_night(first_group, read)


def heavy_night(first_group: StreamedGroup, read: Sequence[SchoolResult]) -> bool:
    """Whether a streamed night is worth reading ahead (``etl.runtime.ahead``), as its first
    group says: its writes are long (a first load, la rentrée), so the reader reads while the
    directory writes. On a light night the sync's stages keep the cores busy, and the reader's
    start (a fresh interpreter importing the readers and GX, ~4 s of CPU) would cost more than
    reading ahead hides."""
    records = sum(r.records_read if isinstance(r.records_read, int) else sum(r.counts.values())
                  for r in read)
    return first_group.reconciled.changes >= READ_AHEAD_MIN_SHARE * max(records, 1)


def stream_groups(uais: Sequence[str], size: int) -> list[list[str]]:
    """A streamed night's groups: a first one of an eighth of ``size`` (at least one school),
    so that the first writes start after two or three schools are read (at scale 1.0 a
    quarter, 4 schools, put Nancy-Metz's first write at 16.3 s, 7.2 s of it its discovery),
    then groups of ``size``."""
    first = max(1, size // 8)
    rest = list(uais[first:])
    return [list(uais[:first])] + [rest[i:i + size] for i in range(0, len(rest), size)]


def _stopped(app: Applied) -> bool:
    return not isinstance(app.stopped, UnsetType) and bool(app.stopped)


def plan_write_group(settings: Settings, run: RunRef, schools: Sequence[SchoolResult],
                     tag: str, mode: str | None = None, today: dt.date | None = None,
                     workers: int = 4, first: bool | None = None,
                     lead: bool = False) -> StreamedGroup:
    """One group of a streamed night (the DAG's ``plan_write``): planned against what the
    groups before it wrote, its absences left for the last step, written. ``first``: the
    night is the academy's first load (None: as the state DB says now); ``lead``: this is
    its first group (``etl.runtime.cpu.cpu_bound``)."""
    rec = spill_duplicates(settings, run.run_id, tag, reconcile(
        settings, run.academy, run.run_id, schools, False, mode, today, group=tag,
        first=first, lead=lead))
    app = apply_plan(settings, run.academy, run.run_id, rec.plan, workers=workers)
    return StreamedGroup(reconciled=rec, applied=app)


def reconcile_night(settings: Settings, run: RunRef, schools: Sequence[SchoolResult],
                    parts: Sequence[StreamedGroup | None], mode: str | None = None,
                    today: dt.date | None = None) -> Reconciled:
    """The night's plan after its groups (the DAG's ``reconcile``): a streamed night's
    absences (``reconcile_absences``), else the whole academy's plan."""
    from etl.plan.reconcile import reconcile_absences

    if any(p is not None for p in parts):
        return reconcile_absences(settings, run.academy, run.run_id, schools, mode, today)
    return reconcile(settings, run.academy, run.run_id, schools, run.dry_run, mode, today)


def merged_night(parts: Sequence[StreamedGroup | None], rec: Reconciled | None = None,
                 app: Applied | None = None) -> tuple[Reconciled, Applied]:
    """A streamed night's groups and last step as one plan and one apply (what the summary
    counts); a night planned whole as it is."""
    from etl.plan.stream import merge_applied, merge_reconciled

    done = [p for p in parts if p is not None]
    recs = [p.reconciled for p in done] + ([rec] if rec is not None else [])
    apps = [p.applied for p in done] + ([app] if app is not None else [])
    return merge_reconciled(recs), merge_applied(apps)


def stream_tag(groups: int, dry_run: bool, settings: Settings) -> Callable[[int], str]:
    """The tag of each read group when the night is streamed (more than one group, not a dry
    run, ``plan_group`` not 0), else empty."""
    on = groups > 1 and not dry_run and settings.plan_group > 0
    return lambda k: f"{k:04d}" if on else ""


# ------------------------------------------------------------------------------------------
# the DAG's tasks (``dags/ent_sync.py``): one call each, JSON-able contracts in and out
# ------------------------------------------------------------------------------------------


def open_run(settings: Settings, academy_code: str, dry_run: bool = False,
             schools: list[str] | None = None,
             trigger: str = "airflow") -> tuple[Discovery, list[ReadGroup]]:
    """Open a run and discover its exports (the DAG's ``discover``): the run without its
    schools' documents, and the schools in groups of ``settings.read_group`` (one mapped
    read_validate each, labelled by the first school's UAI and name).

    Each try opens a run of its own: one that fails here is closed at once (nothing names it
    to the failure callback yet), a retry must not leave runs ``running``."""
    from etl.preflight import preflight
    from etl.report.page import school_name

    run_id = new_run_id(academy_code)
    try:
        start_run(settings, academy_code, dry_run, trigger=trigger, run_id=run_id)
        # before anything is read (a missing landing, a refused bind): the night fails in its
        # first second, recorded as failed for the ops team
        preflight(settings, academy_code)
        if not dry_run:
            require_adopted(settings, get_academy(academy_code))
        disc = wait_or_supersede(settings, academy_code, discover_files(
            settings, academy_code, run_id, schools or None), dry_run)
        found = [GroupSchool(uai=u, docs=d, name=school_name(d))
                 for u, d in disc.school_docs().items()]
        groups = read_groups(found, settings.read_group)
        tag = stream_tag(len(groups), dry_run, settings)
        groups = [msgspec.structs.replace(g, stream=tag(k)) for k, g in enumerate(groups)]
    except Exception as e:
        fail_run(settings, run_id, f"discover failed: {type(e).__name__}")
        raise
    return disc.without_schools(), groups


def read_groups(schools: Sequence[GroupSchool], size: int) -> list[ReadGroup]:
    """The schools in groups of ``size``: the first school's UAI and name label the group,
    ``more`` says there are others."""
    out = []
    for i in range(0, len(schools), size):
        part = list(schools[i:i + size])
        out.append(ReadGroup(uai=part[0].uai, name=part[0].name, schools=part,
                             more=len(part) > 1))
    return out


def close_run(settings: Settings, run: RunRef, discovered: Discovery,
              schools: Sequence[SchoolResult], reconciled: Reconciled | None,
              applied: Applied | None,
              streamed: Sequence[StreamedGroup | None] = ()) -> RunOutcome:
    """Write the run's summary and report (``finish_run``: the DAG's ``report``); a run that
    failed (the directory down, changes refused) raises with its one line. ``streamed``: the
    groups of a streamed night, planned and written (``plan_write_group``)."""
    from etl.errors import EntsyncError

    if any(p is not None for p in streamed):
        reconciled, applied = merged_night(streamed, reconciled, applied)
    s = finish_run(settings, run, discovered, schools, reconciled, applied)
    if s["status"] == RunStatus.FAILED:
        raise EntsyncError(s.get("error") or f"run {s['run_id']}: {s['failed']} changes failed")
    return RunOutcome(
        run_id=s["run_id"], status=RunStatus(s["status"]), changes=s["changes"],
        applied=s["applied"], report_dir=s["report_dir"],
        written=sorted(u for u, v in s["schools"].items()
                       if v.get("status") in WRITTEN_STATUSES
                       and any(v.get(k) for k in CATEGORIES)))


def review_request(run: RunRef, reconciled: Reconciled) -> ReviewRequest | None:
    """What a guard held tonight, in short (the CLI's and the night's view); None when
    nothing was held or in a dry run (no review)."""
    if run.dry_run or not reconciled.held:
        return None
    return ReviewRequest(run_id=run.run_id, uais=", ".join(sorted(reconciled.held)),
                         body=_approval_body(reconciled.held))


def approval_requests(run: RunRef, reconciled: Reconciled) -> list[ApprovalRequest]:
    """One approval request per school a guard held tonight (the night's ``held_plans``:
    each one the conf of an ``ent_approval__*`` DAG run, decided outside the night); none in
    a dry run."""
    if run.dry_run:
        return []
    return [ApprovalRequest(run_id=run.run_id, uai=uai, plan_hash=h.hash)
            for uai, h in sorted(reconciled.held.items())]


def _approval_body(held: Mapping[str, HeldPlan]) -> str:
    """Markdown: per school, counts per action, the guards that tripped, its plan and hash
    (opaque references only: no personal data)."""
    lines = ["Each school below tripped a disaster guard; its changes were **not** written.",
             "Approve applies exactly these plans (checked by hash); Reject discards them.", ""]
    for uai, h in sorted(held.items()):
        counts = ", ".join(f"{k} {v}" for k, v in h.counts.items() if v)
        lines.append(f"### {uai}: {counts or 'no change'}")
        for g in h.guards:
            lines.append(f"- guard **{g['guard']}**: {g['detail']} (limit {g['limit']})")
        lines.append(f"- plan `{h.plan}` sha256 `{h.hash[:16]}…`")
        lines.append("")
    return "\n".join(lines)


def approval_panel(settings: Settings, req: ApprovalRequest,
                   report_link: str | None = None) -> ApprovalPanel | None:
    """The approval DAG's ``panel``: what the approver reads (``etl.approve.panel``); None
    when the plan no longer awaits approval (decided from the CLI, or superseded)."""
    from etl.approve.panel import approval_panel as panel

    return panel(settings, req, report_link)


def decide_request(settings: Settings, req: ApprovalRequest, approve: bool,
                   by: str) -> dict[str, dict[str, Any]]:
    """The approval DAG's ``apply_decision``: apply exactly the plan shown (its hash) or
    discard it; the run's summary, report and status say who decided and when. A plan
    decided meanwhile (the CLI, or superseded by a newer export) is left as it is: its
    decision is returned, nothing applied."""
    from etl.store.models import Approval

    with session_factory(settings.state_url)() as s:
        a = s.scalars(select(Approval).where(
            Approval.run_id == req.run_id, Approval.uai == req.uai,
            Approval.plan_hash == req.plan_hash).order_by(Approval.id.desc())).first()
        state = None if a is None else (a.status, a.decided_by)
    if state is not None and state[0] != "pending":
        log.info("school %s of run %s: already %s by %s, nothing applied", req.uai,
                 req.run_id, state[0], state[1])
        return {req.uai: {"decision": state[0], "by": str(state[1]), "applied": 0}}
    res = decide(settings, req.run_id, approve, req.uai, by=by, expected_hash=req.plan_hash)
    out = {k: v for k, v in res["schools"][req.uai].items()
           if k in ("decision", "applied", "failed")}
    return {req.uai: {**out, "by": by}}


def decide_held(settings: Settings, run_id: str, held: Mapping[str, HeldPlan], approve: bool,
                by: str) -> dict[str, dict[str, Any]]:
    """One decision per held school, each checked against the plan hash the approver was
    shown: per school its decision, applied and failed counts."""
    out = {}
    for uai, h in sorted(held.items()):
        res = decide(settings, run_id, approve, uai, by=by, expected_hash=h.hash)
        out[uai] = {k: v for k, v in res["schools"][uai].items()
                    if k in ("decision", "applied", "failed")}
    return out


def purge_academy(settings: Settings, academy_code: str) -> dict[str, Any]:
    """The lifecycle DAG's daily task: accounts disabled past their retention deleted
    (``purge_expired``), then old runs' staging (``purge_staging``) and quarantine folders
    (``purge_quarantine``) removed."""
    from etl.discover.quarantine import purge_quarantine
    from etl.ops.retention import purge_expired, purge_staging

    return {**purge_expired(settings, academy_code),
            "staging": purge_staging(settings, academy_code),
            "quarantine": purge_quarantine(settings, academy_code)}


def last_runs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent runs, newest first."""
    with session_factory(settings.state_url)() as s:
        rows = s.scalars(select(Run).order_by(Run.started_at.desc()).limit(limit))
        return [{"run_id": r.id, "academy": r.academy, "status": r.status,
                 "started_at": r.started_at.isoformat()} for r in rows]
