"""The ``entsync`` command.

    entsync generate --academy A --schools N --pupils-per-school M --seed S --out DIR
    entsync generate --region --scale S [--seed N] --out DIR
    entsync generate ... --format aaf [--part-records N] | --aaf-delta-from DIR --out DIR
    entsync generate ... --rentree-out DIR [--rentree-date D] [--rentree-share KEY=V ...]
    entsync check --academy A [--json]
    entsync sync --academy A [--dry-run] [--school UAI ...] [--json]
    entsync ldap up [--dir D] [--port P] | entsync ldap down --dir D
    entsync pending | approve RUN_ID | reject RUN_ID [--school UAI]
    entsync undo RUN_ID
    entsync merge KEEP_UID OTHER_UID
    entsync lifecycle [--academy A] [--dry-run]
    entsync status [--academy A] [--json]
    entsync unlock --academy A [--force] [--by NAME]
    entsync changes --since RUN_ID|TIMESTAMP [--json] [--values]
    entsync audit --academy A [--repair [--foreign keep|disable|delete]] [--adopt] [--values]
                  [--schools UAI ...] [--json]
    entsync gar export --academy A --out DIR [--json]
    entsync airflow [--port P]

Settings come from ENTSYNC_* environment variables; flags override them.
Exit codes: 0 done (even with quarantined files), 1 failure (also: the academy's lock is
held by a live run, the state DB unreachable or locked, the directory unreachable or the bind
refused), 2 usage or configuration error (also: a state DB URL SQLAlchemy cannot use, a
missing landing folder, an unwritable workdir or state DB: ``etl/preflight.py`` checks them
before ``sync`` and ``check`` read anything), 3 a school's changes are held by a guard,
awaiting approval, 4 (``audit``) the directory and the state DB differ, 5 the state DB knows
nothing of an academy whose part of the directory is populated: the sync refuses to write
until ``entsync audit --academy A --adopt``; ``gar export``: 4 an export file the GAR
schema refuses (nothing sent). Errors are one line on stderr, never a traceback
(``-v`` logs it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from etl.config import Settings, load_academies
from etl.errors import ConfigError, EntsyncError, SlapdError, StateNotAdopted


def _settings(a: argparse.Namespace) -> Settings:
    return Settings.from_env(
        landing=getattr(a, "landing", None), workdir=getattr(a, "workdir", None),
        state_url=getattr(a, "state_url", None), ldap_url=getattr(a, "ldap_url", None),
        ldap_base=getattr(a, "ldap_base", None))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landing", help="landing root (ENTSYNC_LANDING)")
    p.add_argument("--workdir", help="staging, reports, quarantine (ENTSYNC_WORKDIR)")
    p.add_argument("--state-url", help="SQLAlchemy URL of the state DB (ENTSYNC_STATE_URL)")


def _today(p: argparse.ArgumentParser) -> None:
    p.add_argument("--today", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                   help="the run's day when not today (replays, benches): the roll-over "
                   "window and the latest credible export date follow it")


def cmd_generate(a: argparse.Namespace) -> int:
    from etl.devtools.generate import generate_academy, generate_region

    export = dt.date.fromisoformat(a.export_date) if a.export_date else None
    if a.part_records < 1:
        print("entsync: --part-records must be >= 1", file=sys.stderr)
        return 2
    if a.aaf_delta_from:
        return _generate_aaf_delta(a, export)
    fmt: dict[str, Any] = {"fmt": a.format, "part_records": a.part_records}
    if a.rentree_out:
        from etl.devtools.generate import Rentree, RentreeShares

        try:
            fmt["rentree"] = Rentree(Path(a.rentree_out), dt.date.fromisoformat(a.rentree_date)
                                     if a.rentree_date else None,
                                     RentreeShares.parse(a.rentree_share or []),
                                     renumber=not a.rentree_keep_codes)
        except ValueError as e:
            print(f"entsync: {e}", file=sys.stderr)
            return 2
        if a.format != "siecle":
            print("entsync: --rentree-out writes SIECLE/STS exports only", file=sys.stderr)
            return 2
    if a.region:
        if a.academy:
            print("entsync: --region and --academy exclude each other", file=sys.stderr)
            return 2
        r = generate_region(Path(a.out), a.scale, a.seed, year=a.year, export_date=export,
                            **fmt)
        print(json.dumps({"scale": r.scale, "seed": r.seed, "schools": r.schools,
                          "pupils": r.pupils, "guardians": r.guardians, "teachers": r.teachers,
                          "files": r.files, "out": str(Path(a.out)),
                          "academies": {k: {"schools": len(v.schools), "pupils": v.pupils,
                                            "guardians": v.guardians, "teachers": v.teachers}
                                        for k, v in r.academies.items()},
                          **({"rentree": {"out": a.rentree_out, "pupils": r.rentree.pupils,
                                          "guardians": r.rentree.guardians,
                                          "teachers": r.rentree.teachers,
                                          "files": r.rentree.files}} if r.rentree else {})},
                         indent=2))
        return 0
    if not a.academy:
        print("entsync: generate needs --academy A or --region", file=sys.stderr)
        return 2
    s = generate_academy(Path(a.out), a.academy, a.schools, a.pupils_per_school, a.seed,
                         year=a.year, export_date=export, **fmt)
    nxt = s.rentree
    print(json.dumps({"academy": s.academy, "schools": s.schools, "pupils": s.pupils,
                      "guardians": s.guardians, "teachers": s.teachers,
                      "files": len(s.files), "out": str(Path(a.out) / a.academy),
                      **({"rentree": {"out": str(Path(a.rentree_out) / a.academy),
                                      "pupils": nxt.pupils, "guardians": nxt.guardians,
                                      "teachers": nxt.teachers, "files": len(nxt.files)}}
                         if nxt else {})}, indent=2))
    return 0


def _generate_aaf_delta(a: argparse.Namespace, export: Any) -> int:
    """The AAF night after a generated AAF landing: a Delta per academy (2 % of the people
    changed by default), dated --export-date or the day after the last Complet."""
    import datetime as dt

    from etl.devtools.generate.aaf_delta import generate_aaf_delta, latest_complet_date

    previous = Path(a.aaf_delta_from)
    last = latest_complet_date(previous) if previous.is_dir() else None
    if last is None:
        print(f"entsync: no AAF Complet under {previous}/<academy>/", file=sys.stderr)
        return 2
    date = export or last + dt.timedelta(days=1)
    night = generate_aaf_delta(previous, Path(a.out), date, a.seed, share=a.delta_share,
                               part_records=a.part_records)
    print(json.dumps({"date": date.isoformat(), "mutations": dict(night.mutations),
                      "academies": {k: {"add": v.add, "modify": v.modify, "delete": v.delete,
                                        "files": len(v.files)}
                                    for k, v in night.delta.items()},
                      "out": str(Path(a.out))}, indent=2))
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    """Discovery + read + validate + normalize, nothing written to the directory."""
    from etl import run as pipeline
    from etl.contracts import RunRef, dump_all
    from etl.preflight import preflight

    st = _settings(a)
    preflight(st, a.academy, ldap=False)
    pipeline.yield_cpu(st)
    run_id = pipeline.start_run(st, a.academy, dry_run=True, trigger="check")
    try:
        found = pipeline.discover_files(st, a.academy, run_id, a.school or None, a.today)
        read = pipeline.read_validate_schools(st, a.academy, run_id, found.school_docs(),
                                              dry_run=True)
        summary = pipeline.finish_run(st, RunRef(academy=a.academy, run_id=run_id,
                                                 dry_run=True), found, read)
    finally:
        if not a.record:  # the state DB and the staging area as they were; the reports stay
            from etl.ops.runs import forget_run

            forget_run(st, run_id)
    disc, results = found.to_json(), dump_all(read)
    out = {"run_id": run_id, "schools": {r["uai"]: {
        "status": r["status"], "counts": r["counts"], "rejected": r["rejected"],
        "quarantined": r["quarantined"], "report": r["report"]} for r in results},
        "rejected_files": disc["rejected"], "held": disc["held"],
        "already_applied": disc["already_applied"], "report_dir": summary["report_dir"]}
    _print(out, a.json, _check_table)
    return 0


def _check_table(out: dict[str, Any]) -> str:
    lines = [f"run {out['run_id']}", f"{'school':10} {'status':12} {'persons':>8} "
             f"{'classes':>8} {'rejected':>9}  quarantined"]
    for uai, r in out["schools"].items():
        c = r["counts"]
        lines.append(f"{uai:10} {r['status']:12} {c['persons']:>8} {c['structures']:>8} "
                     f"{r['rejected']:>9}  {len(r['quarantined'])}")
    for f in out["rejected_files"]:
        lines.append(f"rejected file: {f['file']}: {f['reason']}")
    for uai, why in out["held"].items():
        lines.append(f"held school {uai}: {why}")
    lines.append(f"reports: {out['report_dir']}")
    return "\n".join(lines)


def cmd_sync(a: argparse.Namespace) -> int:
    from etl import run as pipeline
    from etl.contracts import RunRequest
    from etl.preflight import preflight

    st = _settings(a)
    preflight(st, a.academy)  # a dry run reads the directory too (accounts to adopt)
    summary = pipeline.run_sync(st, RunRequest(a.academy, dry_run=a.dry_run,
                                               schools=a.school or None, workers=a.workers,
                                               mode=a.mode, today=a.today))
    _print(summary, a.json, _sync_table)
    if summary.get("error"):  # the directory went down mid-apply: one line, exit 1
        print(f"entsync: {summary['error']}", file=sys.stderr)
    if summary["status"] == "awaiting_approval":
        return 3
    return 0 if summary["status"] in ("success", "dry_run") else 1


def cmd_pending(a: argparse.Namespace) -> int:
    from etl import run as pipeline

    rows = pipeline.pending_approvals(_settings(a), a.run_id)

    def counts(c: Any) -> str:
        if not isinstance(c, dict):
            return ""
        return ", ".join(f"{k} {v}" for k, v in c.items() if v) or "no change"

    _print({"pending": rows}, a.json, lambda o: "\n".join(
        f"{r['run_id']}  {r['uai']}  {counts(r['summary'].get('counts'))}  "
        + "; ".join(str(g.get('detail')) for g in r["guards"]) for r in o["pending"])
        or "nothing awaits approval")
    return 0


def cmd_decide(a: argparse.Namespace) -> int:
    from etl import run as pipeline

    res = pipeline.decide(_settings(a), a.run_id, approve=a.cmd == "approve", uai=a.school,
                          by=a.by, expected_hash=a.plan_hash)
    _print(res, a.json, lambda o: "\n".join(
        f"{u}: {v['decision']}" + (f", {v.get('applied', 0)} changes applied, "
                                    f"{v.get('failed', 0)} failed" if v["decision"] ==
                                   "approved" else "") for u, v in o["schools"].items()))
    return 1 if any(v.get("failed") for v in res["schools"].values()) else 0


def cmd_undo(a: argparse.Namespace) -> int:
    from etl.ops.undo import undo_run

    st = _settings(a)
    preview = undo_run(st, a.run_id, dry_run=True)  # refusals come here, before any question
    if a.dry_run:
        _print(preview, a.json, lambda o: f"undo of {o['undo_of']} would revert "
               f"{o['changes']} changes ({_ops(o['ops'])}), e.g.:\n"
               + "\n".join(f"  {dn}" for dn in o["sample_dns"]))
        return 0
    if not a.yes:
        if not sys.stdin.isatty():
            print(f"entsync: undo of {a.run_id} reverts {preview['changes']} changes "
                  f"({_ops(preview['ops'])}): confirm with --yes (--dry-run shows them)",
                  file=sys.stderr)
            return 2
        answer = input(f"revert {preview['changes']} changes of run {a.run_id} "
                       f"({_ops(preview['ops'])}) in the directory? [y/N] ")
        if answer.strip().lower() not in ("y", "yes", "o", "oui"):
            print("entsync: undo not confirmed, nothing changed", file=sys.stderr)
            return 1
    res = undo_run(st, a.run_id)
    _print(res, a.json, lambda o: f"undo of {o['undo_of']} ({o['run_id']}): {o['applied']} "
           f"changes reverted, {o['failed']} failed")
    return 0 if res["status"] == "success" else 1


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(ops.items())) or "none"


def cmd_merge(a: argparse.Namespace) -> int:
    from etl.ops.merge import merge_accounts

    res = merge_accounts(_settings(a), a.keep_uid, a.other_uid)
    _print(res, a.json, lambda o: f"{o['merged']} merged into {o['keep']} ({o['run_id']}): "
           f"{o['applied']} changes, {o['failed']} failed")
    return 0 if not res["failed"] else 1


def cmd_lifecycle(a: argparse.Namespace) -> int:
    from etl.discover.quarantine import purge_quarantine
    from etl.ops.retention import purge_expired, purge_staging

    st = _settings(a)
    out = {code: {**purge_expired(st, code, dry_run=a.dry_run),
                  "staging": purge_staging(st, code, dry_run=a.dry_run),
                  "quarantine": purge_quarantine(st, code, dry_run=a.dry_run)}
           for code in (a.academy or list(load_academies()))}
    _print(out, a.json, lambda o: "\n".join(
        f"{k}: {v['expired']} past retention, {v['deleted']} deleted; staged files of "
        f"{v['staging']['runs']} runs older than {v['staging']['keep_days']} days "
        + ("to purge" if a.dry_run else "purged")
        + f"; quarantined files of {v['quarantine']['runs']} runs older than "
        f"{v['quarantine']['keep_days']} days " + ("to purge" if a.dry_run else "purged")
        for k, v in o.items()))
    return 1 if any(v.get("failed") for v in out.values()) else 0


#: the sync table's count columns: per category what was written (a dry run: planned)
_SYNC_COLUMNS = ("created", "updated", "disabled", "restored", "deleted", "unchanged",
                 "failed", "pending", "rejected")


def _sync_table(s: dict[str, Any]) -> str:
    """Per school what was written by category (a dry run: what would be), what failed and
    what is pending (held for approval, or left by a directory that went down)."""
    what = "planned, nothing written (dry run)" if s.get("dry_run") else "written"
    lines = [f"run {s['run_id']}: {s['status']}",
             f"{'school':10} {'status':17} " + " ".join(f"{c:>9}" for c in _SYNC_COLUMNS)]
    for uai, r in sorted(s["schools"].items()):
        lines.append(f"{uai:10} {r['status']:17} "
                     + " ".join(f"{r.get(c, 0):>9}" for c in _SYNC_COLUMNS))
    for uai, r in sorted(s["schools"].items()):
        if not r.get("held"):
            continue
        waiting = {k: v for k, v in (r.get("pending_by") or {}).items() if v}
        guards = "; ".join(f"{g.get('guard')} {g.get('value')} > {g.get('limit')}"
                           if g.get("limit") is not None else str(g.get("detail") or
                                                                 g.get("guard"))
                           for g in r["held"] if g.get("tripped", True))
        lines.append(f"held {uai}: would " + (", ".join(f"{k} {v}" for k, v in waiting.items())
                                              or "change nothing")
                     + f" (guard: {guards}); entsync pending, approve or reject")
    for q in s["quarantined"]:
        lines.append(f"quarantined: {q['file']}: {q['reason']}")
    by_cat = s.get("planned" if s.get("dry_run") else "written") or {}
    lines.append(f"{what}: " + ", ".join(f"{k} {v}" for k, v in by_cat.items())
                 + f" ({s['applied']} changes)")
    failed_by = {k: v for k, v in (s.get("failed_by") or {}).items() if v}
    lines.append(f"failed: {s['failed']}" + (" (" + ", ".join(
        f"{k} {v}" for k, v in failed_by.items()) + ")" if failed_by else ""))
    pending_by = {k: v for k, v in (s.get("pending_by") or {}).items() if v}
    lines.append(f"pending: {s.get('pending', 0)}" + (" (" + ", ".join(
        f"{k} {v}" for k, v in pending_by.items()) + ")" if pending_by else "")
        + (f", {s['left']} left by the directory" if s.get("left") else ""))
    lines.append(f"changes planned {s['changes']}, held {s.get('held_changes', 0)}")
    dups: dict[str, int] = dict(s.get("duplicates_by_rule") or {})
    if not dups:  # a summary from before the counts
        dups = defaultdict(int)
        for d in s.get("duplicates") or []:
            dups[str(d.get("rule"))] += 1
    if dups:  # never merged automatically: someone looks at them in the report
        lines.append("suspected duplicates: " + ", ".join(f"{k} {n}"
                                                         for k, n in sorted(dups.items())))
    lines.append(f"report: {s.get('report_dir')}")
    return "\n".join(lines)


def cmd_ldap(a: argparse.Namespace) -> int:
    """Start or stop the project's slapd; `up` prints the service account's settings as
    shell exports (the passwords of the rootdn and the reader stay in their secret files)."""
    import shlex

    from etl.devtools.slapd import start_slapd, stop_slapd

    d = Path(a.dir)
    if a.action == "up":
        info = start_slapd(d, a.port, a.base, tls=a.tls)
        for k, v in info.env().items():
            print(f"export {k}={shlex.quote(v)}")
        print(f"# rootdn {info.root_dn}: password in {info.root_password_file}")
        print(f"# read-only consumers {info.reader_dn}: password in {info.reader_password_file}")
        if info.ldaps_url:
            print(f"# LDAPS: {info.ldaps_url} (CA {info.ca_file})")
        return 0
    print("stopped" if stop_slapd(d) else "not running")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    """What the directory holds (``etl.report.show``): accounts per profile (active and
    disabled), schools, classes, groups, a sample pupil and class; with ``--academy``, only that
    academy's schools and the people whose source keys are its own. No value of a person's
    entry without ``--values``."""
    from etl.apply.stage import ldap_target_from_settings
    from etl.audit.read import DirectoryReader
    from etl.report.show import overview, render

    st = _settings(a)
    with DirectoryReader(ldap_target_from_settings(st)) as reader:
        out = overview(reader, st, a.academy, values=a.values)
    _print(out, a.json, render)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    """Per academy, the last run; per school, its last status, applied export and changes."""
    from etl.report.status import status, status_table

    _print(status(_settings(a), a.academy), a.json, status_table)
    return 0


def cmd_unlock(a: argparse.Namespace) -> int:
    """Release an academy's lock whose holder is dead (refused while it is alive: exit 1)."""
    from etl.store.locks import unlock

    res = unlock(_settings(a), a.academy, by=a.by, force=a.force)
    r = res["released"]
    _print(res, a.json, lambda o: (
        f"{o['academy']}: lock of run {r['run_id']} released ({r['reason']})" if r
        else f"{o['academy']}: not locked") + (
        f"; runs closed as abandoned: {', '.join(o['abandoned'])}" if o["abandoned"] else ""))
    return 0


def cmd_changes(a: argparse.Namespace) -> int:
    """The journal's changes since a run or a time: DN, operation, attribute names."""
    from etl.report.feed import changes_since

    changes = changes_since(_settings(a).state_url, a.since, include_values=a.values,
                            academy=a.academy)
    _print({"since": a.since, "changes": changes}, a.json, lambda o: "\n".join(
        f"{c['applied_at']}  {c['run_id']}  {c['op']:6} {c['dn']}  "
        f"[{', '.join(c['attributes'])}]" for c in o["changes"]) or "no change")
    return 0


def cmd_audit(a: argparse.Namespace) -> int:
    """The academy's part of the directory against the state DB (``etl.audit``)."""
    from etl.audit.stage import exit_code, run_audit

    out = run_audit(_settings(a), a.academy, repair=a.repair, adopt=a.adopt, values=a.values,
                    schools=a.schools, foreign=a.foreign)
    _print(out, a.json, lambda o: "\n".join(
        [f"audit {o['run_id']}: {o['entries_read']} entries read, {o['differences']} "
         "differences (" + ", ".join(f"{k} {n}" for k, n in o["total"].items()) + ")"]
        + [f"  {u}: " + ", ".join(f"{k} {n}" for k, n in c.items() if n)
           for u, c in o["per_school"].items()]
        + [f"{d['kind']:9} {d['dn']}  [{', '.join(d['attributes'])}]"
           + (f" {d['values']}" if d.get("values") else "") for d in o["listed"]]
        + ([f"repair: {o['repaired']['applied']} written, {o['repaired']['failed']} failed, "
            f"{o['repaired']['held_changes']} held ({', '.join(o['repaired']['held']) or '-'})"]
           if o.get("repaired") else [])
        + [f"report: {o.get('report_dir')}"]))
    return exit_code(out)
def cmd_gar(a: argparse.Namespace) -> int:
    """The GAR export: files checked against the schema, archived, delivered (exit 4: refused)."""
    from etl.errors import GarExportInvalid
    from etl.gar import export_academy

    try:
        res = export_academy(_settings(a), a.academy, Path(a.out), schools=a.school,
                             target=a.target, send=not a.no_send)
    except GarExportInvalid as e:
        print(f"entsync: {e}", file=sys.stderr)
        return 4
    _print(res, a.json, lambda o: f"{o['academy']}: {o['skipped']}, nothing exported"
           if o.get("skipped") else f"{o['academy']}: {len(o['files'])} files {o['counts']}, "
           f"{o['archive']}" + (f" -> {o['delivered']['target']}" if o["delivered"] else ""))
    return 0


def cmd_airflow(a: argparse.Namespace) -> int:
    """A local Airflow (api-server, scheduler, dag-processor, triggerer) on the demo data."""
    from etl.devtools.airflow_dev import DevAirflowConfig, serve

    return serve(DevAirflowConfig.local(port=a.port, demo=Path(a.demo), home=Path(a.home),
                                        schools=a.schools, pupils=a.pupils))


def _print(obj: dict[str, Any], as_json: bool, table: Any) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    else:
        print(table(obj))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("entsync")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    academies = list(load_academies())
    p = argparse.ArgumentParser(prog="entsync", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at debug level, and a traceback for an unexpected error")
    p.add_argument("--version", action="version", version=f"entsync {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="write synthetic SIECLE/STS exports (or the AAF) for "
                       "an academy (--academy) or the whole region (--region --scale S)")
    g.add_argument("--academy", choices=academies)
    g.add_argument("--region", action="store_true",
                   help="the three Grand Est academies with realistic proportions")
    g.add_argument("--scale", type=float, default=1.0,
                   help="with --region: share of the region's schools (1.0: ~680 schools)")
    g.add_argument("--schools", type=int, default=3)
    g.add_argument("--pupils-per-school", type=int, default=300)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--year", type=int, default=2026)
    g.add_argument("--export-date", help="YYYY-MM-DD (default: 1 October of --year)")
    g.add_argument("--format", choices=("siecle", "aaf"), default="siecle",
                   help="siecle: each school's SIECLE zips and STS file; aaf: the academy's "
                   "AAF Complet (ENT_Complet_<date>_<Type>_<NNNN>.xml in <out>/<academy>/)")
    g.add_argument("--part-records", type=int, default=10_000,
                   help="AAF: records per file part before the next _NNNN part")
    g.add_argument("--aaf-delta-from", metavar="DIR",
                   help="AAF: write the night after the AAF landing DIR (<academy>/ folders) "
                   "as a Delta per academy in --out")
    g.add_argument("--delta-share", type=float, default=0.02,
                   help="with --aaf-delta-from: share of the people changed")
    g.add_argument("--rentree-out", metavar="DIR",
                   help="also write the first export of the next school year (la rentrée: "
                   "ANNEE_SCOLAIRE + 1, classes renumbered, 3e/terminale out, 6e/2nde in) in DIR")
    g.add_argument("--rentree-date", metavar="YYYY-MM-DD",
                   help="with --rentree-out: its export date (default: 3 September of the next "
                   "year, inside the default roll-over window)")
    g.add_argument("--rentree-share", action="append", metavar="KEY=VALUE",
                   help="with --rentree-out: to_lycee, repeat, move_away, arrivals, sibling, "
                   "guardian_change, teacher_move, teacher_turnover (repeatable)")
    g.add_argument("--rentree-keep-codes", action="store_true",
                   help="with --rentree-out: classes and groups keep last year's codes (new "
                   "classes all the same) instead of being renumbered")
    g.add_argument("--out", required=True)
    g.set_defaults(fn=cmd_generate)

    c = sub.add_parser("check", help="read, validate and normalize an academy's exports "
                       "(never writes to the directory)")
    c.add_argument("--academy", required=True, choices=academies)
    c.add_argument("--school", action="append", help="only this UAI (repeatable)")
    c.add_argument("--record", action="store_true",
                   help="keep the check as a dry-run run in the state DB (default: leave the "
                   "state DB and the staging area as they were)")
    c.add_argument("--json", action="store_true")
    _today(c)
    _common(c)
    c.set_defaults(fn=cmd_check)

    s = sub.add_parser("sync", help="sync an academy's exports into the directory")
    s.add_argument("--academy", required=True, choices=academies)
    s.add_argument("--school", action="append", help="only this UAI (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="plan and report, write nothing")
    s.add_argument("--json", action="store_true")
    s.add_argument("--workers", type=int, default=4, help="LDAP connections in flight")
    s.add_argument("--mode", choices=["normal", "create_only", "no_disable"],
                   help="override the academy's operation mode for this run")
    _today(s)
    s.add_argument("--ldap-url")
    s.add_argument("--ldap-base")
    _common(s)
    s.set_defaults(fn=cmd_sync)

    for name, text in (("approve", "apply a held school's plan, exactly as shown"),
                       ("reject", "discard a held school's plan")):
        ap = sub.add_parser(name, help=text)
        ap.add_argument("run_id")
        ap.add_argument("--school", help="only this UAI (default: every held school)")
        ap.add_argument("--plan-hash", help="refuse unless the held plan has this sha256")
        ap.add_argument("--by", default="cli", help="who decides (kept in the state DB)")
        ap.add_argument("--json", action="store_true")
        _common(ap)
        ap.set_defaults(fn=cmd_decide)

    pe = sub.add_parser("pending", help="held plans awaiting approval")
    pe.add_argument("--run-id")
    pe.add_argument("--json", action="store_true")
    _common(pe)
    pe.set_defaults(fn=cmd_pending)

    un = sub.add_parser("undo", help="revert a run's directory changes from the journal",
                        description="Revert what a run wrote to the directory, from its "
                        "journal (refused when a later run changed the same entries). Asks "
                        "for confirmation on a terminal; elsewhere needs --yes.",
                        epilog="example: entsync undo ac-reims-20261201T013000-ab12 --dry-run")
    un.add_argument("run_id")
    un.add_argument("--dry-run", action="store_true",
                    help="say what would be reverted (counts, sample DNs), change nothing")
    un.add_argument("--yes", "-y", action="store_true", help="no confirmation question")
    un.add_argument("--json", action="store_true")
    _common(un)
    un.set_defaults(fn=cmd_undo)

    mg = sub.add_parser("merge", help="merge two accounts of one person (duplicates report)")
    mg.add_argument("keep_uid", help="the account that stays (its uid and login are kept)")
    mg.add_argument("other_uid", help="the account merged into it and removed")
    mg.add_argument("--json", action="store_true")
    _common(mg)
    mg.set_defaults(fn=cmd_merge)

    lc = sub.add_parser("lifecycle", help="delete accounts disabled past their retention, "
                        "and the staged and quarantined files of old runs")
    lc.add_argument("--academy", action="append", choices=academies)
    lc.add_argument("--dry-run", action="store_true")
    lc.add_argument("--json", action="store_true")
    _common(lc)
    lc.set_defaults(fn=cmd_lifecycle)

    ld = sub.add_parser("ldap", help="start or stop the project's own slapd")
    ld.add_argument("action", choices=["up", "down"])
    ld.add_argument("--dir", default="var/slapd")
    ld.add_argument("--port", type=int)
    ld.add_argument("--base", default="dc=ent,dc=grandest,dc=fr")
    ld.add_argument("--tls", action="store_true",
                    help="throwaway CA and certificate: StartTLS on ldap:// and an ldaps:// port")
    ld.set_defaults(fn=cmd_ldap)

    sh = sub.add_parser("show", help="what the directory holds (counts, samples)",
                        description="Count the directory's accounts (per profile, active and "
                        "disabled), schools, classes and groups, page by page, and show a "
                        "sample pupil entry by its attribute names (values with --values).",
                        epilog="example: entsync show --academy ac-reims")
    sh.add_argument("--academy", choices=academies,
                    help="only this academy's schools, classes, groups and people")
    sh.add_argument("--values", action="store_true",
                    help="print the sample entry's values (personal data: only when needed)")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--ldap-url")
    sh.add_argument("--ldap-base")
    _common(sh)
    sh.set_defaults(fn=cmd_show)

    stt = sub.add_parser("status", help="per academy, the last run and each school's state")
    stt.add_argument("--academy", choices=academies)
    stt.add_argument("--json", action="store_true")
    _common(stt)
    stt.set_defaults(fn=cmd_status)

    ul = sub.add_parser("unlock", help="release an academy's run lock whose holder is dead "
                        "(refused while it is alive)")
    ul.add_argument("--academy", required=True, choices=academies)
    ul.add_argument("--force", action="store_true",
                    help="also when the holder only seems alive by its heartbeat (another "
                    "host, an Airflow DAG run); never a live process on this host")
    ul.add_argument("--by", help="who releases it (kept in the state DB; default: the user)")
    ul.add_argument("--json", action="store_true")
    _common(ul)
    ul.set_defaults(fn=cmd_unlock)

    chg = sub.add_parser("changes", help="what the syncs changed since a run or a time")
    chg.add_argument("--since", required=True, metavar="RUN_ID|TIMESTAMP",
                     help="a run id (later runs only) or an ISO timestamp (UTC if no zone)")
    chg.add_argument("--academy", choices=academies)
    chg.add_argument("--values", action="store_true",
                     help="include before/after values (personal data: operators only)")
    chg.add_argument("--json", action="store_true")
    _common(chg)
    chg.set_defaults(fn=cmd_changes)

    au = sub.add_parser("audit", help="the academy's part of the directory against the state "
                        "DB; --repair writes the differences back, --adopt rebuilds the state DB")
    au.add_argument("--academy", required=True, choices=academies)
    au.add_argument("--repair", action="store_true",
                    help="write the differences back (journaled, undoable, guards apply)")
    au.add_argument("--foreign", choices=["keep", "disable", "delete"], default="keep",
                    help="with --repair: what to do with entries the state DB does not know")
    au.add_argument("--adopt", action="store_true",
                    help="first take the sync's entries the state DB does not know into it")
    au.add_argument("--values", action="store_true",
                    help="print the differing values (personal data: operators only)")
    au.add_argument("--schools", nargs="+", metavar="UAI", help="only these schools")
    au.add_argument("--json", action="store_true")
    _common(au)
    au.set_defaults(fn=cmd_audit)
    gar = sub.add_parser("gar", help="the GAR export (resource broker): files, tar.gz, md5")
    gar.add_argument("action", choices=["export"])
    gar.add_argument("--academy", required=True, choices=academies)
    gar.add_argument("--out", required=True, help="folder for the files and the archive")
    gar.add_argument("--school", action="append", help="only this UAI (repeatable)")
    gar.add_argument("--target", help="deliver there (a folder or sftp://host[:port]/dir; "
                     "default ENTSYNC_GAR_TARGET, else the academy's gar_target)")
    gar.add_argument("--no-send", action="store_true", help="export and check, send nothing")
    gar.add_argument("--json", action="store_true")
    gar.add_argument("--ldap-url")
    gar.add_argument("--ldap-base")
    _common(gar)
    gar.set_defaults(fn=cmd_gar)

    af = sub.add_parser("airflow", help="run the Airflow UI locally on the demo data")
    af.add_argument("--port", type=int, help="API server port (default: a free one)")
    af.add_argument("--demo", default="var/demo", help="slapd, landing and workdir root")
    af.add_argument("--home", default="var/airflow", help="AIRFLOW_HOME")
    af.add_argument("--schools", type=int, default=2, help="schools per generated academy")
    af.add_argument("--pupils", type=int, default=120, help="pupils per generated school")
    af.set_defaults(fn=cmd_airflow)
    _describe(sub)
    return p


#: each subcommand's description (``entsync CMD -h``) and an example
DOCS: dict[str, tuple[str, str]] = {
    "generate": ("Write synthetic SIECLE/STS-web exports (fictional people) into a landing "
                 "folder, for one academy or the whole region, deterministic for a seed.",
                 "entsync generate --academy ac-reims --schools 3 --pupils-per-school 300 "
                 "--seed 1 --out var/landing"),
    "check": ("Read, validate and normalize an academy's exports as a sync would, and say per "
              "school what was read, rejected and quarantined. Never writes to the directory, "
              "and leaves the state DB and the staging area as it found them (--record keeps "
              "it as a dry-run run); its only output is the reports, under "
              "<workdir>/reports/<run id>/ (and a quarantined file's copy).",
              "entsync check --academy ac-reims --school 0510001A"),
    "sync": ("Sync an academy's exports into the directory: discover, read, validate, match, "
             "plan, guard, write, report. Checks the landing folder, workdir, state DB and LDAP "
             "bind first. Exit 0 done, 1 failed, 2 configuration, 3 held for approval.",
             "entsync sync --academy ac-reims --dry-run"),
    "approve": ("Apply a held school's plan exactly as it was shown (refused if it changed).",
                "entsync approve ac-reims-20261201T013000-ab12 --school 0510001A --by alice"),
    "reject": ("Discard a held school's plan: its exports are not proposed again.",
               "entsync reject ac-reims-20261201T013000-ab12 --school 0510001A --by alice"),
    "pending": ("List the plans held by a guard and awaiting a decision: run, school, "
                "changes, guards.", "entsync pending -o json"),
    "merge": ("Merge two accounts of one person (from the duplicates report): the other's "
              "memberships move to the kept one, the other is removed.",
              "entsync merge 8f3a2c1d9e 1b7c4e2a6f"),
    "lifecycle": ("Delete accounts disabled past their retention and purge old staged and "
                  "quarantined files (what ent_lifecycle runs daily).",
                  "entsync lifecycle --academy ac-reims --dry-run"),
    "ldap": ("Start or stop the project's own OpenLDAP slapd (Debian package) with the "
             "project's schema; `up` prints the ENTSYNC_LDAP_* exports.",
             "entsync ldap up --dir var/slapd > var/ldap.env"),
    "status": ("Per academy, the last run, its lock and each school's state (last applied "
               "export, counts, held plans).", "entsync status --academy ac-reims"),
    "unlock": ("Release an academy's run lock whose holder is dead (refused while alive).",
               "entsync unlock --academy ac-reims --by alice"),
    "changes": ("What the syncs changed since a run or a time (DNs and attribute names; "
                "values only with --values).",
                "entsync changes --since 2026-12-01T00:00 --academy ac-reims -o json"),
    "audit": ("Read the academy's part of the directory and compare it with what the state DB "
              "says the sync wrote: missing entries, changed owned attributes, stray members, "
              "foreign entries, orphan rows. --repair writes the differences back through the "
              "plan/apply path (journaled, guards apply); --adopt rebuilds a lost state DB from "
              "the directory. Exit 0 nothing differs, 4 something does.",
              "entsync audit --academy ac-reims --json"),
    "gar": ("The nightly GAR export (the national resource broker): the academy's active "
            "pupils, teachers and staff, schools, classes and groups, as files valid against "
            "the GAR's schema, a tar.gz and its md5, delivered to a folder or by SFTP. Exit 4 "
            "when a file is refused by the schema (nothing sent).",
            "entsync gar export --academy ac-reims --out var/gar --no-send"),
    "airflow": ("Run Airflow locally (standalone) on the demo data: the DAGs of this checkout, "
                "an embedded slapd, generated exports.", "entsync airflow --port 8080"),
}


def _describe(sub: Any) -> None:
    """A description and an example for every subcommand (``DOCS``, or the one it set), and
    ``-o table|json`` beside each ``--json``."""
    for name, sp in sub.choices.items():
        doc = DOCS.get(name)
        if doc and not sp.description:
            sp.description = doc[0]
        if doc and not sp.epilog:
            sp.epilog = f"example: {doc[1]}"
        if "--json" in sp._option_string_actions and "-o" not in sp._option_string_actions:
            sp.add_argument("-o", "--output", choices=["table", "json"],
                            help="output format (--json is -o json)")


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a service stop, Airflow killing a task) ends the run as Ctrl-C does: closed
    as failed, its lock released, what was written journaled."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    a = build_parser().parse_args(argv)
    if getattr(a, "output", None) == "json":
        a.json = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    from etl.runtime.logs import LOG_FORMAT, quiet_loggers

    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format=LOG_FORMAT, stream=sys.stderr)

    quiet_loggers()
    try:
        return int(a.fn(a))
    except ConfigError as e:
        print(f"entsync: configuration error: {e}", file=sys.stderr)
        return 2
    except StateNotAdopted as e:
        print(f"entsync: {e}", file=sys.stderr)
        return StateNotAdopted.exit_code
    except SlapdError as e:  # slapd's diagnostics span lines: one line here, -v shows them
        return _unexpected(e, a.verbose)
    except EntsyncError as e:
        print(f"entsync: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        term = bool(e.args)
        print(f"entsync: interrupted ({'SIGTERM' if term else 'SIGINT'}); a run in progress is "
              "closed as failed, its lock released", file=sys.stderr)
        return 143 if term else 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        return _unexpected(e, a.verbose)


def _unexpected(e: Exception, verbose: bool) -> int:
    """An error no code path turned into an ``EntsyncError``: the state DB's (exit 1, or 2
    for a URL it cannot use), or a bug (exit 1). The traceback only with ``-v``."""
    import sqlalchemy.exc as sx

    from etl.store.db import state_db_error

    if verbose:
        logging.getLogger("entsync").exception("traceback")
    if isinstance(e, sx.SQLAlchemyError):
        err = state_db_error(None, e)
        if isinstance(err, ConfigError):
            print(f"entsync: configuration error: {err}", file=sys.stderr)
            return 2
        print(f"entsync: {err}", file=sys.stderr)
        return 1
    print(f"entsync: unexpected error: {type(e).__name__} (entsync -v shows where)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
