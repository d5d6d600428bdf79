"""Directory entries against what the state DB says the sync wrote: typed differences.

Pure: a directory entry (or its absence) and the stored entry at its DN in, the differences
and the change that would put the sync's part back out. Only what the sync owns is compared
(``etl.plan.owned``): a ``userPassword`` or ``preferredLanguage`` set by the ENT is no
difference. Kinds:

- ``missing``: an entry the sync wrote is not in the directory (deleted behind its back);
- ``attribute``: attributes the sync owns whose values differ (changed by hand, rolled back);
  a class or group that lost members the sync put there is one too (``member``);
- ``member``: members of the sync's classes and groups that the sync did not put there;
- ``foreign``: an entry of the academy's part (below its schools, or an account attached to
  it) that the state DB does not know;
- ``orphan``: the reverse, an account of the state DB that matches no entry at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.plan.diff import Change, diff_attrs
from etl.plan.owned import kind_of, owned_view, uai_of

KINDS = ("missing", "attribute", "member", "foreign", "orphan")
Attrs = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # one of KINDS
    dn: str
    #: what the entry is: person, school, class, group, ou, archive (``account``: an orphan)
    entry_kind: str
    uai: str | None
    #: the attributes that differ (names only)
    attributes: tuple[str, ...] = ()
    #: attr -> {"directory": [...], "state": [...]}: only when asked for (``--values``)
    values: dict[str, dict[str, list[str]]] | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "dn": self.dn, "entry": self.entry_kind,
                             "uai": self.uai, "attributes": list(self.attributes)}
        if self.values is not None:
            d["values"] = self.values
        return d


@dataclass(frozen=True, slots=True)
class Stored:
    """What the state DB says was written at a DN (``etl.plan.stored.StoredEntry``'s parts)."""

    kind: str
    uai: str | None
    uid: str | None
    attrs: Attrs


def _norm(attrs: Mapping[str, list[str]]) -> dict[str, tuple[str, set[str]]]:
    return {k.lower(): (k, set(v)) for k, v in attrs.items() if v}


def compare_entry(dn: str, actual: Mapping[str, list[str]] | None, stored: Stored | None,
                  values: bool = False) -> tuple[list[Difference], Change | None]:
    """The differences at ``dn`` and the change that would put the sync's part back (None
    when there is nothing the sync would write: no difference, or a foreign entry, which only
    a policy acts on: ``etl.audit.repair``)."""
    if actual is None:
        if stored is None:
            return [], None
        return ([Difference("missing", dn, stored.kind, stored.uai)],
                Change("add", dn, stored.kind, stored.uai, "create", attrs=stored.attrs,
                       after=stored.attrs, uid=stored.uid))
    if stored is None:
        return [Difference("foreign", dn, kind_of(dn, actual), uai_of(dn, actual))], None
    mine = owned_view(actual)
    have, want = _norm(mine), _norm(stored.attrs)
    changed: list[str] = []
    stray: list[str] = []
    shown: dict[str, dict[str, list[str]]] = {}
    for key in sorted(set(have) | set(want)):
        name = want[key][0] if key in want else have[key][0]
        got = have[key][1] if key in have else set()
        wanted = want[key][1] if key in want else set()
        if got == wanted:
            continue
        if key == "member" and got > wanted:
            stray.append(name)  # only members added behind the sync's back
        else:
            changed.append(name)
            if key == "member" and got - wanted:
                stray.append(name)
        if values:
            shown[name] = {"directory": sorted(got), "state": sorted(wanted)}
    if not changed and not stray:
        return [], None
    out = []
    if changed:
        out.append(Difference("attribute", dn, stored.kind, stored.uai, tuple(changed),
                              {k: v for k, v in shown.items() if k in changed}
                              if values else None))
    if stray:
        out.append(Difference("member", dn, stored.kind, stored.uai, tuple(stray),
                              {k: v for k, v in shown.items() if k in stray}
                              if values else None))
    mods = diff_attrs(mine, stored.attrs)
    only_members = {k.lower() for k in mods} <= {"member"}
    return out, Change("modify", dn, stored.kind, stored.uai,
                       "membership" if only_members else "update", mods=mods, before=mine,
                       after=stored.attrs, uid=stored.uid)


def orphans(uids: Iterable[str], seen_uids: set[str], base: str) -> list[Difference]:
    """Accounts the state DB holds (not deleted) with no entry written and none in the
    directory under their uid."""
    from etl.plan.desired import person_dn

    return [Difference("orphan", person_dn(u, base), "account", None) for u in sorted(uids)
            if u not in seen_uids]


def tally(diffs: Iterable[Difference]) -> dict[str, Any]:
    """Counts per kind, in all and per school (``-``: an entry of no school)."""
    total = dict.fromkeys(KINDS, 0)
    schools: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    for d in diffs:
        total[d.kind] += 1
        schools[d.uai or "-"][d.kind] += 1
    return {"total": total, "differences": sum(total.values()),
            "per_school": {u: v for u, v in sorted(schools.items())}}


__all__ = ["KINDS", "Difference", "Stored", "compare_entry", "kind_of", "orphans", "tally",
           "uai_of"]
