"""GAR records -> the GAR-ENT schema's XML elements (pure: no I/O).

Element names, their order inside each record and the root elements are the schema's
(GAR-ENT.xsd, version 1.7, namespace ``http://data.education.fr/ns/gar``); the optional
elements entsync has no data for, or that the GAR does not need (birth dates, civility,
secondary ids), are left out.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from etl.gar.read import (
    GarGroup,
    GarMembership,
    GarPerson,
    GarPersonMef,
    GarRespAff,
    GarSchool,
    GarTeaching,
)

NS: Final = "http://data.education.fr/ns/gar"
NSMAP: Final = {"men": NS}
#: the schema version the files say they follow (the root's required ``Version``)
VERSION: Final = "1.7"
#: file kind -> root element
ROOTS: Final = {
    "Etab": "GAR-ENT-Etab",
    "Eleve": "GAR-ENT-Eleve",
    "Enseignant": "GAR-ENT-Enseignant",
    "Groupe": "GAR-ENT-Groupe",
    "RespAff": "GAR-ENT-RespAff",
}
KINDS: Final = tuple(ROOTS)


def q(tag: str) -> str:
    """The qualified name of a schema element."""
    return f"{{{NS}}}{tag}"


def _el(tag: str, *children: etree._Element) -> etree._Element:
    e = etree.Element(q(tag), nsmap=NSMAP)
    e.extend(children)
    return e


def _text(tag: str, value: str) -> etree._Element:
    e = etree.Element(q(tag), nsmap=NSMAP)
    e.text = value
    return e


def root(kind: str) -> str:
    return q(ROOTS[kind])


def etab(s: GarSchool) -> etree._Element:
    return _el("GAREtab", _text("GARStructureUAI", s.uai),
               _text("GARStructureNomCourant", s.name))


def _identity(p: GarPerson) -> list[etree._Element]:
    """GARIdentite's sequence: id, profiles per school, names, main school."""
    out = [_text("GARPersonIdentifiant", p.uid)]
    out += [_el("GARPersonProfils", _text("GARStructureUAI", uai),
                _text("GARPersonProfil", profile)) for uai, profile in p.profiles]
    out += [_text("GARPersonNom", p.last), _text("GARPersonPrenom", p.first),
            _text("GARPersonAutresPrenoms", p.first)]
    if p.main:
        out.append(_text("GARPersonStructRattach", p.main))
    return out


def eleve(p: GarPerson) -> etree._Element:
    return _el("GAREleve", *_identity(p), *(_text("GARPersonEtab", u) for u in p.schools))


def enseignant(p: GarPerson) -> etree._Element:
    return _el("GAREnseignant", *_identity(p), *(_text("GARPersonEtab", u) for u in p.schools))


def person_mef(m: GarPersonMef) -> etree._Element:
    return _el("GARPersonMEF", _text("GARStructureUAI", m.uai),
               _text("GARPersonIdentifiant", m.uid), _text("GARMEFCode", m.mef))


def groupe(g: GarGroup) -> etree._Element:
    return _el("GARGroupe", _text("GARGroupeCode", g.code), _text("GARStructureUAI", g.uai),
               _text("GARGroupeLibelle", g.label),
               _text("GARGroupeStatut", "DIVISION" if g.division else "GROUPE"))


def person_groupe(m: GarMembership) -> etree._Element:
    return _el("GARPersonGroupe", _text("GARStructureUAI", m.uai),
               _text("GARPersonIdentifiant", m.uid), _text("GARGroupeCode", m.code))


def ens_matiere(t: GarTeaching) -> etree._Element:
    return _el("GAREnsClasseMatiere" if t.division else "GAREnsGroupeMatiere",
               _text("GARStructureUAI", t.uai), _text("GARPersonIdentifiant", t.uid),
               _text("GARGroupeCode", t.code),
               *(_text("GARMatiereCode", s) for s in t.subjects))


def resp_aff(r: GarRespAff) -> etree._Element:
    return _el("GARRespAff", _text("GARPersonIdentifiant", r.uid), _text("GARPersonNom", r.last),
               _text("GARPersonPrenom", r.first), *(_text("GARPersonMail", m) for m in r.mails),
               *(_text("GARRespAffEtab", u) for u in r.schools))


__all__ = ["KINDS", "NS", "NSMAP", "ROOTS", "VERSION", "eleve", "ens_matiere", "enseignant",
           "etab", "groupe", "person_groupe", "person_mef", "q", "resp_aff", "root"]
