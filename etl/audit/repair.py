"""Repair: the audit's differences written back through the normal plan/apply path.

The changes (``etl.audit.compare``: a missing entry recreated with what the sync wrote, its
uid and login; the attributes the sync owns put back; members it did not put there removed;
a foreign entry acted on only by an explicit policy) are judged by the disaster guards like a
night's plan, per school: a school whose repair trips one (a directory rolled back by a
restore differs in many entries) is held for approval (``entsync approve``), exactly as a
sync's held plan; the others are written and journaled under the audit's run (undoable:
``entsync undo RUN_ID``), under the academy's lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from etl.audit.compare import kind_of, uai_of
from etl.audit.read import DirEntry
from etl.config import Academy, Settings
from etl.plan.diff import Change, apply_order
from etl.plan.guards import GuardResult, categorize, evaluate_guards
from etl.plan.owned import owned_view
from etl.plan.stored import StoredView

log = logging.getLogger(__name__)

#: what ``--repair`` does with an entry of the academy's part the state DB does not know:
#: ``keep`` it (the default: reported only), ``disable`` it (an account: DISABLED, as the
#: sync disables one; anything else is kept) or ``delete`` it
FOREIGN_POLICIES = ("keep", "disable", "delete")


def foreign_change(e: DirEntry, policy: str, now: dt.datetime) -> Change | None:
    """What ``policy`` does with a foreign entry (None: nothing)."""
    if policy not in FOREIGN_POLICIES:
        raise ValueError(policy)
    kind, uai = kind_of(e.dn, e.attrs), uai_of(e.dn, e.attrs)
    if policy == "delete":
        return Change("delete", e.dn, kind, uai, "delete", before=dict(e.attrs))
    if policy == "keep" or kind != "person" or e.attrs.get("entSyncStatus") == ["DISABLED"]:
        return None
    from etl.plan.scope import generalized_time

    before = owned_view(e.attrs)
    after = dict(before)
    mods: dict[str, dict[str, list[str]]] = {}
    if "entsyncaccount" not in {c.lower() for c in e.attrs.get("objectClass", [])}:
        mods["objectClass"] = {"add": ["entSyncAccount"]}
        after["objectClass"] = [*before.get("objectClass", []), "entSyncAccount"]
    mods["entSyncStatus"] = {"replace": ["DISABLED"]}
    mods["entSyncDisabledAt"] = {"replace": [generalized_time(now)]}
    after["entSyncStatus"] = ["DISABLED"]
    after["entSyncDisabledAt"] = mods["entSyncDisabledAt"]["replace"]
    uid = next(iter(e.attrs.get("uid") or []), None)
    return Change("modify", e.dn, "person", uai, "update", mods=mods, before=before,
                  after=after, uid=uid)


def repair_guards(academy: Academy, changes: list[Change],
                  view: StoredView) -> dict[str, GuardResult]:
    """The night's guards on the repair's changes, and one of the repair's own:
    ``repair_share``, the share of a school's accounts the repair would write (recreated,
    changed, disabled, deleted), judged from ``guard_min_changes`` changes on against
    ``max_update_share``: a directory restored from an older backup differs in many accounts
    of the schools it rolled back, and is held, never silently rewritten."""
    guards = evaluate_guards(academy, changes, view, {}, {}, "normal")
    per_school: dict[str, int] = defaultdict(int)
    for ch in changes:
        if ch.uai and ch.kind == "person":
            per_school[ch.uai] += 1
    existing = view.school_accounts(sorted(per_school))
    for uai, n in sorted(per_school.items()):
        g = guards.setdefault(uai, GuardResult(uai))
        accounts = existing.get(uai, 0)
        share = n / accounts if accounts else 1.0
        g.check("repair_share", round(share, 4), academy.max_update_share,
                n >= academy.guard_min_changes and share > academy.max_update_share,
                f"the repair would write {n} of {accounts} accounts (a directory restored "
                "from an older backup?)")
    return guards


def repair(settings: Settings, academy: Academy, run_id: str, changes: Iterable[Change],
           view: StoredView) -> dict[str, Any]:
    """Judge the changes by the guards, hold the schools that trip one (their plan and an
    approval, as a night's), write and journal the others."""
    from etl.ops.runs import apply_changes
    from etl.plan.files import _write_plan
    from etl.plan.reconcile import _CAT_KEY, CATEGORIES
    from etl.plan.reconcile import _sample as sample
    from etl.store.db import session_factory
    from etl.store.models import Approval

    todo = apply_order(list(changes))
    for c in todo:
        c.category = categorize(c)
    guards = repair_guards(academy, todo, view)
    held_uais = sorted(u for u, g in guards.items() if g.tripped)
    held: dict[str, Any] = {}
    with session_factory(settings.state_url)() as s, s.begin():
        for uai in held_uais:
            mine = [c for c in todo if c.uai == uai]
            counts = dict.fromkeys(CATEGORIES, 0)
            for c in mine:
                counts[_CAT_KEY.get(c.category, "updated")] += 1
            path = f"{run_id}/held/{uai}.json"
            digest = _write_plan(settings, path, {"run_id": run_id, "academy": academy.code,
                                                  "uai": uai, "mode": "repair"}, mine)
            s.add(Approval(run_id=run_id, academy=academy.code, uai=uai, plan_path=path,
                           plan_hash=digest, guards=guards[uai].tripped,
                           summary={"counts": counts, "sample": sample(mine),
                                    "guards": guards[uai].tripped, "repair": True}))
            held[uai] = {"plan": path, "hash": digest, "counts": counts,
                         "guards": guards[uai].tripped}
            log.warning("repair of school %s held for approval: %s", uai,
                        "; ".join(g["detail"] for g in guards[uai].tripped))
    view.session.rollback()  # the stored view's reads end here: the apply journals apart
    free = [c for c in todo if c.uai not in held]
    res = apply_changes(settings, run_id, academy.code, free) if free else {
        "applied": 0, "failed": 0, "errors": []}
    log.info("repair %s: %d changes written, %d failed, %d held in %d schools", run_id,
             res["applied"], res["failed"], len(todo) - len(free), len(held))
    return {"planned": len(todo), "applied": res["applied"], "failed": res["failed"],
            "errors": res["errors"], "held": held,
            "held_changes": len(todo) - len(free),
            "guards": {u: g.evaluated for u, g in guards.items()},
            **({"error": res["error"]} if res.get("error") else {})}


__all__ = ["FOREIGN_POLICIES", "foreign_change", "repair", "repair_guards"]
