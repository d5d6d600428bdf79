"""The planner: a pure function from (desired, current) to typed changes.

``current`` is what the pipeline last wrote for each DN (kept with a content hash in the state
DB), so a quiet night is planned without reading the directory back; the applier re-reads an
entry only when the directory disagrees with the state DB (an add that finds the entry, a
modify that finds none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from etl.errors import PlanFormatError
from etl.plan.desired import DesiredEntry

#: attributes holding one value: replaced whole; all others diffed value by value
SINGLE_VALUED = frozenset({
    "uid", "entpersonlogin", "sn", "givenname", "cn", "displayname", "entpersondatenaissance",
    "entpersonsexe", "entpersonstructrattach", "enteleveine", "entelevemef", "entsyncstatus",
    "entstructureuai", "entstructureacademie", "entstructurenomcourant", "description",
    "entstructureanneescolaire", "ou",
})
#: apply order: parents before children, people before the groups naming them
KIND_ORDER = {"school": 0, "ou": 1, "person": 2, "class": 3, "group": 3}
#: the category of the delete of an entry added back at once at the same DN with another
#: structural class (a group's DN that becomes a class's: ``etl.plan.scope.retype_changes``;
#: LDAP cannot change an entry's structural class in place), or as a new entry (this year's
#: class with last year's code at the roll-over: ``etl.plan.scope.structure_changes``)
RETYPE = "retype"


@dataclass(slots=True)
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
    #: the account's uid (a person's entry), kept in the state DB with what was written
    uid: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the plan file. An add's ``after`` is its ``attrs``: written once (it doubled
        the plan of an initial load), restored by ``from_dict``; ``uid`` only when set."""
        after = None if self.op == "add" and self.after == self.attrs else self.after
        d = {
            "op": self.op, "dn": self.dn, "kind": self.kind, "uai": self.uai,
            "category": self.category, "attrs": self.attrs, "mods": self.mods,
            "before": self.before, "after": after,
        }
        if self.uid is not None:
            d["uid"] = self.uid
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Change:
        ch = Change(**d)
        if ch.op == "add" and ch.after is None:
            ch.after = ch.attrs
        return ch


def wave_key(ch: Change) -> tuple[int, int, int]:
    """The apply wave of a change: writes parents first (kind, then depth), then deletes
    children first. Changes of one wave are independent; a wave ends before the next starts."""
    order, depth = KIND_ORDER.get(ch.kind, 9), ch.dn.count(",")
    if ch.op == "delete" and ch.category == RETYPE:
        return (0, -1, 0)  # before anything is written: the same DN is added back, retyped
    return (1, -order, -depth) if ch.op == "delete" else (0, order, depth)


def apply_order(changes: Iterable[Change]) -> list[Change]:
    """The changes in apply order (``wave_key``, then DN): how the plan file lists them."""
    return sorted(changes, key=lambda c: (wave_key(c), c.dn))


# -- the plan file ------------------------------------------------------------------------------
#: JSON lines: a header line (the run's metadata and ``change_count``), then one change per
#: line in apply order, so the applier reads it change by change (an academy's initial load
#: is hundreds of MB of JSON: never parsed whole)
PLAN_FORMAT = "entsync-plan-lines/1"


def plan_lines(header: Mapping[str, Any], changes: list[Change],
               size: int = 1 << 20) -> Iterator[bytes]:
    """The plan file's bytes, about ``size`` at a time: the header (with ``format`` and
    ``change_count``) and the changes, one JSON document a line (keys sorted, UTF-8), in apply
    order (``changes`` must already be: ``apply_order``). Encoded by msgspec, much faster than
    the stdlib's ``json.dumps`` on an academy's first plan (docs/performance.md)."""
    head = {**header, "format": PLAN_FORMAT, "change_count": len(changes)}
    buf = bytearray(_ENCODER.encode(head))
    buf += b"\n"
    for ch in changes:
        _ENCODER.encode_into(ch.as_dict(), buf, -1)
        buf += b"\n"
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


#: plan lines: JSON with sorted keys, as ``json.dumps(sort_keys=True)`` but compact and UTF-8
_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder()


def read_plan(lines: Iterable[bytes]) -> tuple[dict[str, Any], Iterator[Change]]:
    """A plan file read from its lines: (header, the changes one by one, in file order).
    A plan in another form (the older one-document form included) is refused."""
    it = iter(lines)
    first = next(it, b"")
    header: dict[str, Any] = _DECODER.decode(first) if first.strip() else {}
    if isinstance(header.get("changes"), list):
        raise PlanFormatError(f"plan in the older one-document form (before {PLAN_FORMAT}) "
                              "is no longer read: reject it, the next run plans again")
    if header and header.get("format") != PLAN_FORMAT:
        raise PlanFormatError(f"unknown plan format {header.get('format')!r}")

    def new() -> Iterator[Change]:
        for line in it:
            if line.strip():
                yield Change.from_dict(_DECODER.decode(line))

    return header, new()


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


Attrs = dict[str, list[str]]


def plan_changes(desired: Mapping[str, DesiredEntry],
                 current: Mapping[str, tuple[str, Attrs]]) -> list[Change]:
    """Changes that turn ``current`` (dn -> (hash, attrs)) into ``desired``.

    Only DNs in ``desired`` are considered: what a run does not cover is never touched here
    (absence, disabling and deletion are the lifecycle's business).
    """
    return plan_changes_lazy(
        desired, lambda dns: {dn: current[dn][0] for dn in dns if dn in current},
        lambda dns: {dn: current[dn][1] for dn in dns if dn in current})


def plan_changes_lazy(desired: Mapping[str, DesiredEntry],
                      hashes_of: Callable[[list[str]], Mapping[str, str]],
                      attrs_of: Callable[[list[str]], Mapping[str, Attrs]],
                      batch: int = 1000) -> list[Change]:
    """``plan_changes`` against a state read on demand, ``batch`` DNs at a time: the content
    hashes of the DNs (``hashes_of``: dn -> hash of what was last written, absent DNs left
    out), then the attributes of only those whose hash differs from the desired one
    (``attrs_of``). An unchanged entry costs a hash comparison and no attributes in memory."""
    changes: list[Change] = []
    dns = list(desired)
    for i in range(0, len(dns), batch):
        part = dns[i:i + batch]
        have = hashes_of(part)
        stale: list[str] = []
        for dn in part:
            e = desired[dn]
            cur_hash = have.get(dn)
            if cur_hash is None:
                changes.append(Change("add", dn, e.kind, e.uai, "create", attrs=e.attrs,
                                      after=e.attrs, uid=e.uid))
            elif cur_hash != e.content_hash:
                stale.append(dn)
        if not stale:
            continue
        current = attrs_of(stale)
        for dn in stale:
            e = desired[dn]
            cur_attrs = current.get(dn)
            if cur_attrs is None:  # gone between the two reads: planned as new
                changes.append(Change("add", dn, e.kind, e.uai, "create", attrs=e.attrs,
                                      after=e.attrs, uid=e.uid))
                continue
            mods = diff_attrs(cur_attrs, e.attrs)
            if not mods:
                continue
            only_members = set(k.lower() for k in mods) <= {"member"}
            changes.append(Change("modify", dn, e.kind, e.uai,
                                  "membership" if only_members else "update", mods=mods,
                                  before=cur_attrs, after=e.attrs, uid=e.uid))
    changes.sort(key=lambda c: (KIND_ORDER.get(c.kind, 9), c.dn.count(","), c.dn))
    return changes
