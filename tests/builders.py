"""Tiny hand-made SIECLE/STS exports for sync tests: every name and code is visible in the test.

Each builder returns XML text; ``write_school`` zips SIECLE files like the real web exports.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr


@dataclass
class Pupil:
    eleve_id: str
    last: str
    first: str
    division: str
    ine: str | None = None
    groups: list[str] = field(default_factory=list)
    birth: str = "01/02/2012"
    sex: str = "2"
    leave: str | None = None


@dataclass
class Guardian:
    personne_id: str
    last: str
    first: str
    pupils: list[str]  # ELEVE_IDs
    level: str = "1"
    email: str | None = None


@dataclass
class Teacher:
    sts_id: str
    last: str
    first: str
    classes: list[str]
    function: str = "ENS"
    head_of: list[str] = field(default_factory=list)
    birth: str = "1980-05-06"


def _el(tag: str, text: str | None) -> str:
    return "" if text is None else f"<{tag}>{escape(text)}</{tag}>"


def header(uai: str, year: int, date: str) -> str:
    return (f"<PARAMETRES><UAJ>{uai}</UAJ><ANNEE_SCOLAIRE>{year}</ANNEE_SCOLAIRE>"
            f"<DATE_EXPORT>{date}</DATE_EXPORT><HORODATAGE>{date} 08:00:00</HORODATAGE>"
            "</PARAMETRES>")


def eleves_xml(uai: str, pupils: list[Pupil], year: int = 2026, date: str = "01/10/2026") -> str:
    body = "".join(
        f"<ELEVE ELEVE_ID={quoteattr(p.eleve_id)}>{_el('ID_NATIONAL', p.ine)}"
        f"{_el('NOM_DE_FAMILLE', p.last)}{_el('PRENOM', p.first)}"
        f"{_el('DATE_NAISS', p.birth)}{_el('CODE_SEXE', p.sex)}"
        f"<CODE_MEF>10310019110</CODE_MEF>{_el('DATE_SORTIE', p.leave)}</ELEVE>"
        for p in pupils)
    structs = "".join(
        f"<STRUCTURES_ELEVE ELEVE_ID={quoteattr(p.eleve_id)}><STRUCTURE>"
        f"{_el('CODE_STRUCTURE', p.division)}<TYPE_STRUCTURE>D</TYPE_STRUCTURE></STRUCTURE>"
        + "".join(f"<STRUCTURE>{_el('CODE_STRUCTURE', g)}<TYPE_STRUCTURE>G</TYPE_STRUCTURE>"
                  "</STRUCTURE>" for g in p.groups)
        + "</STRUCTURES_ELEVE>" for p in pupils)
    return (f'<?xml version="1.0" encoding="UTF-8"?><BEE_ELEVES VERSION="3.0">'
            f"{header(uai, year, date)}<DONNEES><ELEVES>{body}</ELEVES>"
            f"<STRUCTURES>{structs}</STRUCTURES></DONNEES></BEE_ELEVES>")


def responsables_xml(uai: str, guardians: list[Guardian], year: int = 2026,
                     date: str = "01/10/2026") -> str:
    persons = "".join(
        f"<PERSONNE PERSONNE_ID={quoteattr(g.personne_id)}><LC_CIVILITE>MME</LC_CIVILITE>"
        f"{_el('NOM_DE_FAMILLE', g.last)}{_el('PRENOM', g.first)}{_el('MEL', g.email)}"
        "</PERSONNE>" for g in guardians)
    links = "".join(
        f"<RESPONSABLE_ELEVE>{_el('ELEVE_ID', e)}{_el('PERSONNE_ID', g.personne_id)}"
        f"{_el('NIVEAU_RESPONSABILITE', g.level)}<CODE_PARENTE>10</CODE_PARENTE>"
        "</RESPONSABLE_ELEVE>" for g in guardians for e in g.pupils)
    return (f'<?xml version="1.0" encoding="UTF-8"?><BEE_RESPONSABLES VERSION="3.0">'
            f"{header(uai, year, date)}<DONNEES><PERSONNES>{persons}</PERSONNES>"
            f"<RESPONSABLES>{links}</RESPONSABLES></DONNEES></BEE_RESPONSABLES>")


def structures_xml(uai: str, divisions: list[str], groups: list[str], year: int = 2026,
                   date: str = "01/10/2026") -> str:
    divs = "".join(f"<DIVISION CODE_STRUCTURE={quoteattr(d)}>{_el('LIBELLE_LONG', d)}"
                   "</DIVISION>" for d in divisions)
    grps = "".join(f"<GROUPE CODE_STRUCTURE={quoteattr(g)}>{_el('LIBELLE_LONG', g)}</GROUPE>"
                   for g in groups)
    return (f'<?xml version="1.0" encoding="UTF-8"?><BEE_STRUCTURES VERSION="3.0">'
            f"{header(uai, year, date)}<DONNEES><DIVISIONS>{divs}</DIVISIONS>"
            f"<GROUPES>{grps}</GROUPES></DONNEES></BEE_STRUCTURES>")


def sts_xml(uai: str, teachers: list[Teacher], year: int = 2026) -> str:
    inds = "".join(
        f"<INDIVIDU ID={quoteattr(t.sts_id)} TYPE=\"epp\">{_el('NOM_USAGE', t.last)}"
        f"{_el('PRENOM', t.first)}<SEXE>1</SEXE>{_el('DATE_NAISSANCE', t.birth)}"
        f"{_el('FONCTION', t.function)}<PROFS_PRINC>"
        + "".join(f"<PROF_PRINC>{_el('CODE_STRUCTURE', c)}</PROF_PRINC>" for c in t.head_of)
        + "</PROFS_PRINC></INDIVIDU>" for t in teachers)
    classes = sorted({c for t in teachers for c in t.classes})
    divs = "".join(
        f"<DIVISION CODE={quoteattr(c)}><SERVICES><SERVICE CODE_MATIERE=\"030101\" "
        f"CODE_MOD_COURS=\"CG\"><ENSEIGNANTS>"
        + "".join(f"<ENSEIGNANT ID={quoteattr(t.sts_id)} TYPE=\"epp\"/>" for t in teachers
                  if c in t.classes)
        + "</ENSEIGNANTS></SERVICE></SERVICES></DIVISION>" for c in classes)
    return (f'<?xml version="1.0" encoding="UTF-8"?><STS_EDT><PARAMETRES>'
            f"<UAJ CODE=\"{uai}\"/><ANNEE_SCOLAIRE ANNEE=\"{year}\"/></PARAMETRES>"
            f"<DONNEES><INDIVIDUS>{inds}</INDIVIDUS><STRUCTURE><DIVISIONS>{divs}</DIVISIONS>"
            "</STRUCTURE></DONNEES></STS_EDT>")


def write_zip(path: Path, member: str, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text.encode("utf-8"))
    return path


def write_school(landing: Path, academy: str, uai: str, pupils: list[Pupil],
                 guardians: list[Guardian], teachers: list[Teacher], date: str = "01/10/2026",
                 year: int = 2026) -> Path:
    """Write one school's exports the way academies drop them."""
    d = landing / academy / uai
    divisions = sorted({p.division for p in pupils})
    groups = sorted({g for p in pupils for g in p.groups})
    write_zip(d / "ExportXML_ElevesSansAdresses.zip", "ElevesSansAdresses.xml",
              eleves_xml(uai, pupils, year, date))
    write_zip(d / "ExportXML_ResponsablesAvecAdresses.zip", "ResponsablesAvecAdresses.xml",
              responsables_xml(uai, guardians, year, date))
    write_zip(d / "ExportXML_Structures.zip", "Structures.xml",
              structures_xml(uai, divisions, groups, year, date))
    (d / f"sts_emp_{uai}_{year}.xml").write_text(sts_xml(uai, teachers, year), "utf-8")
    return d
