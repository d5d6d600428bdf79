"""Undo: a run's directory changes reverted from the journal (previous attribute values and
memberships restored, what it disabled re-enabled, what it created removed), refused when a
later run touched the same entries. The undo is journaled under a run of its own
(``etl.ops.runs``), so it can be followed and undone too."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from etl.apply.journal import person_uid
from etl.config import Settings
from etl.errors import UndoRefused
from etl.ops.runs import apply_changes, end_run, new_run
from etl.plan.diff import RETYPE, Change, diff_attrs
from etl.plan.owned import kind_of, uai_of
from etl.store.db import session_factory
from etl.store.models import JournalEntry, Run, SourceFile

log = logging.getLogger(__name__)


def undo_run(settings: Settings, run_id: str, dry_run: bool = False) -> dict[str, Any]:
    """Revert a run's directory changes, or refuse if a later run touched the same entries.
    ``dry_run``: only say what would be reverted (counts per operation, a few DNs), writing
    nothing, not even a run."""
    Session = session_factory(settings.state_url)
    with Session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise UndoRefused(f"no run {run_id}")
        if run.status == "undone":
            raise UndoRefused(f"run {run_id} was already undone")
        rows = list(s.scalars(select(JournalEntry).where(JournalEntry.run_id == run_id)
                              .order_by(JournalEntry.seq)))
        if not rows:
            raise UndoRefused(f"run {run_id} changed nothing in the directory")
        last_id = max(r.id for r in rows)
        dns = sorted({r.dn for r in rows})
        later: list[str] = []
        for i in range(0, len(dns), 500):
            later += list(s.scalars(select(JournalEntry.dn).where(
                JournalEntry.dn.in_(dns[i:i + 500]), JournalEntry.id > last_id,
                JournalEntry.run_id != run_id).distinct()))
        academy = run.academy
    if later:
        raise UndoRefused(f"{len(later)} entries changed by run {run_id} were changed again "
                          f"by a later run (e.g. {', '.join(sorted(later)[:5])}): undo the "
                          "later runs first")
    first: dict[str, JournalEntry] = {}
    final: dict[str, JournalEntry] = {}
    for r in rows:
        first.setdefault(r.dn, r)
        final[r.dn] = r
    changes: list[Change] = []
    for dn in dns:
        before, after = first[dn].before, final[dn].after
        kind = kind_of(dn, before or after or {})
        uai = uai_of(dn)
        if first[dn].op == "add" and after is not None:
            changes.append(Change("delete", dn, kind, uai, "delete", before=after))
        elif after is None and before is not None:  # deleted by the run: recreate
            changes.append(Change("add", dn, kind, uai, "create", attrs=before, after=before,
                                  uid=person_uid(kind, before)))
        elif (before is not None and after is not None
              and {kind_of(dn, before), kind_of(dn, after)} == {"class", "group"}):
            # the run replaced a group by a class at this DN (``etl.plan.scope.retype_changes``):
            # replaced back, as LDAP cannot change an entry's structural class in place
            changes.append(Change("delete", dn, kind_of(dn, after), uai, RETYPE,
                                  before=after))
            changes.append(Change("add", dn, kind, uai, "create", attrs=before, after=before))
        elif before is not None and after is not None:
            mods = diff_attrs(after, before)
            if mods:
                changes.append(Change("modify", dn, kind, uai, "update", mods=mods,
                                      before=after, after=before,
                                      uid=person_uid(kind, before)))
    if dry_run:
        ops: dict[str, int] = {}
        for ch in changes:
            ops[ch.op] = ops.get(ch.op, 0) + 1
        return {"run_id": None, "undo_of": run_id, "academy": academy, "dry_run": True,
                "changes": len(changes), "ops": ops,
                "sample_dns": [ch.dn for ch in changes[:10]], "status": "dry_run"}
    undo_id = new_run(settings, academy, "undo")
    res = apply_changes(settings, undo_id, academy, changes)
    status = "failed" if res["failed"] else "success"
    summary = {"undo_of": run_id, "changes": len(changes), "applied": res["applied"],
               "failed": res["failed"], "errors": res["errors"]}
    end_run(settings, undo_id, status, summary)
    if not res["failed"]:
        with Session() as s, s.begin():
            done = s.get(Run, run_id)
            if done is not None:
                done.status = "undone"
            for sf in s.scalars(select(SourceFile).where(SourceFile.run_id == run_id,
                                                         SourceFile.status == "applied")):
                sf.status = "undone"  # the same files may be applied again later
    log.info("undo of %s: %d changes reverted, %d failed (run %s)", run_id, res["applied"],
             res["failed"], undo_id)
    return {"run_id": undo_id, **summary, "status": status}


