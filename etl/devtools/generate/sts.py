"""The STS-web (STS_EDT) writer: a school's staff, services and head teachers."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import IO

from etl.devtools.generate.catalog import (
    _COLLEGE_CORE,
    _LATIN,
    _LYCEE_CORE,
    _SUBJECTS,
    _AcademyInfo,
)
from etl.devtools.generate.records import _School, _SchoolDraws, _Teacher
from etl.devtools.generate.xmltext import _attr, _esc, _prolog, _text, _upper


def _assign_services(
    rng: random.Random, school: _School, staff: Sequence[_Teacher]
) -> tuple[dict[str, list[tuple[str, int]]], dict[int, list[str]]]:
    """Teacher of each (structure, subject) and head teachers.

    Returns services per structure code [(subject, teacher index)] and PROF_PRINC divisions per
    teacher index.
    """
    teaching = [t for t in school.teachers if staff[t].function == "ENS"]
    by_subject: dict[str, list[int]] = {}
    for t in teaching:
        by_subject.setdefault(staff[t].subject, []).append(t)
    counters: dict[str, int] = {}

    def pick(subject: str) -> int:
        pool = (
            by_subject.get(subject)
            or by_subject.get("020700" if subject == _LATIN else "", [])
            or teaching
        )
        n = counters.get(subject, rng.randrange(len(pool)))
        counters[subject] = n + 1
        return pool[n % len(pool)]

    core = _COLLEGE_CORE if school.college else _LYCEE_CORE
    services: dict[str, list[tuple[str, int]]] = {}
    head: dict[int, list[str]] = {}
    for code, _level in school.divisions:
        services[code] = [(subject, pick(subject)) for subject in core]
        if rng.random() < 0.9:
            candidates = [t for _s, t in services[code] if t not in head]
            if candidates:
                head.setdefault(rng.choice(candidates), []).append(code)
    for group in school.groups:
        services[group.code] = [(group.subject, pick(group.subject))]
    return services, head


def _write_sts(
    binary: IO[bytes],
    info: _AcademyInfo,
    school: _School,
    staff: Sequence[_Teacher],
    draws: _SchoolDraws,
    year: int,
) -> None:
    sts_ids, services, head = draws.sts_ids, draws.services, draws.head
    label = "COLLEGE" if school.college else "LYCEE GENERAL ET TECHNOLOGIQUE"
    with _text(binary, school.sts_encoding) as out:
        out.write(
            f"{_prolog(school.sts_encoding)}<STS_EDT>\n  <PARAMETRES>\n"
            f'    <UAJ CODE="{school.uai}"><ACADEMIE><CODE>{info.code}</CODE>'
            f"<LIBELLE>{info.label}</LIBELLE></ACADEMIE><DENOM_PRINC>{label}</DENOM_PRINC>"
            f"<DENOM_COMPL>{_esc(school.name)}</DENOM_COMPL></UAJ>\n"
            f'    <ANNEE_SCOLAIRE ANNEE="{year}"><DATE_DEBUT>{year}-09-01</DATE_DEBUT>'
            f"<DATE_FIN>{year + 1}-07-04</DATE_FIN></ANNEE_SCOLAIRE>\n"
            "  </PARAMETRES>\n  <NOMENCLATURES>\n    <MATIERES>\n"
        )
        for code in school.subjects:
            s = _SUBJECTS[code]
            out.write(
                f'      <MATIERE CODE="{s.code}"><CODE_GESTION>{_esc(s.gestion)}</CODE_GESTION>'
                f"<LIBELLE_COURT>{_esc(s.short)}</LIBELLE_COURT>"
                f"<LIBELLE_LONG>{_esc(s.long)}</LIBELLE_LONG>"
                f"<LIBELLE_EDITION>{_esc(s.short)}</LIBELLE_EDITION></MATIERE>\n"
            )
        out.write("    </MATIERES>\n    <MEFS>\n")
        for level in school.levels:
            out.write(
                f'      <MEF CODE="{level.mef}"><LIBELLE_COURT>{_esc(level.formation)}'
                f"</LIBELLE_COURT><LIBELLE_LONG>{_esc(level.label)}</LIBELLE_LONG></MEF>\n"
            )
        out.write("    </MEFS>\n  </NOMENCLATURES>\n  <DONNEES>\n    <INDIVIDUS>\n")
        for index in school.teachers:
            t = staff[index]
            rows = [
                f'      <INDIVIDU ID="{sts_ids[index]}" TYPE="epp">'
                f"<SEXE>{t.sex}</SEXE><CIVILITE>{t.sex}</CIVILITE>"
                f"<NOM_USAGE>{_esc(_upper(t.last))}</NOM_USAGE>"
                f"<NOM_PATRONYMIQUE>{_esc(_upper(t.birth_name))}</NOM_PATRONYMIQUE>"
                f"<PRENOM>{_esc(t.first)}</PRENOM>"
                f"<DATE_NAISSANCE>{t.birth.isoformat()}</DATE_NAISSANCE>"
                f"<GRADE>{t.grade}</GRADE><FONCTION>{t.function}</FONCTION>\n"
            ]
            if index in head:
                rows.append(
                    "        <PROFS_PRINC>"
                    + "".join(
                        f"<PROF_PRINC><CODE_STRUCTURE>{_esc(c)}</CODE_STRUCTURE></PROF_PRINC>"
                        for c in head[index]
                    )
                    + "</PROFS_PRINC>\n"
                )
            if t.subject:
                s = _SUBJECTS[t.subject]
                rows.append(
                    f'        <DISCIPLINES><DISCIPLINE CODE="{s.discipline}">'
                    f"<LIBELLE_COURT>{_esc(s.discipline_label)}</LIBELLE_COURT>"
                    "<NB_HEURES>18.00</NB_HEURES></DISCIPLINE></DISCIPLINES>\n"
                )
            rows.append("      </INDIVIDU>\n")
            out.write("".join(rows))
        out.write("    </INDIVIDUS>\n    <STRUCTURE>\n      <DIVISIONS>\n")

        def services_xml(code: str) -> str:
            parts = ["          <SERVICES>"]
            for subject, teacher in services[code]:
                mode = "CG"
                parts.append(
                    f'<SERVICE CODE_MATIERE="{subject}" CODE_MOD_COURS="{mode}"><ENSEIGNANTS>'
                    f'<ENSEIGNANT ID="{sts_ids[teacher]}" TYPE="epp"/></ENSEIGNANTS></SERVICE>'
                )
            parts.append("</SERVICES>\n")
            return "".join(parts)

        for code, level in school.divisions:
            out.write(
                f'        <DIVISION CODE="{_attr(code)}"><LIBELLE_LONG>{_esc(level.label)} '
                f"{_esc(code)}</LIBELLE_LONG>\n"
                f'          <MEFS_APPARTENANCE><MEF_APPARTENANCE CODE="{level.mef}"/>'
                f"</MEFS_APPARTENANCE>\n{services_xml(code)}        </DIVISION>\n"
            )
        out.write("      </DIVISIONS>\n      <GROUPES>\n")
        for group in school.groups:
            links = "".join(f'<DIVISION_APPARTENANCE CODE="{_attr(d)}"/>' for d in group.divisions)
            out.write(
                f'        <GROUPE CODE="{_attr(group.code)}"><LIBELLE_LONG>'
                f"{_esc(group.label)}</LIBELLE_LONG>\n"
                f"          <DIVISIONS_APPARTENANCE>{links}</DIVISIONS_APPARTENANCE>\n"
                f"{services_xml(group.code)}        </GROUPE>\n"
            )
        out.write("      </GROUPES>\n    </STRUCTURE>\n  </DONNEES>\n</STS_EDT>\n")
