"""A streamed night: an academy's schools planned and written group by group, its absences
judged once after the last group.

Each group is planned like a run of its own schools (``etl.plan.reconcile._reconcile`` with a
``group`` tag) against the stored view its earlier groups left, with three differences that
make the final directory the same whatever the order of the groups:

- **what each group saw is kept** (``Presence``, one staged file per group): the jointures of
  the people it planned, the schools of tonight each person was read in (their *parts*), the
  schools it processed and their account counts before anything was written;
- **one account, several schools**: a later group keeps, from the stored view, the parts of
  an earlier group's schools only for the people read in those schools tonight (what the
  earlier group wrote is tonight's); the parts of a person who left one of them are dropped
  (``preserve_other_schools``'s ``also_processed``), and a group drops its own schools' parts
  from the people an earlier group read elsewhere but it did not read (``left_parts``);
- **absences wait for the last group** (``etl.plan.reconcile.reconcile_absences``): who is
  absent is only known when every school has been read, and a pupil moving from a collège
  of the first group to a lycée of the last one is no absence. The disable guards judge them
  then, per school, against the accounts each school had before its group wrote (a school
  held in its group gets its absences in its held plan).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from etl import staging
from etl.config import Settings
from etl.plan.desired import DesiredEntry, school_dn
from etl.plan.diff import Change
from etl.plan.scope import (
    SCHOOL_SCOPED,
    SCOPED_SOURCES,
    _uai_in_dn,
    _uid_of,
    jointure_scope,
)
from etl.plan.stored import StoredEntry, StoredView

#: the staged folder of a run's presence files
PRESENCE_DIR = "presence"
#: the tag of the last step, the absences (``etl.plan.reconcile.reconcile_absences``)
ABSENCES = "absences"


@dataclass
class PresenceHead:
    """What one group of a streamed run saw, but who was present: what the groups after it
    need (``earlier_presences``); the absences' step reads ``Presence``."""

    tag: str
    #: uid -> the group's schools the person was read in tonight
    parts: dict[str, list[str]] = field(default_factory=dict)
    #: the group's schools read tonight (status ``ok``)
    processed: list[str] = field(default_factory=list)
    #: UAI -> the school's accounts before the group wrote (the disable guards' base)
    accounts: dict[str, int] = field(default_factory=dict)
    #: the group's schools held for approval
    held: list[str] = field(default_factory=list)
    #: uid -> the main school (``ENTPersonStructRattach``) a person had before the run, for
    #: the people this group was the first to write ("" for none)
    mains: dict[str, str] = field(default_factory=dict)
    #: the academy's part of the directory was empty when the run's first group planned:
    #: what is there since, the run wrote (``etl.audit.adopt.claimed_in_directory``)
    fresh: bool = False


@dataclass
class Presence(PresenceHead):
    """What one group of a streamed run saw (staged as ``<run>/presence/<tag>.json``)."""

    #: the jointures of the people planned (tonight's and those kept of other schools), and
    #: of the records rejected tonight (present: skipped, not moved)
    present: list[str] = field(default_factory=list)


def presence_ref(run_id: str, tag: str) -> str:
    return f"{run_id}/{PRESENCE_DIR}/{tag}.json"


def write_presence(settings: Settings, run_id: str, p: Presence) -> None:
    staging.write_bytes(settings, presence_ref(run_id, p.tag), msgspec.json.encode(p))


def read_presences(settings: Settings, run_id: str) -> list[Presence]:
    """The presence files of the run's groups (the absences' step)."""
    return list(_read_staged(settings, run_id, Presence, None))


def earlier_presences(settings: Settings, run_id: str, exclude: str) -> Iterator[PresenceHead]:
    """The presence files of the run's groups planned so far (any order), ``exclude``'s not,
    without who was present (the JSON list skipped, never decoded: each group reads every
    earlier group's file), one at a time as ``Earlier.of`` merges them: the last group of an
    academy at scale 1.0 would otherwise hold every earlier group's decoded parts at once (a
    person each, ~450,000 for Nancy-Metz) beside the merge."""
    return _read_staged(settings, run_id, PresenceHead, exclude)


_P = TypeVar("_P", bound=PresenceHead)


def _read_staged(settings: Settings, run_id: str, kind: type[_P], exclude: str | None
                 ) -> Iterator[_P]:
    folder = f"{run_id}/{PRESENCE_DIR}"
    if not staging.exists(settings, folder):
        return
    for name in sorted(staging.children(settings, folder)):
        if not name.endswith(".json") or name[:-5] == exclude:
            continue
        yield msgspec.json.decode(staging.read_bytes(settings, f"{folder}/{name}"), type=kind)


@dataclass
class Earlier:
    """The groups of this run planned before this one, merged."""

    parts: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    processed: set[str] = field(default_factory=set)
    mains: dict[str, str] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    #: the directory was empty of the academy before the run (None: no group before this)
    fresh: bool | None = None

    @classmethod
    def of(cls, presences: Iterable[PresenceHead]) -> Earlier:
        out = cls()
        for p in presences:
            out.fresh = p.fresh and out.fresh is not False
            out.processed.update(p.processed)
            out.mains.update(p.mains)
            out.held.update(p.held)
            for uid, uais in p.parts.items():
                out.parts[uid].update(uais)
        return out


def tonight_parts(targets: Mapping[str, DesiredEntry], schools: set[str]) -> dict[str, list[str]]:
    """uid -> the schools of ``schools`` a desired person was read in tonight (the scopes of
    its jointures, before anything of another school is kept)."""
    out: dict[str, list[str]] = {}
    for e in targets.values():
        if e.kind != "person" or not e.uid:
            continue
        mine = {sc[0] for j in e.attrs.get("ENTPersonJointure", [])
                if (sc := jointure_scope(j)) is not None}
        # an AAF key names no school: its record's classes, subjects and functions do
        mine |= {u for name in SCHOOL_SCOPED for v in e.attrs.get(name, [])
                 if (u := _uai_in_dn(v)) is not None}
        if e.uai:
            mine.add(e.uai)
        mine = mine & schools
        if mine:
            out[e.uid] = sorted(mine)
    return out


def earlier_mains(targets: Mapping[str, DesiredEntry], earlier: Earlier,
                  base: str) -> dict[str, DesiredEntry]:
    """A person an earlier group read too: the main school one run over every school would
    give, the first of all the schools the person was read in tonight so far."""
    out: dict[str, DesiredEntry] = {}
    for e in targets.values():
        if e.kind != "person" or not e.uid or e.uid not in earlier.parts or not e.uai:
            continue
        first = min({e.uai, *earlier.parts[e.uid]})
        if first != e.uai:
            out[e.dn] = DesiredEntry(e.dn, e.kind, first, {
                **e.attrs, "ENTPersonStructRattach": [school_dn(first, base)]}, uid=e.uid)
    return out


def left_parts(view: StoredView, prefix: str, schools: set[str],
               targets: Mapping[str, DesiredEntry], earlier: Earlier,
               base: str, aaf_keys: Iterable[str] = ()) -> dict[str, DesiredEntry]:
    """The people an earlier group read tonight who are stored with a part of one of this
    group's ``schools`` but were not read in it tonight: their entry without those parts (what
    one run over every school would have written). Their main school, when it was one of
    these, becomes the first of the schools they were read in tonight. ``aaf_keys``: the AAF
    jointures last applied in these schools (an AAF key names no school)."""
    if not earlier.parts:
        return {}
    planned = {e.uid for e in targets.values() if e.kind == "person" and e.uid}
    # the source keys of these schools only (a range each): a scan of the academy's keys in
    # every group made a streamed night grow with the square of the academy
    uids = {uid for j, uid in view.school_identities(prefix, SCOPED_SOURCES, schools)
            if uid in earlier.parts and uid not in planned
            and (sc := jointure_scope(j)) is not None and sc[0] in schools}
    # AAF keys name no school: the people last applied in these schools' AAF state
    uids |= {uid for uid in view.identities(aaf_keys).values()
             if uid in earlier.parts and uid not in planned}
    if not uids:
        return {}
    stored = view.person_entries(sorted(uids))
    pupils = {p: None for e in stored.values()
              for p in e.attrs.get("ENTAuxPersRelEleveEleve", [])}
    pupil_uai = view.uais(pupils) if pupils else {}
    for p in pupil_uai:  # a pupil an earlier group read: the school it was read in tonight
        there = earlier.parts.get(_uid_of(p))
        if there:
            pupil_uai[p] = min(there)
    out: dict[str, DesiredEntry] = {}
    for uid, cur in stored.items():
        a = {k: list(v) for k, v in cur.attrs.items()}
        a["ENTPersonJointure"] = [j for j in a.get("ENTPersonJointure", [])
                                  if (sc := jointure_scope(j)) is None or sc[0] not in schools]
        for name in SCHOOL_SCOPED:
            if name in a:
                a[name] = [v for v in a[name] if _uai_in_dn(v) not in schools]
        if "ENTAuxPersRelEleveEleve" in a:
            a["ENTAuxPersRelEleveEleve"] = [p for p in a["ENTAuxPersRelEleveEleve"]
                                            if pupil_uai.get(p) not in schools]
        uai = cur.uai
        main = a.get("ENTPersonStructRattach") or []
        if main and _uai_in_dn(main[0]) in schools:
            # the main school before the run while still attached, else the first read
            attached = {sc[0] for j in a["ENTPersonJointure"]
                        if (sc := jointure_scope(j)) is not None}
            pre = _uai_in_dn(earlier.mains.get(uid) or "")
            uai = pre if pre in attached else min(earlier.parts[uid])
            a["ENTPersonStructRattach"] = [school_dn(uai, base)]
        a = {k: v for k, v in a.items() if v}
        if a != cur.attrs:
            out[cur.dn] = DesiredEntry(cur.dn, "person", uai, a, uid=uid)
    return out


def plan_order(groups: Sequence[Any], order: str, seed: str = "") -> list[Any]:
    """The groups in the order they are planned and written (``settings.plan_order``):
    ``uai`` as discovered, ``reverse``, or ``shuffle`` (seeded by the run id: a check that the
    directory does not depend on it)."""
    out = list(groups)
    if order == "reverse":
        out.reverse()
    elif order == "shuffle":
        random.Random(seed).shuffle(out)
    return out


def _add(a: Any, b: Any) -> Any:
    """Numbers added, mappings merged key by key (``written_counts``'s nesting)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return {k: _add(a.get(k), b.get(k)) if k in a and k in b else
                (a[k] if k in a else b[k]) for k in {**a, **b}}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    return b if b is not None else a


def merge_reconciled(parts: Sequence[Any]) -> Any:
    """The groups' plans (``Reconciled``) and the absences' (last) as one run's: counts
    added; a school's held plan the last that names it (the absences' holds its group's too);
    its guards all those evaluated."""
    from etl.contracts import Reconciled

    first = parts[0]
    per_school: dict[str, dict[str, int]] = {}
    guards: dict[str, list[dict[str, Any]]] = defaultdict(list)
    held: dict[str, Any] = {}
    for p in parts:
        for uai, counts in p.per_school.items():
            have = per_school.get(uai)
            if have is None:
                per_school[uai] = dict(counts)
                continue
            merged = _add(have, counts)
            if "unchanged" in have:  # an account disabled now was counted unchanged
                merged["unchanged"] = max(0, have["unchanged"] - counts.get("disabled", 0))
            per_school[uai] = merged
        for uai, rows in p.guards.items():
            guards[uai] += rows
        held.update(p.held)
    return Reconciled(
        plan=parts[-1].plan, changes=sum(p.changes for p in parts), per_school=per_school,
        by_kind_op=_add_all(p.by_kind_op for p in parts), held=held, mode=first.mode,
        absent=sum(p.absent for p in parts), guards=dict(guards),
        new_identities=sum(p.new_identities for p in parts),
        skipped=_add_all(p.skipped for p in parts), matches=_add_all(p.matches for p in parts),
        duplicates=[d for p in parts for d in p.duplicates])


def _add_all(maps: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in maps:
        out = _add(out, m)
    return out


def merge_applied(parts: Sequence[Any]) -> Any:
    """The groups' applies (``Applied``) as one run's."""
    from etl.contracts import Applied

    docs = [p.to_json() for p in parts]
    out: dict[str, Any] = {}
    for d in docs:
        for k, v in d.items():
            if k == "errors":
                out[k] = [*out.get(k, []), *v][:50]
            elif k == "failed_schools":
                out[k] = sorted({*out.get(k, []), *v})
            elif k == "stopped":
                out.setdefault(k, v)
            elif k == "dry_run":
                out[k] = v
            else:
                out[k] = _add(out[k], v) if k in out else v
    return Applied.from_json(out)


# ------------------------------------------------------------------------------------------
# people in a plan held earlier in the run (a school of an earlier group held for approval)
# ------------------------------------------------------------------------------------------


def _touches(c: Change, schools: set[str]) -> bool:
    """Whether a held person's change names one of ``schools`` (a source key, a class, a
    group, a subject, a function, the main school), before or after it."""
    for attrs in (c.before, c.after if c.after is not None else c.attrs):
        if not attrs:
            continue
        if any((sc := jointure_scope(j)) is not None and sc[0] in schools
               for j in attrs.get("ENTPersonJointure", [])):
            return True
        if any(_uai_in_dn(v) in schools for name in (*SCHOOL_SCOPED, "ENTPersonStructRattach")
               for v in attrs.get(name, [])):
            return True
    return False


def held_people(settings: Settings, run_id: str, held: Iterable[str], uids: set[str],
                schools: set[str]) -> dict[str, tuple[str, Change]]:
    """dn -> (the school, its change) of the persons whose change waits in the plan held
    for an earlier group's school (``held``), among the people this group plans (``uids``)
    or those whose held change names one of its ``schools`` (a part this group may drop):
    what this group plans for them goes on top of that change (``PendingView``) and into
    that plan (``fold_into_held``)."""
    from etl.plan.files import read_plan_file

    out: dict[str, tuple[str, Change]] = {}
    for uai in sorted(held):
        ref = f"{run_id}/held/{uai}.json"
        if not staging.exists(settings, ref):
            continue
        _, changes = read_plan_file(settings, ref)
        for c in changes:
            if c.kind == "person" and c.op in ("add", "modify") and (
                    (c.uid or _uid_of(c.dn)) in uids or _touches(c, schools)):
                out[c.dn] = (uai, c)
    return out


def pending_entries(held: Mapping[str, tuple[str, Change]]) -> dict[str, StoredEntry]:
    """The held persons as their held change leaves them (``PendingView.pending``)."""
    out: dict[str, StoredEntry] = {}
    for dn, (_uai, c) in held.items():
        after = c.after if c.after is not None else c.attrs
        out[dn] = StoredEntry(dn, c.kind, _main_uai(after) or c.uai, c.uid or _uid_of(dn),
                              after)
    return out


def _main_uai(attrs: Mapping[str, list[str]]) -> str | None:
    main = attrs.get("ENTPersonStructRattach") or []
    return _uai_in_dn(main[0]) if main else None


def fold_into_held(changes: list[Change], held: Mapping[str, tuple[str, Change]]
                   ) -> tuple[list[Change], dict[str, dict[str, Change | None]]]:
    """A group's changes, without those to held persons (planned on top of their held change),
    and per held school the changes that replace theirs in its plan: from what is written
    (the held change's before, or nothing for an add) to what this group plans (None: the
    person's entry is back as written, nothing left to approve)."""
    from etl.plan.diff import diff_attrs

    kept: list[Change] = []
    folded: dict[str, dict[str, Change | None]] = defaultdict(dict)
    for c in changes:
        if c.dn not in held or c.op not in ("add", "modify"):
            kept.append(c)
            continue
        uai, h = held[c.dn]
        after = c.after if c.after is not None else c.attrs
        new: Change | None
        if h.op == "add":
            new = Change("add", h.dn, h.kind, h.uai, h.category, attrs=after, after=after,
                         uid=h.uid)
        else:
            mods = diff_attrs(h.before or {}, after)
            new = (Change("modify", h.dn, h.kind, h.uai, h.category, mods=mods,
                          before=h.before, after=after, uid=h.uid) if mods else None)
        folded[uai][c.dn] = new
    return kept, dict(folded)
