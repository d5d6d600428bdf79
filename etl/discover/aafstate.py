"""The AAF's Complets and Deltas applied on the last applied state: pure functions.

An academy's AAF feed is a chain of documents per type (``EtabEducNat``, ``Eleve``,
``PersRelEleve``, ``PersEducNat``), each stamped by its date and mode (``stamp``): a Complet
gives every record of its type, a Delta the requests since the previous document
(``addRequest`` a whole record, ``modifyRequest`` the attributes it replaces, whole,
``deleteRequest`` the identifier). Here:

- ``replay`` applies documents, in stamp order, to a view of the records (identifier ->
  ``Rec``, each with the stamp of the document it last came from). A request applies to a
  record only when the record is older than its document, so replaying a document already
  applied changes nothing (a school left behind, its plan held, replays what the others had
  already: ``etl.discover.aaf``);
- ``school_chain`` says, for one school and the stamps its state stands at (``Marker``),
  which of tonight's documents are new to it, whether one is a Delta without a base (a
  **gap**: no Complet of that type was ever applied to the academy, nor comes before it
  tonight: held for approval, never guessed), which types its state covers completely
  (absence is judged there) and which came as a Complet (the pupils-drop guard judges
  those only);
- ``stale_persons``: the records a school's latest Complet of a type left out (a person
  missing from a school's Complet is absent), though a record of the view still places them
  there (its last copy came from another school's state, or from before the Complet).

Nothing here reads a file or the state DB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

#: the AAF types the pipeline reads, in the order documents of one date are applied
AAF_TYPES: Final = ("EtabEducNat", "Eleve", "PersRelEleve", "PersEducNat")
PERSON_TYPES: Final = ("Eleve", "PersRelEleve", "PersEducNat")
#: AAF type -> the source tag whose school scope its records are judged in
#: (``etl.plan.scope``): a school fed by the AAF is covered as its exports would cover it
TYPE_SCOPE: Final = {"Eleve": "SIECLE", "PersRelEleve": "SIECLE-RESP", "PersEducNat": "STS"}
COMPLET: Final = "Complet"
DELTA: Final = "Delta"


class Request(Protocol):
    """What ``replay`` needs of a request (``etl.read.aaf.AafRecord``)."""

    @property
    def category(self) -> str: ...
    @property
    def op(self) -> str: ...
    @property
    def identifier(self) -> str: ...
    @property
    def attrs(self) -> dict[str, tuple[str, ...]]: ...
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...


def stamp(date: str, mode: str) -> str:
    """A document's place in the chain: ``YYYY-MM-DD/C`` for a Complet, ``/D`` for a Delta
    (a Complet and a Delta of one date: the Complet first)."""
    return f"{date}/{'C' if mode == COMPLET else 'D'}"


@dataclass(slots=True)
class Rec:
    """A record as the state holds it: whole, with the stamp of its last document."""

    category: str
    identifier: str
    attrs: dict[str, tuple[str, ...]]
    stamp: str
    file: str = ""
    line: int = 0

    def first(self, name: str) -> str | None:
        for v in self.attrs.get(name, ()):
            if v.strip():
                return v.strip()
        return None

    @property
    def person_key(self) -> str:
        """The key the reader gives the person (``ENTPersonJointure``, else the identifier)."""
        return self.first("ENTPersonJointure") or self.identifier

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "identifier": self.identifier,
                "attrs": {k: list(v) for k, v in self.attrs.items()}, "stamp": self.stamp,
                "file": self.file, "line": self.line}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Rec:
        return Rec(str(d["category"]), str(d["identifier"]),
                   {k: tuple(v) for k, v in d["attrs"].items()}, str(d["stamp"]),
                   str(d.get("file") or ""), int(d.get("line") or 0))


Key = tuple[str, str]  # (category, identifier)
View = dict[Key, Rec]


@dataclass(frozen=True, slots=True)
class Marker:
    """Where a school's state of one type stands: the date of the Complet it rests on (None:
    it was built from Deltas, on an academy Complet that did not name it or on an approved
    gap) and the stamp of the last document applied."""

    complet_date: str | None
    applied: str | None


@dataclass(frozen=True, slots=True)
class DocKey:
    """A logical document of the chain (its parts read as one)."""

    mode: str
    date: str
    type: str

    @property
    def stamp(self) -> str:
        return stamp(self.date, self.mode)

    @property
    def label(self) -> str:
        return f"{self.type} {self.mode} {self.date}"


@dataclass
class Problem:
    """A request the replay could not apply (reported; never a guess)."""

    file: str
    line: int
    category: str
    identifier: str
    rule: str
    message: str


def freshest(rows: Iterable[Rec]) -> View:
    """The view the replay starts from: each record's most recent copy among the schools'
    stored states (a record touching several schools is stored under each)."""
    out: View = {}
    for r in rows:
        k = (r.category, r.identifier)
        cur = out.get(k)
        if cur is None or r.stamp > cur.stamp:
            out[k] = r
    return out


def apply_document(view: View, doc: DocKey, requests: Iterable[Request],
                   problems: list[Problem]) -> set[str]:
    """Apply one document to ``view`` (changed in place); the identifiers it holds (a
    Complet's: every record of its type it gives). A request applies only to a record older
    than the document; a Complet holds adds only; a modify of a record no document added is
    a problem (an earlier Delta missing?), as is a request of another category than the
    document's type (other categories are not state)."""
    s = doc.stamp
    seen: set[str] = set()
    for r in requests:
        if r.category != doc.type:
            problems.append(Problem(r.file, r.line, r.category, r.identifier, "category",
                                    f"{r.category} record in a {doc.type} file: skipped"))
            continue
        seen.add(r.identifier)
        k = (r.category, r.identifier)
        cur = view.get(k)
        if cur is not None and cur.stamp >= s:
            continue  # this document (or a later one) is already in the record
        if doc.mode == COMPLET and r.op != "add":
            problems.append(Problem(r.file, r.line, r.category, r.identifier, "complet_request",
                                    f"{r.op}Request in a Complet (a Complet holds addRequests "
                                    "only): skipped"))
            continue
        if r.op == "add":
            view[k] = Rec(r.category, r.identifier, dict(r.attrs), s, r.file, r.line)
        elif r.op == "modify":
            if cur is None:
                problems.append(Problem(
                    r.file, r.line, r.category, r.identifier, "modify_unknown",
                    f"modifyRequest of {r.category} {r.identifier}, which no applied document "
                    "added (an earlier Delta missing?): skipped"))
                continue
            view[k] = Rec(r.category, r.identifier, {**cur.attrs, **r.attrs}, s, r.file,
                          r.line)
        elif r.op == "delete":
            view.pop(k, None)
    return seen


@dataclass
class SchoolChain:
    """What tonight's documents are to one school (``school_chain``)."""

    #: the documents new to it, in stamp order
    new: list[DocKey] = field(default_factory=list)
    #: type -> why its first new document is a Delta without a base
    gaps: dict[str, str] = field(default_factory=dict)
    #: types its state covers completely after tonight (absence judged there)
    covers: list[str] = field(default_factory=list)
    #: type -> the stamp of the latest Complet new to it (the pupils-drop guard judges those)
    complets: dict[str, str] = field(default_factory=dict)
    #: type -> where its state stands once tonight is applied
    markers: dict[str, Marker] = field(default_factory=dict)


def school_chain(markers: Mapping[str, Marker], chain: list[DocKey],
                 academy_complets: Mapping[str, str]) -> SchoolChain:
    """One school's part of tonight's chain (``chain``: the documents kept tonight, in stamp
    order). ``markers``: its state per type (a type never applied is missing);
    ``academy_complets``: type -> the latest Complet date applied for any school of the
    academy (a school new to the feed rests on it: it was not in it)."""
    out = SchoolChain()
    for t in AAF_TYPES:
        m = markers.get(t)
        mine = [d for d in chain if d.type == t and (m is None or m.applied is None
                                                    or d.stamp > m.applied)]
        out.new.extend(mine)
        complet = m.complet_date if m is not None else None
        applied = m.applied if m is not None else None
        based = m is not None
        for d in mine:
            if d.mode == COMPLET:
                complet, based = d.date, True
                out.complets[t] = d.stamp
            elif not based:
                base = academy_complets.get(t)
                if base is not None and stamp(base, COMPLET) < d.stamp:
                    based = True
                else:
                    out.gaps[t] = (f"AAF {d.label} has no base: no {t} Complet was ever "
                                   "applied to this academy, nor comes before it")
                    based = True  # held once: approved, the chain goes on from it
            applied = d.stamp
        if mine or m is not None:
            out.markers[t] = Marker(complet, applied)
        if t in TYPE_SCOPE and (m is not None or mine) and t not in out.gaps:
            out.covers.append(t)
    out.new.sort(key=lambda d: d.stamp)
    return out


def stale_persons(records: Iterable[Rec], complet_ids: Mapping[str, set[str]],
                  complet_stamps: Mapping[str, str], complets: Mapping[str, str]) -> set[str]:
    """Person keys a school's tables must not have: for each type of which a Complet new
    to the school names it (one of its records of that type is in the Complet), the records
    of that type placed in the school that the Complet left out and no later document
    brought back. ``records``: the view's records the school's tables were built from;
    ``complet_ids``/``complet_stamps``: type -> identifiers and stamp of tonight's latest
    Complet; ``complets``: the school's (``SchoolChain.complets``)."""
    recs = list(records)
    out: set[str] = set()
    for t, s in complets.items():
        if t not in PERSON_TYPES or complet_stamps.get(t) != s:
            continue
        ids = complet_ids.get(t, set())
        mine = [r for r in recs if r.category == t]
        if not any(r.identifier in ids for r in mine):
            continue  # the Complet does not name this school: its state stays as it was
        out |= {r.person_key for r in mine if r.identifier not in ids and r.stamp < s}
    return out


@dataclass
class StateDiff:
    """What a school's stored AAF state becomes once its plan is applied."""

    upsert: list[Rec] = field(default_factory=list)
    delete: list[Key] = field(default_factory=list)
    markers: dict[str, Marker] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"upsert": [r.to_json() for r in self.upsert],
                "delete": [list(k) for k in self.delete],
                "markers": {t: [m.complet_date, m.applied] for t, m in self.markers.items()}}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> StateDiff:
        return StateDiff([Rec.from_json(r) for r in d.get("upsert", [])],
                         [(str(c), str(i)) for c, i in d.get("delete", [])],
                         {t: Marker(v[0], v[1]) for t, v in d.get("markers", {}).items()})

    @property
    def empty(self) -> bool:
        return not (self.upsert or self.delete)


def state_diff(stored: Mapping[Key, Rec], new: Mapping[Key, Rec],
               markers: dict[str, Marker]) -> StateDiff:
    """The rows to write and remove for a school whose state goes from ``stored`` to
    ``new``."""
    up = [r for k, r in sorted(new.items()) if (cur := stored.get(k)) is None
          or cur.stamp != r.stamp or cur.attrs != r.attrs]
    gone = sorted(k for k in stored if k not in new)
    return StateDiff(up, gone, markers)
