"""The academy's AAF feed in a night: its files found, its Complets and Deltas applied on each
school's last applied state, each school's tables staged, the state kept once applied.

Files: ``<prefix>_(Complet|Delta)_<YYYYMMDD>_<Type>_<NNNN>.xml`` (``parse_aaf_name``), bare or
in zips, anywhere under ``<landing>/<academy>/``, root ``ficAlimMENESR``. The numbered parts of
one mode, date and type are one document (``group_documents``); the types read are
``etl.discover.aafstate.AAF_TYPES``, others (``MatiereEducNat``, ``MefEducNat``...) are
reported as ignored. The feed names no school in its file names: it is the academy's.

At discovery (``prepare_night``), once per run: the schools' stored states
(``aaf_records``, ``aaf_schools``) give the view the night starts from, tonight's documents
are read (``etl.read.aaf.iter_aaf_records``) and applied in stamp order
(``etl.discover.aafstate``), and ``etl.read.aaf.aaf_school_tables`` turns the view into each
school's canonical tables. Each school with a document new to it gets one document of kind
``AAF`` (its tables, read report and state diff in the staging area, ``<run>/aaf/<uai>/``),
which read_validate reads (``read_staged``) and validates as any school's exports; reconcile
plans it (``SchoolResult.aaf``: the types it covers, its gaps, whether a Complet came). The
state diff is written by apply (``commit_school``) only for a school whose plan was applied:
a held school keeps its previous state, and replays the same documents the next night.

A document that cannot be read (a part unreadable, refused, or missing from the numbering)
is quarantined whole: nothing of the AAF from its stamp on is applied tonight, and the
schools stay as they were. A Delta older than the last Complet of its type (applied, or
tonight's) is ignored, reported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from lxml import etree
from sqlalchemy import delete, select

from etl import staging
from etl.config import Academy, Settings
from etl.discover.aafstate import (
    AAF_TYPES,
    COMPLET,
    PERSON_TYPES,
    TYPE_SCOPE,
    DocKey,
    Marker,
    Problem,
    Rec,
    SchoolChain,
    StateDiff,
    apply_document,
    freshest,
    school_chain,
    stale_persons,
    state_diff,
)
from etl.discover.landing import Discovered, uai_is_valid
from etl.discover.xmlsafe import XmlSource, iterparse, open_source, xml_error
from etl.errors import FileRejected, RecordRejected, RecordWarning
from etl.read.canonical import Tables

log = logging.getLogger(__name__)

KIND: Final = "AAF"
ROOT: Final = "ficAlimMENESR"
#: how academies name AAF files (``ENT_Complet_20200101_Eleve_0000.xml``)
NAME: Final = re.compile(
    r"(?P<prefix>.+?)_(?P<mode>Complet|Delta)_(?P<date>\d{8})_(?P<type>[A-Za-z]+)_"
    r"(?P<part>\d{4})\.xml", re.IGNORECASE)
NAME_SHAPE: Final = "<prefix>_(Complet|Delta)_<YYYYMMDD>_<Type>_<NNNN>.xml"
#: the export kinds of a school's own exports (what the AAF stands in for)
SCHOOL_KINDS: Final = ("ELEVES", "RESPONSABLES", "NOMENCLATURES", "STRUCTURES", "STS")


@dataclass(frozen=True)
class AafName:
    prefix: str
    mode: str  # Complet | Delta
    date: str  # YYYY-MM-DD
    type: str
    part: int

    @property
    def doc(self) -> DocKey:
        return DocKey(self.mode, self.date, self.type)


def parse_aaf_name(name: str) -> AafName | None:
    """An AAF file name's prefix, mode, date, type and part (None: not an AAF name, or a date
    that is no day). The type is spelled as ``AAF_TYPES`` spells it when it is one of them."""
    m = NAME.fullmatch(Path(name).name)
    if m is None:
        return None
    try:
        day = dt.datetime.strptime(m["date"], "%Y%m%d").date()
    except ValueError:
        return None
    mode = COMPLET if m["mode"].lower() == "complet" else "Delta"
    t = next((x for x in AAF_TYPES if x.lower() == m["type"].lower()), m["type"])
    return AafName(m["prefix"], mode, day.isoformat(), t, int(m["part"]))


def aaf_header(src: XmlSource, name: AafName) -> Discovered:
    """A discovered AAF part: its root checked (``ficAlimMENESR``), its mode, date, type and
    part from its name. The feed is the academy's: no UAI."""
    d = Discovered(path=str(src.path), member=src.member, kind=KIND)
    try:
        with open_source(src) as f:
            for _event, el in iterparse(f, src.name, events=("start",)):
                tag = etree.QName(el.tag).localname if isinstance(el.tag, str) else ""
                if tag != ROOT:
                    raise FileRejected(src.name, f"named as an AAF file ({NAME_SHAPE}) but its "
                                                 f"root element is <{tag}>, not <{ROOT}>")
                break
            else:
                raise FileRejected(src.name, "no root element (empty or truncated file)")
    except FileRejected:
        raise
    except etree.XMLSyntaxError as e:
        raise xml_error(src.name, e) from e
    except (OSError, ValueError, EOFError) as e:
        raise FileRejected(src.name, f"unreadable: {e}") from e
    d.export_date = f"{name.date}T00:00:00"
    d.extra["aaf"] = name_extra(name)
    return d


def name_extra(name: AafName) -> dict[str, Any]:
    return {"prefix": name.prefix, "mode": name.mode, "date": name.date, "type": name.type,
            "part": name.part}


# ------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------


@dataclass
class AafDocument:
    """The parts of one (mode, date, type): one document, read in part order."""

    key: DocKey
    parts: list[Discovered] = field(default_factory=list)
    #: why it cannot be read tonight (a part refused, a part missing, two different copies)
    bad: str | None = None
    #: a part is missing: the others stay in the landing zone (the rest may be on its way)
    incomplete: bool = False

    @property
    def stamp(self) -> str:
        return self.key.stamp

    @property
    def files(self) -> list[str]:
        return [p.source.short_name for p in self.parts]


def group_documents(found: Iterable[Discovered]) -> tuple[list[AafDocument],
                                                          list[tuple[Discovered, str]]]:
    """Tonight's AAF parts as documents in stamp order, and the parts left aside with why
    (a type not read, a second prefix for one document, the same part twice)."""
    by_key: dict[DocKey, dict[str, list[Discovered]]] = defaultdict(lambda: defaultdict(list))
    aside: list[tuple[Discovered, str]] = []
    for d in found:
        x = d.extra.get("aaf") or {}
        if x.get("type") not in AAF_TYPES:
            aside.append((d, f"AAF {x.get('type')} file: not a type the pipeline reads "
                             f"({', '.join(AAF_TYPES)}), ignored"))
            continue
        by_key[DocKey(x["mode"], x["date"], x["type"])][x["prefix"]].append(d)
    docs: list[AafDocument] = []
    for key, prefixes in by_key.items():
        names = sorted(prefixes)
        chosen = names[-1]
        for other in names[:-1]:
            aside.extend((d, f"a second AAF {key.label} (prefix {chosen}) is present: this "
                             f"one (prefix {other}) is ignored") for d in prefixes[other])
        doc = AafDocument(key)
        by_part: dict[int, list[Discovered]] = defaultdict(list)
        for d in prefixes[chosen]:
            by_part[int(d.extra["aaf"]["part"])].append(d)
        for part in sorted(by_part):
            copies = by_part[part]
            doc.parts.append(copies[0])
            if len({c.sha256 for c in copies}) > 1:
                doc.bad = doc.bad or (f"part {part:04d} is present twice with different "
                                      "contents")
            aside.extend((c, f"the same part as {copies[0].source.short_name}")
                         for c in copies[1:])
        nums = sorted(by_part)
        if nums and nums != list(range(nums[0], nums[0] + len(nums))):
            missing = sorted(set(range(nums[0], nums[-1])) - set(nums))
            doc.bad = doc.bad or ("part " + ", ".join(f"{n:04d}" for n in missing)
                                  + " missing (still being uploaded?)")
            doc.incomplete = True
        refused = [p for p in doc.parts if p.status == "rejected"]
        if refused:
            doc.bad = doc.bad or f"{refused[0].source.short_name}: {refused[0].reason}"
        docs.append(doc)
    docs.sort(key=lambda d: (d.stamp, AAF_TYPES.index(d.key.type)))
    return docs, aside


# ------------------------------------------------------------------------------------------
# the stored state
# ------------------------------------------------------------------------------------------


def load_state(s: Any, academy: str) -> tuple[dict[str, dict[tuple[str, str], Rec]],
                                              dict[str, dict[str, Marker]]]:
    """Each school's stored records and markers (``aaf_records``, ``aaf_schools``)."""
    from etl.store.models import AafSchool, AafStateRecord

    rows: dict[str, dict[tuple[str, str], Rec]] = defaultdict(dict)
    for r in s.scalars(select(AafStateRecord).where(AafStateRecord.academy == academy)):
        rows[r.uai][(r.category, r.identifier)] = Rec(
            r.category, r.identifier, {k: tuple(v) for k, v in (r.attrs or {}).items()},
            r.stamp, r.file or "", int(r.line or 0))
    markers: dict[str, dict[str, Marker]] = defaultdict(dict)
    for m in s.scalars(select(AafSchool).where(AafSchool.academy == academy)):
        markers[m.uai][m.type] = Marker(m.complet_date, m.applied_stamp)
    return dict(rows), dict(markers)


def commit_school(settings: Settings, s: Any, academy: str, uai: str, run_id: str) -> bool:
    """Write a school's AAF state diff staged by ``prepare_night`` (its plan was applied);
    False when the run staged none for it (not an AAF school)."""
    from etl.store.models import AafSchool, AafStateRecord, utcnow

    ref = f"{run_id}/aaf/{uai}/state.json"
    if not staging.exists(settings, ref):
        return False
    diff = StateDiff.from_json(json.loads(staging.read_bytes(settings, ref)))
    for cat, ident in diff.delete:
        s.execute(delete(AafStateRecord).where(
            AafStateRecord.academy == academy, AafStateRecord.uai == uai,
            AafStateRecord.category == cat, AafStateRecord.identifier == ident))
    for r in diff.upsert:
        s.merge(AafStateRecord(academy=academy, uai=uai, category=r.category,
                               identifier=r.identifier,
                               attrs={k: list(v) for k, v in r.attrs.items()},
                               stamp=r.stamp, file=r.file, line=r.line, run_id=run_id))
    for t, m in diff.markers.items():
        s.merge(AafSchool(academy=academy, uai=uai, type=t, complet_date=m.complet_date,
                          applied_stamp=m.applied, run_id=run_id, updated_at=utcnow()))
    log.info("school %s: AAF state applied (%d records written, %d removed)", uai,
             len(diff.upsert), len(diff.delete))
    return True


def aaf_scopes(s: Any, academy: Academy, jointures: Iterable[str]) -> dict[str, set[tuple[str,
                                                                                        str]]]:
    """AAF jointure (``<PREFIX>$<id>``) -> the (UAI, source tag) scopes its person was last
    applied in (``etl.plan.scope.find_absent``: an AAF key names no school), for the given
    jointures (those of the academy's prefix with no other part)."""
    from etl.store.models import AafStateRecord

    ids = {j.split("$", 1)[1]: j for j in jointures
           if j.startswith(academy.jointure_prefix + "$") and j.count("$") == 1}
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    keys = sorted(ids)
    for i in range(0, len(keys), 500):
        for uai, cat, ident in s.execute(
                select(AafStateRecord.uai, AafStateRecord.category, AafStateRecord.identifier)
                .where(AafStateRecord.academy == academy.code,
                       AafStateRecord.category.in_(PERSON_TYPES),
                       AafStateRecord.identifier.in_(keys[i:i + 500]))):
            out[ids[ident]].add((uai, TYPE_SCOPE[cat]))
    return dict(out)


def scopes_removed(settings: Settings, academy: Academy, run_id: str,
                   uais: Iterable[str]) -> dict[str, set[tuple[str, str]]]:
    """AAF jointure -> the scopes this run's applied schools (``uais``) removed from the AAF
    state (their staged diffs' deletes): with ``aaf_scopes`` after they were committed, the
    scopes as they were before the run (a streamed run judges absences after its groups
    wrote, ``etl.plan.stream``)."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for uai in uais:
        ref = f"{run_id}/aaf/{uai}/state.json"
        if not staging.exists(settings, ref):
            continue
        diff = StateDiff.from_json(json.loads(staging.read_bytes(settings, ref)))
        for cat, ident in diff.delete:
            if cat in TYPE_SCOPE:
                out[f"{academy.jointure_prefix}${ident}"].add((uai, TYPE_SCOPE[cat]))
    return dict(out)


def school_people(s: Any, academy: Academy, uais: Iterable[str]) -> list[str]:
    """The AAF jointures of the people last applied in these schools' AAF state."""
    from etl.store.models import AafStateRecord

    wanted = sorted(set(uais))
    if not wanted:
        return []
    return [f"{academy.jointure_prefix}${ident}" for ident in s.scalars(
        select(AafStateRecord.identifier).distinct().where(
            AafStateRecord.academy == academy.code, AafStateRecord.uai.in_(wanted),
            AafStateRecord.category.in_(PERSON_TYPES)))]


def has_aaf_state(s: Any, academy: str) -> bool:
    """Whether the AAF fed a school of the academy (else no AAF key to scope)."""
    from etl.store.models import AafSchool

    return s.scalar(select(AafSchool.uai).where(AafSchool.academy == academy).limit(1)) \
        is not None


def fed_by_exports(s: Any, academy: str) -> set[str]:
    """Schools whose own SIECLE or STS-web exports were applied: a first AAF night there is a
    source switch."""
    from etl.store.models import SourceFile

    return {u for (u,) in s.execute(
        select(SourceFile.uai).distinct().where(
            SourceFile.academy == academy, SourceFile.status == "applied",
            SourceFile.kind.in_(SCHOOL_KINDS))) if u}


# ------------------------------------------------------------------------------------------
# the night
# ------------------------------------------------------------------------------------------


@dataclass
class AafNight:
    """What the AAF brings tonight (``prepare_night``)."""

    #: UAI -> its one AAF document (a ``Discovered`` as a dict), for the schools to read
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every school the AAF feeds (its state, or tonight's documents)
    fed: set[str] = field(default_factory=set)
    #: schools with nothing new from the AAF tonight
    unchanged: set[str] = field(default_factory=set)
    #: AAF parts refused, quarantined or ignored: {"file", "reason"}
    files: list[dict[str, Any]] = field(default_factory=list)
    #: requests the replay could not apply, records that belong to no school
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: the documents read tonight (labels), and those applied to no school
    read: list[str] = field(default_factory=list)
    #: a document that could not be read: nothing from its stamp on is applied
    stopped_at: str | None = None

    def summary(self) -> dict[str, Any]:
        """The run summary's ``aaf`` entry (counts and file names, no personal data)."""
        return {"documents": self.read, "schools": sorted(self.schools),
                "unchanged": len(self.unchanged), "files": self.files,
                "problems": self.problems[:200], "problem_count": len(self.problems),
                **({"stopped_at": self.stopped_at} if self.stopped_at else {})}


def _read_document(doc: AafDocument) -> tuple[list[Any], list[RecordRejected]]:
    """Every request of a document's parts, in part order (``FileRejected``: the part that
    cannot be read)."""
    from etl.read.aaf import iter_aaf_records

    out: list[Any] = []
    bad: list[RecordRejected] = []
    for p in doc.parts:
        out.extend(iter_aaf_records(p.checked_source if p.sha256 else p.source,
                                    rejected=bad, category=doc.key.type))
    return out, bad


def _records_of(view: Mapping[tuple[str, str], Rec], category: Iterable[str]) -> list[Any]:
    from etl.read.aaf import AafRecord

    cats = set(category)
    return [AafRecord(r.category, "add", r.identifier, r.attrs, r.file, r.line)
            for r in view.values() if r.category in cats]


def _structure_uai(r: Rec) -> str | None:
    u = (r.first("ENTStructureUAI") or r.first("ENTEtablissementUAI") or "").upper()
    return u or None


def prepare_night(settings: Settings, academy: Academy, run_id: str, found: list[Discovered],
                  s: Any, today: dt.date | None = None, dry_run: bool = False,
                  wanted: set[str] | None = None) -> AafNight:
    """Tonight's AAF: the documents read and applied on the stored state, each school with a
    document new to it staged (module docstring). ``found``: the AAF parts discovery found
    (refused ones included: their document is bad); ``s``: the discovery's session (read
    only here); ``wanted``: only these schools (``entsync sync --school``)."""
    from etl.discover.quarantine import keep
    from etl.store.models import AafSchool

    night = AafNight()
    if not found:  # the schools it feeds, for the source choice: no state to read
        night.fed = {u for (u,) in s.execute(select(AafSchool.uai).distinct().where(
            AafSchool.academy == academy.code))}
        return night
    docs, aside = group_documents(found)
    for d, aside_why in aside:
        night.files.append({"file": d.source.short_name, "reason": aside_why})
    stored, markers = load_state(s, academy.code)
    night.fed = set(stored) | set(markers)
    academy_complets: dict[str, str] = {}
    for ms in markers.values():
        for t, m in ms.items():
            if m.complet_date and m.complet_date > academy_complets.get(t, ""):
                academy_complets[t] = m.complet_date
    if not docs:
        night.unchanged = set(night.fed)
        return night
    # a document older than the latest Complet of its type (applied, or tonight's) is
    # superseded by it: not read
    latest = dict(academy_complets)
    for doc in docs:
        if doc.key.mode == COMPLET and not doc.bad and doc.key.date > latest.get(doc.key.type,
                                                                                 ""):
            latest[doc.key.type] = doc.key.date
    chain: list[AafDocument] = []
    for doc in docs:
        base = latest.get(doc.key.type)
        if base is not None and doc.stamp < f"{base}/C":
            reason = (f"AAF {doc.key.label} is older than the {doc.key.type} Complet of {base}"
                      f"{' applied' if academy_complets.get(doc.key.type) == base else ''}:"
                      " ignored")
            night.files.extend({"file": n, "reason": reason} for n in doc.files)
            log.warning("%s", reason)
            continue
        chain.append(doc)
    # the view the night starts from, then tonight's documents in order; a document that
    # cannot be read stops the night at its stamp
    view = freshest(r for rows in stored.values() for r in rows.values())
    problems: list[Problem] = []
    read_rejected: list[RecordRejected] = []
    complet_ids: dict[str, set[str]] = {}
    complet_stamps: dict[str, str] = {}
    kept: list[DocKey] = []
    for doc in chain:
        why: str | None = doc.bad
        requests: list[Any] = []
        if why is None:
            try:
                requests, bad = _read_document(doc)
                read_rejected.extend(bad)
            except FileRejected as e:
                why = str(e)
        if why is not None:
            night.stopped_at = doc.stamp
            reason = (f"AAF {doc.key.label} cannot be read ({why}): nothing of the AAF from "
                      f"{doc.key.date} on is applied tonight; its schools stay as they were")
            log.error("%s", reason)
            for p in doc.parts:
                if doc.incomplete:  # left where it is: the missing part may come
                    night.files.append({"file": p.source.short_name, "reason": reason})
                    continue
                q = keep(settings, academy.code, run_id, p.as_dict(), why, rule="aaf_document",
                         dry_run=dry_run)
                night.files.append({"file": p.source.short_name, "reason": reason,
                                    "quarantined": True, "moved_to": q.get("moved_to")})
            break
        ids = apply_document(view, doc.key, requests, problems)
        if doc.key.mode == COMPLET:
            complet_ids[doc.key.type], complet_stamps[doc.key.type] = ids, doc.stamp
        kept.append(doc.key)
        night.read.append(doc.key.label)
        log.info("AAF %s: %d requests applied to the view (%s)", doc.key.label, len(requests),
                 ", ".join(doc.files))
    night.problems.extend({"file": p.file, "line": p.line, "rule": p.rule,
                           "message": p.message} for p in problems)
    night.problems.extend({"file": r.file, "line": r.line, "rule": r.rule,
                           "message": r.message} for r in read_rejected)
    from etl.read.aaf import aaf_school_tables

    people = [r for r in view.values() if r.category in PERSON_TYPES]
    schools = aaf_school_tables(academy.code, _records_of(view, ["EtabEducNat"]),
                                _records_of(view, PERSON_TYPES), today)
    night.problems.extend({"file": r.file, "line": r.line, "rule": r.rule,
                           "message": r.message} for r in schools.unplaced)
    by_key: dict[str, list[Rec]] = defaultdict(list)
    for r in people:
        by_key[r.person_key].append(r)
    etab_of: dict[str, Rec] = {}
    for r in view.values():
        if r.category == "EtabEducNat" and (u := _structure_uai(r)):
            etab_of[u] = r
    switching = fed_by_exports(s, academy.code)
    for uai in sorted(set(schools) | night.fed):
        if wanted is not None and uai not in wanted:
            continue
        night.fed.add(uai)
        if not uai_is_valid(uai) or not academy.owns_uai(uai):
            night.problems.append({"file": None, "line": None, "rule": "uai",
                                   "message": f"AAF school {uai} is not a school of "
                                   f"{academy.code}: ignored"})
            continue
        ch = school_chain(markers.get(uai, {}), kept, academy_complets)
        if not ch.new:
            night.unchanged.add(uai)
            continue
        res = schools.get(uai)
        night.schools[uai] = _stage_school(
            settings, academy, run_id, uai, res, ch, by_key, etab_of.get(uai),
            stored.get(uai, {}), complet_ids, complet_stamps, chain,
            first_switch=uai in switching and uai not in markers)
    return night


def _stage_school(settings: Settings, academy: Academy, run_id: str, uai: str, res: Any,
                  ch: SchoolChain, by_key: Mapping[str, list[Rec]], etab: Rec | None,
                  stored: Mapping[tuple[str, str], Rec], complet_ids: Mapping[str, set[str]],
                  complet_stamps: Mapping[str, str], chain: list[AafDocument],
                  first_switch: bool) -> dict[str, Any]:
    """Stage one school's tables, read report and state diff; its AAF document."""
    from etl.read.base import ReadResult

    if res is None:  # the view places nobody there any more
        res = ReadResult(Tables())
    tables: Tables = res.tables
    mine = [r for k in _keys(tables) for r in by_key.get(k, [])]
    stale = stale_persons(mine, complet_ids, complet_stamps, ch.complets)
    if stale:
        tables = drop_persons(tables, stale)
    rejected = [r for r in res.rejected if r.source_key not in stale]
    keys = _keys(tables) | {r.source_key for r in rejected if r.source_key}
    new = {(r.category, r.identifier): r for k in keys for r in by_key.get(k, [])}
    if etab is not None:
        new[(etab.category, etab.identifier)] = etab
    diff = state_diff(stored, new, ch.markers)
    ref = f"{run_id}/aaf/{uai}"
    tables.save(staging.path(settings, f"{ref}/tables"))
    report = {"rejected": [_rejected_json(r) for r in rejected],
              "warnings": [w.as_dict() for w in res.warnings],
              "records": int(res.records),
              "file_records": dict(getattr(res, "file_records", None) or {})}
    staging.write_bytes(settings, f"{ref}/read.json", json.dumps(report).encode())
    state = json.dumps(diff.to_json(), sort_keys=True).encode()
    staging.write_bytes(settings, f"{ref}/state.json", state)
    holds = [{"guard": "aaf_gap", "detail": why} for why in ch.gaps.values()]
    if first_switch:
        holds.append({"guard": "source_switch", "detail": (
            f"first night of {uai} from the AAF after its own SIECLE/STS-web exports: its "
            "accounts are matched (INE, staff and guardian rules) and keep their uid and "
            "login; held once so that someone looks at the switch")})
    last = next(d for d in reversed(chain) if d.key in ch.new)
    d = Discovered(path=last.parts[0].path, member=last.parts[0].member, kind=KIND, uai=uai,
                   export_date=f"{last.key.date}T00:00:00",
                   sha256=hashlib.sha256(state).hexdigest(),
                   content_sha256=hashlib.sha256(state).hexdigest())
    d.extra["aaf"] = {
        "staged": ref, "documents": [k.label for k in ch.new],
        "files": sorted({n for doc in chain if doc.key in ch.new for n in doc.files}),
        "covers": ch.covers, "complets": sorted(ch.complets), "holds": holds,
        "name": _school_label(etab),
        # a record of the school changed (one of another school's too, a teacher of both):
        # read it whole even if its tables look the same, so that a person's entry is built
        # from every school of theirs that changed
        "changed": not diff.empty,
    }
    return d.as_dict()


def _school_label(etab: Rec | None) -> str | None:
    if etab is None:
        return None
    name = etab.first("ENTStructureNomCourant")
    return " ".join(name.replace("$", " ").split()) if name else None


def _keys(tables: Tables) -> set[str]:
    p = tables["persons"]
    return set() if p.empty else {str(k) for k in p["person_key"].dropna()}


def drop_persons(tables: Tables, keys: set[str]) -> Tables:
    """The tables without these persons (their memberships and guardian links too)."""
    out = Tables(**dict(tables.frames))
    p = out["persons"]
    out["persons"] = p[~p["person_key"].isin(keys)].reset_index(drop=True)
    m = out["memberships"]
    out["memberships"] = m[~m["person_key"].isin(keys)].reset_index(drop=True)
    g = out["guardian_links"]
    out["guardian_links"] = g[~(g["pupil_key"].isin(keys) | g["guardian_key"].isin(keys))
                              ].reset_index(drop=True)
    return out


def _rejected_json(r: RecordRejected) -> dict[str, Any]:
    return {**r.as_dict(), "source_key": r.source_key, "cascade": r.cascade,
            "field": r.field}


def read_staged(settings: Settings, d: Discovered) -> Any:
    """A school's AAF document as read_validate reads a document: its staged tables, the
    records its reading rejected and the warnings (``etl.read.base.ReadResult``), and the
    records counted per AAF file part (the error budget is each file's in each school)."""
    from etl.read.base import ReadResult

    ref = str(d.extra["aaf"]["staged"])
    tables = Tables.load(staging.path(settings, f"{ref}/tables"))
    rep = json.loads(staging.read_bytes(settings, f"{ref}/read.json"))
    rejected = [RecordRejected(str(r["file"]), r.get("uai"), r.get("line"), str(r["element"]),
                               str(r["rule"]), str(r["message"]), r.get("source_key"),
                               bool(r.get("cascade")), r.get("field"))
                for r in rep["rejected"]]
    warnings = [RecordWarning(str(w["file"]), w.get("uai"), w.get("line"), str(w["element"]),
                              str(w["rule"]), str(w["message"])) for w in rep["warnings"]]
    res = ReadResult(tables, rejected, int(rep["records"]), warnings)
    return res, {str(k): int(v) for k, v in (rep.get("file_records") or {}).items()}
