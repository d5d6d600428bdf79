"""The audit of an academy: its part of the directory read and compared with the state DB,
then, when asked, adopted (``--adopt``) or repaired (``--repair``); what ``entsync audit`` and
the ``ent_audit`` DAG call.

An audit is a run of its own (``runs``, trigger ``audit``) with a report in the run report
pages (``reports/<run_id>/audit.json`` and ``report.html``) and metrics (differences per
kind, stage ``audit``). A read-only audit takes no lock; ``--adopt`` and ``--repair`` write,
under the academy's lock like a sync.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import exists, select

from etl.audit.compare import Difference, Stored, compare_entry, orphans, tally, uai_of
from etl.audit.read import DirectoryReader, DirEntry, academy_part, academy_schools
from etl.config import Academy, Settings, get_academy
from etl.plan.diff import Change
from etl.plan.stored import StoredView, load_stored
from etl.store.db import session_factory
from etl.store.models import Account, Entry

log = logging.getLogger(__name__)

#: differences listed one by one in the report and the output (all are counted)
LIST_MAX = 10000
#: directory entries compared per state DB batch
BATCH = 500


class Found:
    """What the comparison found: the differences, the changes that would repair the sync's
    part, the foreign entries (kept for a policy only when one is asked for), the entries read."""

    def __init__(self, keep_foreign: bool) -> None:
        self.diffs: list[Difference] = []
        self.changes: list[Change] = []
        self.foreign: list[DirEntry] = []
        self.keep_foreign = keep_foreign
        self.read = 0

    def add(self, e: DirEntry | None, dn: str, stored: Stored | None, values: bool) -> None:
        diffs, change = compare_entry(dn, e.attrs if e is not None else None, stored, values)
        self.diffs += diffs
        if change is not None:
            self.changes.append(change)
        if e is not None and self.keep_foreign and diffs and diffs[0].kind == "foreign":
            self.foreign.append(e)


def _batches(it: Iterator[DirEntry], n: int) -> Iterator[list[DirEntry]]:
    part: list[DirEntry] = []
    for e in it:
        part.append(e)
        if len(part) >= n:
            yield part
            part = []
    if part:
        yield part


def _stored(view: StoredView, dns: list[str]) -> dict[str, Stored]:
    return {dn: Stored(e.kind, e.uai, e.uid, e.attrs) for dn, e in view.entries(dns).items()}


def compare_academy(reader: DirectoryReader, view: StoredView, academy: Academy, base: str,
                    uais: Sequence[str], only: set[str] | None, values: bool = False,
                    keep_foreign: bool = False) -> Found:
    """The academy's part of the directory (``uais``' subtrees and its accounts), streamed a
    batch at a time against the stored entries at the same DNs; then every entry the state
    DB says the sync wrote (of the schools ``only``, if given) that was not met, read at its
    DN (it may have left the part's filter, a source key removed by hand) or missing; then the
    accounts of the state DB that match nothing (``orphan``, when no school is singled out)."""
    found = Found(keep_foreign)
    seen: set[str] = set()
    seen_uids: set[str] = set()
    for part in _batches(academy_part(reader, academy, base, uais), BATCH):
        stored = _stored(view, [e.dn for e in part])
        for e in part:
            st = stored.get(e.dn)
            if only is not None and ((st.uai if st is not None else uai_of(e.dn, e.attrs))
                                     not in only):
                continue
            found.read += 1
            seen.add(e.dn)
            seen_uids.update(e.attrs.get("uid", [])[:1])
            found.add(e, e.dn, st, values)
    s = view.session
    q = select(Entry.dn).where(Entry.academy == academy.code)
    if only is not None:
        q = q.where(Entry.uai.in_(sorted(only)))
    unseen = [dn for dn in s.scalars(q) if dn not in seen]
    for i in range(0, len(unseen), BATCH):
        part_dns = unseen[i:i + BATCH]
        stored = _stored(view, part_dns)
        for dn in part_dns:
            at = reader.read(dn)
            if at is not None:
                found.read += 1
                seen_uids.update(at.attrs.get("uid", [])[:1])
            found.add(at, dn, stored.get(dn), values)
    if only is None:
        lost = s.scalars(select(Account.uid).where(
            Account.academy == academy.code, Account.deleted_at.is_(None),
            ~exists().where(Entry.uid == Account.uid)))
        found.diffs += orphans(lost, seen_uids, base)
    return found


def run_audit(settings: Settings, academy_code: str, *, repair: bool = False,
              adopt: bool = False, values: bool = False, schools: Sequence[str] | None = None,
              foreign: str = "keep", trigger: str = "audit") -> dict[str, Any]:
    """Audit the academy (``compare_academy``); ``adopt`` first takes what the state DB does
    not know of the sync's entries from the directory (``etl.audit.adopt.adopt_academy``);
    ``repair`` then writes the differences back (``etl.audit.repair``), with the ``foreign``
    policy for entries the state DB does not know. The summary (``audit.json``)."""
    from etl.apply.stage import ldap_target_from_settings
    from etl.audit.repair import FOREIGN_POLICIES, foreign_change
    from etl.audit.repair import repair as write_back
    from etl.errors import ConfigError
    from etl.ops.runs import end_run
    from etl.report import metrics
    from etl.run import fail_run, start_run

    if foreign not in FOREIGN_POLICIES:
        raise ConfigError(f"--foreign must be one of {', '.join(FOREIGN_POLICIES)}")
    academy = get_academy(academy_code)
    target = ldap_target_from_settings(settings)
    writes = repair or adopt
    run_id = start_run(settings, academy_code, dry_run=not writes, trigger=trigger)
    metrics.stage_start()
    t0 = time.monotonic()
    only = {u.upper() for u in schools} if schools else None
    base = settings.ldap.base
    try:
        out: dict[str, Any] = {"run_id": run_id, "academy": academy_code, "audit": True,
                               "repair": repair, "adopt": adopt, "foreign_policy": foreign,
                               "schools_selected": sorted(only) if only else None}
        with DirectoryReader(target) as reader, session_factory(settings.state_url)() as s:
            stored_schools = set(s.scalars(select(Entry.uai).where(
                Entry.academy == academy_code, Entry.kind == "school")))
            uais = sorted(only if only is not None
                          else set(academy_schools(reader, academy, base)) | {
                              u for u in stored_schools if u})
            if adopt:
                from etl.audit.adopt import adopt_academy

                out["adopted"] = adopt_academy(s, academy, academy_part(
                    reader, academy, base, uais), run_id)
                s.commit()
            view = load_stored(s, academy_code)
            found = compare_academy(reader, view, academy, base, uais, only, values,
                                    keep_foreign=repair and foreign != "keep")
            counts = tally(found.diffs)
            out.update(entries_read=found.read, schools_read=len(uais), **counts)
            out["listed"] = [d.as_dict() for d in found.diffs[:LIST_MAX]]
            out["truncated"] = len(found.diffs) > LIST_MAX
            remaining = sum(1 for d in found.diffs if d.kind == "orphan")
            if repair:
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                changes = list(found.changes)
                for e in found.foreign:
                    ch = foreign_change(e, foreign, now)
                    if ch is not None:
                        changes.append(ch)
                remaining += counts["total"]["foreign"] - (len(changes) - len(found.changes))
                out["repaired"] = write_back(settings, academy, run_id, changes, view)
            else:
                remaining = counts["differences"]
            out["remaining"] = remaining
        held = bool(out.get("repaired", {}).get("held"))
        failed = bool(out.get("repaired", {}).get("failed"))
        out["status"] = "failed" if failed else "awaiting_approval" if held else "success"
        _write_report(settings, run_id, out)
        metrics.record_audit(settings, run_id, academy_code, counts, {
            "duration_s": time.monotonic() - t0, "entries_read": found.read,
            "written": out.get("repaired", {}).get("applied", 0),
            "held_changes": out.get("repaired", {}).get("held_changes", 0)})
        end_run(settings, run_id, out["status"], _without_values(out))
    except BaseException as e:
        fail_run(settings, run_id, f"audit failed: {type(e).__name__}: {e}")
        raise
    log.info("audit %s of %s: %d entries read, %d differences (%s)%s", run_id, academy_code,
             found.read, counts["differences"], ", ".join(
                 f"{k} {n}" for k, n in counts["total"].items() if n) or "none",
             f"; repair: {out['repaired']['applied']} written, "
             f"{out['repaired']['held_changes']} held" if repair else "")
    return out


def _without_values(out: dict[str, Any]) -> dict[str, Any]:
    """The summary as kept (state DB, report files): never an attribute's value."""
    return {**out, "listed": [{k: v for k, v in d.items() if k != "values"}
                              for d in out.get("listed", [])]}


def _write_report(settings: Settings, run_id: str, out: dict[str, Any]) -> None:
    from etl import staging
    from etl.report.audit import write_audit_report

    d = settings.reports_dir / run_id
    d.mkdir(parents=True, exist_ok=True)
    kept = _without_values(out)
    (d / "audit.json").write_text(json.dumps(kept, indent=2, ensure_ascii=False, default=str),
                                  "utf-8")
    write_audit_report(kept, d / "report.html")
    for name in ("audit.json", "report.html"):
        staging.copy_in(settings, d / name, f"{run_id}/reports/{name}")
    out["report_dir"] = str(d)


def airflow_audit(settings: Settings, academy_code: str, repair: bool = False,
                  schools: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``ent_audit`` DAG's task: the academy's audit (``run_audit``; of the ``schools``
    it owns when some are given, skipped when it owns none), its summary without the list of
    differences (the report has it; XCom carries counts)."""
    academy = get_academy(academy_code)
    mine = [u.upper() for u in schools or [] if academy.owns_uai(u.upper())]
    if schools and not mine:
        return {"academy": academy_code, "skipped": "owns none of the schools asked for"}
    out = run_audit(settings, academy_code, repair=repair, schools=mine or None,
                    trigger="airflow-audit")
    keep = ("run_id", "academy", "status", "differences", "total", "remaining",
            "entries_read", "report_dir")
    rep = out.get("repaired") or {}
    return {**{k: out.get(k) for k in keep},
            **({"repaired": {k: rep.get(k) for k in ("applied", "failed", "held_changes")},
                "held": sorted(rep.get("held") or {})} if repair else {})}


def exit_code(out: dict[str, Any]) -> int:
    """``entsync audit``'s exit code: 0 nothing differs (or all was written back), 4 some
    difference remains, 3 a repair is held for approval, 1 a repair's write failed."""
    if out.get("status") == "failed":
        return 1
    if out.get("status") == "awaiting_approval":
        return 3
    return 4 if out.get("remaining") else 0


__all__ = ["airflow_audit", "compare_academy", "exit_code", "run_audit"]
