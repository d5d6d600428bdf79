"""What the GAR export reads: the synced directory, as the state DB records it, turned into
typed GAR records.

The people, schools, classes and groups come from the state DB's ``entries`` (what the sync
last wrote to each DN: the directory's own content for every entry entsync manages), read in
pages (``yield_per``) in a stable order: people by ``uid``, structures per school by DN, so
that memory does not grow with the region and two exports of the same directory give the same
files. Only the group that assigns resources in a school (``RESP-AFFECT-GAR`` by default) is
read from the directory itself: the school manages it there, entsync never writes it.

Only what the GAR-ENT schema asks for is kept: identifiers (the opaque ``uid``), names,
profiles per school, MEF, classes and groups, subjects; a mail only for the staff who assign
resources (the schema requires it there). Never a guardian, an address or a birth date.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from etl.config import Academy
from etl.errors import DirectoryError
from etl.plan.desired import GROUP_SUFFIX, PLACEHOLDER_MEMBER_RDN, school_dn
from etl.plan.scope import SCHOOL_SCOPED, _uai_in_dn, jointure_scope
from etl.plan.stored import StoredView
from etl.read.canonical import STS_FUNCTION_PROFILE
from etl.store.models import Entry

#: the directory's profile (``National_<X>``) -> the GAR's spelling
GAR_PROFILE: dict[str, str] = {
    "ELV": "National_elv",
    "ENS": "National_ens",
    "DIR": "National_dir",
    "DOC": "National_doc",
    "EVS": "National_evs",
    "ETA": "National_eta",
    "COL": "National_col",
}
#: the staff profiles (everyone exported in the Enseignant files)
STAFF = frozenset(GAR_PROFILE) - {"ELV"}
#: rows per page of a streamed query
PAGE = 1000

Attrs = Mapping[str, list[str]]


@dataclass(frozen=True, slots=True)
class GarSchool:
    uai: str
    name: str


@dataclass(frozen=True, slots=True)
class GarPerson:
    """A pupil (``pupil``) or a member of staff, with the exported schools they belong to."""

    uid: str
    dn: str
    pupil: bool
    last: str
    first: str
    #: (UAI, GAR profile), sorted
    profiles: tuple[tuple[str, str], ...]
    #: exported schools, sorted
    schools: tuple[str, ...]
    #: the main school (``ENTPersonStructRattach``) when it is exported
    main: str | None = None
    mef: str | None = None
    #: the directory's mails (used only for ``GARRespAff``)
    mails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GarPersonMef:
    uai: str
    uid: str
    mef: str


@dataclass(frozen=True, slots=True)
class GarGroup:
    """A class (``division``) or a group; ``code``: its RDN value (a group whose code is also
    a division's has its own, ``<CODE> (groupe)``, so that (code, UAI) stays unique)."""

    uai: str
    code: str
    label: str
    division: bool
    dn: str


@dataclass(frozen=True, slots=True)
class GarMembership:
    uai: str
    uid: str
    code: str


@dataclass(frozen=True, slots=True)
class GarTeaching:
    """A teacher's subjects in one of their classes (``division``) or groups."""

    uai: str
    uid: str
    code: str
    subjects: tuple[str, ...]
    division: bool


@dataclass(frozen=True, slots=True)
class GarRespAff:
    uid: str
    dn: str
    last: str
    first: str
    mails: tuple[str, ...]
    schools: tuple[str, ...]


@dataclass(slots=True)
class SchoolGroups:
    """One school's exported classes and groups, with their exported members (by code)."""

    groups: list[GarGroup] = field(default_factory=list)
    members: dict[str, list[str]] = field(default_factory=dict)
    #: the staff among the members, and each one's subjects in the school
    teachers: dict[str, list[str]] = field(default_factory=dict)
    subjects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: classes and groups left out: no active pupil in them
    empty: int = 0


def _first(attrs: Attrs, name: str) -> str | None:
    vals = attrs.get(name) or []
    return str(vals[0]) if vals else None


def _suffixes(attrs: Attrs) -> set[str]:
    return {p.split("_", 1)[1].upper() for p in attrs.get("ENTPersonProfils", [])
            if "_" in p}


def active(attrs: Attrs) -> bool:
    """An ACTIVE account (``entSyncStatus``): a disabled one is never exported."""
    return list(attrs.get("entSyncStatus") or []) == ["ACTIVE"]


def person_schools(attrs: Attrs) -> set[str]:
    """Every school an account is attached to: its main one, its source keys' and those its
    school-scoped attributes (classes, groups, subjects, functions) name."""
    out: set[str] = set()
    main = _first(attrs, "ENTPersonStructRattach")
    if main and (u := _uai_in_dn(main)):
        out.add(u)
    for j in attrs.get("ENTPersonJointure", []):
        if (sc := jointure_scope(j)) is not None:
            out.add(sc[0])
    for name in SCHOOL_SCOPED:
        for v in attrs.get(name, []):
            if (u := _uai_in_dn(v)) is not None:
                out.add(u)
    return out


def in_school(values: Iterable[str], uai: str, base: str) -> list[str]:
    """The codes of ``<school DN>$<code>`` values that belong to the school, in order."""
    prefix = school_dn(uai, base).lower() + "$"
    return [v[len(prefix):] for v in values if v.lower().startswith(prefix)]


def staff_profiles(attrs: Attrs, uai: str, base: str, suffixes: set[str]) -> set[str]:
    """A member of staff's GAR profiles in one school: from their functions there
    (``ENTPersonFonctions``: STS FONCTION -> profile), else their directory profiles."""
    out = {GAR_PROFILE[p] for f in in_school(attrs.get("ENTPersonFonctions", []), uai, base)
           if (p := STS_FUNCTION_PROFILE.get(f)) in STAFF}
    return out or {GAR_PROFILE[s] for s in suffixes & STAFF}


def person_records(dn: str, uid: str, attrs: Attrs, exported: Mapping[str, Any],
                   base: str) -> list[GarPerson]:
    """The GAR records of one directory entry (pure): none for a disabled account, a
    guardian or a person of no exported school; a pupil, a member of staff, or (rarely) both."""
    if not active(attrs):
        return []
    suffixes = _suffixes(attrs)
    schools = sorted(u for u in person_schools(attrs) if u in exported)
    if not schools:
        return []
    main_dn = _first(attrs, "ENTPersonStructRattach")
    main = _uai_in_dn(main_dn) if main_dn else None
    common: dict[str, Any] = {
        "uid": uid, "dn": dn, "last": _first(attrs, "sn") or "?",
        "first": _first(attrs, "givenName") or "?",
        "main": main if main in exported else None,
    }
    out: list[GarPerson] = []
    if "ELV" in suffixes:
        out.append(GarPerson(pupil=True, schools=tuple(schools),
                             profiles=tuple((u, GAR_PROFILE["ELV"]) for u in schools),
                             mef=_first(attrs, "ENTEleveMEF"), **common))
    if suffixes & STAFF:
        profiles = sorted({(u, p) for u in schools
                           for p in staff_profiles(attrs, u, base, suffixes)})
        out.append(GarPerson(pupil=False, schools=tuple(schools), profiles=tuple(profiles),
                             mails=tuple(sorted(set(attrs.get("mail", [])))), **common))
    return out


def person_mef(p: GarPerson) -> GarPersonMef | None:
    """A pupil's MEF, in their main school (else their first exported school)."""
    if not (p.pupil and p.mef):
        return None
    return GarPersonMef(p.main or p.schools[0], p.uid, p.mef)


def resp_aff(p: GarPerson, profiles: Iterable[str],
             designated: Mapping[str, set[str]]) -> GarRespAff | None:
    """Who assigns resources, and where: a member of staff of one of ``profiles`` (directory
    suffixes: ``DIR``) in a school, or in the school's designated group (``designated``: uid
    -> UAIs). None for anyone else (mails are checked by the caller)."""
    if p.pupil:
        return None
    wanted = {GAR_PROFILE[x] for x in profiles if x in GAR_PROFILE}
    schools = {u for u, prof in p.profiles if prof in wanted}
    schools |= designated.get(p.uid, set()) & set(p.schools)
    if not schools:
        return None
    return GarRespAff(p.uid, p.dn, p.last, p.first, p.mails, tuple(sorted(schools)))


def group_code(kind: str, cn: list[str]) -> str:
    """A class's or group's GAR code: its RDN value (``cn``; a group apart's has the suffix)."""
    if kind == "group":
        for c in cn:
            if c.endswith(GROUP_SUFFIX):
                return c
    return cn[0]


@dataclass
class GarSource:
    """The academy's directory as the GAR export reads it (one Session, the caller's)."""

    session: Session
    academy: Academy
    base: str
    #: the schools exported: UAI -> name (``load_schools``)
    schools: dict[str, str] = field(default_factory=dict)
    page: int = PAGE

    def load_schools(self, only: Iterable[str] | None = None) -> list[GarSchool]:
        """The academy's schools (UAI order), of ``only`` if given; a school without a name
        in the directory is named by its UAI (the schema requires a name)."""
        wanted = set(only) if only is not None else None
        rows = self.session.execute(
            select(Entry.uai, Entry.attrs).where(Entry.academy == self.academy.code,
                                                 Entry.kind == "school").order_by(Entry.uai))
        out = []
        for uai, attrs in rows:
            if uai and (wanted is None or uai in wanted):
                out.append(GarSchool(uai, _first(attrs, "ENTStructureNomCourant") or uai))
        self.schools = {s.uai: s.name for s in out}
        return out

    def people(self) -> Iterator[GarPerson]:
        """Every exported pupil and member of staff, by uid, streamed a page at a time."""
        q = (select(Entry.dn, Entry.uid, Entry.attrs)
             .where(Entry.academy == self.academy.code, Entry.kind == "person")
             .order_by(Entry.uid, Entry.dn).execution_options(yield_per=self.page))
        last = None
        for dn, uid, attrs in self.session.execute(q):
            if not uid or uid == last:  # an account's first entry only
                continue
            last = uid
            yield from person_records(dn, uid, attrs, self.schools, self.base)

    def school_groups(self, uai: str, subjects: bool = False) -> SchoolGroups:
        """A school's classes and groups (not the archived ones) that still have an active
        pupil, with their active pupils and staff; ``subjects``: also each member of staff's
        subjects in the school. Members are told by their account (profile, status)."""
        rows = list(self.session.execute(
            select(Entry.dn, Entry.kind, Entry.attrs).where(
                Entry.academy == self.academy.code, Entry.uai == uai,
                Entry.kind.in_(("class", "group"))).order_by(Entry.dn)))
        rows = [r for r in rows if ",ou=archives," not in r[0].lower()]
        uid_of: dict[str, str] = {}
        for _dn, _kind, attrs in rows:
            for m in attrs.get("member", []):
                uid = _member_uid(m, self.base)
                if uid is not None:
                    uid_of[m] = uid
        accounts = StoredView(self.session, self.academy.code).accounts(set(uid_of.values()))
        pupils = {u for u, a in accounts.items() if a.status == "ACTIVE" and a.profile == "ELV"}
        staff = {u for u, a in accounts.items() if a.status == "ACTIVE" and a.profile in STAFF}
        out = SchoolGroups()
        for dn, kind, attrs in rows:
            uids = sorted({uid_of[m] for m in attrs.get("member", []) if m in uid_of})
            if not any(u in pupils for u in uids):
                out.empty += 1
                continue
            code = group_code(kind, list(attrs.get("cn") or [""]))
            out.groups.append(GarGroup(uai, code, _first(attrs, "description") or code,
                                       kind == "class", dn))
            out.members[code] = [u for u in uids if u in pupils or u in staff]
            out.teachers[code] = [u for u in uids if u in staff]
        out.groups.sort(key=lambda g: g.code)
        if subjects:
            teachers = sorted({u for us in out.teachers.values() for u in us})
            view = StoredView(self.session, self.academy.code)
            for uid, e in view.person_entries(teachers).items():
                found = in_school(e.attrs.get("ENTAuxEnsMatiereEnseignEtab", []), uai,
                                  self.base)
                if found:
                    out.subjects[uid] = tuple(sorted(set(found)))
        return out

    def teachings(self, uai: str, groups: SchoolGroups, division: bool
                  ) -> Iterator[GarTeaching]:
        """The subjects of each member of staff in each of the school's classes
        (``division``) or groups. The directory holds a teacher's subjects per school
        (``ENTAuxEnsMatiereEnseignEtab``), not per class: each class or group of the teacher
        gets the teacher's subjects in that school."""
        for g in groups.groups:
            if g.division != division:
                continue
            for uid in groups.teachers.get(g.code, []):
                subjects = groups.subjects.get(uid)
                if subjects:
                    yield GarTeaching(uai, uid, g.code, subjects, division)


def _member_uid(member_dn: str, base: str) -> str | None:
    """The uid of a ``uid=<uid>,ou=people,<base>`` member (None: the placeholder, another
    DN)."""
    head, sep, rest = member_dn.partition(",")
    if not sep or rest.lower() != f"ou=people,{base}".lower():
        return None
    if head.lower() == PLACEHOLDER_MEMBER_RDN or not head.lower().startswith("uid="):
        return None
    value = head[4:]
    return None if "\\" in value else value


def read_designated(conn: Any, group: str, uais: Iterable[str], base: str
                    ) -> dict[str, list[str]]:
    """UAI -> member DNs of the group named ``group`` each school manages under its
    ``ou=groups`` (one base search per school; a school without it has none)."""
    from etl.plan.desired import structure_dn

    out: dict[str, list[str]] = {}
    for uai in sorted(uais):
        dn = structure_dn(uai, group, base)
        # the SAFE_SYNC connections of ``etl.apply.writer.connect``: (ok, result, entries, _)
        ok, result, response, _ = conn.search(dn, "(objectClass=*)", search_scope="BASE",
                                              attributes=["member"])
        if ok:
            for e in response or []:
                if e.get("type") == "searchResEntry":
                    out[uai] = sorted(str(m) for m in e["attributes"].get("member", []))
        elif (result or {}).get("result") != 32:  # 32: noSuchObject, the school has none
            raise DirectoryError(f"reading {dn}: {(result or {}).get('description')}")
    return out


def read_mails(conn: Any, uids: Iterable[str], base: str, batch: int = 50
               ) -> dict[str, list[str]]:
    """uid -> the ``mail`` values the directory holds for these accounts (the ENT may set an
    academic mail the exports never carry), ``batch`` accounts per search."""
    from ldap3.utils.conv import escape_filter_chars

    wanted = sorted(set(uids))
    out: dict[str, list[str]] = {}
    for i in range(0, len(wanted), batch):
        part = wanted[i:i + batch]
        flt = "(|" + "".join(f"(uid={escape_filter_chars(u)})" for u in part) + ")"
        ok, result, response, _ = conn.search(f"ou=people,{base}", flt, search_scope="LEVEL",
                                              attributes=["uid", "mail"])
        if not ok and (result or {}).get("result") not in (0, 32):
            raise DirectoryError(f"reading mails under ou=people,{base}: "
                                 f"{(result or {}).get('description')}")
        for e in response or []:
            if e.get("type") == "searchResEntry":
                a = e["attributes"]
                uid = a.get("uid")
                uid = uid[0] if isinstance(uid, list) else uid
                if uid:
                    out[str(uid)] = sorted(str(m) for m in a.get("mail", []))
    return out


def designated_members(members: Mapping[str, Iterable[str]], base: str) -> dict[str, set[str]]:
    """uid -> UAIs, from each school's designated group's member DNs (UAI -> DNs)."""
    out: dict[str, set[str]] = defaultdict(set)
    for uai, dns in members.items():
        for dn in dns:
            uid = _member_uid(dn, base)
            if uid is not None:
                out[uid].add(uai)
    return dict(out)


__all__ = ["GAR_PROFILE", "GarGroup", "GarMembership", "GarPerson", "GarPersonMef",
           "GarRespAff", "GarSchool", "GarSource", "GarTeaching", "SchoolGroups",
           "designated_members", "person_mef", "person_records", "read_designated",
           "read_mails", "resp_aff"]
