"""Streaming reader for STS-web exports (root STS_EDT): teachers, staff and their classes.

``INDIVIDU/@ID`` is an opaque STS key that is not proven stable across years; it is kept as
the source key within a school, and the identity stage may match on more than it.
"""

from __future__ import annotations

from etl.discover.xmlsafe import XmlSource
from etl.read import canonical as C
from etl.read.base import (
    Columns,
    ReadResult,
    UnknownElements,
    blank_to_none,
    children,
    iso_date,
    reject,
    release,
    stream,
)
from etl.read.canonical import Tables

SEXE = {"1": "M", "2": "F"}
#: container -> the elements the reader reads in it (anything else there is reported,
#: ``UnknownElements``); names as STS-web writes them
EXPECTED = {
    "INDIVIDUS": frozenset({"INDIVIDU"}),
    "STRUCTURE": frozenset({"DIVISIONS", "GROUPES"}),
    "DIVISIONS": frozenset({"DIVISION"}),
    "GROUPES": frozenset({"GROUPE"}),
    "MATIERES": frozenset({"MATIERE"}),
    "MEFS": frozenset({"MEF"}),
    "PROFS_PRINC": frozenset({"PROF_PRINC"}),
    "MEFS_APPARTENANCE": frozenset({"MEF_APPARTENANCE"}),
    "DIVISIONS_APPARTENANCE": frozenset({"DIVISION_APPARTENANCE"}),
    "SERVICES": frozenset({"SERVICE"}),
    "ENSEIGNANTS": frozenset({"ENSEIGNANT"}),
}
#: the lists, by the element that holds them
_LISTS = {"INDIVIDUS": "DONNEES", "STRUCTURE": "DONNEES", "DIVISIONS": "STRUCTURE",
          "GROUPES": "STRUCTURE", "MATIERES": "NOMENCLATURES", "MEFS": "NOMENCLATURES"}


def teacher_key(uai: str, sts_id: str) -> str:
    return f"STS${uai}${sts_id}"


def read_sts(src: XmlSource, uai: str) -> ReadResult:
    """STS_EDT: persons (ENS and staff), structures, teacher memberships, subjects, MEFs."""
    persons = Columns("persons", C.PERSONS)
    structures = Columns("structures", C.STRUCTURES)
    members = Columns("memberships", C.MEMBERSHIPS)
    subjects = Columns("subjects", C.SUBJECTS)
    mefs = Columns("mefs", C.MEFS)
    res = ReadResult(Tables())
    name = src.short_name
    seen: set[str] = set()
    head: dict[str, set[str]] = {}
    links: dict[tuple[str, str, str], tuple[set[str], int | None]] = {}
    tags = ("INDIVIDU", "DIVISION", "GROUPE", "MATIERE", "MEF", *_LISTS)
    unknown = UnknownElements(src, uai, EXPECTED)
    for el in stream(src, tags, uai):
        parent = el.getparent()
        ptag = parent.tag if parent is not None else ""
        if el.tag in _LISTS:
            if ptag != _LISTS[el.tag]:
                continue  # the same name elsewhere: freed with what holds it
            unknown.check(el)
        elif el.tag == "INDIVIDU" and ptag == "INDIVIDUS":
            res.records += 1
            unknown.within(el)
            sid = (el.get("ID") or "").strip()
            f = children(el)
            if not sid:
                res.rejected.append(reject(src, uai, el, "INDIVIDU", "required", "ID missing"))
            elif sid in seen:
                res.rejected.append(
                    reject(src, uai, el, "INDIVIDU", "unique", f"INDIVIDU ID {sid} appears twice")
                )
            else:
                try:
                    birth = iso_date(f.get("DATE_NAISSANCE"))
                except ValueError:
                    res.rejected.append(
                        reject(
                            src,
                            uai,
                            el,
                            "INDIVIDU",
                            "date_format",
                            f"INDIVIDU {sid}: DATE_NAISSANCE not yyyy-mm-dd",
                            source_key=teacher_key(uai, sid),
                        )
                    )
                    res.rejected[-1].field = "birth_date"
                else:
                    seen.add(sid)
                    function = (f.get("FONCTION") or "").strip().upper() or None
                    persons.append(
                        person_key=teacher_key(uai, sid),
                        uai=uai,
                        profile=C.STS_FUNCTION_PROFILE.get(function or "", "ETA"),
                        source="STS",
                        source_id=sid,
                        last_name=f.get("NOM_USAGE") or f.get("NOM_PATRONYMIQUE"),
                        birth_name=f.get("NOM_PATRONYMIQUE"),
                        first_name=f.get("PRENOM"),
                        birth_date=birth,
                        sex=SEXE.get((f.get("SEXE") or "").strip()),
                        function=function,
                        has_left=False,
                        file=name,
                        line=el.sourceline,
                    )
                    for pp in el.iterfind("PROFS_PRINC/PROF_PRINC/CODE_STRUCTURE"):
                        code = (pp.text or "").strip()
                        if code:
                            head.setdefault(sid, set()).add(code)
        elif el.tag in ("DIVISION", "GROUPE") and ptag in ("DIVISIONS", "GROUPES"):
            res.records += 1
            unknown.within(el)
            code = (el.get("CODE") or "").strip()
            if not code:
                res.rejected.append(reject(src, uai, el, el.tag, "required", "CODE missing"))
            else:
                is_div = el.tag == "DIVISION"
                kind = "D" if is_div else "G"
                f = children(el)
                mef_codes = sorted(
                    {
                        m.get("CODE", "").strip()
                        for m in el.iterfind("MEFS_APPARTENANCE/MEF_APPARTENANCE")
                    }
                    - {""}
                )
                div_codes = sorted(
                    {
                        m.get("CODE", "").strip()
                        for m in el.iterfind("DIVISIONS_APPARTENANCE/DIVISION_APPARTENANCE")
                    }
                    - {""}
                )
                structures.append(
                    uai=uai,
                    code=code,
                    kind=kind,
                    label=blank_to_none(f.get("LIBELLE_LONG")) or code,
                    mefs="|".join(mef_codes) or None,
                    divisions="|".join(div_codes) or None,
                    source="STS",
                    file=name,
                    line=el.sourceline,
                )
                for service in el.iterfind("SERVICES/SERVICE"):
                    subject = (service.get("CODE_MATIERE") or "").strip()
                    for ens in service.iterfind("ENSEIGNANTS/ENSEIGNANT"):
                        tid = (ens.get("ID") or "").strip()
                        if tid:
                            entry = links.setdefault((tid, code, kind), (set(), ens.sourceline))
                            if subject:
                                entry[0].add(subject)
        elif el.tag == "MATIERE" and ptag == "MATIERES":
            f = children(el)
            code = (el.get("CODE") or "").strip()
            if code:
                subjects.append(
                    uai=uai,
                    code=code,
                    short_label=blank_to_none(f.get("LIBELLE_COURT")),
                    long_label=blank_to_none(f.get("LIBELLE_LONG")),
                    source="STS",
                )
        elif el.tag == "MEF" and ptag == "MEFS":
            f = children(el)
            code = (el.get("CODE") or "").strip()
            if code:
                mefs.append(
                    uai=uai,
                    code=code,
                    formation=blank_to_none(f.get("LIBELLE_COURT")),
                    label=blank_to_none(f.get("LIBELLE_LONG")),
                    source="STS",
                )
        else:
            continue  # nested reference: its enclosing element is released as a whole
        release(unknown.released(el))
    res.warnings = unknown.warnings()
    for (tid, code, kind), (subj, line) in sorted(links.items()):
        members.append(
            uai=uai,
            person_key=teacher_key(uai, tid),
            code=code,
            kind=kind,
            role="teacher",
            subject="|".join(sorted(subj)) or None,
            head_teacher=code in head.get(tid, set()),
            file=name,
            line=line,
        )
    linked = {(t, c) for (t, c, _k) in links}
    for tid, codes in sorted(head.items()):
        for code in sorted(codes):
            if (tid, code) not in linked:
                members.append(
                    uai=uai,
                    person_key=teacher_key(uai, tid),
                    code=code,
                    kind="D",
                    role="teacher",
                    subject=None,
                    head_teacher=True,
                    file=name,
                    line=None,
                )
    res.tables["persons"] = persons.frame()
    res.tables["structures"] = structures.frame()
    res.tables["memberships"] = members.frame()
    res.tables["subjects"] = subjects.frame()
    res.tables["mefs"] = mefs.frame()
    return res
