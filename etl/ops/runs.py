"""An operator action's own run (undo, merge, retention purge): started and locked like a
sync, its changes written and journaled (``etl.apply.journal``), ended with a summary, so
that it can be followed (``entsync changes``, the feed) and undone too."""

from __future__ import annotations

from typing import Any

from etl.apply.journal import Journal
from etl.config import Settings
from etl.plan.diff import Change
from etl.store.db import session_factory
from etl.store.models import Run, utcnow


def new_run(settings: Settings, academy: str, trigger: str) -> str:
    from etl.run import start_run

    return start_run(settings, academy, False, trigger)


def end_run(settings: Settings, run_id: str, status: str, summary: dict[str, Any]) -> None:
    from etl.run import release_lock

    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None:
            run.status, run.ended_at, run.summary = status, utcnow(), summary
    if run is not None:
        release_lock(settings, run.academy, run_id)  # and its heartbeat stops


def apply_changes(settings: Settings, run_id: str, academy: str, changes: list[Change],
                  workers: int = 4) -> dict[str, Any]:
    """Write ``changes`` and journal those applied, once the writer is done."""
    from etl.apply.stage import ldap_target_from_settings
    from etl.apply.writer import DirectoryWriter

    Session = session_factory(settings.state_url)
    applied: list[Change] = []
    writer = DirectoryWriter(ldap_target_from_settings(settings), workers=workers)
    res = writer.apply(changes, on_applied=applied.append)
    with Session() as s, s.begin():
        Journal(s, academy, run_id).record(s, applied)
    # a change left unwritten (the directory went down) is a failure of the operation
    return {"applied": res.applied, "failed": res.failed + res.left,
            "errors": res.errors[:50], "done": applied,
            **({"error": res.stopped} if res.stopped else {})}


def forget_run(settings: Settings, run_id: str) -> dict[str, int]:
    """Remove every trace a dry run left in the state DB and the staging area (``entsync
    check``: it reads and validates as a sync would, then leaves the state as it found it; its
    reports stay, they are what it is run for). Refused for a run that wrote anything."""
    from sqlalchemy import delete, func, select

    from etl import staging
    from etl.errors import EntsyncError
    from etl.store import models as m

    removed: dict[str, int] = {}
    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is None:
            return removed
        if not run.dry_run or s.scalar(select(func.count()).select_from(m.JournalEntry)
                                       .where(m.JournalEntry.run_id == run_id)):
            raise EntsyncError(f"run {run_id} wrote to the directory: it is kept")
        for model in (m.SourceFile, m.Rejection, m.RunMetric, m.Approval, m.MatchKey):
            n = s.scalar(select(func.count()).select_from(model)
                         .where(model.run_id == run_id)) or 0
            if n:
                s.execute(delete(model).where(model.run_id == run_id))
                removed[model.__tablename__] = n
        s.delete(run)
        removed["runs"] = 1
    if staging.remove_tree(settings, run_id):
        removed["staging"] = 1
    return removed
