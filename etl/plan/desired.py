"""The desired directory: what the entries of the synced schools should look like.

Built from the normalized, validated canonical tables of the schools processed in a run, and
the identity registry (uid and login of each person). Follows ``shared/docs/directory.md``
(contract v1): only what consumers need is written (no address, no phone number).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from etl.config import Academy
from etl.match.identity import IdentityRegistry
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
from etl.read.canonical import Tables, isin, missing, records, tuples, values

PROFILE_CLASS = {
    "ELV": "ENTEleve",
    "TUT": "ENTAuxPersRelEleve",
    "ENS": "ENTAuxEnseignant",
}
NON_TEACHING_CLASS = "ENTAuxNonEnsEtab"
#: the persons columns the desired entries and the identity matching read
ROW_COLUMNS = frozenset({"person_key", "uai", "profile", "ine", "last_name", "birth_name",
                         "first_name", "birth_date", "sex", "email", "mobile", "mef",
                         "function"})
#: member of an empty class or group (groupOfNames needs one): a DN no entry ever has
PLACEHOLDER_MEMBER_RDN = "uid=nobody"


@dataclass(slots=True)
class DesiredEntry:
    dn: str
    kind: str  # ou, school, person, class, group
    uai: str | None
    attrs: dict[str, list[str]]
    uid: str | None = None
    #: the content hash, kept by ``preserve_other_schools`` for an entry it found equal to
    #: what is stored (an entry nothing changes afterwards) so that planning does not hash it
    #: a second time; None: not known
    hash_memo: str | None = None

    @property
    def content_hash(self) -> str:
        return self.hash_memo if self.hash_memo is not None else content_hash(self.attrs)


def content_hash(attrs: dict[str, list[str]]) -> str:
    canon = {k.lower(): sorted(v) for k, v in attrs.items() if v}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def escape_dn_value(value: str) -> str:
    """RFC 4514 escaping of an attribute value in a DN, stricter than ldap3's ``escape_rdn``:
    every special character escaped (``#`` anywhere, not only in front, so that ldap3's own
    ``parse_dn`` reads our DNs back), leading and trailing spaces and NUL as hex escapes."""
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch in '\\"+,;<>=#':
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        elif ch == " " and (i == 0 or i == last):
            out.append("\\20")
        else:
            out.append(ch)
    return "".join(out)


def people_dn(base: str) -> str:
    return f"ou=people,{base}"


def person_dn(uid: str, base: str) -> str:
    return f"uid={escape_dn_value(uid)},ou=people,{base}"


def school_dn(uai: str, base: str) -> str:
    return f"ENTStructureUAI={escape_dn_value(uai)},ou=structures,{base}"


def groups_dn(uai: str, base: str) -> str:
    return f"ou=groups,{school_dn(uai, base)}"


def structure_dn(uai: str, code: str, base: str) -> str:
    """A class's DN, and a group's whose code is no division's of its school."""
    return f"cn={escape_dn_value(code)},{groups_dn(uai, base)}"


#: what a group's RDN value gets after its code when a division of its school has that code
#: (``docs/directory.md``): longer than any SIECLE/STS code (8 characters), so it can never be
#: another structure's code
GROUP_SUFFIX = " (groupe)"


def group_apart_dn(uai: str, code: str, base: str) -> str:
    """The DN of a group whose code is also a division's: ``cn=<CODE> (groupe),ou=groups,...``
    (the class keeps ``cn=<CODE>``)."""
    return structure_dn(uai, code + GROUP_SUFFIX, base)


def apart_of(class_dn: str, code: str) -> str:
    """``group_apart_dn`` of the group of ``code`` from the DN of the class of that code."""
    return f"cn={escape_dn_value(code + GROUP_SUFFIX)}{class_dn[class_dn.index(',ou=groups,'):]}"


def plain_dn_of(dn: str) -> str | None:
    """``cn=<CODE>,...`` for a group's DN apart (``group_apart_dn``); None for any other."""
    tail = GROUP_SUFFIX + ",ou=groups,"
    if dn.startswith("cn=") and tail in dn:
        return dn.replace(tail, ",ou=groups,", 1)
    return None


def groups_kept_apart(session: Any, candidates: dict[str, str]) -> set[str]:
    """Of the groups given (their plain DN -> their DN apart), the plain DNs of those that
    stay apart for what the directory holds: a group once written apart stays apart, even on a
    night its code is no division's, and a group never takes the DN a class has held (a DN
    never flip-flops between a class and a group)."""
    from sqlalchemy import select

    from etl.store.models import Entry

    wanted = {plain: ("class", plain) for plain in candidates}
    wanted |= {apart: ("group", plain) for plain, apart in candidates.items()}
    dns = sorted(wanted)
    out: set[str] = set()
    for i in range(0, len(dns), 500):
        for dn, kind in session.execute(select(Entry.dn, Entry.kind)
                                        .where(Entry.dn.in_(dns[i:i + 500]))):
            want, plain = wanted[dn]
            if kind == want:
                out.add(plain)
    return out


def placeholder_member(base: str) -> str:
    return f"{PLACEHOLDER_MEMBER_RDN},ou=people,{base}"


def fr_date(iso: str | None) -> str | None:
    if not iso:
        return None
    y, m, d = iso.split("-")
    return f"{d}/{m}/{y}"


class Shared:
    """One object for equal values across an academy's desired entries: strings interned
    (school DNs, class references, profiles, statuses) and equal value lists shared
    (``objectClass``, the classes of the pupils of one class...). An academy holds hundreds of
    thousands of entries in memory while it is planned; most of their values repeat.

    Shared lists must never be changed in place: the lifecycle and the planner replace an
    attribute's list, they never append to it."""

    __slots__ = ("_lists",)

    def __init__(self) -> None:
        self._lists: dict[tuple[str, ...], list[str]] = {}

    def share(self, values: list[str]) -> list[str]:
        key = tuple(values)
        found = self._lists.get(key)
        if found is None:
            found = self._lists[key] = [sys.intern(v) for v in values]
        return found


@dataclass
class DesiredState:
    entries: dict[str, DesiredEntry] = field(default_factory=dict)
    created_identities: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    matches: dict[str, int] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    #: groups written apart from the division sharing their code (uai, code, dn)
    groups_apart: list[dict[str, str]] = field(default_factory=list)
    #: INE conflicts as findings for each record's school (``etl.match.matcher.IneConflict``):
    #: uai, file, line, element, rule, message
    ine_findings: list[dict[str, Any]] = field(default_factory=list)

    def add(self, e: DesiredEntry) -> None:
        self.entries[e.dn] = e


def _val(v: Any) -> str | None:
    if missing(v):
        return None
    s = str(v)
    return s if s else None


def build_desired(tables: Tables, schools: dict[str, str | None], academy: Academy, base: str,
                  registry: IdentityRegistry, run_id: str,
                  school_years: dict[str, int | None] | None = None,
                  consume: bool = False) -> DesiredState:
    """Desired entries for the given schools (UAI -> display name or None).

    ``consume``: ``tables`` is emptied and each frame let go once read (the caller keeps no
    other reference): an academy's frames are not held while its entries are made."""
    st = DesiredState()
    years = school_years or {}
    shared = Shared()
    intern = sys.intern
    school_dns: dict[str, str] = {}

    def sdn_of(uai: str) -> str:
        found = school_dns.get(uai)
        if found is None:
            found = school_dns[uai] = intern(school_dn(uai, base))
        return found

    for uai, name in sorted(schools.items()):
        sdn = sdn_of(uai)
        attrs: dict[str, list[str]] = {
            "objectClass": ["top", "ENTEtablissement", "entSyncObject"],
            "ENTStructureUAI": [uai],
            "ENTStructureAcademie": [academy.code],
            "ou": [uai],
        }
        if name:
            attrs["ENTStructureNomCourant"] = [name]
        st.add(DesiredEntry(sdn, "school", uai, attrs))
        st.add(DesiredEntry(groups_dn(uai, base), "ou", uai,
                            {"objectClass": ["top", "organizationalUnit"], "ou": ["groups"]}))

    persons = tables["persons"]
    links = tables["guardian_links"]
    members = tables["memberships"]
    structures = tables["structures"]
    if consume:
        tables.frames.clear()
    persons = persons[persons["uai"].isin(list(schools))]
    active = persons[~persons["has_left"].fillna(False).astype(bool)]

    # guardians: only those with an eligible link (level in config) to a present pupil
    pupils = active[active["profile"] == "ELV"]
    pupil_keys = set(pupils["person_key"])
    levels = {str(x) for x in academy.guardian_levels}
    elig = links[links["level"].isin(levels) & isin(links["pupil_key"], pupil_keys)]
    elig_pairs: list[tuple[str, str]] = list(tuples(elig[["pupil_key", "guardian_key"]]))
    guardian_keys = set(elig["guardian_key"])
    del links, elig
    is_guardian = active["profile"] == "TUT"
    st.skipped["guardian_not_eligible"] = int((is_guardian
                                               & ~isin(active["person_key"], guardian_keys)).sum())
    st.skipped["pupil_left"] = int(len(persons) - len(persons[~persons["has_left"]
                                                             .fillna(False).astype(bool)]))
    active = active[~is_guardian | isin(active["person_key"], guardian_keys)]

    # resolve identities (etl/matching.py): source keys and INE first, then the cross-school
    # rules; pupils before staff before guardians (a guardian may match through a pupil)
    order = {"ELV": 0, "TUT": 2}
    rows: list[dict[str, Any]] = sorted(
        # plain Python values: a missing one is None, never a (truthy) NaN; only the columns
        # used here (an academy's rows are all in memory at once)
        records(active[[c for c in active.columns if c in ROW_COLUMNS]]),
        key=lambda r: order.get(r["profile"], 1))
    # pupils' INEs held by several of tonight's records (do those agree? see below), and where
    # each pupil record with an INE comes from (a conflict names its file and line)
    with_ine = active.loc[(active["profile"] == "ELV") & active["ine"].notna(),
                          ["person_key", "ine", "file", "line"]]
    shared_ines = set(values(with_ine["ine"][with_ine["ine"].duplicated(keep=False)]))
    pupil_where = with_ine[["person_key", "file", "line"]]
    del persons, active, pupils, is_guardian, with_ine  # the rows say it all from here
    jointures_of: list[list[str]] = []
    for r in rows:
        keys = [r["person_key"]]
        if r["profile"] == "ELV" and r.get("ine"):
            keys.insert(0, f"{academy.jointure_prefix}$INE${r['ine']}")
        jointures_of.append(keys)
    known = registry.lookup(j for keys in jointures_of for j in keys)
    conflicts, released = _ine_conflicts(rows, jointures_of, known, shared_ines, registry)
    # found by its SIECLE key only; a released INE then moves to the record's account
    released_ine = {rows[i]["person_key"]: jointures_of[i][0] for i in released}
    for i in (*conflicts, *released):
        jointures_of[i] = jointures_of[i][1:]
    split = _merged_by_ine(rows, known, conflicts, registry)
    moves: dict[str, str] = {}  # known jointure -> the account it moves to
    guardian_pupil_keys: dict[str, set[str]] = defaultdict(set)
    for pk, gk in elig_pairs:
        guardian_pupil_keys[gk].add(pk)
    matcher = Matcher(registry.s, academy.code, run_id)
    # the match keys of the records no source key resolves: the only ones matching can ask
    # for (a record is matched only when none of its keys is known, and the loop below only
    # learns the keys of records it has passed)
    matcher.preload(r for r, keys in zip(rows, jointures_of, strict=True)
                    if not any(k in known for k in keys))
    key_uid: dict[str, str] = {}
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
            st.created_identities += 1
        elif uid is None:
            res = registry.create(r["profile"], r["first_name"], r["last_name"], keys, run_id,
                                  rule="ine" if len(keys) > 1 else "source_key")
            uid = res.uid
            st.created_identities += 1
            for k in keys:
                known[k] = uid
        else:
            missing = [k for k in keys if k not in known]
            if missing:
                registry.attach(uid, missing, run_id, rule)
                st.matches[rule] = st.matches.get(rule, 0) + (rule != "source_key")
                for k in missing:
                    known[k] = uid
        key_uid[r["person_key"]] = uid
        if (freed := released_ine.get(r["person_key"])) and freed not in moves:
            moves[freed] = known[freed] = uid
        matcher.note_result(r["person_key"], uid)
        matcher.remember(r, uid, pupil_uids)
    registry.write_new()
    registry.move(moves, run_id, "ine_conflict")
    matcher.flush()
    ine_prefix = f"{academy.jointure_prefix}$INE$"
    # an INE is written (ENTEleveINE, its jointure) only on the account it identifies
    no_ine = {c.person_key for i, c in conflicts.items()
              if known.get(ine_prefix + str(rows[i]["ine"])) != key_uid.get(c.person_key)}
    st.ine_findings = report_ine_conflicts(matcher, conflicts.values(), key_uid, split)
    if st.ine_findings:
        where = {pk: (f, ln) for pk, f, ln in tuples(pupil_where[pupil_where["person_key"].isin(
            [x["person_key"] for x in st.ine_findings])])}
        for x in st.ine_findings:
            x["file"], x["line"] = where.get(x["person_key"], (None, None))
    del pupil_where
    matcher.report_homonyms(rows, key_uid)
    st.duplicates = matcher.duplicates
    # what matching needed goes now: an academy's rows, keys and match keys at once were the
    # bulk of the planning peak
    del matcher, known, jointures_of, guardian_pupil_keys
    logins = registry.logins_of(set(key_uid.values()))
    uid_dns: dict[str, str] = {}  # one string per person's DN, however many groups list it

    def dn_of(key: str) -> str | None:
        uid = key_uid.get(key)
        if not uid:
            return None
        found = uid_dns.get(uid)
        if found is None:
            found = uid_dns[uid] = person_dn(uid, base)
        return found

    refs: dict[tuple[str, str], str] = {}  # <school DN>$<code>, one string each

    def ref_of(uai: str, code: str) -> str:
        found = refs.get((uai, code))
        if found is None:
            found = refs[(uai, code)] = intern(f"{sdn_of(uai)}${code}")
        return found

    # structures (classes and groups) of each school; codes seen in memberships count too.
    # A class and a group are told apart by kind, never merged on a shared code: a group
    # whose code is also a division's gets its own DN (``group_apart_dn``)
    struct_label: dict[tuple[str, str, str], str] = {}
    for uai, code, kind, label in tuples(structures[["uai", "code", "kind", "label"]]):
        if uai in schools and kind in ("D", "G"):
            if (uai, code, kind) not in struct_label or (label and not
                                                         struct_label[(uai, code, kind)]):
                struct_label[(uai, code, kind)] = label or ""
    group_members: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    person_structs: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for uai, key, code, kind, _role, subject, head in tuples(members[
            ["uai", "person_key", "code", "kind", "role", "subject", "head_teacher"]]):
        pdn = dn_of(key)
        if pdn is None or uai not in schools:
            continue
        kind = "D" if kind == "D" else "G"
        struct_label.setdefault((uai, code, kind), "")
        group_members[(uai, code, kind)].add(pdn)
        sref = ref_of(uai, code)
        ps = person_structs[key]
        ps["classes" if kind == "D" else "groups"].add(sref)
        if head is True:
            ps["head"].add(sref)
        if subject:
            for subj in str(subject).split("|"):
                ps["subjects"].add(ref_of(uai, subj))
    del members, structures

    divisions = {(uai, code) for uai, code, kind in struct_label if kind == "D"}
    apart = groups_kept_apart(registry.s, {
        structure_dn(uai, code, base): group_apart_dn(uai, code, base)
        for uai, code, kind in struct_label if kind == "G" and (uai, code) not in divisions})
    for (uai, code, kind), label in sorted(struct_label.items()):
        dn = structure_dn(uai, code, base)
        plain = True
        if kind == "G" and ((uai, code) in divisions or dn in apart):
            dn, plain = group_apart_dn(uai, code, base), False
            st.groups_apart.append({"uai": uai, "code": code, "dn": dn})
        mem = sorted(group_members.get((uai, code, kind), set())) or [placeholder_member(base)]
        attrs = {
            "objectClass": shared.share(["top", "ENTClasse" if kind == "D" else "ENTGroupe",
                                        "entSyncObject"]),
            "cn": [code] if plain else [code, code + GROUP_SUFFIX],
            "ENTStructureUAI": shared.share([uai]),
            "member": mem,
        }
        if label:
            attrs["description"] = [label]
        year = years.get(uai)
        if year:
            attrs["ENTStructureAnneeScolaire"] = shared.share([str(year)])
        st.add(DesiredEntry(dn, "class" if kind == "D" else "group", uai, attrs))

    # guardian <-> pupil relations
    pupil_guardians: dict[str, set[str]] = defaultdict(set)
    guardian_pupils: dict[str, set[str]] = defaultdict(set)
    for pk, gk in elig_pairs:
        g_uid, p_dn = key_uid.get(gk), dn_of(pk)
        if g_uid and p_dn:
            pupil_guardians[pk].add(g_uid)
            guardian_pupils[gk].add(p_dn)

    # persons: one entry per uid (several source rows may merge into one account)
    by_uid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_uid[key_uid[r["person_key"]]].append(r)
    del rows
    for uid in list(by_uid):
        # each person's rows and memberships are let go as its entry is made (popped)
        prow = by_uid.pop(uid)
        st.add(_person_entry(uid, logins[uid], prow, base, person_structs, pupil_guardians,
                             guardian_pupils, shared, sdn_of, uid_dns.get(uid), no_ine))
    return st


def _merged_by_ine(rows: list[dict[str, Any]], known: dict[str, str],
                   conflicts: dict[int, IneConflict], registry: IdentityRegistry) -> set[str]:
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
    stored = stored_facts(registry.s, merged)
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
                   registry: IdentityRegistry) -> tuple[dict[int, IneConflict], dict[int, str]]:
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
        stored = stored_facts(registry.s, suspects.values())
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


def _person_entry(uid: str, login: str, prow: list[dict[str, Any]], base: str,
                  person_structs: dict[str, dict[str, set[str]]],
                  pupil_guardians: dict[str, set[str]],
                  guardian_pupils: dict[str, set[str]], shared: Shared | None = None,
                  sdn_of: Any = None, dn: str | None = None,
                  no_ine: set[str] | frozenset[str] = frozenset()) -> DesiredEntry:
    """A person's entry. ``shared``, ``sdn_of`` and ``dn``: the academy's shared values, school
    DNs and this person's DN string (``build_desired``), so that equal values are one object.
    ``no_ine``: records whose INE is not this account's (an INE conflict): neither written.
    The person's keys are taken out of ``person_structs``, ``pupil_guardians`` and
    ``guardian_pupils`` (each source key belongs to one person: read once)."""
    share = shared.share if shared is not None else list
    sdn = sdn_of or (lambda uai: school_dn(uai, base))
    prow = sorted(prow, key=lambda r: (r["uai"], r["person_key"]))  # main school: stable
    main = prow[0]
    profile = main["profile"]
    last = _val(main["last_name"]) or "?"
    first = _val(main["first_name"]) or "?"
    profiles = sorted({f"National_{r['profile']}" for r in prow})
    classes = sorted({PROFILE_CLASS.get(r["profile"], NON_TEACHING_CLASS) for r in prow})
    attrs: dict[str, list[str]] = {
        "objectClass": share(["top", "person", "organizationalPerson", "inetOrgPerson",
                              "ENTPerson", *classes, "entSyncAccount"]),
        "uid": [uid],
        "ENTPersonLogin": [login],
        "sn": [last],
        "givenName": [first],
        "cn": [f"{last} {first}"],
        "displayName": [f"{first} {last}"],
        "ENTPersonJointure": sorted({r["person_key"] for r in prow}
                                    | ({f"{r['person_key'].split('$', 1)[0]}$INE${r['ine']}"
                                        for r in prow if r["profile"] == "ELV" and r.get("ine")
                                        and r["person_key"] not in no_ine})),
        "ENTPersonProfils": share(profiles),
        "ENTPersonStructRattach": share([sdn(main["uai"])]),
        "entSyncStatus": share(["ACTIVE"]),
    }
    birth = fr_date(_val(main.get("birth_date")))
    if birth and profile != "TUT":
        attrs["ENTPersonDateNaissance"] = [birth]
    sex = _val(main.get("sex"))
    if sex:
        attrs["ENTPersonSexe"] = share([sex])
    email = _val(main.get("email"))
    if email:
        attrs["mail"] = [email]
    keys = [r["person_key"] for r in prow]
    structs: dict[str, set[str]] = defaultdict(set)
    for k in keys:
        for name, vals in person_structs.pop(k, {}).items():
            structs[name] |= vals
    if profile == "ELV":
        if main.get("ine") and main["person_key"] not in no_ine:
            attrs["ENTEleveINE"] = [str(main["ine"])]
        if main.get("mef"):
            attrs["ENTEleveMEF"] = share([str(main["mef"])])
        attrs["ENTEleveClasses"] = share(sorted(structs["classes"]))
        attrs["ENTEleveGroupes"] = share(sorted(structs["groups"]))
        attrs["ENTElevePersRelEleve"] = sorted(set().union(*(pupil_guardians.pop(k, set())
                                                             for k in keys)))
    elif profile == "TUT":
        attrs["ENTAuxPersRelEleveEleve"] = sorted(set().union(*(guardian_pupils.pop(k, set())
                                                                for k in keys)))
    else:
        attrs["ENTAuxEnsClasses"] = share(sorted(structs["classes"]))
        attrs["ENTAuxEnsGroupes"] = share(sorted(structs["groups"]))
        attrs["ENTAuxEnsClassesPrincipal"] = share(sorted(structs["head"]))
        attrs["ENTAuxEnsMatiereEnseignEtab"] = share(sorted(structs["subjects"]))
        attrs["ENTPersonFonctions"] = share(sorted({f"{sdn(r['uai'])}${r['function']}"
                                                    for r in prow if r.get("function")}))
    attrs = {k: v for k, v in attrs.items() if v}
    return DesiredEntry(dn or person_dn(uid, base), "person", sys.intern(main["uai"]), attrs,
                        uid=uid)
