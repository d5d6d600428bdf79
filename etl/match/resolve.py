"""Matching a night's person records to accounts: a function of (records, stored view).

``match_records`` says which account (uid, login) each record goes to, which accounts are new,
and what it found (INE conflicts, suspected duplicates); what the state DB must learn (new
accounts and logins, source keys, moves, match keys) comes back as ``IdentityDecisions``,
written by the caller (``etl.match.identity.write_identities``). The rules are
``etl.match.matcher``'s; logins are allocated by ``etl.match.identity.IdentityRegistry``
(never reused).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from etl.config import Academy
from etl.match.identity import IdentityDecisions, IdentityRegistry
from etl.match.matcher import (
    STAFF_PROFILES,
    IneConflict,
    Matcher,
    disagreement,
    report_ine_conflicts,
    row_facts,
    shared_ine_conflicts,
    stored_facts,
)
from etl.plan.stored import StoredView


@dataclass(frozen=True)
class NightRecords:
    """The night's person records as matching reads them."""

    #: plain dicts (a missing value is None), pupils first, then staff, then guardians
    rows: list[dict[str, Any]]
    #: (pupil key, guardian key) of every eligible guardian link
    guardian_links: list[tuple[str, str]]
    #: pupils' INEs held by several of tonight's records
    shared_ines: set[str]


@dataclass
class MatchResult:
    """What matching decided: the account of each record, and what it found."""

    #: source key -> uid, for every record
    key_uid: dict[str, str]
    #: uid -> login, for every account a record went to
    logins: dict[str, str]
    #: records whose INE is not their account's (an INE conflict): the INE is not written
    no_ine: set[str]
    created: int
    #: matches by rule (other than by source key)
    matches: dict[str, int]
    duplicates: list[dict[str, Any]]
    #: INE conflicts as findings for each record's school (without file and line)
    ine_findings: list[dict[str, Any]]
    decisions: IdentityDecisions = field(default_factory=IdentityDecisions)


def match_records(night: NightRecords, academy: Academy, view: StoredView,
                  run_id: str) -> MatchResult:
    """Each record's account: source keys and INE first, then the cross-school rules; pupils
    before staff before guardians (a guardian may match through a pupil)."""
    rows = night.rows
    registry = IdentityRegistry(view)
    jointures_of: list[list[str]] = []
    for r in rows:
        keys = [r["person_key"]]
        if r["profile"] == "ELV" and r.get("ine"):
            keys.insert(0, f"{academy.jointure_prefix}$INE${r['ine']}")
        jointures_of.append(keys)
    known = registry.lookup(j for keys in jointures_of for j in keys)
    conflicts, released = _ine_conflicts(rows, jointures_of, known, night.shared_ines, view)
    # found by its SIECLE key only; a released INE then moves to the record's account
    released_ine = {rows[i]["person_key"]: jointures_of[i][0] for i in released}
    for i in (*conflicts, *released):
        jointures_of[i] = jointures_of[i][1:]
    split = _merged_by_ine(rows, known, conflicts, registry, view)
    moves: dict[str, str] = {}  # known jointure -> the account it moves to
    guardian_pupil_keys: dict[str, set[str]] = defaultdict(set)
    for pk, gk in night.guardian_links:
        guardian_pupil_keys[gk].add(pk)
    matcher = Matcher(view, run_id)
    # the match keys of the records no source key resolves: the only ones matching can ask
    # for (a record is matched only when none of its keys is known, and the loop below only
    # learns the keys of records it has passed)
    matcher.preload(r for r, keys in zip(rows, jointures_of, strict=True)
                    if not any(k in known for k in keys))
    key_uid: dict[str, str] = {}
    created = 0
    matches: dict[str, int] = {}
    for r, keys in zip(rows, jointures_of, strict=True):
        uid = next((known[k] for k in keys if k in known), None)
        pupil_uids = {key_uid[p] for p in guardian_pupil_keys.get(r["person_key"], ())
                      if p in key_uid}
        # found through its INE alone: a pupil new to this school (the rule is recorded)
        rule = "ine" if uid is not None and len(keys) > 1 and keys[-1] not in known \
            else "source_key"
        if uid is None and r["profile"] in STAFF_PROFILES:
            uid, rule = matcher.match_staff(r)
        elif uid is None and r["profile"] == "TUT":
            uid, rule = matcher.match_guardian(r, pupil_uids)
        if r["person_key"] in split:  # its own account, its SIECLE key moved to it
            res = registry.create(r["profile"], r["first_name"], r["last_name"], [], run_id)
            uid = moves[r["person_key"]] = known[r["person_key"]] = res.uid
            created += 1
        elif uid is None:
            res = registry.create(r["profile"], r["first_name"], r["last_name"], keys, run_id,
                                  rule="ine" if len(keys) > 1 else "source_key")
            uid = res.uid
            created += 1
            for k in keys:
                known[k] = uid
        else:
            missing = [k for k in keys if k not in known]
            if missing:
                registry.attach(uid, missing, run_id, rule)
                matches[rule] = matches.get(rule, 0) + (rule != "source_key")
                for k in missing:
                    known[k] = uid
        key_uid[r["person_key"]] = uid
        if (freed := released_ine.get(r["person_key"])) and freed not in moves:
            moves[freed] = known[freed] = uid
        matcher.note_result(r["person_key"], uid)
        matcher.remember(r, uid, pupil_uids)
    registry.move(moves, run_id, "ine_conflict")
    keys_new, keys_grown = matcher.key_updates()
    ine_prefix = f"{academy.jointure_prefix}$INE$"
    # an INE is written (ENTEleveINE, its jointure) only on the account it identifies
    no_ine = {c.person_key for i, c in conflicts.items()
              if known.get(ine_prefix + str(rows[i]["ine"])) != key_uid.get(c.person_key)}
    findings = report_ine_conflicts(matcher, conflicts.values(), key_uid, split)
    matcher.report_homonyms(rows, key_uid)
    logins = registry.logins_of(set(key_uid.values()))
    d = registry.decisions()
    return MatchResult(key_uid, logins, no_ine, created, matches, matcher.duplicates, findings,
                       IdentityDecisions(d.accounts, d.identities, d.moves, keys_new,
                                         keys_grown))


def _merged_by_ine(rows: list[dict[str, Any]], known: dict[str, str],
                   conflicts: dict[int, IneConflict], registry: IdentityRegistry,
                   view: StoredView) -> set[str]:
    """Source keys to split off: records of tonight's INE conflicts that an earlier version
    merged into one account through their shared INE. The record the account's directory entry
    describes (else the first by school and key: its main record) keeps it; the others get
    their own. An operator's merge (``entsync merge``, rule ``merge``) is kept."""
    by_uid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, c in conflicts.items():
        if c.stored_uid is None and c.person_key in known:
            by_uid[known[c.person_key]].append(rows[i])
    merged = {u: sorted(rs, key=lambda r: (r["uai"], r["person_key"]))
              for u, rs in by_uid.items() if len(rs) > 1}
    if not merged:
        return set()
    rules = registry.rules_of(r["person_key"] for rs in merged.values() for r in rs)
    stored = stored_facts(view, merged)
    out: set[str] = set()
    for u, rs in merged.items():
        facts = stored.get(u)
        keep = next((r for r in rs if facts and disagreement(row_facts(r), facts[0]) is None),
                    rs[0])
        out |= {r["person_key"] for r in rs
                if r is not keep and rules.get(r["person_key"]) != "merge"}
    return out


def _ine_conflicts(rows: list[dict[str, Any]], jointures_of: list[list[str]],
                   known: dict[str, str], shared_ines: set[str],
                   view: StoredView) -> tuple[dict[int, IneConflict], dict[int, str]]:
    """Row index -> INE conflict (``etl.match.matcher``): tonight's records of one INE that do not
    agree, and records whose INE would bring them into a stored account of another child (its
    birth date or names, as last written, differ). Only records the INE would move into
    another account are compared with it: on a normal night, none.

    Also row index -> the account that let the row's INE go: its records of tonight hold
    another INE (the school corrected the other child's), or its entry no longer carries it.
    The INE then moves to this row's own account (no conflict, no merge)."""
    conflicts = shared_ine_conflicts(rows, shared_ines)
    # INEs whose account has a record of its own tonight: compared with it above
    owned = {str(rows[i]["ine"]) for i, keys in enumerate(jointures_of)
             if len(keys) > 1 and rows[i].get("ine") in shared_ines
             and known.get(keys[0]) is not None and known.get(keys[0]) == known.get(keys[-1])}
    suspects: dict[int, str] = {}
    for i, keys in enumerate(jointures_of):
        if len(keys) > 1 and i not in conflicts and rows[i]["ine"] not in owned:
            u_ine = known.get(keys[0])
            if u_ine is not None and u_ine != known.get(keys[-1]):
                suspects[i] = u_ine
    released: dict[int, str] = {}
    if suspects:
        stored = stored_facts(view, suspects.values())
        # the INEs those accounts hold tonight through records of their own
        held: dict[str, set[str | None]] = defaultdict(set)
        wanted = set(suspects.values())
        for j, keys in enumerate(jointures_of):
            if (u := known.get(keys[-1])) in wanted and u is not None:
                held[u].add(rows[j].get("ine"))
        for i, u in suspects.items():
            if u not in stored:
                continue  # never written: nothing to compare with, the INE decides
            facts, their_keys = stored[u]
            why = disagreement(row_facts(rows[i]), facts)
            if not why:
                continue
            if (u in held and rows[i]["ine"] not in held[u]) or \
                    jointures_of[i][0] not in their_keys:
                released[i] = u
                continue
            conflicts[i] = IneConflict(rows[i]["person_key"], rows[i]["uai"], why,
                                       [k for k in their_keys if "$SIECLE$" in k],
                                       stored_uid=u)
    return conflicts, released
