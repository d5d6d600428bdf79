"""The academies, MEF levels and subjects the exports name (codes as SIECLE and STS use them)."""

from __future__ import annotations

from dataclasses import dataclass

from etl.config import load_academies


@dataclass(frozen=True)
class _AcademyInfo:
    code: str  # STS academy code
    label: str
    departments: tuple[str, ...]


#: per academy its STS code and label; its departments are etl/academies.toml's
ACADEMIES: dict[str, _AcademyInfo] = {
    code: _AcademyInfo(sts_code, label, load_academies()[code].departments)
    for code, (sts_code, label) in {"ac-nancy-metz": ("12", "NANCY-METZ"),
                                    "ac-reims": ("19", "REIMS"),
                                    "ac-strasbourg": ("15", "STRASBOURG")}.items()}
ACADEMY_DEPARTMENTS: dict[str, tuple[str, ...]] = {k: v.departments for k, v in ACADEMIES.items()}


@dataclass(frozen=True)
class _Level:
    mef: str
    formation: str
    label: str  # LIBELLE_LONG
    edition: str  # LIBELLE_EDITION
    mefstat: str
    div_prefix: str  # division code prefix: "6", "2NDE", "1G", "TG"
    grp_prefix: str  # group code prefix: "6", "2", "1", "T"
    age: int  # usual age on 31 December of the school year's first year
    lv2: bool
    specialities: tuple[str, ...] = ()  # subject codes taught as speciality groups


# fmt: off
_COLLEGE_LEVELS = (
    _Level("10010012110", "6EME", "6EME", "6ème", "21110010012", "6", "6", 11, False),
    _Level("10110001110", "5G", "5EME", "5ème", "21120010001", "5", "5", 12, True),
    _Level("10210001110", "4G", "4EME", "4ème", "21150010001", "4", "4", 13, True),
    _Level("10310019110", "3EME", "3EME", "3ème", "21160010019", "3", "3", 14, True),
)
_LYCEE_LEVELS = (
    _Level("20010018110", "2NDE GT", "2NDE GENERALE ET TECHNOLOGIQUE", "2nde générale et tech.",
           "23110010018", "2NDE", "2", 15, True),
    _Level("20111010110", "1ERE GENERALE", "1ERE GENERALE", "1ère générale", "23210010101",
           "1G", "1", 16, True, ("061300", "062900", "076700")),
    _Level("20211010110", "TLE GENERALE", "TERMINALE GENERALE", "Terminale générale",
           "23310010101", "TG", "T", 17, True, ("061300", "062900", "076700")),
)


@dataclass(frozen=True)
class _Subject:
    code: str  # CODE_MATIERE, 6 digits
    gestion: str
    short: str
    long: str
    discipline: str  # STS discipline de poste of the teachers who teach it
    discipline_label: str


_SUBJECTS: dict[str, _Subject] = {
    s.code: s
    for s in (
        _Subject("020700", "FRANC", "FRANCAIS", "FRANCAIS", "L0202", "LETTRES MODERNES"),
        _Subject("061300", "MATHS", "MATHEMATIQUES", "MATHEMATIQUES", "L1300", "MATHEMATIQUES"),
        _Subject("043100", "HIGEO", "HIST.-GEOGRAPHIE", "HISTOIRE-GEOGRAPHIE", "L1000",
                 "HISTOIRE GEOGRAPHIE"),
        _Subject("030201", "AGL1", "ANGLAIS LV1", "ANGLAIS LV1", "L0429", "ANGLAIS"),
        _Subject("062900", "SVT", "SC. VIE & TERRE", "SCIENCES DE LA VIE ET DE LA TERRE",
                 "L1600", "SCIENCES VIE & TERRE"),
        _Subject("061800", "PH-CH", "PHYSIQUE-CHIMIE", "PHYSIQUE-CHIMIE", "L1500",
                 "PHYSIQUE CHIMIE"),
        _Subject("100100", "EPS", "ED.PHYSIQUE & SPORT.", "EDUCATION PHYSIQUE ET SPORTIVE",
                 "L1900", "EDUCATION PHYSIQUE ET SPORTIVE"),
        _Subject("070100", "TECHN", "TECHNOLOGIE", "TECHNOLOGIE", "L1400", "TECHNOLOGIE"),
        _Subject("090100", "A-PLA", "ARTS PLASTIQUES", "ARTS PLASTIQUES", "L1800",
                 "ARTS PLASTIQUES"),
        _Subject("090200", "EDMUS", "EDUCATION MUSICALE", "EDUCATION MUSICALE", "L1700",
                 "EDUCATION MUSICALE"),
        _Subject("076700", "SES", "SC. ECO. & SOCIALES", "SCIENCES ECONOMIQUES ET SOCIALES",
                 "L8012", "SCIENCES ECONOMIQUES ET SOCIALES"),
        _Subject("030602", "ESP2", "ESPAGNOL LV2", "ESPAGNOL LV2", "L0426", "ESPAGNOL"),
        _Subject("030102", "ALL2", "ALLEMAND LV2", "ALLEMAND LV2", "L0422", "ALLEMAND"),
        _Subject("020300", "LCALA", "LCA LATIN", "LANGUES ET CULTURES DE L'ANTIQUITE LATIN",
                 "L0201", "LETTRES CLASSIQUES"),
    )
}
_COLLEGE_CORE = ("020700", "061300", "043100", "030201", "062900", "061800", "100100",
                 "070100", "090100", "090200")
_LYCEE_CORE = ("020700", "061300", "043100", "030201", "062900", "061800", "100100", "076700")
_LV2 = (("ESP", "030602", "ESPAGNOL"), ("ALL", "030102", "ALLEMAND"))
_LATIN = "020300"
# fmt: on
