"""Retention: what the daily ``ent_lifecycle`` step deletes.

- ``purge_expired``: accounts DISABLED for longer than their profile's retention are deleted
  from the directory; their login stays registered (never handed out again) and their source
  keys are released, so a person who comes back later is a new account. Journaled under a
  run of its own (``etl.ops.runs``).
- ``purge_staging``: the staged tables and plans of the academy's runs that ended more than
  ``staging_keep_days`` ago (14 by default) are deleted from the staging area; a run awaiting
  approval keeps its held plans, and the report copies stay.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import delete, or_, select

from etl.config import Settings, get_academy
from etl.ops.runs import apply_changes, end_run, new_run
from etl.plan.diff import Change
from etl.store.db import session_factory
from etl.store.models import Account, Approval, Entry, Identity, Run, utcnow

log = logging.getLogger(__name__)


def purge_expired(settings: Settings, academy_code: str, now: dt.datetime | None = None,
                  dry_run: bool = False) -> dict[str, Any]:
    """Delete accounts disabled for longer than their profile's retention period."""
    academy = get_academy(academy_code)
    now = now or utcnow()
    Session = session_factory(settings.state_url)
    changes: list[Change] = []
    with Session() as s:
        for acc in s.scalars(select(Account).where(Account.academy == academy_code,
                                                   Account.status == "DISABLED")):
            if acc.disabled_at is None:
                continue
            if acc.disabled_at > now - dt.timedelta(days=academy.retention_for(acc.profile)):
                continue
            entry = s.scalar(select(Entry).where(Entry.uid == acc.uid, Entry.kind == "person"))
            if entry is not None:
                changes.append(Change("delete", entry.dn, "person", entry.uai, "delete",
                                      before=entry.attrs))
    summary: dict[str, Any] = {"academy": academy_code, "expired": len(changes),
                               "dry_run": dry_run}
    if dry_run or not changes:
        summary["deleted"] = 0
        return summary
    run_id = new_run(settings, academy_code, "lifecycle")
    res = apply_changes(settings, run_id, academy_code, changes)
    with Session() as s, s.begin():
        for ch in res["done"]:
            uid = (ch.before or {}).get("uid", [None])[0]
            gone = s.get(Account, uid) if uid else None
            if gone is not None:
                gone.status, gone.deleted_at = "DELETED", now
                s.execute(delete(Identity).where(Identity.uid == gone.uid))
    summary.update(run_id=run_id, deleted=res["applied"], failed=res["failed"])
    end_run(settings, run_id, "failed" if res["failed"] else "success", summary)
    log.info("lifecycle %s: %d accounts past retention deleted", academy_code, res["applied"])
    return summary


def purge_staging(settings: Settings, academy_code: str, now: dt.datetime | None = None,
                  dry_run: bool = False) -> dict[str, Any]:
    """Delete the staged tables and plans of the academy's runs that ended more than
    ``settings.staging_keep_days`` ago. A run still running, awaiting approval or with a
    pending approval keeps them (its held plans are what an approval applies), and a decided
    one keeps them as long after its last decision; the copies of its reports
    (``<run_id>/reports/``) stay. Each run is purged once (``staging_purged_at``)."""
    from etl import staging

    get_academy(academy_code)
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=settings.staging_keep_days)
    Session = session_factory(settings.state_url)
    with Session() as s:
        # a held plan is kept while it waits, and staging_keep_days after its decision
        pending = select(Approval.run_id).where(or_(Approval.status == "pending",
                                                    Approval.decided_at >= cutoff))
        runs = list(s.scalars(select(Run.id).where(
            Run.academy == academy_code, Run.staging_purged_at.is_(None),
            Run.ended_at.is_not(None), Run.ended_at < cutoff,
            Run.status.not_in(("running", "awaiting_approval")),
            Run.id.not_in(pending)).order_by(Run.ended_at)))
    removed = 0
    if not dry_run:
        for rid in runs:
            for name in staging.children(settings, rid):
                if name != "reports":
                    removed += staging.remove_tree(settings, f"{rid}/{name}")
            with Session() as s, s.begin():
                run = s.get(Run, rid)
                if run is not None:
                    run.staging_purged_at = now
    if runs:
        log.info("staging %s: staged files of %d runs ended before %s %s", academy_code,
                 len(runs), f"{cutoff:%Y-%m-%d}", "to purge (dry run)" if dry_run else "purged")
    return {"runs": len(runs), "removed": removed, "dry_run": dry_run,
            "keep_days": settings.staging_keep_days}
