"""The AAF's next night: a Delta (and the matching Complet) after a generated Complet.

Why: academies send, besides Complets, Deltas holding only the night's changes
(``addRequest``, ``modifyRequest`` with ``operation="replace"``, ``deleteRequest``); the
pipeline must apply them on top of the last state, the bench must time them. A Delta here is
the difference between two Complets of one academy, computed record by record (same
``identifier``: the changed attributes replaced; a new id: added; a vanished id: deleted), so
it is exactly what turns the first Complet into the second. The second can be written by the
generator (another seed or date) or be the first with a 2 % night's changes applied
(`mutate_records`: renames, class changes, arrivals with a new guardian, departures, guardian
changes, as bench/mutate.py does on SIECLE exports).
"""

from __future__ import annotations

import copy
import datetime
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from etl.devtools.generate.aaf import (
    AAF_TYPES,
    DEFAULT_PART_RECORDS,
    DEFAULT_PREFIX,
    PartWriter,
    aaf_files,
    add_request,
    delete_request,
    modify_request,
)

#: one type's records: AAF id -> attributes in file order (name, values)
Records = dict[str, list[tuple[str, list[str]]]]
#: share of the changes of each kind (of people touched), as bench/mutate.py
MIX = {"rename": 0.25, "class": 0.25, "arrival": 0.2, "departure": 0.15, "guardian": 0.15}
_NAMES = ("MOREAU", "LEFÈVRE", "SCHMITT", "NGUYEN", "DA SILVA", "KIEFFER", "BENALI", "ROUX",
          "MÜLLER", "N'DIAYE", "WEIß", "GARNIER")
_FIRST = ("Léa", "Noé", "Maëlys", "Anaïs", "Jules", "Côme", "Inès", "Loïc", "Zoé", "Hugo")


def _parts(path: Path) -> Iterator[etree._Element]:
    for _event, el in etree.iterparse(str(path), events=("end",), tag="addRequest",
                                      load_dtd=False, resolve_entities=False, no_network=True,
                                      huge_tree=True):
        yield el
        el.clear(keep_tail=True)
        while el.getprevious() is not None:
            del el.getparent()[0]


def read_complet(paths: list[Path]) -> Records:
    """The records of a Complet's parts (one type), in file order."""
    records: Records = {}
    for path in paths:
        for el in _parts(path):
            ident = el.findtext("identifier/id") or ""
            records[ident] = [
                (a.get("name", ""), [v.text or "" for v in a.iterfind("value")])
                for a in el.iterfind("attributes/attr")
            ]
    return records


def _get(attrs: list[tuple[str, list[str]]], name: str) -> list[str]:
    for n, values in attrs:
        if n == name:
            return values
    return []


def _set(attrs: list[tuple[str, list[str]]], name: str, values: list[str]) -> None:
    for i, (n, _v) in enumerate(attrs):
        if n == name:
            attrs[i] = (n, values)
            return
    attrs.append((name, values))


def _count(rng: random.Random, expected: float) -> int:
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


def mutate_records(night: dict[str, Records], rng: random.Random, share: float) -> Counter[str]:
    """Apply about `share` x people changes to one academy's records in place; counts."""
    pupils, guardians = night["Eleve"], night["PersRelEleve"]
    done: Counter[str] = Counter()
    people = len(pupils) + len(guardians)
    todo = {kind: _count(rng, people * share * w) for kind, w in MIX.items()}
    classes: dict[tuple[str, str], set[str]] = {}
    for attrs in pupils.values():
        key = (_get(attrs, "ENTPersonStructRattach")[:1] or [""])[0], \
            (_get(attrs, "ENTEleveMEF")[:1] or [""])[0]
        classes.setdefault(key, set()).update(v for v in _get(attrs, "ENTEleveClasses") if v)
    order = list(pupils)
    rng.shuffle(order)
    pool = iter(order)  # each pupil is changed at most once
    for _ in range(todo["rename"]):
        ident = next(pool, None)
        if ident is None:
            break
        if rng.random() < 0.5:
            _set(pupils[ident], "givenName", [rng.choice(_FIRST)])
        else:
            _set(pupils[ident], "sn", [rng.choice(_NAMES)])
        done["rename"] += 1
    for _ in range(todo["class"]):
        ident = next(pool, None)
        if ident is None:
            break
        attrs = pupils[ident]
        current = _get(attrs, "ENTEleveClasses")
        key = (_get(attrs, "ENTPersonStructRattach")[:1] or [""])[0], \
            (_get(attrs, "ENTEleveMEF")[:1] or [""])[0]
        others = sorted(classes.get(key, set()) - set(current))
        if others:
            _set(attrs, "ENTEleveClasses", [rng.choice(others)])
            done["class"] += 1
    for _ in range(todo["departure"]):
        ident = next(pool, None)
        if ident is None:
            break
        attrs = pupils.pop(ident)
        for link in _get(attrs, "ENTElevePersRelEleve"):
            guardian = guardians.get(link.split("$", 1)[0])
            if guardian is None:
                continue
            children = [c for c in _get(guardian, "ENTAuxPersRelEleveEleve") if c != ident]
            if children:
                _set(guardian, "ENTAuxPersRelEleveEleve", children)
            else:
                del guardians[link.split("$", 1)[0]]
        done["departure"] += 1
    next_pupil = max((int(i) for i in pupils), default=20_000_000) + 1000
    next_guardian = max((int(i) for i in guardians), default=40_000_000) + 1000
    models = [i for i in order if i in pupils]
    existing = list(guardians)  # the guardian changes touch guardians already there
    for _ in range(todo["arrival"]):
        if not models:
            break
        model = pupils[rng.choice(models)]
        next_pupil += 1
        next_guardian += 1
        pid, gid = str(next_pupil), str(next_guardian)
        last, first = rng.choice(_NAMES), rng.choice(_FIRST)
        letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
        new = copy.deepcopy(model)
        for name, values in (("ENTPersonJointure", [pid]),
                             ("ENTEleveINE", [f"{rng.randrange(10**9):09d}{letters}"]),
                             ("ENTEleveStructRattachId", [str(90000 + next_pupil % 10000)]),
                             ("ENTPersonNomPatro", [last]), ("sn", [last]),
                             ("givenName", [first]), ("ENTPersonAutresPrenoms", [first]),
                             ("ENTEleveAutoriteParentale", [gid]),
                             ("ENTElevePersRelEleve", [f"{gid}$10$1$1$1$1"])):
            _set(new, name, values)
        pupils[pid] = new
        guardians[gid] = [
            ("ENTPersonJointure", [gid]), ("ENTPersonDateNaissance", [""]),
            ("ENTPersonNomPatro", [last]), ("sn", [last]),
            ("givenName", [rng.choice(("Sophie", "Karim", "Hélène", "Jürgen"))]),
            ("personalTitle", ["Mme"]), ("homePhone", [""]), ("mobile", [""]),
            ("mail", [f"arrivee{gid}@example.org"]), ("ENTAuxPersRelEleveEleve", [pid]),
        ]
        done["arrival"] += 1
    rng.shuffle(existing)
    for gid in existing[: todo["guardian"]]:
        if _get(guardians[gid], "mail") != [""] and rng.random() < 0.6:
            _set(guardians[gid], "mail", [f"nouvelle.adresse{gid}@example.org"])
        else:
            _set(guardians[gid], "sn", [rng.choice(_NAMES)])
        done["guardian"] += 1
    done["people"] = people
    return done


@dataclass
class DeltaCounts:
    """Requests written per kind and the parts, for one academy's Delta."""

    add: int = 0
    modify: int = 0
    delete: int = 0
    files: list[Path] = field(default_factory=list)


def write_delta(previous: dict[str, Records], current: dict[str, Records], folder: Path,
                date: datetime.date, prefix: str = DEFAULT_PREFIX,
                part_records: int = DEFAULT_PART_RECORDS) -> DeltaCounts:
    """``<prefix>_Delta_<date>_<Type>_NNNN.xml`` turning `previous` into `current`: adds and
    changed records in `current`'s order, then deletes in `previous`' order; a changed record
    replaces only the attributes that changed (an attribute gone is replaced by no value)."""
    counts = DeltaCounts()
    for aaf_type in AAF_TYPES:
        old, new = previous.get(aaf_type, {}), current.get(aaf_type, {})
        with PartWriter(folder, prefix, "Delta", date, aaf_type, part_records) as out:
            for ident, attrs in new.items():
                before = old.get(ident)
                if before is None:
                    out.write(add_request(aaf_type, ident, attrs))
                    counts.add += 1
                    continue
                was = dict(before)
                changed = [(n, v) for n, v in attrs if was.get(n) != v]
                names = {n for n, _v in attrs}
                changed += [(n, [""]) for n, _v in before if n not in names]
                if changed:
                    out.write(modify_request(aaf_type, ident, changed))
                    counts.modify += 1
            for ident in old:
                if ident not in new:
                    out.write(delete_request(aaf_type, ident))
                    counts.delete += 1
        counts.files += out.files
    return counts


def write_complet(night: dict[str, Records], folder: Path, date: datetime.date,
                  prefix: str = DEFAULT_PREFIX,
                  part_records: int = DEFAULT_PART_RECORDS) -> list[Path]:
    """A Complet holding `night`'s records (the mutated night, for comparison)."""
    files: list[Path] = []
    for aaf_type in AAF_TYPES:
        with PartWriter(folder, prefix, "Complet", date, aaf_type, part_records) as out:
            for ident, attrs in night.get(aaf_type, {}).items():
                out.write(add_request(aaf_type, ident, attrs))
        files += out.files
    return files


def read_night(folder: Path) -> dict[str, Records]:
    """One academy folder's Complet, every type (the latest date when several)."""
    night: dict[str, Records] = {}
    for aaf_type in AAF_TYPES:
        paths = aaf_files(folder, "Complet", aaf_type)
        if paths:
            latest = max(p.name.split("_Complet_")[1][:8] for p in paths)
            night[aaf_type] = read_complet([p for p in paths if f"_Complet_{latest}_" in p.name])
    return night


def latest_complet_date(root: Path) -> datetime.date | None:
    """The latest Complet date under ``root/<academy>/`` (None without any)."""
    dates = [p.name.split("_Complet_")[1][:8] for p in root.glob("*/*_Complet_*.xml")]
    return datetime.datetime.strptime(max(dates), "%Y%m%d").date() if dates else None


@dataclass
class NightSummary:
    """What `generate_aaf_delta` wrote, per academy."""

    delta: dict[str, DeltaCounts]
    mutations: Counter[str]
    complet_files: list[Path] = field(default_factory=list)


def generate_aaf_delta(previous: Path, out: Path, date: datetime.date, seed: int,
                       share: float = 0.02, complet_out: Path | None = None,
                       prefix: str = DEFAULT_PREFIX,
                       part_records: int = DEFAULT_PART_RECORDS) -> NightSummary:
    """The night after `previous` (a generated landing: ``<academy>/`` folders holding an
    AAF Complet): about `share` of the people changed, written as a Delta dated `date` in
    ``out/<academy>/`` and, with `complet_out`, as that night's Complet there too."""
    rng = random.Random(f"{seed}:aaf-delta")
    summary = NightSummary(delta={}, mutations=Counter())
    for folder in sorted(p for p in previous.iterdir() if p.is_dir() and aaf_files(p)):
        before = read_night(folder)
        after = copy.deepcopy(before)
        summary.mutations.update(mutate_records(after, rng, share))
        summary.delta[folder.name] = write_delta(before, after, out / folder.name, date, prefix,
                                                 part_records)
        if complet_out is not None:
            summary.complet_files += write_complet(after, complet_out / folder.name, date,
                                                   prefix, part_records)
    return summary
