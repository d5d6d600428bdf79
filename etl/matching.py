"""Matching rules: one person, one account, across schools and sources.

Applied in order to a source record whose keys are not known yet; each match records its rule:

1. ``source_key``: a known jointure (``<AC>$SIECLE$<UAI>$<ELEVE_ID>``, ``...$STS$...``, ...);
2. ``ine``: pupils by INE (national: survives a change of school);
3. ``staff_name_birth``: teachers and staff by normalized (family name, first name, birth
   date) across the schools of an academy (STS ids are per school and not stable);
4. ``guardian_name_email`` / ``guardian_name_mobile`` / ``guardian_shared_pupil``: guardians by
   normalized (family name, first name) plus one strong shared attribute: the same e-mail, the
   same mobile phone, or being the legal guardian of a pupil already linked to them.

Ambiguous candidates (two accounts or more satisfy the rule) are never merged: the record gets
an account of its own and the case goes to the duplicates report, as do same-name pairs that
the rules kept apart. Keys are stored hashed (no name in clear in ``match_keys``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from etl.identity import fold
from etl.state.models import MatchKey, table

STAFF_PROFILES = frozenset({"ENS", "DIR", "EVS", "DOC", "ETA"})


def _h(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]


def _norm_name(v: Any) -> str:
    return " ".join(fold(str(v or "")).replace("-", " ").replace("'", " ").split())


def staff_key(r: dict[str, Any]) -> str | None:
    last, first, birth = _norm_name(r.get("birth_name") or r.get("last_name")), \
        _norm_name(r.get("first_name")), r.get("birth_date")
    if not (last and first and birth):
        return None
    return _h(f"{last}|{first}|{birth}")


def guardian_key(r: dict[str, Any]) -> str | None:
    last, first = _norm_name(r.get("last_name")), _norm_name(r.get("first_name"))
    return _h(f"{last}|{first}") if last and first else None


def name_key(r: dict[str, Any]) -> str | None:
    last, first = _norm_name(r.get("last_name")), _norm_name(r.get("first_name"))
    return f"{r.get('profile')}|{_h(last + '|' + first)}" if last and first else None


def match_key(r: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, key) a record is matched and remembered by: ``staff`` for staff profiles,
    ``guardian`` for guardians; None for pupils and records without the fields."""
    prof = r.get("profile")
    if prof in STAFF_PROFILES:
        key = staff_key(r)
        return None if key is None else ("staff", key)
    if prof == "TUT":
        key = guardian_key(r)
        return None if key is None else ("guardian", key)
    return None


def strong_tokens(r: dict[str, Any]) -> set[str]:
    out = set()
    if r.get("email"):
        out.add("email:" + _h(str(r["email"]).strip().lower()))
    if r.get("mobile"):
        digits = "".join(c for c in str(r["mobile"]) if c.isdigit())[-9:]
        if len(digits) == 9:
            out.add("mobile:" + _h(digits))
    return out


@dataclass
class Matcher:
    s: Session
    academy: str
    run_id: str
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    _mem: dict[tuple[str, str], dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(dict))
    #: the academy's keys in the state DB, read once (one query per person was the
    #: planning stage's main cost at region scale)
    _known: dict[tuple[str, str], dict[str, set[str]]] | None = None
    #: duplicates entries by the source key they were reported for
    _by_source: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list))

    def _report(self, d: dict[str, Any]) -> None:
        self.duplicates.append(d)
        if d.get("source"):
            self._by_source[d["source"]].append(d)

    def _load_known(self) -> dict[tuple[str, str], dict[str, set[str]]]:
        if self._known is None:
            known: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
            for kind, key, uid, strong in self.s.execute(
                    select(MatchKey.kind, MatchKey.key, MatchKey.uid, MatchKey.strong)
                    .where(MatchKey.academy == self.academy)):
                known[(kind, key)][uid] = set(strong or [])
            self._known = known
        return self._known

    def preload(self, rows: Iterable[dict[str, Any]]) -> None:
        """Read from the state DB the keys of only these records (those that may need
        matching: no known source key), 500 keys a query, instead of every key of the
        academy (``_load_known``): on a normal night a few hundred arrivals need matching,
        and the academy's whole key table (a dict and a set per guardian and staff member)
        was held through the planning stage's memory peak."""
        wanted: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            if (k := match_key(r)) is not None:
                wanted[k[0]].add(k[1])
        known: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
        for kind, keys in wanted.items():
            ordered = sorted(keys)
            for i in range(0, len(ordered), 500):
                for key, uid, strong in self.s.execute(
                        select(MatchKey.key, MatchKey.uid, MatchKey.strong)
                        .where(MatchKey.academy == self.academy, MatchKey.kind == kind,
                               MatchKey.key.in_(ordered[i:i + 500]))):
                    known[(kind, key)][uid] = set(strong or [])
        self._known = known

    def candidates(self, kind: str, key: str) -> dict[str, set[str]]:
        """uid -> strong tokens, from the state DB and from this run."""
        out: dict[str, set[str]] = {
            uid: set(strong) for uid, strong in self._load_known().get((kind, key), {}).items()}
        for uid, mem in self._mem.get((kind, key), {}).items():
            out[uid] = out.get(uid, set()) | mem
        return out

    def match_staff(self, r: dict[str, Any]) -> tuple[str | None, str]:
        key = staff_key(r)
        if key is None:
            return None, ""
        cands = self.candidates("staff", key)
        if len(cands) == 1:
            return next(iter(cands)), "staff_name_birth"
        if len(cands) > 1:
            self._report({"rule": "staff_name_birth", "score": 0.9,
                                    "uids": sorted(cands), "source": r["person_key"],
                                    "evidence": "same family name, first name and birth date",
                                    "action": "not merged: ambiguous"})
        return None, ""

    def match_guardian(self, r: dict[str, Any], pupil_uids: set[str]) -> tuple[str | None, str]:
        key = guardian_key(r)
        if key is None:
            return None, ""
        cands = self.candidates("guardian", key)
        if not cands:
            return None, ""
        mine = strong_tokens(r) | {f"pupil:{u}" for u in pupil_uids}
        passing: dict[str, set[str]] = {u: mine & tok for u, tok in cands.items() if mine & tok}
        if len(passing) == 1:
            uid, ev = next(iter(passing.items()))
            kinds = sorted({t.split(":", 1)[0] for t in ev})
            rule = {"email": "guardian_name_email", "mobile": "guardian_name_mobile",
                    "pupil": "guardian_shared_pupil"}[kinds[0]]
            return uid, rule
        self._report({
            "rule": "guardian_name", "score": 0.8 if passing else 0.5,
            "uids": sorted(passing or cands), "source": r["person_key"],
            "evidence": ("same name and a strong attribute shared with several accounts"
                         if passing else "same name, no shared e-mail, mobile or pupil"),
            "action": "not merged"})
        return None, ""

    def note_result(self, person_key: str, uid: str) -> None:
        """The account a reported record ended in belongs in its duplicates entry."""
        for d in self._by_source.get(person_key, ()):
            if uid not in d["uids"]:
                d["uids"] = sorted([*d["uids"], uid])

    def remember(self, r: dict[str, Any], uid: str, pupil_uids: Iterable[str] = ()) -> None:
        k = match_key(r)
        if k is None:
            return
        strong = (strong_tokens(r) | {f"pupil:{u}" for u in pupil_uids}
                  if k[0] == "guardian" else set())
        self._mem[k][uid] = self._mem[k].get(uid, set()) | strong

    def flush(self) -> None:
        """Persist the keys seen in this run (merged with what was known), in bulk: rows read
        and written with Core statements (loading every key of the academy as ORM objects was
        most of this on a night that re-reads every school)."""
        from sqlalchemy import and_, bindparam, insert, update

        keys = sorted({key for (_kind, key) in self._mem})
        existing: dict[tuple[str, str, str], list[str]] = {}
        for i in range(0, len(keys), 500):
            for row in self.s.execute(
                    select(MatchKey.kind, MatchKey.key, MatchKey.uid, MatchKey.strong).where(
                        MatchKey.academy == self.academy, MatchKey.key.in_(keys[i:i + 500]))):
                existing[(row.kind, row.key, row.uid)] = list(row.strong or [])
        new: list[dict[str, Any]] = []
        grown: list[dict[str, Any]] = []
        for (kind, key), uids in self._mem.items():
            for uid, strong in uids.items():
                had = existing.get((kind, key, uid))
                if had is None:
                    new.append({"academy": self.academy, "kind": kind, "key": key, "uid": uid,
                                "strong": sorted(strong), "run_id": self.run_id})
                elif not strong <= set(had):
                    grown.append({"k_kind": kind, "k_key": key, "k_uid": uid,
                                  "strong": sorted(set(had) | strong)})
        t = table(MatchKey)
        if new:
            self.s.execute(insert(t), new)  # Core: no ORM bulk path
        if grown:
            self.s.execute(update(t).where(and_(
                t.c.academy == self.academy, t.c.kind == bindparam("k_kind"),
                t.c.key == bindparam("k_key"), t.c.uid == bindparam("k_uid")))
                .values(strong=bindparam("strong")).execution_options(synchronize_session=False),
                grown)
        if self._known is not None:  # what was just written is known from now on
            for (kind, key), uids in self._mem.items():
                for uid, strong in uids.items():
                    mine = self._known[(kind, key)]
                    mine[uid] = mine.get(uid, set()) | strong
        self._mem.clear()

    def report_homonyms(self, rows: list[dict[str, Any]], key_uid: dict[str, str]) -> None:
        """Same profile and same normalized name but different accounts: listed for a human
        to look at (two pupils called the same in one school are normal, and are not merged)."""
        by_name: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            k = name_key(r)
            if k and r["person_key"] in key_uid:
                by_name[k].add(key_uid[r["person_key"]])
        listed = {tuple(d["uids"]) for d in self.duplicates}
        for uids in by_name.values():
            if len(uids) > 1 and tuple(sorted(uids)) not in listed:
                self._report({"rule": "same_name", "score": 0.3,
                                        "uids": sorted(uids), "source": None,
                                        "evidence": "same profile, family name and first name",
                                        "action": "not merged"})
