"""What a run may judge, and the account lifecycle within it.

Scope: a person is absent only when a COMPLETE export of the same kind for the same school was
read in this run without them (pupils: BEE_ELEVES; guardians: BEE_RESPONSABLES; teachers and
staff: STS_EDT). A school with no export tonight, or a quarantined one, changes nothing. A pupil
with a past DATE_SORTIE is absent.

Lifecycle: absent -> DISABLED (entSyncStatus, entSyncDisabledAt, out of every class and group,
cannot bind) -> deleted after the retention period by ``ent_lifecycle``. Present again before
that: the same entry, uid and login are restored.

Every function here reads the stored state through ``etl.plan.stored.StoredView`` and returns
what it decides (new entries, replacements of desired entries, changes); none changes the
entries it is given (they may share value lists: ``etl.plan.desired.Shared``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from etl.config import Academy
from etl.plan.desired import (
    GROUP_SUFFIX,
    PLACEHOLDER_MEMBER_RDN,
    DesiredEntry,
    apart_of,
    content_hash,
    groups_dn,
    placeholder_member,
    plain_dn_of,
)
from etl.plan.diff import RETYPE, Change
from etl.plan.stored import BATCH, StoredEntry, StoredView

PLACEHOLDER_PREFIX = PLACEHOLDER_MEMBER_RDN + ","
#: export kind -> the source tag of the jointures it covers
KIND_SOURCE = {"ELEVES": "SIECLE", "RESPONSABLES": "SIECLE-RESP", "STS": "STS"}
SCOPED_SOURCES = tuple(KIND_SOURCE.values())
#: desired entries replaced, by DN (what a lifecycle step returns for ``targets.update``)
Replacements = dict[str, DesiredEntry]


def generalized_time(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%SZ")


def jointure_scope(jointure: str) -> tuple[str, str] | None:
    """``AC-X$SIECLE$0671234X$42`` -> ("0671234X", "SIECLE"); INE keys have no school."""
    parts = jointure.split("$")
    if len(parts) >= 4 and parts[1] in SCOPED_SOURCES:
        return parts[2], parts[1]
    return None


#: AAF type -> the source tag of the jointures it covers (a school fed by the AAF is covered
#: as its own exports would cover it: a school moving from them keeps its judged scopes)
AAF_TYPE_SOURCE = {"Eleve": "SIECLE", "PersRelEleve": "SIECLE-RESP", "PersEducNat": "STS"}


def covered_scopes(school_results: Iterable[Mapping[str, object]]) -> set[tuple[str, str]]:
    """(UAI, source) pairs whose complete export was read cleanly in this run; for a school
    read from the AAF, those of the types its AAF state covers completely (``covers``: its
    last Complet and the Deltas since, without a gap)."""
    out: set[tuple[str, str]] = set()
    for r in school_results:
        if r.get("status") != "ok":
            continue
        docs = r.get("docs", [])
        for d in docs if isinstance(docs, list) else []:
            src = KIND_SOURCE.get(d.get("kind", ""))
            if src:
                out.add((str(r["uai"]), src))
        aaf = r.get("aaf")
        if isinstance(aaf, Mapping):
            for t in aaf.get("covers") or []:
                if t in AAF_TYPE_SOURCE:
                    out.add((str(r["uai"]), AAF_TYPE_SOURCE[t]))
    return out


def absence_scope(covered: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Where absence may be judged: a guardian's eligibility depends on the pupils file too, so
    guardians are judged only where both the pupils and the guardians exports came."""
    return {(u, src) for u, src in covered
            if src != "SIECLE-RESP" or (u, "SIECLE") in covered}


def _with(e: DesiredEntry, attrs: dict[str, list[str]], uai: str | None = None) -> DesiredEntry:
    """``e`` with other attributes (and main school): a new entry, ``e`` untouched."""
    return DesiredEntry(e.dn, e.kind, e.uai if uai is None else uai, attrs, uid=e.uid)


# -- absence ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Absence:
    uid: str
    dn: str
    uai: str | None
    profile: str | None


#: a jointure naming no school -> the (UAI, source) scopes it was last applied in (an AAF
#: key ``<PREFIX>$<id>``: ``etl.discover.aaf.aaf_scopes``)
Scopes = Mapping[str, set[tuple[str, str]]]


def _scopes(j: str, extra: Scopes | None) -> set[tuple[str, str]]:
    sc = jointure_scope(j)
    if sc is not None:
        return {sc}
    return set(extra.get(j, ())) if extra else set()


def unscoped_keys(view: StoredView, academy: Academy, present: set[str]) -> list[str]:
    """The academy's jointures with no part but the id (AAF keys) not present tonight: the
    only ones ``find_absent`` needs scopes for."""
    return [j for j, _uid in view.academy_identities(academy.jointure_prefix)
            if j.count("$") == 1 and j not in present]


def find_absent(view: StoredView, academy: Academy, covered: set[tuple[str, str]],
                present_jointures: set[str], scopes: Scopes | None = None) -> list[Absence]:
    """Accounts every one of whose school attachments was covered tonight and not present.
    ``scopes``: where the keys that name no school (AAF keys) were last applied."""
    candidates: dict[str, set[str]] = defaultdict(set)
    if not covered:
        return []
    # the academy's source keys in one pass, each kept when its (school, source) was covered
    # (a query per covered pair, ``LIKE 'AC-X$SIECLE$<uai>$%'``, reads the table once each)
    for j, uid in view.academy_identities(academy.jointure_prefix):
        if j in present_jointures:
            continue
        parts = j.split("$", 3)
        if len(parts) == 4 and (parts[2], parts[1]) in covered:
            candidates[uid].add(j)
        elif scopes and j in scopes and scopes[j] & covered:
            candidates[uid].add(j)
    if not candidates:
        return []
    uids = sorted(candidates)
    all_keys = view.keys_of(uids)
    accounts = view.accounts(uids)
    still: list[str] = []
    for uid in uids:
        acc = accounts.get(uid)
        if acc is None or acc.status == "DELETED":
            continue
        keys = all_keys.get(uid, set())
        if keys & present_jointures:
            continue  # present through another key (another school, the INE)
        if any(sc not in covered for k in keys for sc in _scopes(k, scopes)):
            continue  # still listed by a school whose export did not come tonight
        still.append(uid)
    written = view.person_entries(still)
    out: list[Absence] = []
    for uid in still:
        entry = written.get(uid)
        if entry is None:
            continue  # never written: nothing to disable
        out.append(Absence(uid, entry.dn, entry.uai, accounts[uid].profile))
    return out


def disabled_entries(view: StoredView, absent: list[Absence], now: dt.datetime,
                     desired: Mapping[str, DesiredEntry], processed: set[str],
                     base: str) -> list[DesiredEntry]:
    """Desired entries for absent accounts (DISABLED) and for the groups of schools not
    processed tonight that still list them (member removed)."""
    out: list[DesiredEntry] = []
    absent_dns = {a.dn for a in absent}
    stored = view.entries(a.dn for a in absent)
    for a in absent:
        cur = stored.get(a.dn)
        if cur is None:
            continue
        attrs = {k: list(v) for k, v in cur.attrs.items()}
        if attrs.get("entSyncStatus") != ["DISABLED"]:
            attrs["entSyncStatus"] = ["DISABLED"]
            attrs["entSyncDisabledAt"] = [generalized_time(now)]
        out.append(DesiredEntry(a.dn, "person", a.uai, attrs, uid=a.uid))
    if not absent_dns:
        return out
    for g in view.structures():
        if g.dn in desired or g.uai in processed:
            continue
        members = g.attrs.get("member", [])
        if absent_dns.isdisjoint(members):
            continue
        attrs = {k: list(v) for k, v in g.attrs.items()}
        attrs["member"] = [m for m in members if m not in absent_dns] or [placeholder_member(base)]
        out.append(DesiredEntry(g.dn, g.kind, g.uai, attrs))
    return out


# -- what tonight's inputs do not cover ---------------------------------------------------------

def preserve_uncovered(view: StoredView, targets: Mapping[str, DesiredEntry],
                       covered: set[tuple[str, str]], processed: set[str]) -> Replacements:
    """A school processed tonight without one of its exports keeps, for that export's part,
    what the directory already has: pupils keep their guardian links when no guardians file
    came; classes keep their teachers when no STS file came, and their pupils when no pupils
    file came. (A run only judges what its inputs cover.) Returns the entries to replace or
    add (a group carried apart, as it was, when a division took its code)."""
    pupils: list[DesiredEntry] = []
    structs: list[tuple[DesiredEntry, set[str]]] = []
    for e in targets.values():
        if e.uai not in processed:
            continue
        if (e.kind == "person" and "ENTEleve" in e.attrs.get("objectClass", [])
                and (e.uai, "SIECLE-RESP") not in covered):
            pupils.append(e)
        elif e.kind in ("class", "group"):
            missing = {src for src in ("SIECLE", "STS") if (e.uai, src) not in covered}
            if missing:
                structs.append((e, missing))
    wanted = [e.dn for e in pupils] + [e.dn for e, _ in structs]
    wanted += [p for e, _ in structs if e.kind == "group" and (p := plain_dn_of(e.dn))]
    stored = view.entries(wanted)
    out: Replacements = {}
    carried: list[DesiredEntry] = []

    def structure_of(e: DesiredEntry) -> dict[str, list[str]] | None:
        """What the directory holds for a class or group: its entry, when of the same kind;
        for a group going apart tonight (``etl.plan.desired.group_apart_dn``), the group it was
        at ``cn=<CODE>``; never the entry of the other kind at its DN."""
        row = stored.get(e.dn)
        if row is not None:
            if row.kind == e.kind:
                return row.attrs
            if e.kind == "class" and row.kind == "group" and (e.uai, "SIECLE") not in covered:
                # a division took this group's code: the group goes apart, as it was
                # (its pupils export did not come to say what it is now)
                code = (e.attrs.get("cn") or [""])[0]
                dn = apart_of(e.dn, code)
                if dn not in targets:
                    attrs = {k: list(v) for k, v in row.attrs.items()}
                    attrs["cn"] = [code, code + GROUP_SUFFIX]
                    carried.append(DesiredEntry(dn, "group", e.uai, attrs))
            return None
        plain = plain_dn_of(e.dn) if e.kind == "group" else None
        if plain is not None:
            old = stored.get(plain)
            if old is not None and old.kind == "group":
                return old.attrs
        return None

    for e in pupils:
        cur = stored.get(e.dn)
        if cur is not None:
            attrs = dict(e.attrs)
            if cur.attrs.get("ENTElevePersRelEleve"):
                attrs["ENTElevePersRelEleve"] = list(cur.attrs["ENTElevePersRelEleve"])
            else:
                attrs.pop("ENTElevePersRelEleve", None)
            out[e.dn] = _with(e, attrs)
    # the members each structure may keep, and the stored profiles saying which export they
    # belong to (read in batches, once per member)
    kept: list[tuple[DesiredEntry, set[str], list[str]]] = []
    for e, missing in structs:
        cur_s = structure_of(e)
        if not cur_s:
            continue
        have = set(e.attrs.get("member", []))
        kept.append((e, missing, [m for m in cur_s.get("member", []) if m not in have]))
    members = view.entries({m: None for _e, _s, ms in kept for m in ms})
    source_cache: dict[str, str | None] = {}

    def source_of(dn: str) -> str | None:
        if dn not in source_cache:
            row = members.get(dn)
            profs = row.attrs.get("ENTPersonProfils", []) if row is not None else []
            source_cache[dn] = ("SIECLE" if "National_ELV" in profs else
                                None if not profs or "National_TUT" in profs else "STS")
        return source_cache[dn]

    for e, missing, candidates in kept:
        keep = [m for m in candidates if source_of(m) in missing]
        if keep:
            mine = [m for m in e.attrs.get("member", [])
                    if not m.startswith(PLACEHOLDER_PREFIX)] + keep
            out[e.dn] = _with(e, {**e.attrs, "member": sorted(set(mine))})
    for g in carried:
        if g.dn not in targets and g.dn not in out:
            out[g.dn] = g
    return out


#: person attributes whose values are ``<school DN>$<code>``: one school's part of an account
SCHOOL_SCOPED = ("ENTEleveClasses", "ENTEleveGroupes", "ENTAuxEnsClasses", "ENTAuxEnsGroupes",
                 "ENTAuxEnsClassesPrincipal", "ENTAuxEnsMatiereEnseignEtab",
                 "ENTPersonFonctions")


def _uai_in_dn(value: str) -> str | None:
    head = value.split("$", 1)[0]
    for part in head.split(","):
        if part[:16].lower() == "entstructureuai=":
            return part[16:]
    return None


#: people read per query by ``preserve_other_schools``
PRESERVE_BATCH = BATCH


def preserve_other_schools(view: StoredView, targets: Mapping[str, DesiredEntry],
                           processed: set[str], also_processed: set[str] | None = None,
                           read_in: Mapping[str, set[str]] | None = None,
                           pre_main: Mapping[str, str] | None = None,
                           record_main: dict[str, str] | None = None) -> Replacements:
    """One account, several schools: tonight's run rebuilds the parts of an account that
    belong to the schools it processed and keeps, from the directory, the parts that belong to
    schools it did not (their source keys, classes, groups, subjects, functions, pupils).

    Read hash first, ``PRESERVE_BATCH`` people at a time: an account whose stored content is
    already the desired one has nothing of another school to keep (what is stored is what
    tonight's schools give); it comes back with its hash known (``hash_memo``: planning does
    not hash it again). Only the others' attributes are loaded.

    A group of a streamed run (``etl.plan.stream``): ``also_processed``, the schools its
    earlier groups processed, count as processed for a person except those ``read_in``
    (uid -> schools) says the person was read in tonight (their stored part is tonight's);
    the main school kept is the one the person had before the run (``pre_main``: uid -> its
    ``ENTPersonStructRattach``, for the people an earlier group wrote), and ``record_main``
    gets it for the people no earlier group did."""
    out: Replacements = {}
    earlier = also_processed or set()
    seen = read_in or {}
    before = pre_main or {}
    people = [e for e in targets.values() if e.kind == "person"]
    for i in range(0, len(people), PRESERVE_BATCH):
        part = {e.dn: e for e in people[i:i + PRESERVE_BATCH]}
        stale = []
        for dn, h in view.hashes(part).items():
            e = part[dn]
            mine = content_hash(e.attrs)
            if record_main is not None and e.uid and e.uid not in seen:
                record_main[e.uid] = (e.attrs.get("ENTPersonStructRattach") or [""])[0]
            if h == mine:  # equal to what is stored: nothing after this changes it
                out[dn] = DesiredEntry(e.dn, e.kind, e.uai, e.attrs, e.uid, hash_memo=mine)
            else:
                stale.append(dn)
        if not stale:
            continue
        current = view.attrs(stale)
        pupil_uai = view.uais({p: None for dn in stale
                               for p in current.get(dn, {}).get("ENTAuxPersRelEleveEleve", [])})
        if seen:  # a pupil an earlier group read: the school it was read in tonight
            for p in pupil_uai:
                there = seen.get(_uid_of(p))
                if there:
                    pupil_uai[p] = min(there)
        for dn in stale:
            if dn in current:
                e, cur = part[dn], current[dn]
                uid = e.uid or ""
                if uid in seen:  # written by an earlier group: its main before the run
                    cur = {**cur, "ENTPersonStructRattach":
                           [before[uid]] if before.get(uid) else []}
                elif record_main is not None and uid:
                    record_main[uid] = (cur.get("ENTPersonStructRattach") or [""])[0]
                mine_done = (processed | (earlier - seen.get(uid, set()))
                             if earlier else processed)
                new = _preserve_person(e, cur, mine_done, pupil_uai,
                                       seen.get(uid, set()) - processed)
                if new is not None:
                    out[dn] = new
    return out


def _uid_of(dn: str) -> str:
    """The uid of a person's DN (``uid=<uid>,ou=people,...``)."""
    head = dn.split(",", 1)[0]
    return head[4:] if head[:4].lower() == "uid=" else ""


def _preserve_person(e: DesiredEntry, cur: dict[str, list[str]], processed: set[str],
                     pupil_uai: Mapping[str, str | None],
                     read_elsewhere: set[str] | None = None) -> DesiredEntry | None:
    """``preserve_other_schools`` for one account whose stored attributes ``cur`` differ from
    the desired ones: the entry to put in its place, None when it stays as it is.
    ``pupil_uai``: the stored main school of the pupils its stored entry names;
    ``read_elsewhere``: the schools an earlier group of a streamed run read the person in
    (their parts are kept, an AAF key naming no school too)."""
    elsewhere = read_elsewhere or set()
    a = dict(e.attrs)
    uai = e.uai
    # the main school stays what it was while the person is still attached to it
    cur_main = cur.get("ENTPersonStructRattach") or []
    if cur_main and cur_main != a.get("ENTPersonStructRattach"):
        main_uai = _uai_in_dn(cur_main[0])
        attached = {sc[0] for j in a.get("ENTPersonJointure", [])
                    if (sc := jointure_scope(j)) is not None}
        attached |= {sc[0] for j in cur.get("ENTPersonJointure", [])
                     if (sc := jointure_scope(j)) is not None and sc[0] not in processed}
        attached |= elsewhere
        if main_uai in attached:
            a["ENTPersonStructRattach"] = list(cur_main)
            uai = main_uai
    kept_keys = [j for j in cur.get("ENTPersonJointure", [])
                 if (sc := jointure_scope(j)) is not None and sc[0] not in processed]
    if kept_keys or elsewhere:
        if kept_keys:
            a["ENTPersonJointure"] = sorted(set(a.get("ENTPersonJointure", []))
                                            | set(kept_keys))
        for name in SCHOOL_SCOPED:
            keep = [v for v in cur.get(name, [])
                    if (u := _uai_in_dn(v)) is not None and u not in processed
                    and (kept_keys or u in elsewhere)]
            if keep:
                a[name] = sorted(set(a.get(name, [])) | set(keep))
        for name in ("ENTPersonProfils", "objectClass"):
            a[name] = sorted(set(a.get(name, [])) | set(cur.get(name, [])))
        pupils = cur.get("ENTAuxPersRelEleveEleve", [])
        if pupils:
            keep = [dn for dn in dict.fromkeys(pupils)
                    if dn in pupil_uai and pupil_uai[dn] not in processed
                    and (kept_keys or pupil_uai[dn] in elsewhere)]
            if keep:
                a["ENTAuxPersRelEleveEleve"] = sorted(
                    set(a.get("ENTAuxPersRelEleveEleve", [])) | set(keep))
    if uai == e.uai and a == e.attrs:
        return None
    return _with(e, a, uai)


def keep_protected_members(view: StoredView, targets: Mapping[str, DesiredEntry],
                           protected_dns: set[str]) -> Replacements:
    """People whose record was rejected tonight are skipped, not moved: the classes and groups
    that listed them keep listing them. Returns the structures to replace."""
    out: Replacements = {}
    if not protected_dns:
        return out
    structs = [e for e in targets.values() if e.kind in ("class", "group")]
    stored = view.entries(e.dn for e in structs)
    for e in structs:
        row: StoredEntry | None = stored.get(e.dn)
        if row is None or row.kind != e.kind:
            continue
        keep = protected_dns & set(row.attrs.get("member", []))
        if keep:
            members = [m for m in e.attrs.get("member", [])
                       if not m.startswith(PLACEHOLDER_PREFIX)]
            out[e.dn] = _with(e, {**e.attrs, "member": sorted(set(members) | keep)})
    return out


# -- structures ---------------------------------------------------------------------------------

def structure_changes(view: StoredView, academy: Academy, targets: Mapping[str, DesiredEntry],
                      covered: set[tuple[str, str]], years: Mapping[str, int | None],
                      base: str) -> tuple[dict[str, DesiredEntry], list[Change]]:
    """Classes and groups of a school that its complete pupils export no longer has are
    removed; at the school-year roll-over (``ANNEE_SCOLAIRE`` advances), last year's classes
    and groups are first archived under ``ou=<year>,ou=archives,ou=groups,<school>``
    (``rollover_archive = "archive"``, read-only history) or just removed (``"remove"``), so
    last year's and this year's compositions are never mixed: a class or group of this year
    with last year's code is a new entry at that DN (last year's is deleted first, category
    ``retype``; ``retype_changes`` turns its planned modify into the add), not last year's
    entry modified. Returns (the archive entries to add to the desired ones, none of which is
    there yet; the removals)."""
    adds: dict[str, DesiredEntry] = {}
    deletes: list[Change] = []
    judged = {u for u, src in covered if src == "SIECLE"}
    if not judged:
        return adds, deletes

    def add(dn: str, e: DesiredEntry) -> None:
        if dn not in targets and dn not in adds:
            adds[dn] = e

    for e in list(view.structures(judged)):
        if ",ou=archives," in e.dn.lower():
            continue
        year = years.get(e.uai or "")
        old_year = (e.attrs.get("ENTStructureAnneeScolaire") or [""])[0]
        rolled = bool(year and old_year and old_year.isdigit() and int(old_year) < year)
        if rolled and academy.rollover_archive == "archive":
            gdn = groups_dn(e.uai or "", base)
            arch = f"ou=archives,{gdn}"
            ydn = f"ou={old_year},{arch}"
            add(arch, DesiredEntry(arch, "ou", e.uai, {
                "objectClass": ["top", "organizationalUnit"], "ou": ["archives"]}))
            add(ydn, DesiredEntry(ydn, "ou", e.uai, {
                "objectClass": ["top", "organizationalUnit"], "ou": [str(old_year)]}))
            rdn = e.dn.split(",", 1)[0]
            copy = {k: list(v) for k, v in e.attrs.items()}
            copy["description"] = [f"{(copy.get('description') or [''])[0]} "
                                   f"(archive {old_year})".strip()]
            add(f"{rdn},{ydn}", DesiredEntry(f"{rdn},{ydn}", "archive", e.uai, copy))
        if e.dn not in targets:
            deletes.append(Change("delete", e.dn, e.kind, e.uai, "delete", before=e.attrs))
        elif rolled:
            deletes.append(Change("delete", e.dn, e.kind, e.uai, RETYPE, before=e.attrs))
    return adds, deletes


def retype_changes(view: StoredView, targets: Mapping[str, DesiredEntry],
                   changes: list[Change], renewed: Collection[str] = ()) -> list[Change]:
    """A class or group entry whose DN the directory holds with the other kind (a group at
    ``cn=<CODE>`` when a division gets that code, or such an entry written before classes and
    groups were told apart) cannot be modified into it: LDAP refuses to change a structural
    class. Its planned modify becomes a delete (category ``retype``, written first) and an add
    of the desired entry. ``renewed``: DNs whose delete is already planned (last year's class
    at the roll-over, ``structure_changes``): their modify becomes the add alone."""
    out: list[Change] = []
    if renewed:
        seen = set()
        for c in changes:
            if c.dn in renewed and c.op == "modify":
                e = targets[c.dn]
                c = Change("add", c.dn, e.kind, e.uai, "create", attrs=e.attrs, after=e.attrs)
            seen.add(c.dn)
            out.append(c)
        for dn in sorted(set(renewed) - seen):
            e = targets[dn]
            out.append(Change("add", dn, e.kind, e.uai, "create", attrs=e.attrs, after=e.attrs))
        changes, out = out, []
    wanted = {c.dn: c for c in changes if c.op == "modify" and c.kind in ("class", "group")}
    if not wanted:
        return changes
    stored = view.entries(sorted(wanted))
    for c in changes:
        have = stored.get(c.dn) if c.dn in wanted else None
        if have is None or have.kind == c.kind or have.kind not in ("class", "group"):
            out.append(c)
            continue
        e = targets[c.dn]
        out.append(Change("delete", c.dn, have.kind, c.uai, RETYPE, before=have.attrs))
        out.append(Change("add", c.dn, e.kind, e.uai, "create", attrs=e.attrs, after=e.attrs))
    return out
