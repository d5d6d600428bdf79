"""The planner: a pure function from (desired, current) to typed changes.

``current`` is what the pipeline last wrote for each DN (kept with a content hash in the state
DB), so a quiet night is planned without reading the directory back; the applier re-reads an
entry only when the directory disagrees with the state DB (an add that finds the entry, a
modify that finds none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.desired import DesiredEntry, content_hash

#: attributes holding one value: replaced whole; all others diffed value by value
SINGLE_VALUED = frozenset({
    "uid", "entpersonlogin", "sn", "givenname", "cn", "displayname", "entpersondatenaissance",
    "entpersonsexe", "entpersonstructrattach", "enteleveine", "entelevemef", "entsyncstatus",
    "entstructureuai", "entstructureacademie", "entstructurenomcourant", "description",
    "entstructureanneescolaire", "ou",
})
#: apply order: parents before children, people before the groups naming them
KIND_ORDER = {"school": 0, "ou": 1, "person": 2, "class": 3, "group": 3}


@dataclass
class Change:
    op: str  # add, modify
    dn: str
    kind: str
    uai: str | None
    category: str  # create, update, membership
    #: add: the full entry. modify: attr -> {"add": [...], "delete": [...], "replace": [...]}
    attrs: dict[str, list[str]] = field(default_factory=dict)
    mods: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    before: dict[str, list[str]] | None = None
    after: dict[str, list[str]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the plan file. An add's ``after`` is its ``attrs``: written once (it doubled
        the plan of an initial load), restored by ``from_dict``."""
        after = None if self.op == "add" and self.after == self.attrs else self.after
        return {
            "op": self.op, "dn": self.dn, "kind": self.kind, "uai": self.uai,
            "category": self.category, "attrs": self.attrs, "mods": self.mods,
            "before": self.before, "after": after,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Change:
        ch = Change(**d)
        if ch.op == "add" and ch.after is None:
            ch.after = ch.attrs
        return ch


def _norm(attrs: Mapping[str, list[str]]) -> dict[str, tuple[str, set[str]]]:
    """lower-case name -> (name as written, values)."""
    return {k.lower(): (k, set(v)) for k, v in attrs.items() if v}


def diff_attrs(before: Mapping[str, list[str]], after: Mapping[str, list[str]]
               ) -> dict[str, dict[str, list[str]]]:
    """Attribute-level diff: replace single-valued, add/delete values of multi-valued."""
    b, a = _norm(before), _norm(after)
    mods: dict[str, dict[str, list[str]]] = {}
    for key in sorted(set(a) | set(b)):
        name = a[key][0] if key in a else b[key][0]
        old = b[key][1] if key in b else set()
        new = a[key][1] if key in a else set()
        if old == new:
            continue
        if key == "objectclass":
            m: dict[str, list[str]] = {}
            if new - old:
                m["add"] = sorted(new - old)
            if old - new:
                m["delete"] = sorted(old - new)
            mods[name] = m
        elif key in SINGLE_VALUED or not new or not old:
            mods[name] = {"replace": sorted(new)}
        else:
            m = {}
            if new - old:
                m["add"] = sorted(new - old)
            if old - new:
                m["delete"] = sorted(old - new)
            mods[name] = m
    return mods


def plan_changes(desired: Mapping[str, DesiredEntry],
                 current: Mapping[str, tuple[str, dict[str, list[str]]]]) -> list[Change]:
    """Changes that turn ``current`` (dn -> (hash, attrs)) into ``desired``.

    Only DNs in ``desired`` are considered: what a run does not cover is never touched here
    (absence, disabling and deletion are the lifecycle's business).
    """
    changes: list[Change] = []
    for dn, e in desired.items():
        cur = current.get(dn)
        if cur is None:
            changes.append(Change("add", dn, e.kind, e.uai, "create", attrs=e.attrs,
                                  after=e.attrs))
            continue
        cur_hash, cur_attrs = cur
        if cur_hash == content_hash(e.attrs):
            continue
        mods = diff_attrs(cur_attrs, e.attrs)
        if not mods:
            continue
        only_members = set(k.lower() for k in mods) <= {"member"}
        changes.append(Change("modify", dn, e.kind, e.uai,
                              "membership" if only_members else "update", mods=mods,
                              before=cur_attrs, after=e.attrs))
    changes.sort(key=lambda c: (KIND_ORDER.get(c.kind, 9), c.dn.count(","), c.dn))
    return changes
