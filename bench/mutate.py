"""A 2 % night: edit generated SIECLE exports in place as a real night's changes would.

Renames (pupils' first or last name), class changes (another division of the same MEF),
arrivals (a new pupil with a new legal guardian), departures (DATE_SORTIE in the past) and
guardian changes (new e-mail or new last name), about `share` of the people of each school.
Each school's two zips are rewritten whole (ISO-8859-15, same member name and date).
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import zipfile
from collections import Counter
from pathlib import Path

from lxml import etree

PROLOG = b'<?xml version="1.0" encoding="ISO-8859-15"?>\n'
ELEVES = ("ExportXML_ElevesSansAdresses.zip", "ElevesSansAdresses.xml")
RESPONSABLES = ("ExportXML_ResponsablesAvecAdresses.zip", "ResponsablesAvecAdresses.xml")
#: share of the changes of each kind (of people touched)
MIX = {"rename": 0.25, "class": 0.25, "arrival": 0.2, "departure": 0.15, "guardian": 0.15}
NAMES = ("Moreau", "Lefèvre", "Schmitt", "Nguyen", "Da Silva", "Kieffer", "Benali", "Roux",
         "Müller", "N'Diaye", "Weiß", "Garnier")
FIRST = ("Léa", "Noé", "Maëlys", "Anaïs", "Jules", "Côme", "Inès", "Loïc", "Zoé", "Hugo")


def _read(path: Path, member: str) -> tuple[etree._Element, zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        root = etree.fromstring(zf.read(member), etree.XMLParser(resolve_entities=False,
                                                                  huge_tree=True))
    return root, info


def _write(path: Path, info: zipfile.ZipInfo, root: etree._Element) -> None:
    body = etree.tostring(root, encoding="ISO-8859-15", xml_declaration=False)
    assert isinstance(body, bytes)
    out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    out.compress_type = zipfile.ZIP_DEFLATED
    out.external_attr = info.external_attr
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(out, PROLOG + body + b"\n")
    tmp.replace(path)


def _count(rng: random.Random, expected: float) -> int:
    """Stochastic rounding: small schools still get their share on average."""
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


def _set(parent: etree._Element, tag: str, value: str) -> None:
    el = parent.find(tag)
    if el is None:
        el = etree.SubElement(parent, tag)
    el.text = value


def mutate_school(folder: Path, rng: random.Random, share: float) -> Counter[str]:
    """Apply about `share` x people changes to one school's exports; counts per kind."""
    done: Counter[str] = Counter()
    eleves, e_info = _read(folder / ELEVES[0], ELEVES[1])
    resp, r_info = _read(folder / RESPONSABLES[0], RESPONSABLES[1])
    export = dt.datetime.strptime(eleves.findtext("PARAMETRES/DATE_EXPORT", ""), "%d/%m/%Y")
    pupils = [p for p in eleves.iterfind("DONNEES/ELEVES/ELEVE") if p.find("DATE_SORTIE") is None]
    persons = list(resp.iterfind("DONNEES/PERSONNES/PERSONNE"))
    structures = {
        s.get("ELEVE_ID"): s for s in eleves.iterfind("DONNEES/STRUCTURES/STRUCTURES_ELEVE")
    }
    links: dict[str, list[etree._Element]] = {}
    for link in resp.iterfind("DONNEES/RESPONSABLES/RESPONSABLE_ELEVE"):
        links.setdefault(link.findtext("ELEVE_ID", ""), []).append(link)
    divisions: dict[str, set[str]] = {}
    for p in pupils:
        s = structures.get(p.get("ELEVE_ID"))
        code = s.findtext("STRUCTURE[TYPE_STRUCTURE='D']/CODE_STRUCTURE") if s is not None else None
        if code:
            divisions.setdefault(p.findtext("CODE_MEF", ""), set()).add(code)
    people = len(pupils) + len(persons)
    todo = {kind: _count(rng, people * share * w) for kind, w in MIX.items()}
    rng.shuffle(pupils)
    pool = iter(pupils)  # each pupil is changed at most once

    for _ in range(todo["rename"]):
        pupil = next(pool, None)
        if pupil is None:
            break
        if rng.random() < 0.5:
            _set(pupil, "PRENOM", rng.choice(FIRST))
        else:
            _set(pupil, "NOM_DE_FAMILLE", rng.choice(NAMES).upper())
        done["rename"] += 1
    for _ in range(todo["class"]):
        pupil = next(pool, None)
        if pupil is None:
            break
        s = structures.get(pupil.get("ELEVE_ID"))
        div = s.find("STRUCTURE[TYPE_STRUCTURE='D']/CODE_STRUCTURE") if s is not None else None
        current = div.text if div is not None else ""
        others = sorted(divisions.get(pupil.findtext("CODE_MEF", ""), set()) - {current or ""})
        if div is not None and others:
            div.text = rng.choice(others)
            done["class"] += 1
    for _ in range(todo["departure"]):
        pupil = next(pool, None)
        if pupil is None:
            break
        left = export.date() - dt.timedelta(days=3)
        anchor = pupil.find("DATE_ENTREE")
        if anchor is None:
            anchor = pupil.find("CODE_STATUT")
        sortie = etree.Element("DATE_SORTIE")
        sortie.text = left.strftime("%d/%m/%Y")
        motif = etree.Element("CODE_MOTIF_SORTIE")
        motif.text = "02"
        if anchor is not None:
            anchor.addnext(sortie)
            sortie.addnext(motif)
        else:
            pupil.append(sortie)
            pupil.append(motif)
        done["departure"] += 1

    eleves_parent = eleves.find("DONNEES/ELEVES")
    structures_parent = eleves.find("DONNEES/STRUCTURES")
    persons_parent = resp.find("DONNEES/PERSONNES")
    links_parent = resp.find("DONNEES/RESPONSABLES")
    next_eleve = max((int(p.get("ELEVE_ID", "0")) for p in pupils), default=100000) + 10
    next_person = max((int(p.get("PERSONNE_ID", "0")) for p in persons), default=100000) + 10
    by_id = {p.get("PERSONNE_ID"): p for p in persons}
    for _ in range(todo["arrival"]):
        if not pupils or eleves_parent is None or persons_parent is None or links_parent is None:
            break
        model = rng.choice(pupils)
        old_id = model.get("ELEVE_ID", "")
        model_links = [x for x in links.get(old_id, []) if by_id.get(x.findtext("PERSONNE_ID"))
                       is not None]
        if not model_links or old_id not in structures or structures_parent is None:
            continue
        next_eleve += 1
        new = copy.deepcopy(model)
        new.set("ELEVE_ID", str(next_eleve))
        last = rng.choice(NAMES).upper()
        _set(new, "NOM_DE_FAMILLE", last)
        _set(new, "PRENOM", rng.choice(FIRST))
        letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
        _set(new, "ID_NATIONAL", f"{rng.randrange(10**9):09d}{letters}")
        _set(new, "ELENOET", str(90000 + next_eleve % 10000))
        for tag in ("NOM_USAGE", "PRENOM2", "MEL", "DATE_SORTIE", "CODE_MOTIF_SORTIE"):
            for el in new.findall(tag):
                new.remove(el)
        eleves_parent.append(new)
        st = copy.deepcopy(structures[old_id])
        st.set("ELEVE_ID", str(next_eleve))
        structures_parent.append(st)
        next_person += 1
        guardian = copy.deepcopy(by_id[model_links[0].findtext("PERSONNE_ID")])
        guardian.set("PERSONNE_ID", str(next_person))
        _set(guardian, "NOM_DE_FAMILLE", last)
        _set(guardian, "PRENOM", rng.choice(("Sophie", "Karim", "Hélène", "Jürgen")))
        for el in guardian.findall("NOM_USAGE"):
            guardian.remove(el)
        if guardian.find("MEL") is not None:
            _set(guardian, "MEL", f"arrivee{next_person}@example.org")
        persons_parent.append(guardian)
        link = copy.deepcopy(model_links[0])
        _set(link, "ELEVE_ID", str(next_eleve))
        _set(link, "PERSONNE_ID", str(next_person))
        links_parent.append(link)
        done["arrival"] += 1
    rng.shuffle(persons)
    for p in persons[: todo["guardian"]]:
        if p.find("MEL") is not None and rng.random() < 0.6:
            _set(p, "MEL", f"nouvelle.adresse{p.get('PERSONNE_ID')}@example.org")
        else:
            _set(p, "NOM_DE_FAMILLE", rng.choice(NAMES).upper())
        done["guardian"] += 1
    _write(folder / ELEVES[0], e_info, eleves)
    _write(folder / RESPONSABLES[0], r_info, resp)
    done["people"] = people
    return done


def mutate_landing(root: Path, share: float = 0.02, seed: int = 1) -> Counter[str]:
    """Mutate every school folder under `root/<academy>/<UAI>/`; total counts per kind."""
    rng = random.Random(seed)
    total: Counter[str] = Counter()
    for folder in sorted(p.parent for p in root.glob(f"*/*/{ELEVES[0]}")):
        total.update(mutate_school(folder, rng, share))
    return total
