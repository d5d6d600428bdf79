"""The academy's plan: desired entries against the stored view, guards, held plans."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from etl import staging
from etl.config import Settings, get_academy
from etl.contracts import Reconciled, SchoolResult
from etl.errors import DirectoryError
from etl.plan.files import _write_plan, read_plan_file
from etl.plan.scope import _uid_of
from etl.plan.stored import PendingView, StoredView, load_stored
from etl.read.canonical import Tables
from etl.report import metrics
from etl.runtime.cpu import cpu_bound, goes_first
from etl.store import locks
from etl.store.db import session_factory
from etl.store.models import Approval, utcnow
from etl.validate.school import _school_counts

log = logging.getLogger(__name__)

#: rounds of matching against the directory's taken logins before a group gives up
#: (``etl.audit.adopt.claimed_in_directory``): each registers every taken login it finds, so a
#: round more is needed only where a name's next numbers are taken too
CLAIM_ROUNDS = 10


def _plan_against_state(view: StoredView, targets: dict[str, Any]) -> list[Any]:
    """``plan_changes`` against what the state DB says was written, read hash first: the
    content hash of every target DN, then the stored attributes of only the DNs whose hash
    differs, a batch at a time (an unchanged entry costs no attributes in memory)."""
    from etl.plan.diff import plan_changes_lazy

    return plan_changes_lazy(targets, view.hashes, view.attrs, batch=500)


def reconcile(settings: Settings, academy_code: str, run_id: str,
              schools: Sequence[SchoolResult], dry_run: bool = False, mode: str | None = None,
              today: dt.date | None = None, group: str | None = None,
              first: bool | None = None, lead: bool = False) -> Reconciled:
    """Identities, desired state, absences, the plan and the guards (``_reconcile``); the
    stage's numbers (changes by kind and operation) go to the run's metrics. ``group``: the
    tag of one group of a streamed run (``etl.plan.stream``; its absences wait for
    ``reconcile_absences``). ``first``: whether the night is the academy's first load (asks
    for a CPU slot, ``etl.runtime.cpu.cpu_bound``), as the run found it before anything was
    written (None: as the state DB says now); ``lead``: the first group of a streamed first
    load, what its first writes wait for."""
    metrics.stage_start()
    t0 = time.monotonic()
    out = Reconciled.from_json(cpu_bound(
        settings, _reconcile, settings, academy_code, run_id, [r.to_json() for r in schools],
        dry_run, mode, today, group,
        slot=goes_first(settings, academy_code, dry_run) if first is None else first,
        lead=lead))
    metrics.record(settings, run_id, academy_code, "reconcile", {
        "duration_s": time.monotonic() - t0,
        "changes": out.changes,
        "schools_held": len(out.held),
        "changes_held": sum(sum(h.counts.get(k, 0) for k in CATEGORIES)
                            for h in out.held.values()),
        "absent": out.absent,
        "new_identities": out.new_identities,
        **{f"changes.{k}": v for k, v in sorted(out.by_kind_op.items())},
    })
    return out


def _reconcile(settings: Settings, academy_code: str, run_id: str,
               schools: list[dict[str, Any]], dry_run: bool = False, mode: str | None = None,
               today: dt.date | None = None, group: str | None = None) -> dict[str, Any]:
    """Identities, desired state, absences, the plan and the guards.

    The plan of a school that trips a guard is written apart (``held/<uai>.json``) and waits
    for approval; ``plan.json`` holds the changes of the other schools. Both are plan files
    (``etl.plan.diff.plan_lines``: a header line, then one change a line in apply order).

    ``group``: one group of a streamed run (``etl.plan.stream``): planned against what the
    earlier groups wrote and saw, its plan ``plan-<group>.json``, what it saw staged for the
    next groups and the absences, which it does not judge.
    """
    from etl.audit.adopt import Searched, claimed_in_directory, directory_fresh
    from etl.match.identity import IdentityDecisions, write_identities
    from etl.match.resolve import match_records
    from etl.plan.desired import PlanContext, build_desired, person_dn, read_night
    from etl.plan.diff import RETYPE, apply_order
    from etl.plan.guards import categorize, evaluate_guards, with_held, with_older_exports
    from etl.plan.scope import (
        covered_scopes,
        keep_protected_members,
        preserve_other_schools,
        preserve_uncovered,
        retype_changes,
        structure_changes,
    )
    from etl.plan.stream import (
        Earlier,
        Presence,
        earlier_mains,
        earlier_presences,
        fold_into_held,
        held_people,
        left_parts,
        pending_entries,
        tonight_parts,
        write_presence,
    )

    academy = get_academy(academy_code)
    locks.heartbeat(settings, academy_code, run_id)
    run_mode = academy.effective_mode(today or dt.date.today(), mode)
    ok = [r for r in schools if r and r.get("status") == "ok"]
    tables = Tables.concat([Tables.load(staging.path(settings, r["staged"])) for r in ok])
    names: dict[str, str | None] = {r["uai"]: None for r in ok}
    years = {r["uai"]: r.get("school_year") for r in ok}
    counts = _school_counts(tables)
    base = settings.ldap.base
    ctx = PlanContext(names, academy, base, years)
    Session = session_factory(settings.state_url)
    with Session() as s:
        view = load_stored(s, academy_code)
        # the tables are consumed (their frames let go as read): tonight's records say it
        # all from here, and an academy's frames held while they are made were a peak's part
        night = read_night(tables, names, academy, consume=True)
        del tables
        matched = match_records(night.night, academy, view, run_id)
        earlier = (Earlier.of(earlier_presences(settings, run_id, group)) if group
                   else Earlier())
        fresh = None
        if group and not dry_run:
            fresh = earlier.fresh if earlier.fresh is not None else directory_fresh(
                settings, academy)
        # never duplicate: accounts about to be created that the directory holds already are
        # adopted, logins it holds registered; matched again with what the state DB now knows
        # (each round searches only the logins handed out anew: those of a name found
        # taken; until a round finds none taken, or at most CLAIM_ROUNDS)
        searched = Searched()
        for _ in range(CLAIM_ROUNDS):
            if not claimed_in_directory(settings, s, academy, matched.decisions, run_id,
                                        fresh, searched):
                break
            matched = match_records(night.night, academy, view, run_id)
        else:
            raise DirectoryError(
                f"{academy_code}: logins about to be handed out were still found taken in "
                f"the directory after {CLAIM_ROUNDS} rounds of matching: this group not written "
                f"(accounts the state DB does not know hold them; entsync audit lists them)")
        # what matching decided is written at once: what planning reads next (absence, the
        # preserved parts of accounts) sees tonight's identities, as it always has
        write_identities(s, academy_code, matched.decisions)
        # and let go (a first load's every new account and source key)
        matched = dataclasses.replace(matched, decisions=IdentityDecisions())
        desired = build_desired(night, matched, ctx, view, consume=True)
        del night, matched
        processed = set(names)
        # the desired entries, replaced and added to by the lifecycle steps (what each
        # returns); the entries a step replaces are let go
        targets = desired.entries
        parts = tonight_parts(targets, processed) if group else {}
        # people whose change waits in a plan held for an earlier group's school: planned on
        # top of it, and what this group plans for them folded into that plan
        held_before: dict[str, Any] = {}
        if group and earlier.held:
            held_before = held_people(settings, run_id, earlier.held, {
                e.uid for e in targets.values() if e.kind == "person" and e.uid}, processed)
            if held_before:
                view = PendingView(view.session, view.academy,
                                   pending=pending_entries(held_before))
        covered = covered_scopes(ok)
        targets.update(preserve_uncovered(view, targets, covered, processed))
        mains: dict[str, str] = {}
        if group:
            targets.update(earlier_mains(targets, earlier, base))
        targets.update(preserve_other_schools(view, targets, processed, earlier.processed,
                                              earlier.parts, earlier.mains,
                                              mains if group else None))
        if group:
            from etl.discover.aaf import has_aaf_state, school_people

            aaf = (school_people(s, academy, processed) if earlier.parts
                   and has_aaf_state(s, academy_code) else [])
            targets.update(left_parts(view, academy.jointure_prefix, processed, targets,
                                      earlier, base, aaf))
        protected = {k for r in ok for k in r.get("protected", [])}
        protected_uids = set(view.identities(protected).values())
        targets.update(keep_protected_members(view, targets, {person_dn(u, base)
                                                              for u in protected_uids}))
        absent: list[Any] = []
        if group:
            seen = Presence(group, present=sorted(_present(targets, protected)),
                            parts=parts, processed=sorted(processed),
                            accounts=view.school_accounts(sorted(processed)), mains=mains,
                            fresh=bool(fresh))
        elif run_mode == "normal":
            absent, gone = _judge_absent(settings, s, view, academy, run_id, covered,
                                         _present(targets, protected), targets, processed)
            for e in gone:
                targets[e.dn] = e
        archives, removals = structure_changes(view, academy, targets, covered, years, base)
        targets.update(archives)
        renewed = {c.dn for c in removals if c.category == RETYPE}
        changes = apply_order(retype_changes(view, targets, _plan_against_state(view, targets),
                                             renewed) + removals)
        for c in changes:
            c.category = categorize(c)
        if run_mode == "create_only":
            changes = [c for c in changes if c.op == "add"]
        folded: dict[str, dict[str, Any]] = {}
        if held_before:
            changes, folded = fold_into_held(changes, held_before)
        # a school read from the AAF without an Eleve Complet tonight: its pupils are the
        # last Complet's plus the Deltas since, no export that could have vanished
        deltas_only = {r["uai"] for r in ok if r.get("aaf")
                       and "Eleve" not in (r["aaf"].get("complets") or [])}
        existing = None
        if group:  # the group's schools counted once (its presence has them), the rest now
            extra = sorted({c.uai for c in changes if c.uai and c.kind == "person"}
                           - set(seen.accounts))
            existing = {**seen.accounts, **(view.school_accounts(extra) if extra else {})}
        guards = evaluate_guards(academy, changes, view, counts, years, run_mode,
                                 no_pupil_drop=deltas_only, existing=existing)
        guards = with_older_exports(guards, view.held_reasons(run_id, [
            r["uai"] for r in schools if r and r.get("status") in ("ok", "unchanged")]))
        guards = with_held(guards, {r["uai"]: r["aaf"]["holds"] for r in schools
                                    if r and r.get("status") in ("ok", "unchanged")
                                    and r.get("aaf") and r["aaf"].get("holds")})
        if dry_run:
            s.rollback()  # a dry run assigns no uid and no login for good
        else:
            s.commit()
    _school_identity_findings(settings, run_id, desired.ine_findings)
    joined: list[str] = []
    if group:
        # a group judges its own schools; a change it plans for a school an earlier group
        # held joins that school's held plan, one for another school is written
        mine_schools = {r["uai"] for r in schools if r}
        guards = {u: g for u, g in guards.items() if u in mine_schools}
        _hold_with_read_in(changes, parts, mine_schools, earlier.held,
                           {u for u, g in guards.items() if g.tripped})
        joined = sorted({c.uai for c in changes if c.uai in earlier.held} - mine_schools)
    held_uais = sorted(u for u, g in guards.items() if g.tripped)
    if group and not dry_run:
        seen.held = held_uais
        write_presence(settings, run_id, seen)
    free = [c for c in changes if c.uai not in held_uais and c.uai not in joined]
    docs = {r["uai"]: r["docs"] for r in ok}
    # an older export of the content applied is held too (its date would become the reference)
    held_same = {r["uai"]: r["docs"] for r in schools if r and r.get("status") == "unchanged"
                 and r["uai"] in held_uais}
    unchanged = {r["uai"]: r["docs"] for r in schools if r and r.get("status") == "unchanged"
                 and r["uai"] not in held_uais}
    prints = {r["uai"]: r.get("fingerprint") for r in ok}
    rereads = {r["uai"]: r.get("reread_on") for r in ok}
    # a reference in the staging area
    plan_path = f"{run_id}/plan-{group}.json" if group else f"{run_id}/plan.json"
    _write_plan(settings, plan_path, {
        "run_id": run_id, "academy": academy_code, "dry_run": dry_run, "mode": run_mode,
        "schools": [u for u in sorted(names) if u not in held_uais],
        "docs": {**{u: d for u, d in docs.items() if u not in held_uais}, **unchanged},
        "fingerprints": {u: f for u, f in prints.items() if u not in held_uais},
        "reread_on": {u: f for u, f in rereads.items() if u not in held_uais},
        "unchanged": sorted(unchanged),
        "school_counts": {u: c for u, c in counts.items() if u not in held_uais},
        "school_years": {u: y for u, y in years.items() if u not in held_uais},
    }, free)
    per_school = _per_school_counts(changes, targets, names)
    held: dict[str, dict[str, Any]] = {}
    with Session() as s, s.begin():
        for uai in held_uais:
            mine = [c for c in changes if c.uai == uai]
            path = f"{run_id}/held/{uai}.json"
            digest = _write_plan(settings, path, {
                "run_id": run_id, "academy": academy_code, "uai": uai, "mode": run_mode,
                "docs": {uai: docs.get(uai) or held_same.get(uai, [])},
                "unchanged": [uai] if uai in held_same else [],
                "fingerprints": {uai: prints.get(uai)},
                "reread_on": {uai: rereads.get(uai)},
                "school_counts": {uai: counts.get(uai, {})},
                "school_years": {uai: years.get(uai)},
            }, mine)
            summary = {"counts": per_school.get(uai, {}),
                       "sample": _sample(mine), "by_profile": _by_profile(mine),
                       "guards": guards[uai].tripped}
            held[uai] = {"plan": path, "hash": digest, "guards": guards[uai].tripped,
                         "counts": per_school.get(uai, {})}
            if not dry_run:
                s.add(Approval(run_id=run_id, academy=academy_code, uai=uai,
                               plan_path=path, plan_hash=digest,
                               guards=guards[uai].tripped, summary=summary))
            log.warning("school %s held for approval: %s", uai,
                        "; ".join(g["detail"] for g in guards[uai].tripped))
    if joined or folded:
        with Session() as s, s.begin():
            for uai in sorted(set(joined) | set(folded)):
                mine = [c for c in changes if c.uai == uai]
                repl = folded.get(uai, {})
                held[uai] = _hold_more(settings, s, academy_code, run_id, run_mode, uai,
                                       mine + [c for c in repl.values() if c is not None],
                                       [], dict(per_school.get(uai, {})), replace=set(repl))
    log.info("plan %s: %d changes for %d schools, %d held (%d new identities, %d absent)",
             run_id, len(free), len(names) - len(held_uais), len(held_uais),
             desired.created_identities, len(absent))
    by_kind_op: dict[str, int] = defaultdict(int)
    for c in free:
        by_kind_op[f"{c.kind}.{c.op}"] += 1
    return {"plan": plan_path, "changes": len(free), "per_school": per_school,
            "by_kind_op": dict(by_kind_op),
            "held": held, "mode": run_mode, "absent": len(absent),
            "guards": {u: g.evaluated for u, g in guards.items()},
            "new_identities": desired.created_identities, "skipped": desired.skipped,
            "matches": desired.matches, "duplicates": desired.duplicates}


def _present(targets: dict[str, Any], protected: set[str]) -> set[str]:
    """Who is present tonight: the jointures of the people planned (as preserved: those of
    other schools kept) and of the records rejected tonight (skipped, not moved)."""
    return {j for e in targets.values() if e.kind == "person"
            for j in e.attrs.get("ENTPersonJointure", [])} | protected


def _judge_absent(settings: Settings, s: Any, view: StoredView, academy: Any, run_id: str,
                  covered: set[tuple[str, str]], present: set[str], targets: dict[str, Any],
                  processed: set[str], streamed: bool = False) -> tuple[list[Any], list[Any]]:
    """The absent accounts (``find_absent`` over what tonight covered) and their disabled
    entries (``disabled_entries``). An AAF key names no school: its scopes come from the AAF
    state, as it was before tonight (a streamed night's groups committed theirs: what they
    removed is added back, ``scopes_removed``)."""
    from etl.discover.aaf import aaf_scopes, has_aaf_state, scopes_removed
    from etl.plan.scope import absence_scope, disabled_entries, find_absent, unscoped_keys

    scopes = None
    if has_aaf_state(s, academy.code):
        scopes = aaf_scopes(s, academy, unscoped_keys(view, academy, present))
        if streamed:
            for j, sc in scopes_removed(settings, academy, run_id, processed).items():
                scopes.setdefault(j, set()).update(sc)
    absent = find_absent(view, academy, absence_scope(covered), present, scopes)
    return absent, disabled_entries(view, absent, utcnow(), targets, processed,
                                    settings.ldap.base)


def _hold_with_read_in(changes: Sequence[Any], parts: Mapping[str, Sequence[str]],
                       mine: set[str], held_before: set[str], held: set[str]) -> None:
    """A group's change to a person of a school outside the group (the person's main school,
    judged in another group or not read tonight) who was read tonight in a school of the
    group held now: the change goes with that school (its held plan, its counts), as the
    whole night's plan would have held it. Without this, a pupil moving from a collège of a
    later group to a lycée held in this one was written before anyone approved."""
    if not held:
        return
    for c in changes:
        if c.uai in mine or c.uai in held_before:
            continue
        there = sorted(set(parts.get(_uid_of(c.dn), ())) & held)
        if there:
            c.uai = there[0]


def reconcile_absences(settings: Settings, academy_code: str, run_id: str,
                       schools: Sequence[SchoolResult], mode: str | None = None,
                       today: dt.date | None = None) -> Reconciled:
    """The last step of a streamed run (``etl.plan.stream``): the absences, judged once every
    group is written (``_reconcile_absences``), as a plan of their own."""
    metrics.stage_start()
    t0 = time.monotonic()
    out = Reconciled.from_json(cpu_bound(
        settings, _reconcile_absences, settings, academy_code, run_id,
        [r.to_json() for r in schools], mode, today,
        slot=goes_first(settings, academy_code, False)))
    metrics.record(settings, run_id, academy_code, "absences", {
        "duration_s": time.monotonic() - t0, "changes": out.changes, "absent": out.absent,
        "schools_held": len(out.held)})
    return out


def _reconcile_absences(settings: Settings, academy_code: str, run_id: str,
                        schools: list[dict[str, Any]], mode: str | None = None,
                        today: dt.date | None = None) -> dict[str, Any]:
    """The accounts none of tonight's groups read, every school attachment of which was
    covered tonight, disabled (a plan ``plan-absences.json``) as one run over every school
    would: the same absences, the same disable guards per school against the accounts each
    had before its group wrote. A school held in its group gets its absences in its held
    plan; a school whose absences trip a guard now has them held alone (what its group wrote
    stays written)."""
    from etl.plan.diff import apply_order
    from etl.plan.guards import categorize, evaluate_guards
    from etl.plan.scope import covered_scopes
    from etl.plan.stream import ABSENCES, read_presences

    academy = get_academy(academy_code)
    locks.heartbeat(settings, academy_code, run_id)
    run_mode = academy.effective_mode(today or dt.date.today(), mode)
    ok = [r for r in schools if r and r.get("status") == "ok"]
    seen = read_presences(settings, run_id)
    processed = {u for p in seen for u in p.processed}
    held_before = {u for p in seen for u in p.held}
    accounts = {u: n for p in seen for u, n in p.accounts.items()}
    absent: list[Any] = []
    changes: list[Any] = []
    Session = session_factory(settings.state_url)
    with Session() as s:
        view = load_stored(s, academy_code)
        if run_mode == "normal" and processed:
            present = {j for p in seen for j in p.present}
            del seen
            absent, gone = _judge_absent(settings, s, view, academy, run_id,
                                         covered_scopes(ok), present, {}, processed,
                                         streamed=True)
            del present
            changes = apply_order(_plan_against_state(view, {e.dn: e for e in gone}))
            for c in changes:
                c.category = categorize(c)
        guards = evaluate_guards(academy, changes, view, {}, {}, run_mode,
                                 existing={u: accounts.get(u, 0) for u in
                                           {c.uai for c in changes if c.uai}})
    tripped = {u for u, g in guards.items() if g.tripped}
    held_uais = sorted(tripped | ({c.uai for c in changes if c.uai} & held_before))
    free = [c for c in changes if c.uai not in held_uais]
    plan_path = f"{run_id}/plan-{ABSENCES}.json"
    _write_plan(settings, plan_path, {
        "run_id": run_id, "academy": academy_code, "dry_run": False, "mode": run_mode,
        "schools": [], "docs": {}, "unchanged": [], "school_counts": {},
        "school_years": {}}, free)
    per_school = _per_school_counts(changes, {}, {})
    held: dict[str, dict[str, Any]] = {}
    with Session() as s, s.begin():
        for uai in held_uais:
            mine = [c for c in changes if c.uai == uai]
            held[uai] = _hold_more(settings, s, academy_code, run_id, run_mode, uai, mine,
                                       guards[uai].tripped if uai in tripped else [],
                                       dict(per_school.get(uai, {})))
    by_kind_op: dict[str, int] = defaultdict(int)
    for c in free:
        by_kind_op[f"{c.kind}.{c.op}"] += 1
    log.info("absences %s: %d accounts absent, %d changes, %d schools held", run_id,
             len(absent), len(free), len(held_uais))
    return {"plan": plan_path, "changes": len(free),
            "per_school": per_school,
            "by_kind_op": dict(by_kind_op), "held": held, "mode": run_mode,
            "absent": len(absent), "guards": {u: g.evaluated for u, g in guards.items()},
            "new_identities": 0, "skipped": {}, "matches": {}, "duplicates": []}


def _hold_more(settings: Settings, s: Any, academy_code: str, run_id: str, mode: str,
               uai: str, mine: list[Any], tripped: list[dict[str, Any]],
               counts: dict[str, int], replace: set[str] | None = None) -> dict[str, Any]:
    """More of a school's changes held (its absences, or what a later group planned for it):
    added to the plan held for it this run (one plan, one approval, its hash renewed), else
    a held plan of their own. ``replace``: DNs whose change in that plan is dropped first
    (``mine`` has the one that replaces it, if any: ``etl.plan.stream.fold_into_held``)."""
    from sqlalchemy import select

    from etl.plan.diff import apply_order

    path = f"{run_id}/held/{uai}.json"
    row = s.scalars(select(Approval).where(Approval.run_id == run_id, Approval.uai == uai)
                    .order_by(Approval.id.desc())).first()
    header: dict[str, Any] = {"run_id": run_id, "academy": academy_code, "uai": uai,
                              "mode": mode, "docs": {}, "unchanged": [],
                              "fingerprints": {}, "reread_on": {}, "school_counts": {},
                              "school_years": {}}
    before: list[Any] = []
    if row is not None and staging.exists(settings, row.plan_path):
        old_header, old = read_plan_file(settings, row.plan_path)
        before = [c for c in old if not replace or c.dn not in replace]
        header = {k: v for k, v in old_header.items() if k not in ("format", "change_count")}
        path = row.plan_path
    changes = apply_order([*before, *mine])
    digest = _write_plan(settings, path, header, changes)
    guards = [*(row.guards if row is not None else []), *tripped]
    old_counts = dict((row.summary or {}).get("counts", {})) if row is not None else {}
    merged = {k: int(old_counts.get(k, 0)) + int(counts.get(k, 0))
              for k in set(old_counts) | set(counts)}
    if "unchanged" in merged:
        merged["unchanged"] = max(0, merged["unchanged"] - int(counts.get("disabled", 0)))
    summary = {"counts": merged, "sample": _sample(changes), "by_profile": _by_profile(changes),
               "guards": guards}
    if row is not None:
        row.plan_hash, row.guards, row.summary = digest, guards, summary
    else:
        s.add(Approval(run_id=run_id, academy=academy_code, uai=uai, plan_path=path,
                       plan_hash=digest, guards=guards, summary=summary))
    log.warning("school %s: %d more changes held for approval%s", uai, len(mine),
                ": " + "; ".join(g["detail"] for g in tripped) if tripped else
                ", with the plan held before")
    return {"plan": path, "hash": digest, "guards": guards, "counts": merged}


def _school_identity_findings(settings: Settings, run_id: str,
                              findings: list[dict[str, Any]]) -> None:
    """What matching found about a school's records (INE conflicts) goes to the validation
    report and French page it got when it was read
    (``etl.validate.feedback.add_identity_findings``); the pages come from the staging area when
    another worker wrote them."""
    from etl.validate.feedback import add_identity_findings

    by_uai: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        by_uai[str(f["uai"])].append(f)
    for uai, mine in sorted(by_uai.items()):
        local = settings.reports_dir / run_id / "schools" / uai
        names = (f"validation_{uai}.json", f"validation_{uai}.html", f"retours_{uai}.html")
        for n in names:
            ref = f"{run_id}/reports/schools/{uai}/{n}"
            if not (local / n).exists() and staging.exists(settings, ref):
                local.mkdir(parents=True, exist_ok=True)
                (local / n).write_bytes(staging.read_bytes(settings, ref))
        if not (local / names[0]).exists():
            continue
        add_identity_findings(local / names[0], local / names[1], local / names[2], mine)
        for n in names:
            if (local / n).exists():
                staging.copy_in(settings, local / n, f"{run_id}/reports/schools/{uai}/{n}")
        log.warning("school %s: %d pupil records in an INE conflict, not matched through "
                    "their INE (its reports name them)", uai, len(mine))


CATEGORIES = ("created", "updated", "disabled", "restored", "deleted")
_CAT_KEY = {"create": "created", "update": "updated", "membership": "updated",
            "disable": "disabled", "restore": "restored", "delete": "deleted"}


def _per_school_counts(changes: list[Any], targets: dict[str, Any],
                       names: dict[str, str | None]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0))
    desired_n: dict[str, int] = defaultdict(int)
    for e in targets.values():
        if e.uai:
            desired_n[e.uai] += 1
    for c in changes:
        if c.uai:
            out[c.uai][_CAT_KEY.get(c.category, "updated")] += 1
    for u in set(names) | set(out):
        v = out[u]
        v["unchanged"] = max(0, desired_n.get(u, 0) - sum(v[k] for k in CATEGORIES))
    return {u: dict(v) for u, v in out.items()}


def _sample(changes: list[Any], n: int = 5) -> list[dict[str, Any]]:
    """A few affected accounts per action for the approver (up to ``n`` each, in plan
    order): DN, action, changed attributes (no values; a DN's uid is opaque)."""
    out = []
    taken: dict[str, int] = defaultdict(int)
    for c in changes:
        if c.kind != "person" or taken[c.category] >= n:
            continue
        taken[c.category] += 1
        out.append({"dn": c.dn, "action": c.category,
                    "attributes": sorted(c.mods) if c.mods else []})
    return out


#: an account's profile (``ENTPersonProfils``) as the approver reads it
PROFILES = {"National_ELV": "pupils", "National_TUT": "guardians", "National_ENS": "teachers",
            "National_DOC": "teachers", "National_EVS": "staff", "National_ETA": "staff",
            "National_DIR": "staff", "National_COL": "staff"}


def _by_profile(changes: list[Any]) -> dict[str, dict[str, int]]:
    """Changes per action and profile (pupils, guardians, teachers, staff; ``other`` for
    classes and groups): what a guard's counts mean in people."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in changes:
        profile = "other"
        if c.kind == "person":
            attrs = c.after or c.attrs or c.before or {}
            profs = attrs.get("ENTPersonProfils") or (c.before or {}).get("ENTPersonProfils")
            profile = next((PROFILES[p] for p in profs or [] if p in PROFILES), "staff")
        out[_CAT_KEY.get(c.category, "updated")][profile] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}
