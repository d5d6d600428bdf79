"""Tonight's exports of an academy: what the landing zone holds, checked and recorded."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from etl.config import Settings, get_academy
from etl.contracts import Discovery
from etl.discover.aaf import KIND as AAF_KIND
from etl.discover.aaf import AafNight, prepare_night
from etl.discover.landing import Discovered, discover
from etl.errors import FileChanged
from etl.read.canonical import Tables
from etl.report import metrics
from etl.store import locks
from etl.store.db import session_factory
from etl.store.models import (
    Run,
    SchoolState,
    SourceFile,
)

log = logging.getLogger(__name__)


KIND_ORDER = ("STRUCTURES", "NOMENCLATURES", "ELEVES", "RESPONSABLES", "STS")



def discover_files(settings: Settings, academy_code: str, run_id: str,
                   schools: list[str] | None = None,
                   today: dt.date | None = None) -> Discovery:
    """Find tonight's documents, register them, choose one per school and kind (see
    ``_discover_files``; ``today``: the run's day when not today, the end of which is "now"
    for export dates); the stage's numbers go to the run's metrics."""
    metrics.stage_start()
    t0 = time.monotonic()
    out = Discovery.from_json(_discover_files(settings, academy_code, run_id, schools, today))
    docs = out.school_docs()
    metrics.record(settings, run_id, academy_code, "discover", {
        "duration_s": time.monotonic() - t0,
        "schools": len(docs),
        "files": sum(len(d) for d in docs.values()),
        "files_rejected": len(out.rejected),
        "schools_held": len(out.held),
        "schools_already_applied": len(out.already_applied),
    })
    return out


#: a file whose held plan an operator rejected (``decide``): never proposed again
OPERATOR_REJECTED = "operator_rejected"


def _future_limit(settings: Settings, academy_tz: str,
                  today: dt.date | None = None) -> dt.datetime:
    """The latest credible export date: now where the academy is (exports carry local
    times; the end of ``today`` when the run is given a later day), plus the clock
    tolerance."""
    from zoneinfo import ZoneInfo

    now = dt.datetime.now(ZoneInfo(academy_tz)).replace(tzinfo=None)
    if today is not None:
        now = max(now, dt.datetime.combine(today, dt.time(23, 59, 59)))
    return now + dt.timedelta(minutes=settings.export_future_tolerance_minutes)


def _in_future(export_date: str | None, limit: dt.datetime) -> bool:
    if not export_date:
        return False
    try:
        return dt.datetime.fromisoformat(export_date) > limit
    except ValueError:
        return False


def _discover_files(settings: Settings, academy_code: str, run_id: str,
                    schools: list[str] | None = None,
                    today_: dt.date | None = None) -> dict[str, Any]:
    """Find tonight's documents, register them, choose one per school and kind.

    A school is kept when at least one chosen document was not applied before. An export
    older than the last one applied for that school and kind holds the school: it is read
    and planned, and its plan waits for approval (``_reconcile``, guard ``older_export``).
    An export dated later than now (past ``export_future_tolerance_minutes``) is refused:
    its school is read only to quarantine it, nothing of that school is applied; such a date
    already applied (by an older version) is no reference. A file whose held plan an operator
    rejected is not proposed again.
    """
    academy = get_academy(academy_code)
    locks.heartbeat(settings, academy_code, run_id)
    today = dt.date.today().isoformat()
    found = discover(settings.landing, academy)
    limit = _future_limit(settings, academy.timezone, today_)
    with session_factory(settings.state_url)() as s:
        run = s.get(Run, run_id)
        dry_run = bool(run is not None and run.dry_run)
    wanted = {u.upper() for u in schools} if schools else None
    by_school: dict[str, dict[str, list[Discovered]]] = defaultdict(lambda: defaultdict(list))
    future: dict[str, list[Discovered]] = defaultdict(list)
    rejected: list[dict[str, Any]] = []
    Session = session_factory(settings.state_url)
    with Session() as s, s.begin():
        refused = {(u, k, sha): rid for u, k, sha, rid in s.execute(
            select(SourceFile.uai, SourceFile.kind, SourceFile.sha256, SourceFile.run_id)
            .where(SourceFile.academy == academy_code,
                   SourceFile.status == OPERATOR_REJECTED))}
        aaf_found: list[Discovered] = []
        for d in found:
            if d.kind == AAF_KIND:  # the academy's feed: no school of its own (below)
                aaf_found.append(d)
                continue
            if wanted is not None and d.uai not in wanted:
                continue
            if (d.status != "rejected" and d.uai is not None and d.kind is not None
                    and _in_future(d.export_date, limit)):
                d.status, d.extra["rule"] = "rejected", "future_export"
                d.reason = (f"export dated {d.export_date}, in the future (now plus "
                            f"{settings.export_future_tolerance_minutes} minutes of clock "
                            f"tolerance: {limit.isoformat(timespec='minutes')} "
                            f"{academy.timezone}): refused, nothing of this school is "
                            "applied this run")
                future[d.uai].append(d)
                log.warning("refused %s: %s", d.name, d.reason)
                continue
            if (d.uai, d.kind, d.sha256) in refused:
                d.status = "rejected"
                d.reason = ("held as older than the applied export and rejected by an operator "
                            f"(run {refused[(d.uai, d.kind, d.sha256)]}): not proposed again")
            if d.status == "rejected" or d.uai is None or d.kind is None:
                rejected.append({"file": d.name, "uai": d.uai, "reason": d.reason})
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=d.uai, kind=d.kind,
                                 sha256=d.sha256, content_sha256=d.content_sha256,
                                 path=d.path, member=d.member,
                                 school_year=d.school_year, export_date=d.export_date,
                                 status="rejected", reason=d.reason))
                log.warning("rejected %s: %s", d.name, d.reason)
                continue
            by_school[d.uai][d.kind].append(d)
        night = prepare_night(settings, academy, run_id, aaf_found, s, today_, dry_run, wanted)
        _record_aaf_files(s, academy_code, run_id, aaf_found, night, rejected)
        ignored = _choose_sources(s, academy, run_id, by_school, night)
        out: dict[str, list[dict[str, Any]]] = {}
        held: dict[str, str] = {}
        for uai in sorted(set(by_school) | set(future)):
            chosen: list[Discovered] = []
            for kind in KIND_ORDER:
                docs = sorted(by_school[uai].get(kind, []),
                              key=lambda d: (d.export_date or "", d.name))
                if not docs:
                    continue
                best = docs[-1]
                for older in docs[:-1]:
                    s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai, kind=kind,
                                     sha256=older.sha256, path=older.path, member=older.member,
                                     content_sha256=older.content_sha256,
                                     school_year=older.school_year,
                                     export_date=older.export_date, status="superseded",
                                     reason=f"a newer {kind} export is present: {best.name}"))
                chosen.append(best)
            rows = s.execute(
                select(SourceFile.kind, SourceFile.sha256, SourceFile.content_sha256,
                       SourceFile.export_date)
                .where(SourceFile.academy == academy_code, SourceFile.uai == uai,
                       SourceFile.status == "applied").order_by(SourceFile.id)).all()
            # what the directory holds is the LAST document applied per kind: the same file
            # again, or the same records in a new export (only its header's dates moved), is
            # nothing to read; an older content coming back is (the directory moved on)
            last = {k: (sha, c) for k, sha, c, _e in rows}
            applied = {(k, x) for k, pair in last.items() for x in pair if x}
            # the reference date per kind: that of the last export applied (an older one
            # approved by an operator included); a date in the future is none
            newest_applied: dict[str, str] = {}
            for k, _sha, _c, exp in rows:
                if k and exp and not _in_future(exp, limit):
                    newest_applied[k] = exp
            st = s.get(SchoolState, (academy_code, uai))
            if st is not None and st.reread_on and st.reread_on <= today:
                # a pupil's leaving date has come since the school was last read: read again
                fresh = list(chosen)
            else:
                fresh = [d for d in chosen if (d.kind, d.sha256) not in applied
                         and (d.kind, d.content_sha256) not in applied]
            stale = [] if future[uai] else [
                d for d in chosen if d.export_date
                and d.export_date < newest_applied.get(d.kind or "", "")]
            stale_ids = {id(d) for d in stale}
            status = "discovered"
            if stale:
                reason = "; ".join(
                    f"{d.name}: export of {d.export_date} is older than the {d.kind} export "
                    f"of {newest_applied[d.kind or '']} already applied" for d in stale)
                held[uai] = reason
                status = "held"
                log.warning("school %s held: %s", uai, reason)
            elif not fresh and not future[uai]:
                status = "skipped_applied"
            for d in chosen:
                # a new export of the content the directory holds is applied as it stands:
                # its export date becomes the school's reference (not in a dry run)
                same = (status == "skipped_applied" and not dry_run
                        and (d.kind, d.sha256) not in applied)
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai, kind=d.kind,
                                 sha256=d.sha256, content_sha256=d.content_sha256,
                                 path=d.path, member=d.member,
                                 school_year=d.school_year, export_date=d.export_date,
                                 status="applied" if same else "held" if id(d) in stale_ids
                                 else "discovered" if status == "held" else status,
                                 reason="same content as the last applied export" if same
                                 else held[uai] if id(d) in stale_ids else None))
            for d in future[uai]:
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai, kind=d.kind,
                                 sha256=d.sha256, content_sha256=d.content_sha256,
                                 path=d.path, member=d.member,
                                 school_year=d.school_year, export_date=d.export_date,
                                 status="rejected", reason=d.reason))
            if status in ("discovered", "held"):
                # a held school is read and planned: its plan waits for approval
                out[uai] = [d.as_dict() for d in [*chosen, *future[uai]]]
        for uai, doc in night.schools.items():
            out[uai] = [doc]
            s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai, kind=AAF_KIND,
                             sha256=doc["sha256"], content_sha256=doc["content_sha256"],
                             path=doc["path"], member=doc["member"],
                             export_date=doc["export_date"], status="discovered",
                             reason="; ".join(doc["extra"]["aaf"]["documents"])))
    unchanged = sorted((set(by_school) | (night.unchanged if aaf_found else set()))
                       - set(out) - set(held))
    return {"run_id": run_id, "schools": out, "rejected": rejected, "held": held,
            "already_applied": unchanged, "ignored_sources": ignored,
            **({"aaf": night.summary()} if aaf_found or night.schools else {})}


def _record_aaf_files(s: Any, academy_code: str, run_id: str, found: list[Discovered],
                      night: AafNight, rejected: list[dict[str, Any]]) -> None:
    """Tonight's AAF parts in ``source_files`` (no school: the feed is the academy's): read,
    ignored (why), refused or quarantined; refused ones in the run's rejected files."""
    why = {f["file"]: f for f in night.files}
    for d in found:
        f = why.get(d.source.short_name)
        status = ("quarantined" if f and f.get("quarantined") else "rejected"
                  if d.status == "rejected" else "ignored" if f else "discovered")
        reason = f["reason"] if f else d.reason
        if d.status == "rejected":
            rejected.append({"file": d.name, "uai": None, "reason": reason})
        s.add(SourceFile(run_id=run_id, academy=academy_code, uai=None, kind=AAF_KIND,
                         sha256=d.sha256, content_sha256=d.content_sha256, path=d.path,
                         member=d.member, export_date=d.export_date, status=status,
                         reason=reason))


def _choose_sources(s: Any, academy: Any, run_id: str,
                    by_school: dict[str, dict[str, list[Discovered]]],
                    night: AafNight) -> dict[str, str]:
    """A school both its own exports and the AAF feed tonight is read from one only: the
    authoritative source (``Academy.source_for``, ``academies.toml``); the other is left
    aside, never merged field by field, and reported (UAI -> why) when it brought something
    new (exports not applied before, or AAF documents new to the school)."""
    out: dict[str, str] = {}
    for uai in sorted(set(by_school) & (night.fed | set(night.schools))):
        docs = [d for kind in by_school[uai].values() for d in kind]
        if not docs:
            continue
        if academy.source_for(uai) == "aaf":
            applied = {sha for (sha,) in s.execute(select(SourceFile.sha256).where(
                SourceFile.academy == academy.code, SourceFile.uai == uai,
                SourceFile.status == "applied"))}
            reason = ("its own SIECLE/STS-web exports were left aside: the AAF is its source "
                      "(academies.toml)")
            for d in docs:
                s.add(SourceFile(run_id=run_id, academy=academy.code, uai=uai, kind=d.kind,
                                 sha256=d.sha256, content_sha256=d.content_sha256,
                                 path=d.path, member=d.member, school_year=d.school_year,
                                 export_date=d.export_date, status="ignored", reason=reason))
            if any(d.sha256 not in applied for d in docs):
                out[uai] = reason + ": " + ", ".join(sorted(d.name for d in docs))
                log.warning("school %s: %s", uai, out[uai])
            del by_school[uai]
        elif uai in night.schools:
            doc = night.schools.pop(uai)
            out[uai] = ("the AAF's records of this school were left aside ("
                        + ", ".join(doc["extra"]["aaf"]["documents"])
                        + "): its own SIECLE/STS-web exports are its source (academies.toml)")
            log.warning("school %s: %s", uai, out[uai])
    return out


def _quarantine(settings: Settings, academy: str, run_id: str, doc: dict[str, Any],
                reason: str, dry_run: bool, rule: str = "file_rejected",
                line: int | None = None) -> dict[str, Any]:
    """Keep a bad file whole in the quarantine, its reason beside it, under its school
    (``etl.discover.quarantine.keep``); the summary's entry (``moved_to``: where it is kept)."""
    from etl.discover.quarantine import keep

    return keep(settings, academy, run_id, doc, reason, rule=rule, line=line, dry_run=dry_run)


def _file_changed(settings: Settings, academy_code: str, run_id: str, uai: str,
                  docs: list[dict[str, Any]], e: FileChanged) -> dict[str, Any]:
    """A school one of whose files changed since discovery: left untouched this run, the
    file not quarantined (the next run discovers it again)."""
    log.warning("school %s left untouched this run: %s", uai, e)
    with session_factory(settings.state_url)() as s, s.begin():
        for x in docs:
            if Discovered(**x).name == e.file:
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai, kind=x["kind"],
                                 sha256=x["sha256"], content_sha256=x.get("content_sha256"),
                                 path=x["path"], member=x["member"],
                                 school_year=x.get("school_year"),
                                 export_date=x.get("export_date"), status="changed",
                                 reason=e.reason))
    return {"uai": uai, "status": "file_changed", "reason": str(e), "staged": None,
            "school_year": None, "counts": Tables().counts(), "rejected": 0,
            "quarantined": [], "report": None, "report_json": None,
            "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                      "content_sha256": x.get("content_sha256"), "kind": x["kind"]}
                     for x in docs]}
