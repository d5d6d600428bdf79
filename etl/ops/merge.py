"""Merge: two accounts of one person (the duplicates report) made one."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from etl.apply.journal import person_uid
from etl.config import Settings
from etl.errors import MergeRefused
from etl.ops.runs import apply_changes, end_run, new_run
from etl.plan.diff import Change, diff_attrs
from etl.store.db import session_factory
from etl.store.models import Account, Entry, Identity, MatchKey, utcnow

log = logging.getLogger(__name__)

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
                                  before=keep.attrs, after=merged,
                                  uid=person_uid("person", merged)))
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
                                      mods=diff_attrs(a, new), before=a, after=new,
                                      uid=person_uid(e.kind, new)))
        changes.append(Change("delete", other.dn, "person", other.uai, "delete",
                              before=other.attrs))
    run_id = new_run(settings, academy, "merge")
    res = apply_changes(settings, run_id, academy, changes)
    if not res["failed"]:
        with Session() as s, s.begin():
            for ident in s.scalars(select(Identity).where(Identity.uid == other_uid)):
                ident.uid, ident.rule = keep_uid, "merge"
            acc = s.get(Account, other_uid)
            if acc is not None:
                acc.status, acc.deleted_at = "MERGED", utcnow()
            for mk in s.scalars(select(MatchKey).where(MatchKey.uid == other_uid)):
                s.delete(mk)
    summary = {"keep": keep_uid, "merged": other_uid, "changes": len(changes),
               "applied": res["applied"], "failed": res["failed"], "errors": res["errors"]}
    end_run(settings, run_id, "failed" if res["failed"] else "success", summary)
    log.info("merged account %s into %s: %d changes (run %s)", other_uid, keep_uid,
             res["applied"], run_id)
    return {"run_id": run_id, **summary}
