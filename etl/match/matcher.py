"""Matching rules: one person, one account, across schools and sources.

Applied in order to a source record whose keys are not known yet; each match records its rule:

1. ``source_key``: a known jointure (``<AC>$SIECLE$<UAI>$<ELEVE_ID>``, ``...$STS$...``, ...);
2. ``ine``: pupils by INE (national: survives a change of school), only when the records
   agree: same birth date and names that match once accents, hyphens, particles and the usage
   name are allowed for (``disagreement``). Records of one night holding one INE that cannot
   be the same child, or a record whose INE points at a stored account of another child, are
   an **INE conflict** (``ine_conflict``): none of them is matched through the INE, each keeps
   or gets its own account by its SIECLE key, the INE stays only on the account that already
   held it, and the case is reported (duplicates report and the school's pages);
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
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from etl.match.identity import fold
from etl.plan.stored import StoredView

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
    """The cross-school rules over the stored match keys (read through ``view``) and the keys
    seen tonight; it writes nothing (``key_updates``: what the state DB must learn)."""

    view: StoredView
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

    @property
    def academy(self) -> str:
        return self.view.academy

    def _load_known(self) -> dict[tuple[str, str], dict[str, set[str]]]:
        if self._known is None:
            self._known = self.view.all_match_keys()
        return self._known

    def preload(self, rows: Iterable[dict[str, Any]]) -> None:
        """Read the stored keys of only these records (those that may need matching: no known
        source key), in batches, instead of every key of the academy (``_load_known``): on a
        normal night a few hundred arrivals need matching, and the academy's whole key table
        held through planning was part of its memory peak."""
        wanted: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            if (k := match_key(r)) is not None:
                wanted[k[0]].add(k[1])
        self._known = self.view.match_keys(wanted)

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

    def key_updates(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The keys seen in this run merged with what is stored: (rows to insert, rows whose
        strong evidence grew: ``k_kind``, ``k_key``, ``k_uid``, ``strong``), for
        ``etl.match.identity.write_identities``. Stored rows are read in batches."""
        existing = self.view.match_key_rows(self._mem)
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
        if self._known is not None:  # what is handed over is known from now on
            for (kind, key), uids in self._mem.items():
                for uid, strong in uids.items():
                    mine = self._known[(kind, key)]
                    mine[uid] = mine.get(uid, set()) | strong
        self._mem.clear()
        return new, grown

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


# --------------------------------------------------------------------------------------------
# Pupils and the INE: an INE identifies a child only when the records agree
# --------------------------------------------------------------------------------------------

#: words of a family name that say nothing on their own (``de La Fontaine``, ``van der Berg``)
_PARTICLES = frozenset({"d", "da", "de", "del", "della", "den", "der", "des", "di", "du", "el",
                        "l", "la", "le", "les", "van", "von", "y"})


def _words(v: Any) -> list[str]:
    """A name's words: ASCII-folded, lower case, hyphens and apostrophes as spaces."""
    return re.sub(r"[^a-z0-9]+", " ", fold(str(v or ""))).split()


@dataclass(frozen=True)
class PupilFacts:
    """What two records of one INE must agree on to be one child (never logged)."""

    birth_date: str | None  # ISO yyyy-mm-dd
    family_names: tuple[str, ...]  # usage name and birth name
    first_name: str | None


def row_facts(r: dict[str, Any]) -> PupilFacts:
    return PupilFacts(r.get("birth_date") or None,
                      tuple(str(n) for n in (r.get("last_name"), r.get("birth_name")) if n),
                      r.get("first_name") or None)


def entry_facts(attrs: dict[str, list[str]]) -> PupilFacts:
    """The facts of an account as last written to the directory (``entries``)."""
    birth = next(iter(attrs.get("ENTPersonDateNaissance") or []), None)
    iso = None
    if birth and re.fullmatch(r"\d\d/\d\d/\d{4}", birth):
        d, m, y = birth.split("/")
        iso = f"{y}-{m}-{d}"
    family = tuple(v for v in attrs.get("sn", []) if v and v != "?")
    first = next((v for v in attrs.get("givenName", []) if v and v != "?"), None)
    return PupilFacts(iso, family, first)


def family_names_agree(a: Iterable[str], b: Iterable[str]) -> bool:
    """One of a's family names (usage or birth name) shares a word with one of b's, particles
    aside, or reads the same once glued (``DE LA FONTAINE`` / ``Delafontaine``): a double
    name, a usage name or a hyphen is the same family. No name on a side: no disagreement."""
    def forms(names: Iterable[str]) -> tuple[set[str], set[str]]:
        words: set[str] = set()
        glued: set[str] = set()
        for n in names:
            w = _words(n)
            if w:
                glued.add("".join(w))
                words |= {x for x in w if x not in _PARTICLES and len(x) > 1}
        return words, glued

    wa, ga = forms(a)
    wb, gb = forms(b)
    if not ga or not gb:
        return True
    return bool(wa & wb or ga & gb)


def first_names_agree(a: str | None, b: str | None) -> bool:
    """The same first name, accents and hyphens aside, or one the start of the other
    (``Marie`` / ``Marie-Lou``): ``Marie-Lou`` and ``Marie-Anne`` are two children (twins are
    born the same day and share the family name)."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return True
    n = min(len(wa), len(wb))
    return wa[:n] == wb[:n] or "".join(wa) == "".join(wb)


def disagreement(a: PupilFacts, b: PupilFacts) -> str | None:
    """Why two records of one INE cannot be one child: ``birth_date``, ``name``; None when
    they agree (a missing value never disagrees)."""
    if a.birth_date and b.birth_date and a.birth_date != b.birth_date:
        return "birth_date"
    if not (family_names_agree(a.family_names, b.family_names)
            and first_names_agree(a.first_name, b.first_name)):
        return "name"
    return None


@dataclass
class IneConflict:
    """A pupil record not matched through its INE: records it shares it with that cannot be
    the same child (``others``: their source keys, or the stored account's), and why."""

    person_key: str
    uai: str
    reason: str  # birth_date | name
    others: list[str]
    #: the account the INE points at, when it is a stored account of another child
    stored_uid: str | None = None


def shared_ine_conflicts(rows: list[dict[str, Any]], shared: set[str]) -> dict[int, IneConflict]:
    """Row index -> conflict, for tonight's pupil records whose INE (one of ``shared``: held
    by several records) is held by records that do not all agree. None of them is matched
    through that INE: which one the INE really belongs to is the school's to say."""
    by_ine: dict[str, list[int]] = defaultdict(list)
    if shared:
        for i, r in enumerate(rows):
            if r["profile"] == "ELV" and r.get("ine") in shared:
                by_ine[r["ine"]].append(i)
    out: dict[int, IneConflict] = {}
    for idx in by_ine.values():
        facts = [row_facts(rows[i]) for i in idx]
        why = {w for a in range(len(idx)) for b in range(a + 1, len(idx))
               if (w := disagreement(facts[a], facts[b]))}
        if not why:
            continue
        reason = "birth_date" if "birth_date" in why else "name"
        for i in idx:
            out[i] = IneConflict(rows[i]["person_key"], rows[i]["uai"], reason,
                                 [rows[j]["person_key"] for j in idx if j != i])
    return out


def stored_facts(view: StoredView,
                 uids: Iterable[str]) -> dict[str, tuple[PupilFacts, list[str]]]:
    """uid -> (facts, jointures) of accounts as last written (``entries``); an account never
    written has none (nothing to compare with: its INE decides, as before)."""
    return {uid: (entry_facts(e.attrs), sorted(e.attrs.get("ENTPersonJointure", [])))
            for uid, e in view.person_entries(sorted(set(uids))).items()}


_EVIDENCE = {"birth_date": "same INE, different birth dates",
             "name": "same INE and birth date, different names"}


def report_ine_conflicts(matcher: Matcher, conflicts: Iterable[IneConflict],
                         key_uid: dict[str, str],
                         split: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The conflicts in the duplicates report (one entry per INE shared tonight, one per
    record whose INE points at another child's account) and as findings for each record's
    school (file and line added by the caller): source keys and uids, never a name, a birth
    date or the INE. ``split``: records taken out of an account an earlier version merged."""
    findings: list[dict[str, Any]] = []
    groups: dict[frozenset[str], IneConflict] = {}
    for c in conflicts:
        uid = key_uid.get(c.person_key)
        what = ("its INE is the one of a stored account of another pupil"
                if c.stored_uid else "its INE is also held by " + ", ".join(c.others))
        findings.append({
            "uai": c.uai, "person_key": c.person_key, "element": "ELEVE",
            "rule": "ine_conflict", "reason": c.reason, "others": list(c.others),
            "stored": bool(c.stored_uid),
            "message": (f"{c.person_key}: {what} ({_EVIDENCE[c.reason]}"
                        + (f": {', '.join(c.others)}" if c.stored_uid and c.others else "")
                        + "): not matched through the INE; account by its SIECLE key"
                        + (f" ({uid})" if uid else ""))})
        if c.stored_uid:
            matcher._report({"rule": "ine_conflict", "score": 0.5,
                             "uids": sorted({c.stored_uid, *([uid] if uid else [])}),
                             "source": c.person_key, "records": [c.person_key, *c.others],
                             "evidence": _EVIDENCE[c.reason] + " (stored account)",
                             "action": "not merged: the record keeps its own account"})
        else:
            groups.setdefault(frozenset([c.person_key, *c.others]), c)
    for keys, c in groups.items():
        uids = sorted({key_uid[k] for k in keys if k in key_uid})
        action = ("one account holds these records (an operator's merge): kept"
                  if len(uids) < 2 else "not merged: each record keeps its own account")
        if keys & split:
            action = ("split: the account an earlier version had merged these records into "
                      "keeps one of them, each other record has its own")
        matcher._report({"rule": "ine_conflict", "score": 0.5, "uids": uids,
                         "source": None, "records": sorted(keys),
                         "evidence": _EVIDENCE[c.reason] + " (records of tonight)",
                         "action": action})
    return findings
