"""Read and validate a school's exports: staged tables, the school's reports, its row."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from etl import staging
from etl.config import Settings, get_academy
from etl.contracts import SchoolResult
from etl.discover.landing import Discovered
from etl.discover.tonight import _file_changed, _quarantine
from etl.errors import FileChanged, FileRejected
from etl.read.canonical import Tables
from etl.report import metrics
from etl.report.page import school_name
from etl.runtime.cpu import cpu_bound, goes_first
from etl.store import locks
from etl.store.db import session_factory
from etl.store.models import (
    Rejection,
    SchoolState,
    SourceFile,
)

log = logging.getLogger(__name__)


def read_validate_schools(settings: Settings, academy_code: str, run_id: str,
                          schools: Mapping[str, list[dict[str, Any]]], dry_run: bool = False,
                          group: int | None = None, first: bool | None = None,
                          lead: bool = False) -> list[SchoolResult]:
    """Read, normalize, validate and stage schools (``_read_validate_schools``), as CPU-bound
    work (``cpu_bound``). ``schools``: UAI -> its documents (``Discovery.schools``,
    ``ReadGroup.docs()``). ``first``: whether the night is the academy's first load (asks for
    a CPU slot), as the run found it before anything was written (None: as the state DB says
    now). ``lead``: the first group of a streamed first load (``etl.runtime.cpu.cpu_bound``)."""
    slot = goes_first(settings, academy_code, dry_run) if first is None else first
    out = cpu_bound(settings, _read_validate_schools, settings, academy_code, run_id,
                    dict(schools), dry_run, group, slot=slot, lead=lead)
    return [SchoolResult.from_json(r) for r in out]


def _read_validate_schools(settings: Settings, academy_code: str, run_id: str,
                           schools: dict[str, list[dict[str, Any]]], dry_run: bool = False,
                           group: int | None = None) -> list[dict[str, Any]]:
    """Read, normalize and validate schools' documents and stage their tables (the CLI; in
    the DAG, each mapped task's group), ``group`` schools at a time (default
    ``settings.read_group``): each is read, then their GX column rules run once per table
    for the group (``etl.validate.rules.run_suites``: GX's fixed cost per school was most of the
    read stage), then each is validated and staged. Each school gets the results it gets
    read alone.

    A document that cannot be read, or fails a blocking check, is quarantined whole and its
    school is left untouched this run (status ``quarantined``). An unexpected error in one
    school leaves that school untouched (status ``error``, the error type only in the log: an
    exception's text may quote a record) and lets the others go on; the run then ends
    ``failed`` so that someone looks at it. Should the group's GX run crash, each school
    runs its own."""
    from etl.runtime.progress import Progress
    from etl.validate.rules import run_suites

    out: list[dict[str, Any]] = []
    items = list(schools.items())
    group = group or settings.read_group
    progress = Progress(f"read {academy_code}", len(items), "schools")
    for i in range(0, len(items), group):
        metrics.stage_start()
        done: dict[str, dict[str, Any]] = {}
        reads: list[_SchoolRead] = []
        spent: dict[str, float] = {}
        for uai, docs in items[i:i + group]:
            locks.heartbeat(settings, academy_code, run_id)
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
            progress.add()
    progress.close()
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
    #: the school's name, when its STS-web export gives it (``etl.report.page.school_name``)
    name: str | None = None


def _read_school(settings: Settings, academy_code: str, run_id: str, uai: str,
                 docs: list[dict[str, Any]],
                 dry_run: bool = False) -> _SchoolRead | dict[str, Any]:
    """Read and normalize a school's documents (unreadable ones quarantined); its result
    when its content is the same as last applied (status ``unchanged``: not validated)."""
    from etl.discover.aaf import KIND as AAF_KIND
    from etl.discover.aaf import read_staged
    from etl.discover.quarantine import kept_earlier
    from etl.read import read_document
    from etl.read.normalize import normalize_tables

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
        aaf_files: dict[str, int] | None = None
        try:
            if d.kind == AAF_KIND:  # read at discovery, the academy's feed at once
                res, aaf_files = read_staged(settings, d)
            else:
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
        if aaf_files is not None:  # each AAF file part's records in this school
            file_records.update(aaf_files)
        else:
            file_records[d.source.short_name] = res.records
        year = year or d.school_year
    tables = normalize_tables(Tables.concat(parts), academy.jointure_prefix, warnings)
    kinds = sorted({str(x["kind"]) for x in docs})
    refused = _refused_files(settings, run_id, uai, set(kinds))
    missing = quarantined or any(r["kind"] for r in refused)
    fingerprint = tables_fingerprint(tables, kinds) if not missing else None
    tables["schools"] = _school_row(academy_code, uai, year, docs)  # not in the fingerprint
    aaf_changed = any(((x.get("extra") or {}).get("aaf") or {}).get("changed") for x in docs)
    if fingerprint and not rejected and not aaf_changed and fingerprint == _last_fingerprint(
            settings, academy_code, uai):
        log.info("school %s: same content as the last applied exports, nothing to do", uai)
        return {"uai": uai, "status": "unchanged", "staged": None, "school_year": year,
                "name": school_name(docs), "exports": _exports(docs, file_records),
                "records_read": sum(file_records.values()),
                "counts": tables.counts(), "rejected": 0, "quarantined": [], "report": None,
                "report_json": None, "fingerprint": fingerprint, **_aaf_of(docs),
                "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                          "content_sha256": x.get("content_sha256"), "kind": x["kind"]}
                         for x in docs]}
    return _SchoolRead(uai, docs, tables, rejected, quarantined, file_records, protected, year,
                       fingerprint, read_rejected, warnings, refused, school_name(docs))


def _refused_files(settings: Settings, run_id: str, uai: str,
                   kinds: set[str]) -> list[dict[str, Any]]:
    """The school's files refused at discovery tonight (a DOCTYPE, a wrong encoding...),
    for its report, with the kind discovery sniffed from their head (``sniff_header``) when
    the school sent nothing else of that kind tonight: such a refused export is that school's
    one problem (``unread``)."""
    from etl.discover.xmlsafe import XmlSource

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

    from etl.read.canonical import SCHOOLS, string_dtype

    sources = sorted({x["kind"] if x.get("kind") in ("STS", "AAF") else "SIECLE"
                      for x in docs})
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
    schools' (``etl.validate.rules.run_suites``)."""
    from etl.validate.feedback import add_report_keys, record_locators, write_school_feedback
    from etl.validate.rules import validate_school, write_validation_report

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
        if not match and any(x.get("kind") == "AAF" for x in docs):
            # an AAF part is the academy's: it stays in the landing zone for the other
            # schools; this school's part of it is left aside, the school untouched
            quarantined.append({"file": fname, "uai": uai, "kind": "AAF", "reason": reason,
                                "rule": "validation", "moved_to": None})
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
    # how the school finds each record in SIECLE (class, INE), for its French page
    add_report_keys(json_path, locators=record_locators(
        tables, [*rejected, *(w.as_dict() for w in outcome.warnings)],
        lambda keys: stored_ines(settings, keys)))
    feedback_path = write_school_feedback(json_path, reports / uai, read.name)
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
            "name": read.name, "exports": _exports(docs, file_records),
            "reread_on": _reread_on(outcome.tables), "protected": sorted(protected),
            **_aaf_of(docs),
            "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                      "content_sha256": x.get("content_sha256"), "kind": x["kind"]}
                     for x in docs]}


def _aaf_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"aaf": ...}`` for a school read from the AAF (what reconcile needs of it: the types
    it covers, those a Complet brought, the guards discovery trips), else nothing."""
    for x in docs:
        info = (x.get("extra") or {}).get("aaf")
        if x.get("kind") == "AAF" and info and "staged" in info:
            return {"aaf": {k: info[k] for k in ("covers", "complets", "holds", "documents")}}
    return {}


def _exports(docs: list[dict[str, Any]], records: Mapping[str, int]) -> list[dict[str, Any]]:
    """The exports a school sent tonight, as its French page lists them: file, kind, export
    date and records read (None: not read)."""
    out = []
    for x in docs:
        d = Discovered(**x)
        out.append({"file": d.source.short_name, "kind": d.kind, "export_date": d.export_date,
                    "records": records.get(d.source.short_name)})
    return out


def stored_ines(settings: Settings, jointures: list[str]) -> dict[str, str]:
    """The INE the directory holds for pupils (by jointure) the exports of tonight could not
    give one for (their record was rejected by a reader): what the school searches SIECLE by."""
    from etl.store.models import Entry, Identity

    if not jointures:
        return {}
    out: dict[str, str] = {}
    with session_factory(settings.state_url)() as s:
        uids = {j: u for j, u in s.execute(select(Identity.jointure, Identity.uid)
                                           .where(Identity.jointure.in_(jointures)))}
        if not uids:
            return {}
        attrs = {u: a for u, a in s.execute(select(Entry.uid, Entry.attrs).where(
            Entry.uid.in_(set(uids.values())), Entry.kind == "person"))}
    for j, uid in uids.items():
        ine = (attrs.get(uid) or {}).get("ENTEleveINE") or []
        if ine:
            out[j] = str(ine[0])
    return out


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
