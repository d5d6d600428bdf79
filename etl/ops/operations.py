"""Operator actions on the directory outside the nightly sync: retention and undo.

- ``purge_expired``: the daily ``ent_lifecycle`` step. Accounts DISABLED for longer than their
  profile's retention are deleted from the directory; their login stays registered (never
  handed out again) and their source keys are released, so a person who comes back later is
  a new account.
- ``purge_staging``: the same daily step. The staged tables and plans of the academy's runs
  that ended more than ``staging_keep_days`` ago (14 by default) are deleted from the staging
  area; a run awaiting approval keeps its held plans, and the report copies stay.
- ``undo_run``: reverts a run's directory changes from the journal (previous attribute values
  and memberships restored, what it disabled re-enabled, what it created removed), refusing
  when a later run touched the same entries.

``purge_expired`` and ``undo_run`` journal what they do under a run of their own, so they can
be followed and undone too.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import delete, func, or_, select

from etl.config import Settings, get_academy
from etl.errors import EntsyncError
from etl.plan.desired import content_hash
from etl.plan.diff import RETYPE, Change, diff_attrs
from etl.store.db import session_factory
from etl.store.models import (
    Account,
    Approval,
    Entry,
    Identity,
    JournalEntry,
    Run,
    SourceFile,
    utcnow,
)

log = logging.getLogger(__name__)


class UndoRefused(EntsyncError):
    """The run cannot be undone safely."""


def _apply(settings: Settings, run_id: str, academy: str, changes: list[Change],
           workers: int = 4) -> dict[str, Any]:
    from etl.apply.stage import ldap_target_from_settings
    from etl.apply.writer import DirectoryWriter

    Session = session_factory(settings.state_url)
    applied: list[Change] = []
    writer = DirectoryWriter(ldap_target_from_settings(settings), workers=workers)
    res = writer.apply(changes, on_applied=applied.append)
    with Session() as s, s.begin():
        seq = int(s.scalar(select(func.max(JournalEntry.seq))
                           .where(JournalEntry.run_id == run_id)) or 0)
        for ch in applied:
            seq += 1
            after = None if ch.op == "delete" else (ch.after or ch.attrs)
            s.add(JournalEntry(run_id=run_id, seq=seq, dn=ch.dn, op=ch.op, before=ch.before,
                               after=after))
            if after is None:
                s.execute(delete(Entry).where(Entry.dn == ch.dn))
            else:
                uid = after.get("uid", [None])[0] if ch.kind == "person" else None
                s.merge(Entry(dn=ch.dn, academy=academy, uai=ch.uai, kind=ch.kind, uid=uid,
                              content_hash=content_hash(after), attrs=after, run_id=run_id,
                              updated_at=utcnow()))
                if uid:
                    acc = s.get(Account, uid)
                    if acc is not None:
                        disabled = after.get("entSyncStatus") == ["DISABLED"]
                        acc.status = "DISABLED" if disabled else "ACTIVE"
                        acc.disabled_at = acc.disabled_at if disabled else None
    # a change left unwritten (the directory went down) is a failure of the operation
    return {"applied": res.applied, "failed": res.failed + res.left,
            "errors": res.errors[:50], "done": applied,
            **({"error": res.stopped} if res.stopped else {})}


def _new_run(settings: Settings, academy: str, trigger: str) -> str:
    from etl.run import start_run

    return start_run(settings, academy, False, trigger)


def _end_run(settings: Settings, run_id: str, status: str, summary: dict[str, Any]) -> None:
    from etl.run import release_lock

    with session_factory(settings.state_url)() as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None:
            run.status, run.ended_at, run.summary = status, utcnow(), summary
    if run is not None:
        release_lock(settings, run.academy, run_id)  # and its heartbeat stops


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
    run_id = _new_run(settings, academy_code, "lifecycle")
    res = _apply(settings, run_id, academy_code, changes)
    with Session() as s, s.begin():
        for ch in res["done"]:
            uid = (ch.before or {}).get("uid", [None])[0]
            gone = s.get(Account, uid) if uid else None
            if gone is not None:
                gone.status, gone.deleted_at = "DELETED", now
                s.execute(delete(Identity).where(Identity.uid == gone.uid))
    summary.update(run_id=run_id, deleted=res["applied"], failed=res["failed"])
    _end_run(settings, run_id, "failed" if res["failed"] else "success", summary)
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


def undo_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """Revert a run's directory changes, or refuse if a later run touched the same entries."""
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
        kind = _kind_of(dn, before or after or {})
        uai = _uai_of(dn)
        if first[dn].op == "add" and after is not None:
            changes.append(Change("delete", dn, kind, uai, "delete", before=after))
        elif after is None and before is not None:  # deleted by the run: recreate
            changes.append(Change("add", dn, kind, uai, "create", attrs=before, after=before))
        elif (before is not None and after is not None
              and {_kind_of(dn, before), _kind_of(dn, after)} == {"class", "group"}):
            # the run replaced a group by a class at this DN (``etl.plan.absence.retype_changes``):
            # replaced back, as LDAP cannot change an entry's structural class in place
            changes.append(Change("delete", dn, _kind_of(dn, after), uai, RETYPE,
                                  before=after))
            changes.append(Change("add", dn, kind, uai, "create", attrs=before, after=before))
        elif before is not None and after is not None:
            mods = diff_attrs(after, before)
            if mods:
                changes.append(Change("modify", dn, kind, uai, "update", mods=mods,
                                      before=after, after=before))
    undo_id = _new_run(settings, academy, "undo")
    res = _apply(settings, undo_id, academy, changes)
    status = "failed" if res["failed"] else "success"
    summary = {"undo_of": run_id, "changes": len(changes), "applied": res["applied"],
               "failed": res["failed"], "errors": res["errors"]}
    _end_run(settings, undo_id, status, summary)
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


def _kind_of(dn: str, attrs: dict[str, list[str]]) -> str:
    oc = {x.lower() for x in attrs.get("objectClass", [])}
    if "entperson" in oc:
        return "person"
    if "entclasse" in oc:
        return "class"
    if "entgroupe" in oc:
        return "group"
    if "entetablissement" in oc:
        return "school"
    return "ou"


def _uai_of(dn: str) -> str | None:
    for part in dn.split(","):
        if part.lower().startswith("entstructureuai="):
            return part.split("=", 1)[1]
    return None




class MergeRefused(EntsyncError):
    """The two accounts cannot be merged."""


SINGLE = frozenset({"uid", "entpersonlogin", "sn", "givenname", "cn", "displayname",
                    "entpersondatenaissance", "entpersonsexe", "entpersonstructrattach",
                    "enteleveine", "entelevemef", "entsyncstatus", "entsyncdisabledat", "mail"})


def merge_accounts(settings: Settings, keep_uid: str, other_uid: str) -> dict[str, Any]:
    """Merge ``other`` into ``keep``: source keys, school attachments, classes and groups, pupil
    and guardian links move to ``keep`` (its uid and login stay); ``other``'s entry is removed
    and its login stays registered. Journaled under a run of its own (``entsync undo`` puts
    the directory back; the identity map stays merged)."""
    if keep_uid == other_uid:
        raise MergeRefused("the two uids are the same")
    Session = session_factory(settings.state_url)
    with Session() as s:
        keep = s.scalar(select(Entry).where(Entry.uid == keep_uid, Entry.kind == "person"))
        other = s.scalar(select(Entry).where(Entry.uid == other_uid, Entry.kind == "person"))
        if keep is None or other is None:
            raise MergeRefused(f"no account {keep_uid if keep is None else other_uid} "
                               "written by entsync")
        academy = keep.academy
        merged = {k: list(v) for k, v in keep.attrs.items()}
        for k, v in other.attrs.items():
            if k.lower() in SINGLE:
                merged.setdefault(k, list(v))
            else:
                merged[k] = sorted(set(merged.get(k, [])) | set(v))
        if "DISABLED" not in keep.attrs.get("entSyncStatus", []) or \
                "DISABLED" not in other.attrs.get("entSyncStatus", []):
            merged["entSyncStatus"] = ["ACTIVE"]
            merged.pop("entSyncDisabledAt", None)
        changes: list[Change] = []
        mods = diff_attrs(keep.attrs, merged)
        if mods:
            changes.append(Change("modify", keep.dn, "person", keep.uai, "update", mods=mods,
                                  before=keep.attrs, after=merged))
        for e in s.scalars(select(Entry).where(Entry.academy == academy,
                                               Entry.dn.not_in([keep.dn, other.dn]))):
            a = e.attrs
            new = {k: list(v) for k, v in a.items()}
            touched = False
            for name, old, rep in (("member", other.dn, keep.dn),
                                   ("ENTAuxPersRelEleveEleve", other.dn, keep.dn),
                                   ("ENTElevePersRelEleve", other_uid, keep_uid)):
                vals = new.get(name)
                if vals and old in vals:
                    new[name] = sorted({rep if v == old else v for v in vals})
                    touched = True
            if touched:
                changes.append(Change("modify", e.dn, e.kind, e.uai, "update",
                                      mods=diff_attrs(a, new), before=a, after=new))
        changes.append(Change("delete", other.dn, "person", other.uai, "delete",
                              before=other.attrs))
    run_id = _new_run(settings, academy, "merge")
    res = _apply(settings, run_id, academy, changes)
    if not res["failed"]:
        with Session() as s, s.begin():
            for ident in s.scalars(select(Identity).where(Identity.uid == other_uid)):
                ident.uid, ident.rule = keep_uid, "merge"
            acc = s.get(Account, other_uid)
            if acc is not None:
                acc.status, acc.deleted_at = "MERGED", utcnow()
            from etl.store.models import MatchKey

            for mk in s.scalars(select(MatchKey).where(MatchKey.uid == other_uid)):
                s.delete(mk)
    summary = {"keep": keep_uid, "merged": other_uid, "changes": len(changes),
               "applied": res["applied"], "failed": res["failed"], "errors": res["errors"]}
    _end_run(settings, run_id, "failed" if res["failed"] else "success", summary)
    log.info("merged account %s into %s: %d changes (run %s)", other_uid, keep_uid,
             res["applied"], run_id)
    return {"run_id": run_id, **summary}
