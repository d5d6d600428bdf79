"""The sync's stages, shared by the CLI (``entsync sync``) and the Airflow DAGs.

Each stage takes and returns small JSON-able values (paths, ids, counts) so Airflow's XCom
carries nothing else; the data itself goes through the staging folder and the state DB.

discover -> read_validate_schools (per group of schools) -> reconcile -> apply -> finish
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select

from etl import metrics, staging
from etl.canonical import Tables
from etl.config import Settings, get_academy
from etl.errors import ConfigError, EntsyncError, FileChanged, FileRejected, RunLocked
from etl.landing import Discovered, discover
from etl.state.db import session_factory
from etl.state.models import (
    AcademyLock,
    Account,
    Approval,
    Entry,
    JournalEntry,
    Rejection,
    Run,
    SchoolState,
    SourceFile,
    table,
    utcnow,
)

log = logging.getLogger(__name__)

KIND_ORDER = ("STRUCTURES", "NOMENCLATURES", "ELEVES", "RESPONSABLES", "STS")


def new_run_id(academy: str) -> str:
    return f"{academy}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def start_run(settings: Settings, academy_code: str, dry_run: bool = False,
              trigger: str = "cli", run_id: str | None = None) -> str:
    """Open a run in the state DB (this process its holder, heartbeating: ``etl.locks``) and
    return its id. A run the academy's lock refuses is closed ``refused``."""
    from etl import locks

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
    across Airflow workers), held by this process (``etl.locks.acquire``: a lock whose run
    ended or whose holder is dead is taken over at once)."""
    from etl import locks

    locks.acquire(settings, academy_code, run_id)


def heartbeat(settings: Settings, academy_code: str, run_id: str) -> None:
    """Refresh the run's lock and keep beating from this process (``etl.locks.heartbeat``)."""
    from etl import locks

    locks.heartbeat(settings, academy_code, run_id)


def release_lock(settings: Settings, academy_code: str, run_id: str) -> None:
    from etl import locks

    locks.release(settings, academy_code, run_id)


def discover_files(settings: Settings, academy_code: str, run_id: str,
                   schools: list[str] | None = None,
                   today: dt.date | None = None) -> dict[str, Any]:
    """Find tonight's documents, register them, choose one per school and kind (see
    ``_discover_files``; ``today``: the run's day when not today, the end of which is "now"
    for export dates); the stage's numbers go to the run's metrics."""
    metrics.stage_start()
    t0 = time.monotonic()
    out = _discover_files(settings, academy_code, run_id, schools, today)
    metrics.record(settings, run_id, academy_code, "discover", {
        "duration_s": time.monotonic() - t0,
        "schools": len(out["schools"]),
        "files": sum(len(d) for d in out["schools"].values()),
        "files_rejected": len(out["rejected"]),
        "schools_held": len(out["held"]),
        "schools_already_applied": len(out["already_applied"]),
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
    heartbeat(settings, academy_code, run_id)
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
        for d in found:
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
    unchanged = sorted(set(by_school) - set(out) - set(held))
    return {"run_id": run_id, "schools": out, "rejected": rejected, "held": held,
            "already_applied": unchanged}


def _quarantine(settings: Settings, academy: str, run_id: str, doc: dict[str, Any],
                reason: str, dry_run: bool, rule: str = "file_rejected",
                line: int | None = None) -> dict[str, Any]:
    """Keep a bad file whole in the quarantine, its reason beside it, under its school
    (``etl.quarantine.keep``); the summary's entry (``moved_to``: where it is kept)."""
    from etl.quarantine import keep

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


def read_validate_school(settings: Settings, academy_code: str, run_id: str, uai: str,
                         docs: list[dict[str, Any]], dry_run: bool = False) -> dict[str, Any]:
    """Read, normalize and validate one school's documents; stage the tables
    (``read_validate_schools`` for one school)."""
    return read_validate_schools(settings, academy_code, run_id, {uai: docs}, dry_run)[0]


def read_validate_schools(settings: Settings, academy_code: str, run_id: str,
                          schools: dict[str, list[dict[str, Any]]], dry_run: bool = False,
                          group: int | None = None) -> list[dict[str, Any]]:
    """Read, normalize, validate and stage schools (``_read_validate_schools``), as CPU-bound
    work (``cpu_bound``)."""
    return cpu_bound(settings, _read_validate_schools, settings, academy_code, run_id, schools,
                     dry_run, group, slot=_goes_first(settings, academy_code, dry_run))


def _read_validate_schools(settings: Settings, academy_code: str, run_id: str,
                           schools: dict[str, list[dict[str, Any]]], dry_run: bool = False,
                           group: int | None = None) -> list[dict[str, Any]]:
    """Read, normalize and validate schools' documents and stage their tables (the CLI; in
    the DAG, each mapped task's group), ``group`` schools at a time (default
    ``settings.read_group``): each is read, then their GX column rules run once per table
    for the group (``etl.validate.run_suites``: GX's fixed cost per school was most of the
    read stage), then each is validated and staged. Each school gets the results it gets
    read alone.

    A document that cannot be read, or fails a blocking check, is quarantined whole and its
    school is left untouched this run (status ``quarantined``). An unexpected error in one
    school leaves that school untouched (status ``error``, the error type only in the log: an
    exception's text may quote a record) and lets the others go on; the run then ends
    ``failed`` so that someone looks at it. Should the group's GX run crash, each school
    runs its own."""
    from etl.validate import run_suites

    out: list[dict[str, Any]] = []
    items = list(schools.items())
    group = group or settings.read_group
    for i in range(0, len(items), group):
        metrics.stage_start()
        done: dict[str, dict[str, Any]] = {}
        reads: list[_SchoolRead] = []
        spent: dict[str, float] = {}
        for uai, docs in items[i:i + group]:
            heartbeat(settings, academy_code, run_id)
            t0 = time.monotonic()
            try:
                r = _read_school(settings, academy_code, run_id, uai, docs, dry_run)
            except Exception as e:  # noqa: BLE001 - one school's crash must not stop the others
                log.error("school %s could not be read: %s", uai, type(e).__name__)
                r = _school_error(uai, e, docs)
            spent[uai] = time.monotonic() - t0
            if isinstance(r, dict):
                done[uai] = r
            else:
                reads.append(r)
        t0 = time.monotonic()
        try:
            suites: list[dict[str, Any] | None] = list(run_suites([r.tables for r in reads]))
        except Exception as e:  # noqa: BLE001 - each school then runs (and fails) alone
            log.warning("GX rules of %d schools together failed (%s): school by school",
                        len(reads), type(e).__name__)
            suites = [None] * len(reads)
        for r in reads:
            spent[r.uai] += (time.monotonic() - t0) / len(reads)
        for r, res in zip(reads, suites, strict=True):
            t0 = time.monotonic()
            try:
                done[r.uai] = _validate_read(settings, academy_code, run_id, r, dry_run, res)
            except Exception as e:  # noqa: BLE001 - one school's crash must not stop the others
                log.error("school %s could not be read: %s", r.uai, type(e).__name__)
                done[r.uai] = _school_error(r.uai, e, r.docs)
            spent[r.uai] += time.monotonic() - t0
        peak = metrics.stage_peak()
        for uai, _docs in items[i:i + group]:
            _record_read(settings, academy_code, run_id, done[uai], spent[uai], peak)
            out.append(done[uai])
    return out


def _record_read(settings: Settings, academy_code: str, run_id: str, out: dict[str, Any],
                 seconds: float, peak_mib: float | None = None) -> None:
    """A school's ``read_validate`` metrics (``peak_mib``: its group's peak, when read with
    others)."""
    metrics.record(settings, run_id, academy_code, "read_validate", {
        "duration_s": seconds,
        "records_read": out.get("records_read", 0),
        "records_rejected": out.get("rejected", 0),
        "files_quarantined": len(out.get("quarantined") or []),
        "persons": (out.get("counts") or {}).get("persons", 0),
        f"status.{out['status']}": 1,
        **({"peak_rss_mib": round(min(peak_mib, metrics.peak_rss_mib()), 1)}
           if peak_mib is not None else {}),
    }, uai=out["uai"])


def _school_error(uai: str, e: Exception, docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"uai": uai, "status": "error", "error": f"{type(e).__name__}: {e}"[:1000],
            "staged": None, "school_year": None, "counts": {}, "rejected": 0,
            "quarantined": [], "report": None, "report_json": None,
            "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                      "content_sha256": x.get("content_sha256"), "kind": x["kind"]}
                     for x in docs]}


@dataclass
class _SchoolRead:
    """One school's documents read and normalized, its validation still to do."""

    uai: str
    docs: list[dict[str, Any]]
    tables: Tables
    rejected: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    file_records: dict[str, int]
    protected: set[str]
    year: int | None
    fingerprint: str | None
    #: what the readers rejected and noticed, for the school's report (``validate_school``)
    read_rejected: list[Any] | None = None
    warnings: list[Any] | None = None
    #: the school's files refused at discovery: {"file", "reason", "kind"} (kind when it is
    #: one the school sent nothing else of tonight)
    refused: list[dict[str, Any]] | None = None


def _read_school(settings: Settings, academy_code: str, run_id: str, uai: str,
                 docs: list[dict[str, Any]],
                 dry_run: bool = False) -> _SchoolRead | dict[str, Any]:
    """Read and normalize a school's documents (unreadable ones quarantined); its result
    when its content is the same as last applied (status ``unchanged``: not validated)."""
    from etl.normalize import normalize_tables
    from etl.quarantine import kept_earlier
    from etl.readers import read_document

    academy = get_academy(academy_code)
    parts: list[Tables] = []
    rejected: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    file_records: dict[str, int] = {}
    protected: set[str] = set()  # people whose record was rejected: skipped, not absent
    year: int | None = None
    read_rejected: list[Any] = []
    warnings: list[Any] = []
    for raw in docs:
        d = Discovered(**raw)
        if d.status == "rejected":  # refused by discovery (an export dated in the future)
            q = _quarantine(settings, academy_code, run_id, raw, d.reason or "refused",
                            dry_run, rule=str(d.extra.get("rule") or "refused"))
            quarantined.append({**q, "file": d.name, "short_name": d.source.short_name,
                                "report_reason": d.reason or "refused"})
            log.error("quarantined %s (school %s): %s", d.name, uai, d.reason)
            continue
        try:
            res = read_document(d, check=True)
        except FileChanged as e:
            earlier = None if dry_run else kept_earlier(settings, academy_code, run_id, raw)
            if earlier is None:
                return _file_changed(settings, academy_code, run_id, uai, docs, e)
            quarantined.append({**earlier, "file": d.name})  # an earlier attempt's
            continue
        except FileRejected as e:
            q = _quarantine(settings, academy_code, run_id, raw, e.reason, dry_run,
                            line=e.line)
            quarantined.append({**q, "file": d.name, "reason": str(e),
                                "short_name": d.source.short_name,
                                "report_reason": (f"line {e.line}: " if e.line else "")
                                + e.reason})
            log.error("quarantined %s (school %s): %s", d.name, uai, e.reason)
            continue
        parts.append(res.tables)
        read_rejected.extend(res.rejected)
        warnings.extend(res.warnings)
        rejected.extend(r.as_dict() for r in res.rejected)
        protected.update(f"{academy.jointure_prefix}${r.source_key}" for r in res.rejected
                         if r.source_key)
        file_records[d.source.short_name] = res.records
        year = year or d.school_year
    tables = normalize_tables(Tables.concat(parts), academy.jointure_prefix, warnings)
    kinds = sorted({str(x["kind"]) for x in docs})
    refused = _refused_files(settings, run_id, uai, set(kinds))
    missing = quarantined or any(r["kind"] for r in refused)
    fingerprint = tables_fingerprint(tables, kinds) if not missing else None
    tables["schools"] = _school_row(academy_code, uai, year, docs)  # not in the fingerprint
    if fingerprint and not rejected and fingerprint == _last_fingerprint(settings,
                                                                        academy_code, uai):
        log.info("school %s: same content as the last applied exports, nothing to do", uai)
        return {"uai": uai, "status": "unchanged", "staged": None, "school_year": year,
                "records_read": sum(file_records.values()),
                "counts": tables.counts(), "rejected": 0, "quarantined": [], "report": None,
                "report_json": None, "fingerprint": fingerprint,
                "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                          "content_sha256": x.get("content_sha256"), "kind": x["kind"]}
                         for x in docs]}
    return _SchoolRead(uai, docs, tables, rejected, quarantined, file_records, protected, year,
                       fingerprint, read_rejected, warnings, refused)


def _refused_files(settings: Settings, run_id: str, uai: str,
                   kinds: set[str]) -> list[dict[str, Any]]:
    """The school's files refused at discovery tonight (a DOCTYPE, a wrong encoding...),
    for its report, with the kind discovery sniffed from their head (``sniff_header``) when
    the school sent nothing else of that kind tonight: such a refused export is that school's
    one problem (``unread``)."""
    from etl.xmlsafe import XmlSource

    with session_factory(settings.state_url)() as s:
        rows = s.execute(select(SourceFile.path, SourceFile.member, SourceFile.reason,
                                SourceFile.kind)
                         .where(SourceFile.run_id == run_id, SourceFile.uai == uai,
                                SourceFile.status == "rejected")).all()
    return [{"file": XmlSource(Path(path), member).short_name,
             "reason": str(reason or "refused"),
             "kind": kind if kind and kind not in kinds else None}
            for path, member, reason, kind in rows]


def _school_row(academy_code: str, uai: str, year: int | None,
                docs: list[dict[str, Any]]) -> Any:
    """The school's row of the ``schools`` table: one per school read (what ``counts``
    reports; the exports carry no name)."""
    import pandas as pd

    from etl.canonical import SCHOOLS, string_dtype

    sources = sorted({"STS" if x.get("kind") == "STS" else "SIECLE" for x in docs})
    files = sorted(Discovered(**x).source.short_name for x in docs)
    row = {"uai": uai, "academy": academy_code, "name": None,
           "school_year": None if year is None else str(year),
           "source": "|".join(sources) or None, "file": "|".join(files) or None}
    return pd.DataFrame({c: pd.Series([row[c]], dtype=string_dtype()) for c in SCHOOLS})


def _validate_read(settings: Settings, academy_code: str, run_id: str, read: _SchoolRead,
                   dry_run: bool = False,
                   suite_results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a school read by ``_read_school``, quarantine what must be, write its
    reports and stage its tables. ``suite_results``: its GX results, when computed with other
    schools' (``etl.validate.run_suites``)."""
    from etl.feedback import write_school_feedback
    from etl.validate import validate_school, write_validation_report

    academy = get_academy(academy_code)
    uai, docs, tables, rejected = read.uai, read.docs, read.tables, read.rejected
    quarantined, file_records, protected = read.quarantined, read.file_records, read.protected
    year, fingerprint = read.year, read.fingerprint
    # what the readers rejected goes into the school's report and counts against the budget
    # (``validate_school``); an export that could not be read excuses what points into it
    outcome = validate_school(tables, uai, budget=academy.record_error_budget,
                              budget_min=academy.record_error_budget_min,
                              file_records=file_records, suite_results=suite_results,
                              read_rejected=read.read_rejected or [], rejected_keys=protected,
                              unread={str(q.get("kind")) for q in quarantined}
                              | {str(r["kind"]) for r in read.refused or [] if r["kind"]},
                              warnings=read.warnings or [])
    rejected = [r.as_dict() for r in outcome.rejected]
    kept = set(outcome.tables["persons"]["person_key"])
    dropped = set(tables["persons"]["person_key"]) - kept
    protected |= dropped
    links = tables["guardian_links"]
    if not links.empty:  # their guardians are not absent either
        protected |= set(links[links["pupil_key"].isin(protected)]["guardian_key"])
    for fname, reason in outcome.quarantine.items():
        match = [x for x in docs if Discovered(**x).source.short_name == fname]
        for raw in match[:1]:
            q = _quarantine(settings, academy_code, run_id, raw, reason, dry_run,
                            rule="validation")
            quarantined.append({**q, "file": fname})
    for q in quarantined:  # the files that could not be read are the school's problem too
        if "short_name" in q:
            outcome.quarantine.setdefault(q.pop("short_name"), q.pop("report_reason"))
    for r in read.refused or []:
        outcome.quarantine.setdefault(r["file"], f"refused on arrival: {r['reason']}")
    # a kind of export refused with no other tonight leaves the school as it is, as one that
    # could not be read does
    unread_refused = any(r["kind"] for r in read.refused or [])
    reports = settings.reports_dir / run_id / "schools"
    html_path, json_path = write_validation_report(outcome, reports / uai)
    feedback_path = write_school_feedback(json_path, reports / uai, None)
    status = "quarantined" if quarantined or unread_refused else "ok"
    staged = f"{run_id}/{uai}"  # a reference in the staging area, for reconcile
    if status == "ok":
        outcome.tables.save(staging.path(settings, staged))
    for local in (html_path, json_path, feedback_path):  # a copy any worker can read
        staging.copy_in(settings, local, f"{run_id}/reports/schools/{uai}/{Path(local).name}")
    with session_factory(settings.state_url)() as s, s.begin():
        for r in rejected:
            s.add(Rejection(run_id=run_id, file=str(r["file"]), uai=r.get("uai") or uai,
                            line=r.get("line"), element=str(r["element"]), rule=str(r["rule"]),
                            message=str(r["message"])))
    counts = outcome.tables.counts()
    log.info("school %s: %s, %d persons, %d rejected records, %d quarantined files", uai,
             status, counts["persons"], len(rejected), len(quarantined))
    return {"uai": uai, "status": status, "staged": staged if status == "ok" else None,
            "school_year": year, "records_read": sum(file_records.values()),
            "counts": counts, "rejected": len(rejected),
            "quarantined": quarantined, "report": str(html_path), "report_json": str(json_path),
            "feedback": str(feedback_path), "fingerprint": fingerprint,
            "reread_on": _reread_on(outcome.tables), "protected": sorted(protected),
            "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                      "content_sha256": x.get("content_sha256"), "kind": x["kind"]}
                     for x in docs]}


def _reread_on(tables: Tables) -> str | None:
    """The earliest leaving date still ahead (ISO): the day the same exports mean something
    else (that pupil has left), so discovery reads them again even if their content did not
    change."""
    leave = tables["persons"]["leave_date"].astype("string")
    ahead = leave[(leave > dt.date.today().isoformat()).fillna(False)]
    return None if ahead.empty else str(ahead.min())


def tables_fingerprint(tables: Tables, kinds: list[str]) -> str:
    """A content hash of a school's normalized tables, blind to row order and to where the
    rows came from (file names, line numbers, export dates)."""
    import pandas as pd

    h = hashlib.sha256("|".join(kinds).encode())
    for name in sorted(tables.frames):
        df = tables[name]
        cols = [c for c in df.columns if c not in ("file", "line")]
        h.update(f"{name}:{len(df)}:".encode())
        if len(df):
            rows = pd.util.hash_pandas_object(df[cols].astype("string"), index=False)
            h.update(str(int(rows.sum()) % (1 << 64)).encode())
            h.update(str(int((rows * 31 + 7).sum()) % (1 << 64)).encode())
    return h.hexdigest()


def _last_fingerprint(settings: Settings, academy: str, uai: str) -> str | None:
    with session_factory(settings.state_url)() as s:
        st = s.get(SchoolState, (academy, uai))
        return st.fingerprint if st is not None else None


def _plan_against_state(s: Any, targets: dict[str, Any]) -> list[Any]:
    """``plan_changes`` against what the state DB says was written, read hash first: the
    content hash of every target DN, then the stored attributes of only the DNs whose hash
    differs, a batch at a time (an unchanged entry costs no attributes in memory; loading them
    all was the delta night's peak)."""
    from etl.plan import plan_changes_lazy

    def hashes_of(dns: list[str]) -> dict[str, str]:
        return dict(s.execute(select(Entry.dn, Entry.content_hash)
                              .where(Entry.dn.in_(dns))).all())

    def attrs_of(dns: list[str]) -> dict[str, dict[str, list[str]]]:
        return dict(s.execute(select(Entry.dn, Entry.attrs)
                              .where(Entry.dn.in_(dns))).all())

    return plan_changes_lazy(targets, hashes_of, attrs_of, batch=500)


def _school_counts(tables: Tables) -> dict[str, dict[str, int]]:
    """Persons read tonight per school and profile (pupils who left not counted)."""
    p = tables["persons"]
    if p.empty:
        return {}
    p = p[~p["has_left"].fillna(False).astype(bool)]
    out: dict[str, dict[str, int]] = defaultdict(dict)
    sizes = p.groupby(["uai", "profile"]).size()
    for key, n in sizes.items():
        pair: tuple[Any, Any] = key  # type: ignore[assignment]
        out[str(pair[0])][str(pair[1])] = int(n)
    return dict(out)


def _write_plan(settings: Settings, ref: str, header: dict[str, Any],
                changes: list[Any]) -> str:
    """Write a plan file (``etl.plan.plan_lines``: a header line, then one change a line,
    in apply order) into the staging area, as a stream; returns the sha256 of exactly the
    bytes written."""
    from etl.plan import plan_lines

    return staging.write_chunks(settings, ref, plan_lines(header, changes))


def _plan_file_lines(settings: Settings, ref: str) -> Iterator[bytes]:
    """A staged plan file's lines, read as they are consumed (the file closes at the end)."""
    with staging.path(settings, ref).open("rb") as f:
        yield from f


def read_plan_file(settings: Settings, ref: str) -> tuple[dict[str, Any], Iterator[Any]]:
    """A staged plan: its header and an iterator of its changes (``etl.plan.Change``), read
    line by line in apply order."""
    from etl.plan import read_plan

    return read_plan(_plan_file_lines(settings, ref))


def reconcile(settings: Settings, academy_code: str, run_id: str,
              schools: list[dict[str, Any]], dry_run: bool = False, mode: str | None = None,
              today: dt.date | None = None) -> dict[str, Any]:
    """Identities, desired state, absences, the plan and the guards (``_reconcile``); the
    stage's numbers (changes by kind and operation) go to the run's metrics."""
    metrics.stage_start()
    t0 = time.monotonic()
    out = cpu_bound(settings, _reconcile, settings, academy_code, run_id, schools, dry_run, mode,
                    today, slot=_goes_first(settings, academy_code, dry_run))
    metrics.record(settings, run_id, academy_code, "reconcile", {
        "duration_s": time.monotonic() - t0,
        "changes": out["changes"],
        "schools_held": len(out["held"]),
        "changes_held": sum(sum(h["counts"].get(k, 0) for k in CATEGORIES)
                            for h in out["held"].values()),
        "absent": out["absent"],
        "new_identities": out["new_identities"],
        **{f"changes.{k}": v for k, v in sorted(out["by_kind_op"].items())},
    })
    return out


def _reconcile(settings: Settings, academy_code: str, run_id: str,
               schools: list[dict[str, Any]], dry_run: bool = False, mode: str | None = None,
               today: dt.date | None = None) -> dict[str, Any]:
    """Identities, desired state, absences, the plan and the guards.

    The plan of a school that trips a guard is written apart (``held/<uai>.json``) and waits
    for approval; ``plan.json`` holds the changes of the other schools. Both are plan files
    (``etl.plan.plan_lines``: a header line, then one change a line in apply order).
    """
    from etl.desired import build_desired, person_dn
    from etl.identity import IdentityRegistry
    from etl.lifecycle import (
        absence_scope,
        categorize,
        covered_scopes,
        disabled_entries,
        evaluate_guards,
        find_absent,
        keep_protected_members,
        preserve_other_schools,
        preserve_uncovered,
        retype_changes,
        structure_changes,
    )
    from etl.plan import apply_order

    academy = get_academy(academy_code)
    heartbeat(settings, academy_code, run_id)
    run_mode = academy.effective_mode(today or dt.date.today(), mode)
    ok = [r for r in schools if r and r.get("status") == "ok"]
    tables = Tables.concat([Tables.load(staging.path(settings, r["staged"])) for r in ok])
    names: dict[str, str | None] = {r["uai"]: None for r in ok}
    years = {r["uai"]: r.get("school_year") for r in ok}
    counts = _school_counts(tables)
    Session = session_factory(settings.state_url)
    with Session() as s:
        registry = IdentityRegistry(s, academy_code)
        # the tables are consumed (their frames let go as read): the desired entries say it
        # all from here, and an academy's frames held while they are made were a peak's part
        desired = build_desired(tables, names, academy, settings.ldap.base, registry, run_id,
                                years, consume=True)
        del tables
        targets = dict(desired.entries)
        covered = covered_scopes(ok)
        preserve_uncovered(s, targets, covered, set(names))
        preserve_other_schools(s, targets, set(names))
        protected = {k for r in ok for k in r.get("protected", [])}
        protected_uids = set(registry.lookup(protected).values())
        del registry  # and its caches (every login of the region, on a first load)
        keep_protected_members(s, targets, {person_dn(u, settings.ldap.base)
                                            for u in protected_uids})
        absent = []
        if run_mode == "normal":
            present = {j for e in desired.entries.values() if e.kind == "person"
                       for j in e.attrs.get("ENTPersonJointure", [])}
            present |= protected
            absent = find_absent(s, academy, absence_scope(covered), present)
            for e in disabled_entries(s, absent, utcnow(), desired.entries, set(names),
                                      academy_code, settings.ldap.base):
                targets[e.dn] = e
        removals = structure_changes(s, academy, targets, covered, years, settings.ldap.base)
        changes = apply_order(retype_changes(s, targets, _plan_against_state(s, targets))
                              + removals)
        for c in changes:
            c.category = categorize(c)
        if run_mode == "create_only":
            changes = [c for c in changes if c.op == "add"]
        guards = evaluate_guards(academy, changes, s, counts, years, run_mode)
        _hold_older_exports(s, run_id, guards, [r["uai"] for r in schools if r and r.get(
            "status") in ("ok", "unchanged")])
        if dry_run:
            s.rollback()  # a dry run assigns no uid and no login for good
        else:
            s.commit()
    _school_identity_findings(settings, run_id, desired.ine_findings)
    held_uais = sorted(u for u, g in guards.items() if g.tripped)
    free = [c for c in changes if c.uai not in held_uais]
    docs = {r["uai"]: r["docs"] for r in ok}
    # an older export of the content applied is held too (its date would become the reference)
    held_same = {r["uai"]: r["docs"] for r in schools if r and r.get("status") == "unchanged"
                 and r["uai"] in held_uais}
    unchanged = {r["uai"]: r["docs"] for r in schools if r and r.get("status") == "unchanged"
                 and r["uai"] not in held_uais}
    prints = {r["uai"]: r.get("fingerprint") for r in ok}
    rereads = {r["uai"]: r.get("reread_on") for r in ok}
    plan_path = f"{run_id}/plan.json"  # a reference in the staging area
    _write_plan(settings, plan_path, {
        "run_id": run_id, "academy": academy_code, "dry_run": dry_run, "mode": run_mode,
        "schools": [u for u in sorted(names) if u not in held_uais],
        "docs": {**{u: d for u, d in docs.items() if u not in held_uais}, **unchanged},
        "fingerprints": {u: f for u, f in prints.items() if u not in held_uais},
        "reread_on": {u: f for u, f in rereads.items() if u not in held_uais},
        "unchanged": sorted(unchanged),
        "school_counts": {u: c for u, c in counts.items() if u not in held_uais},
        "school_years": {u: y for u, y in years.items() if u not in held_uais},
    }, free)
    per_school = _per_school_counts(changes, targets, names)
    held: dict[str, dict[str, Any]] = {}
    with Session() as s, s.begin():
        for uai in held_uais:
            mine = [c for c in changes if c.uai == uai]
            path = f"{run_id}/held/{uai}.json"
            digest = _write_plan(settings, path, {
                "run_id": run_id, "academy": academy_code, "uai": uai, "mode": run_mode,
                "docs": {uai: docs.get(uai) or held_same.get(uai, [])},
                "unchanged": [uai] if uai in held_same else [],
                "fingerprints": {uai: prints.get(uai)},
                "reread_on": {uai: rereads.get(uai)},
                "school_counts": {uai: counts.get(uai, {})},
                "school_years": {uai: years.get(uai)},
            }, mine)
            summary = {"counts": per_school.get(uai, {}),
                       "sample": _sample(mine), "guards": guards[uai].tripped}
            held[uai] = {"plan": path, "hash": digest, "guards": guards[uai].tripped,
                         "counts": per_school.get(uai, {})}
            if not dry_run:
                s.add(Approval(run_id=run_id, academy=academy_code, uai=uai,
                               plan_path=path, plan_hash=digest,
                               guards=guards[uai].tripped, summary=summary))
            log.warning("school %s held for approval: %s", uai,
                        "; ".join(g["detail"] for g in guards[uai].tripped))
    log.info("plan %s: %d changes for %d schools, %d held (%d new identities, %d absent)",
             run_id, len(free), len(names) - len(held_uais), len(held_uais),
             desired.created_identities, len(absent))
    by_kind_op: dict[str, int] = defaultdict(int)
    for c in free:
        by_kind_op[f"{c.kind}.{c.op}"] += 1
    return {"plan": plan_path, "changes": len(free), "per_school": per_school,
            "by_kind_op": dict(by_kind_op),
            "held": held, "mode": run_mode, "absent": len(absent),
            "guards": {u: g.evaluated for u, g in guards.items()},
            "new_identities": desired.created_identities, "skipped": desired.skipped,
            "matches": desired.matches, "duplicates": desired.duplicates}


def _hold_older_exports(s: Any, run_id: str, guards: dict[str, Any],
                        uais: list[str]) -> None:
    """Trip the ``older_export`` guard of the schools discovery held because an export is
    older than the one applied (``SourceFile`` rows ``held`` of this run): their plan waits
    for approval like any held plan (``entsync pending``, ``approve``, ``reject``)."""
    from etl.lifecycle import GuardResult

    why: dict[str, list[str]] = defaultdict(list)
    for uai, reason in s.execute(
            select(SourceFile.uai, SourceFile.reason)
            .where(SourceFile.run_id == run_id, SourceFile.status == "held",
                   SourceFile.uai.in_(uais or [""])).order_by(SourceFile.id)):
        if reason and reason not in why[uai]:
            why[uai].append(reason)
    for uai, reasons in why.items():
        g = guards.setdefault(uai, GuardResult(uai))
        row = {"guard": "older_export", "value": None, "limit": None, "tripped": True,
               "detail": "; ".join(reasons)}
        g.evaluated.append(row)
        g.tripped.append(row)
def _school_identity_findings(settings: Settings, run_id: str,
                              findings: list[dict[str, Any]]) -> None:
    """What matching found about a school's records (INE conflicts) goes to the validation
    report and French page it got when it was read (``etl.feedback.add_identity_findings``);
    the pages come from the staging area when another worker wrote them."""
    from etl.feedback import add_identity_findings

    by_uai: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        by_uai[str(f["uai"])].append(f)
    for uai, mine in sorted(by_uai.items()):
        local = settings.reports_dir / run_id / "schools" / uai
        names = (f"validation_{uai}.json", f"validation_{uai}.html", f"retours_{uai}.html")
        for n in names:
            ref = f"{run_id}/reports/schools/{uai}/{n}"
            if not (local / n).exists() and staging.exists(settings, ref):
                local.mkdir(parents=True, exist_ok=True)
                (local / n).write_bytes(staging.read_bytes(settings, ref))
        if not (local / names[0]).exists():
            continue
        add_identity_findings(local / names[0], local / names[1], local / names[2], mine)
        for n in names:
            if (local / n).exists():
                staging.copy_in(settings, local / n, f"{run_id}/reports/schools/{uai}/{n}")
        log.warning("school %s: %d pupil records in an INE conflict, not matched through "
                    "their INE (its reports name them)", uai, len(mine))


CATEGORIES = ("created", "updated", "disabled", "restored", "deleted")
_CAT_KEY = {"create": "created", "update": "updated", "membership": "updated",
            "disable": "disabled", "restore": "restored", "delete": "deleted"}


def _per_school_counts(changes: list[Any], targets: dict[str, Any],
                       names: dict[str, str | None]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0))
    desired_n: dict[str, int] = defaultdict(int)
    for e in targets.values():
        if e.uai:
            desired_n[e.uai] += 1
    for c in changes:
        if c.uai:
            out[c.uai][_CAT_KEY.get(c.category, "updated")] += 1
    for u in set(names) | set(out):
        v = out[u]
        v["unchanged"] = max(0, desired_n.get(u, 0) - sum(v[k] for k in CATEGORIES))
    return {u: dict(v) for u, v in out.items()}


def _sample(changes: list[Any], n: int = 10) -> list[dict[str, Any]]:
    """A few affected accounts for the approver: DN, action, changed attributes (no values)."""
    out = []
    for c in changes:
        if c.kind != "person":
            continue
        out.append({"dn": c.dn, "action": c.category,
                    "attributes": sorted(c.mods) if c.mods else []})
        if len(out) >= n:
            break
    return out


def ldap_target_from_settings(settings: Settings) -> Any:
    from etl.apply import LdapTarget

    l = settings.ldap  # noqa: E741
    if not (l.url and l.bind_dn and l.password):
        raise ConfigError("LDAP connection not configured: set ENTSYNC_LDAP_URL, "
                          "ENTSYNC_LDAP_BIND_DN and ENTSYNC_LDAP_PASSWORD (or an Airflow "
                          "connection)")
    return LdapTarget(url=l.url, bind_dn=l.bind_dn, password=l.password, base=l.base,
                      ca_file=l.ca_file, max_connect_failures=l.max_connect_failures)


def _apply_changes(settings: Settings, academy_code: str, run_id: str, plan: dict[str, Any],
                   changes: Iterable[Any], workers: int = 4) -> dict[str, Any]:
    """Write a plan's changes, journal them, remember what was written, and for each school
    written without failure mark its files applied and keep its counts for the guards.
    ``plan``: the plan file's header; ``changes``: its changes in apply order, consumed as a
    stream (``read_plan_file``). What was written, failed and left (the directory went down:
    ``stopped``) is counted per school and category (``written_counts``)."""
    from etl.apply import DirectoryWriter
    from etl.plan import Change

    target = ldap_target_from_settings(settings)
    Session = session_factory(settings.state_url)
    failed_schools: set[str] = set()
    tally = WriteTally()
    with Session() as s:
        start = s.scalar(select(func.max(JournalEntry.seq)).where(JournalEntry.run_id == run_id))
    seq = [int(start or 0)]
    pending: list[Change] = []
    last_flush = [time.monotonic()]

    def flush() -> None:
        if not pending:
            return
        with Session() as s, s.begin():
            _record_applied(s, academy_code, run_id, pending, seq)
            lock = s.get(AcademyLock, academy_code)
            if lock is not None and lock.run_id == run_id:
                lock.heartbeat_at = utcnow()
        pending.clear()
        last_flush[0] = time.monotonic()

    def on_applied(ch: Change) -> None:
        # small batches, at least every second: a worker killed mid-apply leaves few applied
        # changes unjournaled (the rerun finds them in the directory and journals them)
        tally.add("written", ch)
        pending.append(ch)
        if len(pending) >= 100 or time.monotonic() - last_flush[0] > 1.0:
            flush()

    def on_failed(ch: Change, _r: dict[str, Any]) -> None:
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


def _record_applied(s: Any, academy: str, run_id: str, done: list[Any],
                    seq: list[int]) -> None:
    """Journal a batch of applied changes and remember what was written: a few bulk
    statements per batch (profiling showed per-row ORM merges dominating the apply stage)."""
    from sqlalchemy import insert, update

    from etl.desired import content_hash

    now = utcnow()
    journal: list[dict[str, Any]] = []
    entries: dict[str, dict[str, Any]] = {}
    gone: list[str] = []
    disabled: set[str] = set()
    active: set[str] = set()
    for ch in done:
        seq[0] += 1
        after = None if ch.op == "delete" else (ch.after or ch.attrs)
        journal.append({"run_id": run_id, "seq": seq[0], "dn": ch.dn, "op": ch.op,
                        "before": ch.before, "after": after, "status": "applied",
                        "applied_at": now})
        if after is None:
            gone.append(ch.dn)
            entries.pop(ch.dn, None)
            continue
        entries[ch.dn] = {"dn": ch.dn, "academy": academy, "uai": ch.uai, "kind": ch.kind,
                          "uid": ch.uid, "content_hash": content_hash(after),
                          "attrs": after, "run_id": run_id, "updated_at": now}
        uid = ch.uid
        if ch.kind == "person" and uid:
            (disabled if after.get("entSyncStatus") == ["DISABLED"] else active).add(uid)
    s.execute(insert(table(JournalEntry)), journal)  # Core: 2.6x the ORM's bulk path
    if gone:
        s.execute(sa_delete(Entry).where(Entry.dn.in_(gone)))
    if entries:
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if s.bind.dialect.name == "postgresql" else sqlite
        stmt: Any = dialect.insert(table(Entry))
        stmt = stmt.on_conflict_do_update(index_elements=[Entry.dn], set_={
            c: stmt.excluded[c] for c in ("academy", "uai", "kind", "uid", "content_hash",
                                          "attrs", "run_id", "updated_at")})
        s.execute(stmt, list(entries.values()))
    if disabled:
        ids = sorted(disabled)
        s.execute(update(Account).where(Account.uid.in_(ids), Account.disabled_at.is_(None))
                  .values(disabled_at=now))
        s.execute(update(Account).where(Account.uid.in_(ids)).values(status="DISABLED"))
    if active:
        s.execute(update(Account).where(Account.uid.in_(sorted(active)))
                  .values(status="ACTIVE", disabled_at=None))


def apply_plan(settings: Settings, academy_code: str, run_id: str, plan_path: str,
               schools: list[dict[str, Any]] | None = None, dry_run: bool = False,
               workers: int = 4) -> dict[str, Any]:
    """Write the plan of the schools that passed the guards (held schools wait).
    ``plan_path``: the plan's reference in the staging area."""
    metrics.stage_start()
    t0 = time.monotonic()
    header, changes = read_plan_file(settings, plan_path)
    planned = int(header.get("change_count", 0))
    heartbeat(settings, academy_code, run_id)  # this process beats while it writes
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
    return out


class ApprovalRefused(EntsyncError):
    """The held plan cannot be applied (changed, decided, or overtaken by a later run)."""


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
    from etl.plan import read_plan

    run_id = run.id
    # one writer per academy: a nightly run writing the academy makes this raise RunLocked
    # (a retry applies the plan once that run ends, unless it synced the school: see below),
    # and no run starts writing while the plan is applied
    acquire_lock(settings, a.academy, run_id)
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
        release_lock(settings, a.academy, run_id)
    metrics.record(settings, run_id, a.academy, "approval", {
        "duration_s": time.monotonic() - t0, "applied": res.get("applied", 0),
        "failed": res.get("failed", 0)}, uai=a.uai)
    return {"decision": "approved", **res}


def _export_date_of(s: Any, run_id: str, sha: str) -> str | None:
    found: str | None = s.scalar(select(SourceFile.export_date).where(
        SourceFile.run_id == run_id, SourceFile.sha256 == sha).limit(1))
    return found


def finish_run(settings: Settings, academy_code: str, run_id: str, discovered: dict[str, Any],
               schools: list[dict[str, Any]], reconciled: dict[str, Any] | None,
               applied: dict[str, Any] | None, dry_run: bool = False) -> dict[str, Any]:
    """The run's summary and plan report: state DB, ``reports/<run_id>/summary.json`` and
    ``report.html``."""
    from etl.report import write_run_report

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


def yield_cpu(settings: Settings) -> None:
    """Lower this process's CPU priority to ``settings.nice`` (never raise it back: that
    takes privileges). Reading, validating and planning are CPU-bound batch work; when the
    sync shares a machine with slapd (the embedded default, a small deployment), slapd's
    commits, which every write waits for, and the ENT's own reads come first."""
    try:
        now = os.nice(0)
        if settings.nice > now:
            os.nice(settings.nice - now)
    except OSError:  # not allowed here: run as started
        pass


_T = TypeVar("_T")


def directory_is_local(url: str | None) -> bool:
    """Whether the directory server runs on this machine: an ldapi:// socket or a loopback
    address."""
    if not url:
        return False
    parts = urlsplit(url)
    if parts.scheme.lower() == "ldapi":
        return True
    host = (parts.hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


#: young collections before the cyclic GC's full one, inside ``cpu_bound``: as good as never
_FULL_GC_DEFERRED = 1_000_000


@contextmanager
def full_collections_deferred() -> Iterator[None]:
    """Python's cyclic GC without its automatic full collections, then one at the end.

    Reading and planning an academy build millions of long-lived objects (rows, entries,
    keys), nearly none in reference cycles: refcounting frees them. The default thresholds
    made the collector walk every one of them again and again (``gc.callbacks``: 1.9 s of
    2.3 s of collections in a 0.1-scale academy's 18 s delta night, 3.4 s of its initial
    load), and a full collection's cost grows with the heap. Young collections still run
    (short-lived cycles go at once); cycles that grew old wait for the collection made here
    when the stage ends (if the default thresholds would have made one by then: a small
    stage, a test's, makes none)."""
    t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(t0, t1, max(t2, _FULL_GC_DEFERRED))
    try:
        yield
    finally:
        gc.set_threshold(t0, t1, t2)
        if gc.get_count()[2] >= t2:  # a full collection was due: the stage's one, now
            gc.collect()


def first_load(settings: Settings, academy_code: str) -> bool:
    """Whether no school of the academy has been applied yet (its first load: the night's
    writes are the academy's whole directory)."""
    with session_factory(settings.state_url)() as s:
        return s.scalar(select(SchoolState.uai).where(SchoolState.academy == academy_code)
                        .limit(1)) is None


def _goes_first(settings: Settings, academy_code: str, dry_run: bool) -> bool:
    """Whether the academy's reading and planning ask for a CPU slot: a first load that
    writes (a check or a dry run writes nothing that would start sooner)."""
    return not dry_run and first_load(settings, academy_code)


def cpu_bound(settings: Settings, fn: Callable[..., _T], *args: Any, slot: bool = False) -> _T:
    """``fn(*args)``, a CPU-bound stage, without the cyclic GC's automatic full collections
    (``full_collections_deferred``), in a thread at the stage's priority (``_cpu_bound``).

    ``slot``: the stage goes first if it finds one of the machine's CPU slots free
    (``etl.cpuslots``), last if not; what a first load asks for (``first_load``): its writes
    are most of its night, and the sooner an academy has read and planned the sooner they
    start while the others read. Other nights share the cores equally: reading and planning
    are most of them, and three single-threaded stages on two cores finish soonest together
    (at scale 1.0, slots put the largest academy's delta last: 232 s against ~200 s)."""
    from etl.cpuslots import cpu_slot

    with cpu_slot(settings.cpu_slots if slot else 0) as held, \
            full_collections_deferred():
        return _cpu_bound(settings, fn, held, *args)


#: niceness of a CPU-bound stage's thread: the lowest of the normal policy (weight 15 against
#: slapd's 1024 and the writers' 110 at niceness 10)
STAGE_NICE = 19


def _cpu_bound(settings: Settings, fn: Callable[..., _T], held: bool | None,
               *args: Any) -> _T:
    """``fn(*args)`` in a thread of its own at the stage's priority, the caller's thread (which
    writes) left as it was (Linux's niceness and policy are per thread):

    - the directory on this machine (``settings.cpu_policy`` ``idle``; ``auto``: ldapi://, a
      loopback address): a stage holding a CPU slot runs at niceness 19, one without in
      ``SCHED_IDLE`` (a core only when nothing else wants it). slapd's commits, which every
      write waits for, and the sync's writes preempt both: at niceness 10 alone they waited,
      with both cores busy, behind the planning (``python -m bench.sched``, where slapd's own
      session puts niceness 10, 19 and ``SCHED_IDLE`` alike at 1.00-1.03);
    - elsewhere (``nice``): a stage holding a slot at the process's niceness
      (``ENTSYNC_NICE``), one without at niceness 19;
    - no slots (``ENTSYNC_CPU_SLOTS=0``): ``SCHED_IDLE``, or the process's niceness.

    A thread rather than switching back: an unprivileged process may not leave ``SCHED_IDLE``
    nor lower its niceness (RLIMIT_NICE)."""
    policy = settings.cpu_policy
    if policy == "auto":
        policy = "idle" if directory_is_local(settings.ldap.url) else "nice"
    idle = policy == "idle" and not held and hasattr(os, "SCHED_IDLE")
    if not idle and (held is None or (held and policy == "nice")):
        return fn(*args)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            if idle:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STAGE_NICE)
        except OSError as e:  # not allowed here (a container's seccomp): run as started
            log.debug("stage priority refused (%s): CPU-bound work at the process's", e)
        try:
            box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["err"] = e

    t = threading.Thread(target=body, name=f"entsync-{getattr(fn, '__name__', 'cpu')}",
                         daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]  # type: ignore[no-any-return]


def run_sync(settings: Settings, academy_code: str, dry_run: bool = False,
             schools: list[str] | None = None, trigger: str = "cli", workers: int = 4,
             mode: str | None = None, today: dt.date | None = None) -> dict[str, Any]:
    """The whole sync in one process (what the DAG does task by task)."""
    yield_cpu(settings)
    run_id = start_run(settings, academy_code, dry_run, trigger)
    try:
        disc = discover_files(settings, academy_code, run_id, schools, today)
        from etl.cpuslots import cpu_slot

        # a CPU slot found free is kept from reading to the plan: an academy that has read
        # is not put behind one that has not for its planning (and its first write)
        with cpu_slot(settings.cpu_slots if _goes_first(settings, academy_code, dry_run)
                      else 0):
            results = read_validate_schools(settings, academy_code, run_id, disc["schools"],
                                            dry_run)
            rec = reconcile(settings, academy_code, run_id, results, dry_run, mode, today)
        app = apply_plan(settings, academy_code, run_id, rec["plan"], results, dry_run, workers)
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
