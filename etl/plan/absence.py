"""Account lifecycle and disaster guards.

Scope: a person is absent only when a COMPLETE export of the same kind for the same school was
read in this run without them (pupils: BEE_ELEVES; guardians: BEE_RESPONSABLES; teachers and
staff: STS_EDT). A school with no export tonight, or a quarantined one, changes nothing. A pupil
with a past DATE_SORTIE is absent.

Lifecycle: absent -> DISABLED (entSyncStatus, entSyncDisabledAt, out of every class and group,
cannot bind) -> deleted after the retention period by ``ent_lifecycle``. Present again before
that: the same entry, uid and login are restored.

Guards, evaluated per school on the plan before anything is written: share of the school's
accounts disabled, share updated, absolute number disabled, a pupils export much smaller than
the last applied one, a school year going backwards. A tripped guard holds that school's
changes for approval; the other schools proceed.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from etl.config import Academy
from etl.plan.desired import (
    GROUP_SUFFIX,
    PLACEHOLDER_MEMBER_RDN,
    DesiredEntry,
    apart_of,
    content_hash,
    placeholder_member,
    plain_dn_of,
)
from etl.plan.diff import RETYPE, Change
from etl.store.models import Account, Entry, Identity, SchoolState

PLACEHOLDER_PREFIX = PLACEHOLDER_MEMBER_RDN + ","
#: export kind -> the source tag of the jointures it covers
KIND_SOURCE = {"ELEVES": "SIECLE", "RESPONSABLES": "SIECLE-RESP", "STS": "STS"}
SCOPED_SOURCES = tuple(KIND_SOURCE.values())


def generalized_time(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%SZ")


def jointure_scope(jointure: str) -> tuple[str, str] | None:
    """``AC-X$SIECLE$0671234X$42`` -> ("0671234X", "SIECLE"); INE keys have no school."""
    parts = jointure.split("$")
    if len(parts) >= 4 and parts[1] in SCOPED_SOURCES:
        return parts[2], parts[1]
    return None


def covered_scopes(school_results: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(UAI, source) pairs whose complete export was read cleanly in this run."""
    out: set[tuple[str, str]] = set()
    for r in school_results:
        if r.get("status") != "ok":
            continue
        for d in r.get("docs", []):
            src = KIND_SOURCE.get(d.get("kind", ""))
            if src:
                out.add((r["uai"], src))
    return out


@dataclass
class Absence:
    uid: str
    dn: str
    uai: str | None
    profile: str | None


def find_absent(s: Session, academy: Academy, covered: set[tuple[str, str]],
                present_jointures: set[str]) -> list[Absence]:
    """Accounts every one of whose school attachments was covered tonight and not present."""
    prefix = academy.jointure_prefix
    candidates: dict[str, set[str]] = defaultdict(set)
    if not covered:
        return []
    # the academy's source keys in one pass, each kept when its (school, source) was covered:
    # a query per covered pair (``LIKE 'AC-X$SIECLE$<uai>$%'``, which no index serves) read
    # the whole table once per school and source, 900 times for a 306-school academy (90 s
    # of a first load's 186 s of planning at scale 1.0, py-spy)
    for j, uid in s.execute(select(Identity.jointure, Identity.uid)
                            .where(Identity.jointure.like(f"{prefix}$%"))):
        if j in present_jointures:
            continue
        parts = j.split("$", 3)
        if len(parts) == 4 and (parts[2], parts[1]) in covered:
            candidates[uid].add(j)
    if not candidates:
        return []
    uids = sorted(candidates)
    all_keys: dict[str, set[str]] = defaultdict(set)
    for i in range(0, len(uids), 500):
        for j, uid in s.execute(select(Identity.jointure, Identity.uid)
                                .where(Identity.uid.in_(uids[i:i + 500]))):
            all_keys[uid].add(j)
    accounts = {a.uid: a for a in s.scalars(select(Account).where(Account.uid.in_(uids)))}
    out: list[Absence] = []
    for uid in uids:
        acc = accounts.get(uid)
        if acc is None or acc.status == "DELETED":
            continue
        keys = all_keys[uid]
        if keys & present_jointures:
            continue  # present through another key (another school, the INE)
        scoped = [jointure_scope(k) for k in keys]
        if any(sc is not None and sc not in covered for sc in scoped):
            continue  # still listed by a school whose export did not come tonight
        entry = s.scalar(select(Entry).where(Entry.uid == uid, Entry.kind == "person"))
        if entry is None:
            continue  # never written: nothing to disable
        out.append(Absence(uid, entry.dn, entry.uai, acc.profile))
    return out


def disabled_entries(s: Session, absent: list[Absence], now: dt.datetime,
                     desired: Mapping[str, DesiredEntry], processed: set[str],
                     academy: str, base: str) -> list[DesiredEntry]:
    """Desired entries for absent accounts (DISABLED) and for the groups of schools not
    processed tonight that still list them (member removed)."""
    out: list[DesiredEntry] = []
    absent_dns = {a.dn for a in absent}
    for a in absent:
        cur = s.get(Entry, a.dn)
        if cur is None:
            continue
        attrs = {k: list(v) for k, v in cur.attrs.items()}
        if attrs.get("entSyncStatus") != ["DISABLED"]:
            attrs["entSyncStatus"] = ["DISABLED"]
            attrs["entSyncDisabledAt"] = [generalized_time(now)]
        out.append(DesiredEntry(a.dn, "person", a.uai, attrs, uid=a.uid))
    if not absent_dns:
        return out
    q = select(Entry).where(Entry.academy == academy, or_(Entry.kind == "class",
                                                          Entry.kind == "group"))
    for g in s.scalars(q):
        if g.dn in desired or g.uai in processed:
            continue
        members = g.attrs.get("member", [])
        if absent_dns.isdisjoint(members):
            continue
        attrs = {k: list(v) for k, v in g.attrs.items()}
        attrs["member"] = [m for m in members if m not in absent_dns] or [placeholder_member(base)]
        out.append(DesiredEntry(g.dn, g.kind, g.uai, attrs))
    return out


def categorize(ch: Change) -> str:
    """create, update, membership, disable, restore."""
    if ch.op == "add":
        return "create"
    if ch.op == "delete":
        return RETYPE if ch.category == RETYPE else "delete"
    after = (ch.after or {}).get("entSyncStatus")
    before = (ch.before or {}).get("entSyncStatus")
    if ch.kind == "person" and after != before:
        if after == ["DISABLED"]:
            return "disable"
        if before == ["DISABLED"]:
            return "restore"
    return ch.category


@dataclass
class GuardResult:
    uai: str
    tripped: list[dict[str, Any]] = field(default_factory=list)
    evaluated: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str, value: float, limit: float, tripped: bool, detail: str) -> None:
        row = {"guard": name, "value": value, "limit": limit, "tripped": tripped,
               "detail": detail}
        self.evaluated.append(row)
        if tripped:
            self.tripped.append(row)


def school_accounts(s: Session, academy: str, uais: Iterable[str]) -> dict[str, int]:
    """Active accounts written per main school (the guards' denominator), counted by the
    database: the status is read from the stored attributes there (SQLite's ``json_extract``,
    PostgreSQL's ``#>>``). Parsing every account's attributes here to read one of them was
    1.5 s of a 0.1-scale academy's delta planning (py-spy), ten times that at region scale."""
    first = Entry.attrs[("entSyncStatus", 0)].as_string()
    second = Entry.attrs[("entSyncStatus", 1)].as_string()
    # active: anything but exactly ["DISABLED"] (as ``attrs.get("entSyncStatus") !=
    # ["DISABLED"]`` reads it: no status, another status, or more than one value)
    active = or_(first.is_(None), first != "DISABLED", second.is_not(None))
    rows = s.execute(select(Entry.uai, func.count()).where(
        Entry.academy == academy, Entry.kind == "person", Entry.uai.in_(list(uais)),
        Entry.uai.is_not(None), Entry.uai != "", active).group_by(Entry.uai))
    return {str(uai): int(n) for uai, n in rows}


def evaluate_guards(academy: Academy, changes: list[Change], s: Session,
                    counts: Mapping[str, Mapping[str, int]],
                    years: Mapping[str, int | None], mode: str) -> dict[str, GuardResult]:
    """Guards per school. ``counts``: persons read tonight per school and profile."""
    per_school: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ch in changes:
        if ch.uai and ch.kind == "person":
            per_school[ch.uai][categorize(ch)] += 1
    uais = sorted(set(per_school) | set(counts))
    existing = school_accounts(s, academy.code, uais)
    states = {st.uai: st for st in s.scalars(select(SchoolState).where(
        SchoolState.academy == academy.code, SchoolState.uai.in_(uais)))}
    max_update = (academy.rollover_max_update_share if mode != "normal"
                  else academy.max_update_share)
    out: dict[str, GuardResult] = {}
    for uai in uais:
        g = GuardResult(uai)
        n = existing.get(uai, 0)
        c = per_school.get(uai, {})
        dis, upd = c.get("disable", 0), c.get("update", 0) + c.get("membership", 0)
        min_n = academy.guard_min_changes
        share = dis / n if n else 0.0
        g.check("disable_share", round(share, 4), academy.max_disable_share,
                dis >= min_n and share > academy.max_disable_share,
                f"{dis} of {n} accounts would be disabled")
        g.check("disable_count", dis, academy.max_disable_count,
                dis > academy.max_disable_count, f"{dis} accounts would be disabled")
        ushare = upd / n if n else 0.0
        g.check("update_share", round(ushare, 4), max_update,
                upd >= min_n and ushare > max_update, f"{upd} of {n} accounts would change")
        st = states.get(uai)
        pupils = counts.get(uai, {}).get("ELV")
        if st is not None and st.pupils and pupils is not None:
            drop = 1 - pupils / st.pupils
            g.check("pupil_drop", round(drop, 4), academy.max_pupil_drop_share,
                    drop > academy.max_pupil_drop_share,
                    f"pupils export has {pupils} pupils, last applied one had {st.pupils}")
        year = years.get(uai)
        if st is not None and st.school_year and year:
            g.check("school_year", year, st.school_year, year < st.school_year,
                    f"school year {year} is before the applied {st.school_year}")
        out[uai] = g
    return out


def absence_scope(covered: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Where absence may be judged: a guardian's eligibility depends on the pupils file too, so
    guardians are judged only where both the pupils and the guardians exports came."""
    return {(u, src) for u, src in covered
            if src != "SIECLE-RESP" or (u, "SIECLE") in covered}


def preserve_uncovered(s: Session, targets: dict[str, DesiredEntry],
                       covered: set[tuple[str, str]], processed: set[str]) -> None:
    """A school processed tonight without one of its exports keeps, for that export's part,
    what the directory already has: pupils keep their guardian links when no guardians file
    came; classes keep their teachers when no STS file came, and their pupils when no pupils
    file came. (A run only judges what its inputs cover.)"""
    def current(dn: str) -> dict[str, list[str]] | None:
        e = s.get(Entry, dn)
        return e.attrs if e is not None else None

    carried: list[DesiredEntry] = []

    def structure_of(e: DesiredEntry) -> dict[str, list[str]] | None:
        """What the directory holds for a class or group: its entry, when of the same kind;
        for a group going apart tonight (``etl.plan.desired.group_apart_dn``), the group it was
        at ``cn=<CODE>``; never the entry of the other kind at its DN."""
        row = s.get(Entry, e.dn)
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
            old = s.get(Entry, plain)
            if old is not None and old.kind == "group":
                return old.attrs
        return None

    profile_cache: dict[str, str | None] = {}

    def source_of(dn: str) -> str | None:
        if dn not in profile_cache:
            attrs = current(dn) or {}
            profs = attrs.get("ENTPersonProfils", [])
            profile_cache[dn] = ("SIECLE" if "National_ELV" in profs else
                                 None if not profs or "National_TUT" in profs else "STS")
        return profile_cache[dn]

    for e in targets.values():
        if e.uai not in processed:
            continue
        if (e.kind == "person" and "ENTEleve" in e.attrs.get("objectClass", [])
                and (e.uai, "SIECLE-RESP") not in covered):
            cur = current(e.dn)
            if cur is not None:
                if cur.get("ENTElevePersRelEleve"):
                    e.attrs["ENTElevePersRelEleve"] = list(cur["ENTElevePersRelEleve"])
                else:
                    e.attrs.pop("ENTElevePersRelEleve", None)
        elif e.kind in ("class", "group"):
            missing = {src for src in ("SIECLE", "STS") if (e.uai, src) not in covered}
            cur = structure_of(e) if missing else None
            if not cur:
                continue
            have = set(e.attrs.get("member", []))
            keep = [m for m in cur.get("member", []) if m not in have
                    and source_of(m) in missing]
            if keep:
                members = [m for m in e.attrs.get("member", [])
                           if not m.startswith(PLACEHOLDER_PREFIX)] + keep
                e.attrs["member"] = sorted(set(members))
    for g in carried:
        targets.setdefault(g.dn, g)



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
PRESERVE_BATCH = 500


def preserve_other_schools(s: Session, targets: dict[str, DesiredEntry],
                           processed: set[str]) -> None:
    """One account, several schools: tonight's run rebuilds the parts of an account that
    belong to the schools it processed and keeps, from the directory, the parts that belong to
    schools it did not (their source keys, classes, groups, subjects, functions, pupils).

    Read hash first, ``PRESERVE_BATCH`` people at a time: an account whose stored content is
    already the desired one has nothing of another school to keep (what is stored is what
    tonight's schools give), so only the others' attributes are loaded. One query per person
    was 5 s of a 40k-entry academy's planning, most of it on a first load that has no rows."""
    people = [e for e in targets.values() if e.kind == "person"]
    for i in range(0, len(people), PRESERVE_BATCH):
        part = {e.dn: e for e in people[i:i + PRESERVE_BATCH]}
        stored = s.execute(select(Entry.dn, Entry.content_hash)
                           .where(Entry.dn.in_(list(part)))).all()
        stale = []
        for dn, h in stored:
            e = part[dn]
            mine = content_hash(e.attrs)
            if h == mine:
                e.hash_memo = mine  # equal to what is stored: nothing below changes it
            else:
                stale.append(dn)
        if not stale:
            continue
        for dn, cur in s.execute(select(Entry.dn, Entry.attrs)
                                 .where(Entry.dn.in_(stale))).all():
            _preserve_person(s, part[dn], cur, processed)


def _preserve_person(s: Session, e: DesiredEntry, cur: dict[str, list[str]],
                     processed: set[str]) -> None:
    """``preserve_other_schools`` for one account whose stored attributes ``cur`` differ from
    the desired ones."""
    # the main school stays what it was while the person is still attached to it
    cur_main = cur.get("ENTPersonStructRattach") or []
    if cur_main and cur_main != e.attrs.get("ENTPersonStructRattach"):
        main_uai = _uai_in_dn(cur_main[0])
        attached = {sc[0] for j in e.attrs.get("ENTPersonJointure", [])
                    if (sc := jointure_scope(j)) is not None}
        attached |= {sc[0] for j in cur.get("ENTPersonJointure", [])
                     if (sc := jointure_scope(j)) is not None and sc[0] not in processed}
        if main_uai in attached:
            e.attrs["ENTPersonStructRattach"] = list(cur_main)
            e.uai = main_uai
    kept_keys = [j for j in cur.get("ENTPersonJointure", [])
                 if (sc := jointure_scope(j)) is not None and sc[0] not in processed]
    if not kept_keys:
        return
    a = e.attrs
    a["ENTPersonJointure"] = sorted(set(a.get("ENTPersonJointure", [])) | set(kept_keys))
    for name in SCHOOL_SCOPED:
        keep = [v for v in cur.get(name, [])
                if (u := _uai_in_dn(v)) is not None and u not in processed]
        if keep:
            a[name] = sorted(set(a.get(name, [])) | set(keep))
    for name in ("ENTPersonProfils", "objectClass"):
        a[name] = sorted(set(a.get(name, [])) | set(cur.get(name, [])))
    pupils = cur.get("ENTAuxPersRelEleveEleve", [])
    if pupils:
        keep = [dn for dn, uai in s.execute(select(Entry.dn, Entry.uai)
                                            .where(Entry.dn.in_(pupils)))
                if uai not in processed]
        if keep:
            a["ENTAuxPersRelEleveEleve"] = sorted(
                set(a.get("ENTAuxPersRelEleveEleve", [])) | set(keep))


def structure_changes(s: Session, academy: Academy, targets: dict[str, DesiredEntry],
                      covered: set[tuple[str, str]], years: Mapping[str, int | None],
                      base: str) -> list[Change]:
    """Classes and groups of a school that its complete pupils export no longer has are
    removed; at the school-year roll-over (``ANNEE_SCOLAIRE`` advances), last year's classes
    and groups are first archived under ``ou=<year>,ou=archives,ou=groups,<school>``
    (``rollover_archive = "archive"``, read-only history) or just removed (``"remove"``), so
    last year's and this year's compositions are never mixed. Archive entries get planned as
    additions in ``targets``; the removals are returned."""
    from etl.plan.desired import groups_dn

    deletes: list[Change] = []
    judged = {u for u, src in covered if src == "SIECLE"}
    if not judged:
        return deletes
    rows = list(s.scalars(select(Entry).where(
        Entry.academy == academy.code, Entry.uai.in_(sorted(judged)),
        or_(Entry.kind == "class", Entry.kind == "group"))))
    for e in rows:
        if ",ou=archives," in e.dn.lower():
            continue
        year = years.get(e.uai or "")
        old_year = (e.attrs.get("ENTStructureAnneeScolaire") or [""])[0]
        rolled = bool(year and old_year and old_year.isdigit() and int(old_year) < year)
        if rolled and academy.rollover_archive == "archive":
            gdn = groups_dn(e.uai or "", base)
            arch = f"ou=archives,{gdn}"
            ydn = f"ou={old_year},{arch}"
            targets.setdefault(arch, DesiredEntry(arch, "ou", e.uai, {
                "objectClass": ["top", "organizationalUnit"], "ou": ["archives"]}))
            targets.setdefault(ydn, DesiredEntry(ydn, "ou", e.uai, {
                "objectClass": ["top", "organizationalUnit"], "ou": [str(old_year)]}))
            rdn = e.dn.split(",", 1)[0]
            copy = {k: list(v) for k, v in e.attrs.items()}
            copy["description"] = [f"{(copy.get('description') or [''])[0]} "
                                   f"(archive {old_year})".strip()]
            targets.setdefault(f"{rdn},{ydn}", DesiredEntry(f"{rdn},{ydn}", "archive", e.uai,
                                                            copy))
        if e.dn not in targets:
            deletes.append(Change("delete", e.dn, e.kind, e.uai, "delete", before=e.attrs))
    return deletes


def keep_protected_members(s: Session, targets: dict[str, DesiredEntry],
                           protected_dns: set[str]) -> None:
    """People whose record was rejected tonight are skipped, not moved: the classes and groups
    that listed them keep listing them."""
    if not protected_dns:
        return
    for e in targets.values():
        if e.kind not in ("class", "group"):
            continue
        row = s.get(Entry, e.dn)
        if row is None or row.kind != e.kind:
            continue
        keep = protected_dns & set(row.attrs.get("member", []))
        if keep:
            members = [m for m in e.attrs.get("member", [])
                       if not m.startswith(PLACEHOLDER_PREFIX)]
            e.attrs["member"] = sorted(set(members) | keep)


def retype_changes(s: Session, targets: Mapping[str, DesiredEntry],
                   changes: list[Change]) -> list[Change]:
    """A class or group entry whose DN the directory holds with the other kind (a group at
    ``cn=<CODE>`` when a division gets that code, or such an entry written before classes and
    groups were told apart) cannot be modified into it: LDAP refuses to change a structural
    class. Its planned modify becomes a delete (category ``retype``, written first) and an add
    of the desired entry."""
    wanted = {c.dn: c for c in changes if c.op == "modify" and c.kind in ("class", "group")}
    if not wanted:
        return changes
    stored: dict[str, tuple[str, dict[str, list[str]]]] = {}
    dns = sorted(wanted)
    for i in range(0, len(dns), 500):
        for dn, kind, attrs in s.execute(select(Entry.dn, Entry.kind, Entry.attrs)
                                         .where(Entry.dn.in_(dns[i:i + 500]))):
            stored[dn] = (kind, attrs)
    out: list[Change] = []
    for c in changes:
        have = stored.get(c.dn) if c.dn in wanted else None
        if have is None or have[0] == c.kind or have[0] not in ("class", "group"):
            out.append(c)
            continue
        e = targets[c.dn]
        out.append(Change("delete", c.dn, have[0], c.uai, RETYPE, before=have[1]))
        out.append(Change("add", c.dn, e.kind, e.uai, "create", attrs=e.attrs, after=e.attrs))
    return out
