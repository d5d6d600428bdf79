"""Tiny hand-made AAF files (``ficAlimMENESR``) for pipeline tests, from the same people as
``tests.builders`` writes as SIECLE/STS-web exports: a school moving to the AAF is the same
pupils (INE, names, birth date), guardians and staff (names, birth date).

``complet``/``delta`` write one document (its parts) under ``<landing>/<academy>/aaf/``, named
as academies name them; requests are built with ``etab``, ``eleve``, ``relative``, ``staff``,
``modify`` and ``delete``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from tests.builders import Guardian, Pupil, Teacher

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE ficAlimMENESR SYSTEM "ficAlimMENESR.dtd">\n<ficAlimMENESR>\n')
CATEGORY_ATTR = {"EtabEducNat": "categorieStructure"}


def _attrs(attrs: dict[str, list[str]], tag: str = "attr", op: str = "") -> str:
    out = []
    for name, values in attrs.items():
        vals = "".join(f"<value>{escape(v)}</value>" for v in values) or "<value/>"
        out.append(f'<{tag} name="{name}"{op}>{vals}</{tag}>')
    return "".join(out)


def _ops(category: str, ident: str) -> str:
    name = CATEGORY_ATTR.get(category, "categoriePersonne")
    return (f'<operationalAttributes><attr name="{name}"><value>{category}</value></attr>'
            f"</operationalAttributes><identifier><id>{ident}</id></identifier>")


def add(category: str, ident: str, attrs: dict[str, list[str]]) -> str:
    return (f"<addRequest>{_ops(category, ident)}<attributes>{_attrs(attrs)}</attributes>"
            "</addRequest>\n")


def modify(category: str, ident: str, attrs: dict[str, list[str]]) -> str:
    mods = _attrs(attrs, "modification", ' operation="replace"')
    return (f"<modifyRequest>{_ops(category, ident)}<modifications>{mods}</modifications>"
            "</modifyRequest>\n")


def delete(category: str, ident: str) -> str:
    return f"<deleteRequest>{_ops(category, ident)}</deleteRequest>\n"


def etab(struct: str, uai: str, name: str = "LYCEE TEST") -> str:
    return add("EtabEducNat", struct, {
        "ENTStructureJointure": [struct], "ENTStructureUAI": [uai],
        "ENTEtablissementUAI": [uai], "ENTStructureNomCourant": [name],
        "ENTStructureTypeStruct": ["LYCEE"]})


def _fr(iso_or_fr: str) -> str:
    if "-" in iso_or_fr:
        y, m, d = iso_or_fr.split("-")
        return f"{d}/{m}/{y}"
    return iso_or_fr


def pupil_id(p: Pupil) -> str:
    return "7" + p.eleve_id


def guardian_id(g: Guardian) -> str:
    return "5" + g.personne_id


def staff_id(t: Teacher) -> str:
    return "3" + t.sts_id


def eleve(struct: str, p: Pupil, guardians: list[Guardian] = (),  # type: ignore[assignment]
          **over: list[str]) -> str:
    """A pupil of ``struct``, linked to the guardians naming them (the fourth field: 1 legal
    guardian, 2 in charge, 0 neither)."""
    mine = [g for g in guardians if p.eleve_id in g.pupils]
    level = {"1": "1", "2": "2"}
    attrs = {
        "ENTPersonJointure": [pupil_id(p)], "ENTPersonDateNaissance": [_fr(p.birth)],
        "ENTPersonNomPatro": [p.last], "sn": [p.last], "givenName": [p.first],
        "personalTitle": ["M." if p.sex == "1" else "Mlle"],
        "ENTElevePersRelEleve": [f"{guardian_id(g)}$10${'1' if g.level == '1' else '0'}$"
                                 f"{level.get(g.level, '0')}$1$0" for g in mine],
        "ENTEleveAutoriteParentale": [guardian_id(g) for g in mine if g.level == "1"],
        "ENTEleveMEF": ["10010012110"], "ENTPersonStructRattach": [struct],
        "ENTEleveClasses": [f"{struct}${p.division}"],
        "ENTEleveGroupes": [f"{struct}${g}" for g in p.groups],
    }
    if p.ine:
        attrs["ENTEleveINE"] = [p.ine]
    attrs.update(over)
    return add("Eleve", pupil_id(p), attrs)


def relative(g: Guardian, **over: list[str]) -> str:
    attrs = {"ENTPersonJointure": [guardian_id(g)], "sn": [g.last], "givenName": [g.first],
             "personalTitle": ["M."], "mail": [g.email] if g.email else []}
    attrs.update(over)
    return add("PersRelEleve", guardian_id(g), attrs)


def staff(structs: list[str], t: Teacher, **over: list[str]) -> str:
    """A staff member of each of ``structs`` (their classes in the first)."""
    attrs = {
        "ENTPersonJointure": [staff_id(t)], "ENTPersonDateNaissance": [_fr(t.birth)],
        "ENTPersonNomPatro": [t.last], "sn": [t.last], "givenName": [t.first],
        "personalTitle": ["M."], "ENTPersonStructRattach": [structs[0]],
        "ENTPersonFonctions": [f"{s}${t.function}$ENSEIGNEMENT$L0201$LETTRES" for s in structs],
        "ENTAuxEnsClasses": [f"{structs[0]}${c}" for c in t.classes],
        "ENTAuxEnsClassesMatieres": [f"{structs[0]}${c}$030101" for c in t.classes],
        "ENTAuxEnsClassesPrincipal": [f"{structs[0]}${c}" for c in t.head_of],
        "PersEducNatPresenceDevantEleves": ["O" if t.function == "ENS" else "N"],
    }
    attrs.update(over)
    return add("PersEducNat", staff_id(t), attrs)


def write(landing: Path, academy: str, mode: str, date: str, type_: str,
          parts: list[list[str]], prefix: str = "ENT", zipped: bool = False,
          folder: str = "aaf") -> list[Path]:
    """One document (``date``: YYYYMMDD), a file per part, as academies drop them."""
    d = landing / academy / folder
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, reqs in enumerate(parts):
        name = f"{prefix}_{mode}_{date}_{type_}_{i:04d}.xml"
        text = HEAD + "".join(reqs) + "</ficAlimMENESR>\n"
        if zipped:
            p = d / f"{name[:-4]}.zip"
            with zipfile.ZipFile(p, "w") as zf:
                zf.writestr(name, text.encode("utf-8"))
        else:
            p = d / name
            p.write_text(text, "utf-8")
        out.append(p)
    return out


def school_feed(landing: Path, academy: str, mode: str, date: str, struct: str, uai: str,
                pupils: list[Pupil], guardians: list[Guardian], teachers: list[Teacher],
                pupil_parts: int = 1) -> None:
    """A whole school as one AAF night: the four types (pupils in ``pupil_parts`` parts)."""
    write(landing, academy, mode, date, "EtabEducNat", [[etab(struct, uai)]])
    reqs = [eleve(struct, p, guardians) for p in pupils]
    n = max(1, len(reqs) // pupil_parts + (len(reqs) % pupil_parts > 0))
    write(landing, academy, mode, date, "Eleve",
          [reqs[i:i + n] for i in range(0, len(reqs), n)] or [[]])
    write(landing, academy, mode, date, "PersRelEleve", [[relative(g) for g in guardians]])
    write(landing, academy, mode, date, "PersEducNat", [[staff([struct], t) for t in teachers]])
