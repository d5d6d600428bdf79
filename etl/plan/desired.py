"""The desired directory: what the entries of the synced schools should look like.

Built from the normalized, validated canonical tables of the schools processed in a run
(``read_night``) and the account matching gave each record (``etl.match.resolve``). Follows
``shared/docs/directory.md`` (contract v1): only what consumers need is written (no address,
no phone number).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pandas import DataFrame

from etl.config import Academy
from etl.match.resolve import MatchResult, NightRecords
from etl.plan.stored import StoredView
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


#: ``json.dumps(..., sort_keys=True)``'s encoder, built once (the same bytes, a tenth faster)
_CANON = json.JSONEncoder(sort_keys=True)


def content_hash(attrs: dict[str, list[str]]) -> str:
    canon = {k.lower(): sorted(v) for k, v in attrs.items() if v}
    return hashlib.sha256(_CANON.encode(canon).encode()).hexdigest()


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


def groups_kept_apart(view: StoredView, candidates: dict[str, str]) -> set[str]:
    """Of the groups given (their plain DN -> their DN apart), the plain DNs of those that
    stay apart for what the directory holds: a group once written apart stays apart, even on a
    night its code is no division's, and a group never takes the DN a class has held (a DN
    never flip-flops between a class and a group)."""
    wanted = {plain: ("class", plain) for plain in candidates}
    wanted |= {apart: ("group", plain) for plain, apart in candidates.items()}
    out: set[str] = set()
    for dn, kind in view.kinds(sorted(wanted)).items():
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


@dataclass
class NightInput:
    """What the desired entries are made of besides matching: tonight's records of the
    schools synced (``read_night``). Handed over to ``build_desired``, which lets its parts go
    as it reads them when asked to (``consume``): an academy's records are a planning peak."""

    night: NightRecords
    #: where each pupil record with an INE comes from (person_key, file, line)
    pupil_where: DataFrame | None
    memberships: DataFrame | None
    structures: DataFrame | None
    skipped: dict[str, int]


@dataclass(frozen=True)
class PlanContext:
    """The academy and run the desired entries are made for."""

    #: UAI -> display name or None: the schools synced tonight
    schools: Mapping[str, str | None]
    academy: Academy
    base: str
    school_years: Mapping[str, int | None] = field(default_factory=dict)


def read_night(tables: Tables, schools: Mapping[str, str | None], academy: Academy,
               consume: bool = False) -> NightInput:
    """Tonight's records of the given schools, as matching and the desired entries read them:
    present persons (a pupil who left is skipped; a guardian only with an eligible link, a
    level in config, to a present pupil), pupils first, then staff, then guardians.

    ``consume``: ``tables`` is emptied and each frame let go once read (the caller keeps no
    other reference): an academy's frames are not held while its entries are made."""
    skipped: dict[str, int] = {}
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
    skipped["guardian_not_eligible"] = int((is_guardian
                                            & ~isin(active["person_key"], guardian_keys)).sum())
    skipped["pupil_left"] = int(len(persons) - len(persons[~persons["has_left"]
                                                          .fillna(False).astype(bool)]))
    active = active[~is_guardian | isin(active["person_key"], guardian_keys)]

    # pupils before staff before guardians (a guardian may match through a pupil)
    order = {"ELV": 0, "TUT": 2}
    rows: list[dict[str, Any]] = sorted(
        # plain Python values: a missing one is None, never a (truthy) NaN; only the columns
        # used here (an academy's rows are all in memory at once)
        records(active[[c for c in active.columns if c in ROW_COLUMNS]]),
        key=lambda r: order.get(r["profile"], 1))
    # pupils' INEs held by several of tonight's records (do those agree? matching says), and
    # where each pupil record with an INE comes from (a conflict names its file and line)
    with_ine = active.loc[(active["profile"] == "ELV") & active["ine"].notna(),
                          ["person_key", "ine", "file", "line"]]
    shared_ines = set(values(with_ine["ine"][with_ine["ine"].duplicated(keep=False)]))
    pupil_where = with_ine[["person_key", "file", "line"]]
    return NightInput(NightRecords(rows, elig_pairs, shared_ines), pupil_where, members,
                      structures, skipped)


def build_desired(data: NightInput, matched: MatchResult, ctx: PlanContext,
                  view: StoredView, consume: bool = False) -> DesiredState:
    """Desired entries for the schools of ``ctx``, from tonight's records and the account
    matching gave each (``etl.match.resolve.match_records``). ``view``: whether a group was
    written apart before (``groups_kept_apart``). ``consume``: ``data`` is emptied as read."""
    st = DesiredState()
    schools, academy, base = ctx.schools, ctx.academy, ctx.base
    years = ctx.school_years
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

    st.skipped = dict(data.skipped)
    rows = data.night.rows
    elig_pairs = data.night.guardian_links
    members, structures, pupil_where = data.memberships, data.structures, data.pupil_where
    if consume:
        data.memberships = data.structures = data.pupil_where = None
    assert members is not None and structures is not None and pupil_where is not None
    key_uid, logins = matched.key_uid, matched.logins
    st.created_identities = matched.created
    st.matches = dict(matched.matches)
    st.duplicates = matched.duplicates
    findings = matched.ine_findings
    if findings:
        where = {pk: (f, ln) for pk, f, ln in tuples(pupil_where[pupil_where["person_key"].isin(
            [x["person_key"] for x in findings])])}
        findings = [{**x, "file": where.get(x["person_key"], (None, None))[0],
                     "line": where.get(x["person_key"], (None, None))[1]} for x in findings]
    st.ine_findings = findings
    del pupil_where
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
    apart = groups_kept_apart(view, {
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
    if consume:
        rows.clear()  # each person's rows are let go as its entry is made (popped)
    del rows
    links = PersonLinks(person_structs, pupil_guardians, guardian_pupils, matched.no_ine)
    strings = EntryStrings(base, shared, sdn_of)
    for uid in list(by_uid):
        prow = by_uid.pop(uid)
        st.add(_person_entry(uid, logins[uid], prow, links, strings, uid_dns.get(uid)))
    return st


@dataclass(frozen=True)
class PersonLinks:
    """What tonight's records say of each source key beyond its row: its classes, groups,
    subjects and functions (``structs``), a pupil's guardians' uids, a guardian's pupils' DNs.
    ``_person_entry`` takes a person's keys out as it reads them (each source key belongs to
    one person: read once, let go at once). ``no_ine``: records whose INE is not written."""

    structs: dict[str, dict[str, set[str]]]
    pupil_guardians: dict[str, set[str]]
    guardian_pupils: dict[str, set[str]]
    no_ine: set[str] | frozenset[str] = frozenset()


@dataclass(frozen=True)
class EntryStrings:
    """The directory base, and the academy's shared values and school DN strings
    (``build_desired``), so that equal values across entries are one object."""

    base: str
    shared: Shared | None = None
    sdn_of: Callable[[str], str] | None = None


def _person_entry(uid: str, login: str, prow: list[dict[str, Any]], links: PersonLinks,
                  strings: EntryStrings, dn: str | None = None) -> DesiredEntry:
    """A person's entry from its rows; ``dn``: this person's DN string when one is made
    already (``build_desired``). Records of ``links.no_ine`` (an INE conflict): their INE is
    not written."""
    base = strings.base
    share = strings.shared.share if strings.shared is not None else list
    sdn = strings.sdn_of or (lambda uai: school_dn(uai, base))
    person_structs, no_ine = links.structs, links.no_ine
    pupil_guardians, guardian_pupils = links.pupil_guardians, links.guardian_pupils
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
