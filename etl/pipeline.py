"""The sync's stages, shared by the CLI (``entsync sync``) and the Airflow DAGs.

Each stage takes and returns small JSON-able values (paths, ids, counts) so Airflow's XCom
carries nothing else; the data itself goes through the staging folder and the state DB.

discover -> read_validate_school (per school) -> reconcile -> apply -> finish
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select

from etl.canonical import Tables
from etl.config import Settings, get_academy
from etl.errors import ConfigError, FileRejected
from etl.landing import Discovered, discover
from etl.state.db import session_factory
from etl.state.models import Entry, JournalEntry, Rejection, Run, SourceFile, utcnow

log = logging.getLogger(__name__)

KIND_ORDER = ("STRUCTURES", "NOMENCLATURES", "ELEVES", "RESPONSABLES", "STS")


def new_run_id(academy: str) -> str:
    return f"{academy}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def start_run(settings: Settings, academy_code: str, dry_run: bool = False,
              trigger: str = "cli", run_id: str | None = None) -> str:
    """Open a run in the state DB and return its id."""
    get_academy(academy_code)
    rid = run_id or new_run_id(academy_code)
    with session_factory(settings.state_url)() as s, s.begin():
        if s.get(Run, rid) is None:
            s.add(Run(id=rid, academy=academy_code, dry_run=dry_run, trigger=trigger,
                      status="running"))
    log.info("run %s started for %s (dry_run=%s)", rid, academy_code, dry_run)
    return rid


def _staging(settings: Settings, run_id: str) -> Path:
    p = settings.staging_dir / run_id
    p.mkdir(parents=True, exist_ok=True)
    return p


def discover_files(settings: Settings, academy_code: str, run_id: str,
                   schools: list[str] | None = None) -> dict[str, Any]:
    """Find tonight's documents, register them, choose one per school and kind.

    A school is kept when at least one chosen document was not applied before; an export
    older than the one already applied for that school and kind holds the school back.
    """
    academy = get_academy(academy_code)
    found = discover(settings.landing, academy)
    wanted = {u.upper() for u in schools} if schools else None
    by_school: dict[str, dict[str, list[Discovered]]] = defaultdict(lambda: defaultdict(list))
    rejected: list[dict[str, Any]] = []
    Session = session_factory(settings.state_url)
    with Session() as s, s.begin():
        for d in found:
            if wanted is not None and d.uai not in wanted:
                continue
            if d.status == "rejected" or d.uai is None or d.kind is None:
                rejected.append({"file": d.name, "uai": d.uai, "reason": d.reason})
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=d.uai, kind=d.kind,
                                 sha256=d.sha256, path=d.path, member=d.member,
                                 school_year=d.school_year, export_date=d.export_date,
                                 status="rejected", reason=d.reason))
                log.warning("rejected %s: %s", d.name, d.reason)
                continue
            by_school[d.uai][d.kind].append(d)
        out: dict[str, list[dict[str, Any]]] = {}
        held: dict[str, str] = {}
        for uai in sorted(by_school):
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
                                     school_year=older.school_year,
                                     export_date=older.export_date, status="superseded",
                                     reason=f"a newer {kind} export is present: {best.name}"))
                chosen.append(best)
            applied = {
                (k, sha): exp for k, sha, exp in s.execute(
                    select(SourceFile.kind, SourceFile.sha256, SourceFile.export_date)
                    .where(SourceFile.academy == academy_code, SourceFile.uai == uai,
                           SourceFile.status == "applied"))
            }
            newest_applied: dict[str, str] = {}
            for (k, _sha), exp in applied.items():
                if k and exp and exp > newest_applied.get(k, ""):
                    newest_applied[k] = exp
            fresh = [d for d in chosen if (d.kind, d.sha256) not in applied]
            stale = [d for d in chosen if d.export_date
                     and d.export_date < newest_applied.get(d.kind or "", "")]
            status = "discovered"
            if stale:
                reason = "; ".join(
                    f"{d.name}: export of {d.export_date} is older than the {d.kind} export "
                    f"of {newest_applied[d.kind or '']} already applied" for d in stale)
                held[uai] = reason
                status = "held"
                log.warning("school %s held: %s", uai, reason)
            elif not fresh:
                status = "skipped_applied"
            for d in chosen:
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=uai, kind=d.kind,
                                 sha256=d.sha256, path=d.path, member=d.member,
                                 school_year=d.school_year, export_date=d.export_date,
                                 status=status, reason=held.get(uai)))
            if status == "discovered":
                out[uai] = [d.as_dict() for d in chosen]
    unchanged = sorted(set(by_school) - set(out) - set(held))
    return {"run_id": run_id, "schools": out, "rejected": rejected, "held": held,
            "already_applied": unchanged}


def _quarantine(settings: Settings, academy: str, run_id: str, doc: dict[str, Any],
                reason: str, dry_run: bool) -> str:
    """Move a bad file aside whole, with its reason next to it. Returns where it went."""
    src = Path(doc["path"])
    dest_dir = settings.quarantine_dir / academy / run_id
    dest = dest_dir / src.name
    if dry_run:
        return str(src)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.exists():
        shutil.move(str(src), dest)
    (dest_dir / (src.name + ".reason.txt")).write_text(
        f"file: {src}\nmember: {doc.get('member') or '-'}\nschool: {doc.get('uai')}\n"
        f"reason: {reason}\nrun: {run_id}\n", "utf-8")
    return str(dest)


def read_validate_school(settings: Settings, academy_code: str, run_id: str, uai: str,
                         docs: list[dict[str, Any]], dry_run: bool = False) -> dict[str, Any]:
    """Read, normalize and validate one school's documents; stage the tables.

    A document that cannot be read, or fails a blocking check, is quarantined whole and the
    school is left untouched this run (status ``quarantined``).
    """
    from etl.normalize import normalize_tables
    from etl.readers import read_document
    from etl.validate import validate_school, write_validation_report

    academy = get_academy(academy_code)
    parts: list[Tables] = []
    rejected: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    file_records: dict[str, int] = {}
    year: int | None = None
    for raw in docs:
        d = Discovered(**raw)
        try:
            res = read_document(d)
        except FileRejected as e:
            where = _quarantine(settings, academy_code, run_id, raw, e.reason, dry_run)
            quarantined.append({"file": d.name, "reason": str(e), "moved_to": where})
            log.error("quarantined %s (school %s): %s", d.name, uai, e.reason)
            continue
        parts.append(res.tables)
        rejected.extend(r.as_dict() for r in res.rejected)
        file_records[d.source.short_name] = res.records
        year = year or d.school_year
    tables = normalize_tables(Tables.concat(parts), academy.jointure_prefix)
    outcome = validate_school(tables, uai, budget=academy.record_error_budget,
                              budget_min=academy.record_error_budget_min,
                              file_records=file_records)
    # records the readers rejected count against the budget too
    reader_rej: dict[str, int] = defaultdict(int)
    for r in rejected:
        reader_rej[str(r["file"])] += 1
    for fname, n in reader_rej.items():
        total = file_records.get(fname, 0)
        if n > max(academy.record_error_budget_min, academy.record_error_budget * total):
            outcome.quarantine[fname] = f"error budget exceeded: {n} of {total} records rejected"
    rejected.extend(r.as_dict() for r in outcome.rejected)
    for fname, reason in outcome.quarantine.items():
        match = [x for x in docs if Discovered(**x).source.short_name == fname]
        for raw in match[:1]:
            where = _quarantine(settings, academy_code, run_id, raw, reason, dry_run)
            quarantined.append({"file": fname, "reason": reason, "moved_to": where})
    reports = settings.reports_dir / run_id / "schools"
    html_path, json_path = write_validation_report(outcome, reports / uai)
    status = "quarantined" if quarantined else "ok"
    staged = _staging(settings, run_id) / uai
    if status == "ok":
        outcome.tables.save(str(staged))
    with session_factory(settings.state_url)() as s, s.begin():
        for r in rejected:
            s.add(Rejection(run_id=run_id, file=str(r["file"]), uai=r.get("uai") or uai,
                            line=r.get("line"), element=str(r["element"]), rule=str(r["rule"]),
                            message=str(r["message"])))
    counts = outcome.tables.counts()
    log.info("school %s: %s, %d persons, %d rejected records, %d quarantined files", uai,
             status, counts["persons"], len(rejected), len(quarantined))
    return {"uai": uai, "status": status, "staged": str(staged) if status == "ok" else None,
            "school_year": year, "counts": counts, "rejected": len(rejected),
            "quarantined": quarantined, "report": str(html_path), "report_json": str(json_path),
            "docs": [{"path": x["path"], "member": x["member"], "sha256": x["sha256"],
                      "kind": x["kind"]} for x in docs]}


def _load_current(s: Any, dns: list[str]) -> dict[str, tuple[str, dict[str, list[str]]]]:
    out: dict[str, tuple[str, dict[str, list[str]]]] = {}
    for i in range(0, len(dns), 500):
        for dn, h, attrs in s.execute(select(Entry.dn, Entry.content_hash, Entry.attrs)
                                      .where(Entry.dn.in_(dns[i:i + 500]))):
            out[dn] = (h, attrs)
    return out


def reconcile(settings: Settings, academy_code: str, run_id: str,
              schools: list[dict[str, Any]], dry_run: bool = False) -> dict[str, Any]:
    """Identities, desired state and the plan for the schools that read cleanly."""
    from etl.desired import build_desired
    from etl.identity import IdentityRegistry
    from etl.plan import plan_changes

    academy = get_academy(academy_code)
    ok = [r for r in schools if r and r.get("status") == "ok"]
    tables = Tables.concat([Tables.load(r["staged"]) for r in ok])
    names: dict[str, str | None] = {r["uai"]: None for r in ok}
    years = {r["uai"]: r.get("school_year") for r in ok}
    Session = session_factory(settings.state_url)
    with Session() as s:
        registry = IdentityRegistry(s, academy_code)
        desired = build_desired(tables, names, academy, settings.ldap.base, registry, run_id,
                                years)
        current = _load_current(s, list(desired.entries))
        changes = plan_changes(desired.entries, current)
        if dry_run:
            s.rollback()  # a dry run assigns no uid and no login for good
        else:
            s.commit()
    plan_path = _staging(settings, run_id) / "plan.json"
    per_school: dict[str, dict[str, int]] = {
        u: {"created": 0, "updated": 0, "unchanged": 0, "desired": 0} for u in names}
    for e in desired.entries.values():
        if e.uai in per_school:
            per_school[e.uai]["desired"] += 1
    for c in changes:
        if c.uai in per_school:
            per_school[c.uai]["created" if c.op == "add" else "updated"] += 1
    for v in per_school.values():
        v["unchanged"] = v["desired"] - v["created"] - v["updated"]
    plan = {"run_id": run_id, "academy": academy_code, "dry_run": dry_run,
            "schools": sorted(names), "changes": [c.as_dict() for c in changes],
            "desired": {dn: {"hash": e.content_hash, "kind": e.kind, "uai": e.uai,
                             "uid": e.uid} for dn, e in desired.entries.items()}}
    plan_path.write_text(json.dumps(plan), "utf-8")
    log.info("plan %s: %d changes for %d schools (%d new identities)", run_id, len(changes),
             len(names), desired.created_identities)
    return {"plan": str(plan_path), "changes": len(changes), "per_school": per_school,
            "new_identities": desired.created_identities, "skipped": desired.skipped}


def ldap_target_from_settings(settings: Settings) -> Any:
    from etl.apply import LdapTarget

    l = settings.ldap  # noqa: E741
    if not (l.url and l.bind_dn and l.password):
        raise ConfigError("LDAP connection not configured: set ENTSYNC_LDAP_URL, "
                          "ENTSYNC_LDAP_BIND_DN and ENTSYNC_LDAP_PASSWORD (or an Airflow "
                          "connection)")
    return LdapTarget(url=l.url, bind_dn=l.bind_dn, password=l.password, base=l.base,
                      ca_file=l.ca_file)


def apply_plan(settings: Settings, academy_code: str, run_id: str, plan_path: str,
               schools: list[dict[str, Any]], dry_run: bool = False,
               workers: int = 4) -> dict[str, Any]:
    """Write the plan; journal each change; remember what was written; mark files applied."""
    from etl.apply import DirectoryWriter
    from etl.desired import content_hash
    from etl.plan import Change

    plan = json.loads(Path(plan_path).read_text("utf-8"))
    changes = [Change.from_dict(c) for c in plan["changes"]]
    if dry_run:
        return {"applied": 0, "failed": 0, "dry_run": True, "planned": len(changes)}
    target = ldap_target_from_settings(settings)
    Session = session_factory(settings.state_url)
    failed_schools: set[str] = set()
    seq = [0]
    pending: list[Change] = []

    def flush() -> None:
        if not pending:
            return
        with Session() as s, s.begin():
            for ch in pending:
                seq[0] += 1
                after = ch.after or ch.attrs
                s.add(JournalEntry(run_id=run_id, seq=seq[0], dn=ch.dn, op=ch.op,
                                   before=ch.before, after=after))
                s.merge(Entry(dn=ch.dn, academy=academy_code, uai=ch.uai, kind=ch.kind,
                              uid=plan["desired"].get(ch.dn, {}).get("uid"),
                              content_hash=content_hash(after), attrs=after, run_id=run_id,
                              updated_at=utcnow()))
        pending.clear()

    def on_applied(ch: Change) -> None:
        pending.append(ch)
        if len(pending) >= 500:
            flush()

    def on_failed(ch: Change, _r: dict[str, Any]) -> None:
        if ch.uai:
            failed_schools.add(ch.uai)

    writer = DirectoryWriter(target, workers=workers)
    try:
        res = writer.apply(changes, on_applied=on_applied, on_failed=on_failed)
    finally:
        flush()
    with Session() as s, s.begin():
        for r in schools:
            if not r or r.get("status") != "ok" or r["uai"] in failed_schools:
                continue
            for d in r["docs"]:
                s.add(SourceFile(run_id=run_id, academy=academy_code, uai=r["uai"],
                                 kind=d["kind"], sha256=d["sha256"], path=d["path"],
                                 member=d["member"], status="applied",
                                 export_date=_export_date_of(s, run_id, d["sha256"])))
    log.info("apply %s: %d applied, %d failed, %d reconciled against the directory", run_id,
             res.applied, res.failed, res.reconciled)
    return {"applied": res.applied, "failed": res.failed, "reconciled": res.reconciled,
            "retries": res.retries, "errors": res.errors[:50],
            "failed_schools": sorted(failed_schools)}


def _export_date_of(s: Any, run_id: str, sha: str) -> str | None:
    found: str | None = s.scalar(select(SourceFile.export_date).where(
        SourceFile.run_id == run_id, SourceFile.sha256 == sha).limit(1))
    return found


def finish_run(settings: Settings, academy_code: str, run_id: str, discovered: dict[str, Any],
               schools: list[dict[str, Any]], reconciled: dict[str, Any] | None,
               applied: dict[str, Any] | None, dry_run: bool = False) -> dict[str, Any]:
    """The run's summary: written to the state DB and ``reports/<run_id>/summary.json``."""
    per_school: dict[str, dict[str, Any]] = {}
    plan_counts = (reconciled or {}).get("per_school", {})
    for r in schools:
        if not r:
            continue
        pc = plan_counts.get(r["uai"], {})
        per_school[r["uai"]] = {
            "status": r["status"], "created": pc.get("created", 0),
            "updated": pc.get("updated", 0), "unchanged": pc.get("unchanged", 0),
            "rejected": r.get("rejected", 0), "report": r.get("report"),
        }
    for uai, why in discovered.get("held", {}).items():
        per_school[uai] = {"status": "held", "reason": why, "created": 0, "updated": 0,
                           "unchanged": 0, "rejected": 0}
    for uai in discovered.get("already_applied", []):
        per_school[uai] = {"status": "already_applied", "created": 0, "updated": 0,
                           "unchanged": 0, "rejected": 0}
    quarantined = [q for r in schools if r for q in r.get("quarantined", [])]
    failed = bool(applied and applied.get("failed"))
    status = "failed" if failed else ("dry_run" if dry_run else "success")
    summary: dict[str, Any] = {
        "run_id": run_id, "academy": academy_code, "status": status, "dry_run": dry_run,
        "schools": per_school, "quarantined": quarantined,
        "rejected_files": discovered.get("rejected", []),
        "changes": (reconciled or {}).get("changes", 0),
        "applied": (applied or {}).get("applied", 0),
        "failed": (applied or {}).get("failed", 0),
        "errors": (applied or {}).get("errors", []),
    }
    out = settings.reports_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), "utf-8")
    summary["report_dir"] = str(out)
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None:
            run.status, run.ended_at, run.summary = status, utcnow(), summary
    log.info("run %s %s: %s", run_id, status,
             {u: {k: v for k, v in x.items() if k in ("status", "created", "updated")}
              for u, x in per_school.items()})
    return summary


def run_sync(settings: Settings, academy_code: str, dry_run: bool = False,
             schools: list[str] | None = None, trigger: str = "cli",
             workers: int = 4) -> dict[str, Any]:
    """The whole sync in one process (what the DAG does task by task)."""
    run_id = start_run(settings, academy_code, dry_run, trigger)
    try:
        disc = discover_files(settings, academy_code, run_id, schools)
        results = [read_validate_school(settings, academy_code, run_id, uai, docs, dry_run)
                   for uai, docs in disc["schools"].items()]
        rec = reconcile(settings, academy_code, run_id, results, dry_run)
        app = apply_plan(settings, academy_code, run_id, rec["plan"], results, dry_run, workers)
        return finish_run(settings, academy_code, run_id, disc, results, rec, app, dry_run)
    except Exception:
        with session_factory(settings.state_url)() as s, s.begin():
            run = s.get(Run, run_id)
            if run is not None:
                run.status, run.ended_at = "failed", utcnow()
        raise


def last_runs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent runs, newest first."""
    with session_factory(settings.state_url)() as s:
        rows = s.scalars(select(Run).order_by(Run.started_at.desc()).limit(limit))
        return [{"run_id": r.id, "academy": r.academy, "status": r.status,
                 "started_at": r.started_at.isoformat()} for r in rows]
