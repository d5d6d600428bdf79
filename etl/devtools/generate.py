"""Deterministic synthetic SIECLE (BEE) and STS-web exports for one academy.

Why: real exports carry personal data and cannot be committed or shared, yet the readers, the
sync and the benchmarks need academy-sized inputs with the awkward cases real files have
(accents, ligatures, apostrophes, homonyms, pupils without INE, guardians and teachers present
in two schools, both responsables conventions, ISO-8859-15 and UTF-8). Same seed, same bytes.

The academy is planned first with cheap records (families, teachers, school layouts), so that
cross-school links exist; then each school's files are streamed out, never built as trees.
"""

from __future__ import annotations

import datetime
import io
import math
import random
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from etl.config import load_academies
from etl.discover.landing import uai_check_letter

__all__ = [
    "ACADEMY_DEPARTMENTS",
    "GenerateSummary",
    "RegionSummary",
    "generate_academy",
    "generate_pupils_file",
    "generate_region",
    "region_school_counts",
    "uai_check_letter",
]

ISO = "ISO-8859-15"
UTF8 = "UTF-8"
_CODECS = {ISO: "iso8859_15", UTF8: "utf-8"}
CLASS_SIZE = 28  # divisions are cut so that they hold 25-30 pupils at most


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

# Share of Germanic surnames per department (Alsace, Moselle).
_GERMAN_SHARE = {"067": 0.4, "068": 0.35, "057": 0.2}

# fmt: off
# (postcode, INSEE code, postal label) per department.
_COMMUNES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "054": (("54000", "54395", "NANCY"), ("54300", "54329", "LUNEVILLE")),
    "055": (("55100", "55545", "VERDUN"), ("55000", "55029", "BAR LE DUC")),
    "057": (("57000", "57463", "METZ"), ("57100", "57672", "THIONVILLE"),
            ("57200", "57631", "SARREGUEMINES")),
    "088": (("88000", "88160", "EPINAL"), ("88100", "88413", "ST DIE DES VOSGES")),
    "008": (("08000", "08105", "CHARLEVILLE MEZIERES"), ("08200", "08409", "SEDAN")),
    "010": (("10000", "10387", "TROYES"), ("10100", "10333", "ROMILLY SUR SEINE")),
    "051": (("51100", "51454", "REIMS"), ("51000", "51108", "CHALONS EN CHAMPAGNE"),
            ("51200", "51230", "EPERNAY")),
    "052": (("52000", "52121", "CHAUMONT"), ("52100", "52448", "ST DIZIER")),
    "067": (("67000", "67482", "STRASBOURG"), ("67500", "67180", "HAGUENAU"),
            ("67600", "67462", "SELESTAT")),
    "068": (("68100", "68224", "MULHOUSE"), ("68000", "68066", "COLMAR")),
}
_STREETS = (
    "RUE DE LA REPUBLIQUE", "AVENUE FOCH", "RUE DU GENERAL LECLERC", "RUE DES JARDINS",
    "IMPASSE DES LILAS", "RUE JEANNE D'ARC", "QUAI DES BATELIERS", "RUE DE L'EGLISE",
    "ALLEE DES TILLEULS", "RUE PASTEUR", "RUE VICTOR HUGO", "CHEMIN DU MOULIN",
    "RUE DES VIGNES", "PLACE DE LA GARE", "RUE SAINT-NICOLAS", "ROUTE DE COLMAR",
)
_SCHOOL_NAMES = (
    "JEAN MOULIN", "VICTOR HUGO", "JULES FERRY", "LA FONTAINE", "GEORGES BRASSENS",
    "JACQUES PREVERT", "MARIE CURIE", "PIERRE ET MARIE CURIE", "LOUIS PASTEUR", "CAMILLE CLAUDEL",
    "JEANNE D'ARC", "ALBERT SCHWEITZER", "CHARLES DE GAULLE", "ROBERT SCHUMAN", "PAUL VERLAINE",
    "ARTHUR RIMBAUD", "GEORGES DE LA TOUR", "STANISLAS", "JEAN ZAY", "SIMONE VEIL",
)

# Surnames in display case; SIECLE upper-cases them.
_SURNAMES_FR = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
    "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier", "Chevalier", "François",
    "Legrand", "Gauthier", "Perrin", "Robin", "Clément", "Morin", "Nicolas", "Henry", "Mathieu",
    "Masson", "Marchand", "Duval", "Denis", "Lemaire", "Noël", "Dufour", "Meunier", "Brun",
    "Giraud", "Joly", "Rivière", "Lucas", "Brunet", "Gaillard", "Barbier", "Arnaud", "Gérard",
    "Roche", "Renard", "Colin", "Vidal", "Caron", "Picard", "Roger", "Fabre", "Aubert",
    "Lemoine", "Renaud", "Dumas", "Lacroix", "Olivier", "Bourgeois", "Benoît", "Leclerc",
    "Rolland", "Guillaume", "Lecomte", "Hubert", "Carpentier", "Moulin", "Deschamps", "Huet",
    "Fleury", "Poirier", "Aubry", "Guyot", "Carré", "Ménard", "Maillard", "Bailly", "Hervé",
    "Léger", "Bouvier", "Prévost", "Perrot", "Germain", "Breton", "Rémy", "Pelletier",
    "Lévêque", "Barré", "Marchal", "Humbert", "Barthélemy", "Lemaître", "Maréchal", "Bénard",
    "Étienne", "Lecœur", "Cœurdevey", "Le Goff", "Le Gall", "Le Roux", "de La Fontaine",
    "de Villiers", "Du Pont", "de Saint-Exupéry", "N'Diaye", "D'Angelo", "D'Almeida", "O'Neill",
    "Diallo", "Traoré", "Nguyen", "Benali", "Haddad", "Yilmaz", "Çelik", "Öztürk", "Da Silva",
    "Dos Santos", "Ferreira", "Martínez", "Garcia", "Lopez", "Rodriguez", "Mammeri", "Belkacem",
    "Saint-Martin", "Dupont-Aignan", "Pierre-Louis", "Adam", "Antoine", "Aubin", "Bailly",
    "Barre", "Baudry", "Berger", "Bertin", "Besson", "Blanchard", "Bonnin", "Bouchard",
    "Boucher", "Bouchet", "Boulanger", "Bourdon", "Bousquet", "Briand", "Brunel", "Camus",
    "Carlier", "Chauvin", "Charpentier", "Chevallier", "Collet", "Collin", "Cordier", "Cousin",
    "Daniel", "Delaunay", "Delmas", "Descamps", "Devaux", "Drouet", "Dumont", "Dupuis",
    "Duris", "Ferrand", "Fleurot", "Fortin", "Gaudin", "Gilbert", "Gillet", "Girault", "Godard",
    "Grand", "Gros", "Guichard", "Guillot", "Hamon", "Hébert", "Hoarau", "Jacob", "Jacquet",
    "Jourdan", "Julien", "Labbé", "Laine", "Lamy", "Langlois", "Laporte", "Lebon", "Lebrun",
    "Leconte", "Lejeune", "Lemonnier", "Leroux", "Lesage", "Lévy", "Loiseau", "Maillot",
    "Mallet", "Marty", "Maurice", "Michaud", "Millet", "Monnier", "Navarro", "Paris", "Pasquier",
    "Payet", "Pelé", "Perret", "Philippe", "Pichon", "Poulain", "Pruvost", "Raynaud", "Riviere",
    "Royer", "Salmon", "Schmitt", "Tessier", "Thiébaut", "Thiery", "Vasseur", "Verdier",
    "Weiss", "Mangin", "Thouvenin", "Colnot", "Ménétrier", "Grandjean", "Didierjean", "Jacquot",
)
_SURNAMES_DE = (
    "Müller", "Schmitt", "Schneider", "Meyer", "Weber", "Fischer", "Wagner", "Becker",
    "Schäfer", "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz",
    "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Krause", "Lehmann",
    "Huber", "Kaiser", "Fuchs", "Groß", "Jäger", "Vogt", "Haas", "Keller", "Roth", "Beck",
    "Baumann", "Böhm", "Kraus", "Schumacher", "Krämer", "Vogel", "Stein", "Jung", "Sommer",
    "Seiler", "Heitz", "Kuntz", "Hoffmann", "Bürckel", "Wendling", "Ehrhart", "Schaeffer",
    "Oberlé", "Kieffer", "Kientz", "Grosskopf", "Van der Berg", "Van den Bossche", "Strauß",
    "Weiß", "Oßwald",
)
_BOYS = (
    "Lucas", "Hugo", "Louis", "Gabriel", "Léo", "Raphaël", "Arthur", "Jules", "Adam", "Maël",
    "Noé", "Nathan", "Théo", "Tom", "Timéo", "Ethan", "Sacha", "Paul", "Mathis", "Noah",
    "Baptiste", "Enzo", "Clément", "Maxime", "Antoine", "Jean-Marie", "Jean-Baptiste",
    "Pierre-Louis", "Loïc", "Anaël", "Gaëtan", "Rémi", "Valentin", "Yanis", "Mohamed",
    "Ibrahim", "Kévin", "Thibaut", "Côme", "Eliott", "Grégoire", "Émile", "Étienne", "Noël",
    "Joël", "Lukas", "Matthias", "Jonas", "Félix", "Aloïs", "Mathéo", "Ilyès", "Aaron", "Alexis",
    "Amir", "Axel", "Bastien", "Benjamin", "Corentin", "Dylan", "Evan", "Gabin", "Gaspard",
    "Hamza", "Isaac", "Kylian", "Lenny", "Liam", "Loris", "Marius", "Martin", "Milo", "Nolan",
    "Oscar", "Quentin", "Robin", "Samuel", "Simon", "Tiago", "Victor", "Yann", "Zacharie",
)
_GIRLS = (
    "Emma", "Jade", "Louise", "Alice", "Chloé", "Lina", "Léa", "Rose", "Anna", "Mila", "Inès",
    "Ambre", "Julia", "Zoé", "Léna", "Manon", "Camille", "Lou", "Éva", "Agathe", "Maëlys",
    "Maïwenn", "Anaïs", "Héloïse", "Clémence", "Noémie", "Océane", "Gaëlle", "Marie-Hélène",
    "Anne-Sophie", "Marie-Ève", "Salomé", "Sarah", "Aïcha", "Yasmine", "Myriam", "Zoë",
    "Chloë", "Lætitia", "Bénédicte", "Ségolène", "Jeanne", "Hélène", "Lilou", "Romy", "Léonie",
    "Adèle", "Apolline", "Capucine", "Charlotte", "Clara", "Constance", "Elsa", "Emy", "Iris",
    "Jasmine", "Juliette", "Justine", "Lana", "Lola", "Lucie", "Margaux", "Marion", "Mathilde",
    "Maya", "Nina", "Nour", "Pauline", "Romane", "Sofia", "Victoire", "Violette", "Yaëlle",
)
_MEN = (
    "Jean-Marie", "Benoît", "Jérôme", "François", "Stéphane", "Frédéric", "Sébastien",
    "Nicolas", "Olivier", "Laurent", "Christophe", "Thierry", "Pascal", "Éric", "Hervé", "Joël",
    "Loïc", "Mickaël", "Rémi", "Aurélien", "Grégoire", "Cédric", "Jean-François", "Jean-Luc",
    "Karim", "Mehdi", "Jürgen", "Hans-Peter", "Matthias", "David", "Julien", "Guillaume",
    "Romain", "Jean-Noël", "Gérard", "José",
)
_WOMEN = (
    "Marie-Hélène", "Anne-Sophie", "Françoise", "Cécile", "Mélanie", "Sandrine", "Nathalie",
    "Isabelle", "Véronique", "Sophie", "Aurélie", "Élodie", "Émilie", "Lætitia", "Béatrice",
    "Gwenaëlle", "Ségolène", "Bénédicte", "Hélène", "Fatima", "Aïcha", "Myriam", "Céline",
    "Stéphanie", "Virginie", "Delphine", "Karine", "Séverine", "Maryline", "Noëlle",
    "Marie-Ève", "Agnès", "Christèle", "Zoé", "Maïté", "Chloé",
)
_MAIL_DOMAINS = (
    "gmail.com", "orange.fr", "free.fr", "laposte.net", "hotmail.fr", "yahoo.fr", "sfr.fr",
    "wanadoo.fr", "outlook.fr", "icloud.com",
)
_PROFESSIONS = (
    "10", "21", "22", "23", "31", "33", "34", "35", "37", "38", "42", "43", "44", "45", "46",
    "47", "48", "52", "53", "54", "55", "56", "61", "66", "69", "71", "72", "73", "76", "81",
    "82", "99",
)
_REGIMES = ("2", "21", "24", "24", "24", "29", "0", "3")
# fmt: on


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


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def _upper(name: str) -> str:
    """Upper-case as SIECLE stores names; keeps ß, which has no ISO-8859-15 capital."""
    return "".join(c if c == "ß" else c.upper() for c in name)


_FOLD = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"})


def _ascii_slug(name: str) -> str:
    """Lower-case ASCII form of a name for e-mail local parts."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLD))
    kept = [c for c in decomposed.lower() if c.isascii() and (c.isalnum() or c == "-")]
    return "".join(kept)


def _esc(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _attr(text: str) -> str:
    return _esc(text).replace('"', "&quot;")


def _fr(d: datetime.date) -> str:
    return f"{d.day:02d}/{d.month:02d}/{d.year:04d}"


def _random_date(rng: random.Random, first: datetime.date, last: datetime.date) -> datetime.date:
    return first + datetime.timedelta(days=rng.randint(0, (last - first).days))


def _division_code(level: _Level, index: int, college: bool) -> str:
    if college and index < 26:
        return f"{level.div_prefix}{chr(ord('A') + index)}"
    return f"{level.div_prefix}{index + 1}"


def _half_group_code(division: str, number: int) -> str | None:
    for code in (f"_{division}_G{number}", f"{division}G{number}"):
        if len(code) <= 8:
            return code
    return None


def _prolog(encoding: str) -> str:
    return f'<?xml version="1.0" encoding="{encoding}"?>\n'


def _siecle_header(root: str, version: str, uai: str, year: int, when: datetime.datetime) -> str:
    return (
        f'{_prolog(ISO)}<{root} VERSION="{version}">\n'
        "  <PARAMETRES>\n"
        f"    <UAJ>{uai}</UAJ>\n"
        f"    <ANNEE_SCOLAIRE>{year}</ANNEE_SCOLAIRE>\n"
        f"    <DATE_EXPORT>{_fr(when.date())}</DATE_EXPORT>\n"
        f"    <HORODATAGE>{_fr(when.date())} {when:%H:%M:%S}</HORODATAGE>\n"
        "  </PARAMETRES>\n"
        "  <DONNEES>\n"
    )


def _leaf(out: list[str], indent: str, tag: str, value: str | None) -> None:
    """Append `<tag>value</tag>`; None means NULL (no element), "" an empty element."""
    if value is not None:
        out.append(f"{indent}<{tag}>{_esc(value)}</{tag}>\n")


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True)
class _Guardian:
    civility: str  # LC_CIVILITE: MME or M.
    last: str
    usage: str | None
    first: str
    mobile: str | None
    home: str | None
    email: str | None  # None: absent element, "": empty element
    profession: str
    parente: str
    legal: bool
    pays: bool
    hosts: bool
    priority: bool
    address: tuple[str, str, str, str]  # line1, postcode, insee, postal label


@dataclass(slots=True)
class _Pupil:
    last: str
    first: str
    sex: int
    birth: datetime.date
    first2: str | None = None
    usage: str | None = None
    ine: str | None = None
    regime: str = "24"
    mel: str | None = None
    left: datetime.date | None = None
    entry: datetime.date | None = None
    level: int = 0
    school: int = 0
    family: int = -1
    eleve_id: int = 0
    elenoet: int = 0
    division: str = ""
    groups: tuple[str, ...] = ()
    previous: tuple[str, str] | None = None  # (MEF, structure) of last year, same school


@dataclass(slots=True)
class _Family:
    guardians: list[_Guardian]
    pupils: list[_Pupil] = field(default_factory=list)


@dataclass(slots=True)
class _Teacher:
    last: str
    birth_name: str
    first: str
    sex: int
    birth: datetime.date
    grade: str
    function: str  # ENS, DIR, EDU, DOC
    subject: str  # CODE_MATIERE of the subject taught ("" for non-teachers)


@dataclass(slots=True)
class _Group:
    code: str
    label: str
    divisions: tuple[str, ...]
    subject: str
    mode: str  # CODE_MOD_COURS


@dataclass(slots=True)
class _School:
    index: int
    uai: str
    dept: str
    college: bool
    name: str
    levels: tuple[_Level, ...]
    resp_legal: bool  # older RESP_LEGAL convention
    sts_encoding: str
    level_counts: list[int] = field(default_factory=list)
    divisions: list[tuple[str, _Level]] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    pupils: list[_Pupil] = field(default_factory=list)
    teachers: list[int] = field(default_factory=list)  # indexes in the academy teacher list

    @property
    def subjects(self) -> tuple[str, ...]:
        core = _COLLEGE_CORE if self.college else _LYCEE_CORE
        return (*core, "030602", "030102", *((_LATIN,) if self.college else ()))


@dataclass
class GenerateSummary:
    """What `generate_academy` wrote.

    Counts are rows in the files: `guardians` counts PERSONNE elements and `teachers` counts
    FONCTION=ENS individuals over all schools, so a guardian or teacher present in two schools
    is counted twice (as the files list them twice).
    """

    academy: str
    schools: list[str]
    pupils: int
    guardians: int
    teachers: int
    files: list[Path]


# ---------------------------------------------------------------------------------------------
# Name and person factories


class _People:
    """Draws names, dates and contacts from one random stream for one department mix."""

    def __init__(self, rng: random.Random, german_share: float) -> None:
        self.rng = rng
        self.german_share = german_share

    def surname(self) -> str:
        pool = _SURNAMES_DE if self.rng.random() < self.german_share else _SURNAMES_FR
        return self.rng.choice(pool)

    def child_first(self, sex: int) -> str:
        return self.rng.choice(_BOYS if sex == 1 else _GIRLS)

    def adult_first(self, sex: int) -> str:
        return self.rng.choice(_MEN if sex == 1 else _WOMEN)

    def mobile(self) -> str:
        return f"+33{self.rng.choice('67')}{self.rng.randrange(10**8):08d}"

    def email(self, first: str, last: str) -> str:
        rng = self.rng
        style = rng.randrange(3)
        f, ln = _ascii_slug(first), _ascii_slug(last)
        local = (
            f"{f}.{ln}"
            if style == 0
            else f"{ln}{rng.randrange(1, 99)}"
            if style == 1
            else (f"{f[:1]}{ln}{rng.randrange(1000, 99999)}")
        )
        return f"{local}@{rng.choice(_MAIL_DOMAINS)}"

    def address(self, dept: str) -> tuple[str, str, str, str]:
        rng = self.rng
        postcode, insee, label = rng.choice(_COMMUNES[dept])
        return f"{rng.randint(1, 140)} {rng.choice(_STREETS)}", postcode, insee, label

    def ine(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
            return f"{rng.randrange(10**9):09d}{letters}"
        return f"{rng.randrange(10**10):010d}{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}"

    def pupil(
        self,
        last: str,
        level: _Level,
        level_index: int,
        college: bool,
        year: int,
        export: datetime.date,
    ) -> _Pupil:
        """One pupil of `level`; the ~3 % without INE and ~2 % who left are drawn here."""
        rng = self.rng
        sex = 1 if rng.random() < 0.5 else 2
        born_year = year - level.age - (1 if rng.random() < 0.08 else 0)
        birth = _random_date(rng, datetime.date(born_year, 1, 1), datetime.date(born_year, 12, 31))
        pupil = _Pupil(last=last, first=self.child_first(sex), sex=sex, birth=birth)
        pupil.level = level_index
        if rng.random() < 0.4:
            pupil.first2 = self.child_first(sex)
        if rng.random() < 0.03:
            pupil.usage = f"{last}-{self.surname()}"
        if rng.random() >= 0.03:
            pupil.ine = self.ine()
        pupil.regime = rng.choice(_REGIMES)
        draw = rng.random()
        mail_share = 0.1 if college else 0.4
        if draw < mail_share:
            pupil.mel = self.email(pupil.first, last)
        elif draw < mail_share + 0.25:
            pupil.mel = ""
        # entry and leaving dates hang on the school year, not on the export date: the same
        # school exported on another day describes the same pupils (a no-change night)
        census = min(export, datetime.date(year, 10, 1))
        start = datetime.date(year - (level_index if rng.random() < 0.85 else 0), 9, 1)
        pupil.entry = start if start < census else census
        if rng.random() < 0.02:
            pupil.left = census - datetime.timedelta(days=rng.randint(2, 25))
        return pupil


# ---------------------------------------------------------------------------------------------
# Academy planning


def _plan_schools(rng: random.Random, info: _AcademyInfo, count: int) -> list[_School]:
    used: set[str] = set()
    schools: list[_School] = []
    for index in range(count):
        schools.append(_new_school(rng, info, index, index % 3 != 1, used))
    return schools


def _new_school(rng: random.Random, info: _AcademyInfo, index: int, college: bool,
                used: set[str]) -> _School:
    """A school with a fresh valid UAI in the academy's departments (dealt round-robin)."""
    dept = info.departments[index % len(info.departments)]
    while True:
        first7 = f"{dept}{rng.randrange(10000):04d}"
        if first7 not in used:
            used.add(first7)
            break
    return _School(
        index=index,
        uai=first7 + uai_check_letter(first7),
        dept=dept,
        college=college,
        name=rng.choice(_SCHOOL_NAMES),
        levels=_COLLEGE_LEVELS if college else _LYCEE_LEVELS,
        resp_legal=index % 3 == 2,
        sts_encoding=ISO if index % 2 == 1 else UTF8,
    )


def _make_guardians(people: _People, surname: str, dept: str) -> tuple[list[_Guardian], str]:
    """Guardians of one family and the children's surname (~1.65 legal guardians per family)."""
    rng = people.rng
    address = people.address(dept)

    def person(
        sex: int,
        last: str,
        parente: str,
        legal: bool,
        usage: str | None = None,
        addr: tuple[str, str, str, str] = address,
    ) -> _Guardian:
        first = people.adult_first(sex)
        draw = rng.random()
        email = people.email(first, usage or last) if draw < 0.85 else "" if draw < 0.9 else None
        return _Guardian(
            civility="M." if sex == 1 else "MME",
            last=last,
            usage=usage,
            first=first,
            mobile=people.mobile() if rng.random() < 0.92 else None,
            home=f"+333{rng.randrange(10**8):08d}" if rng.random() < 0.3 else None,
            email=email,
            profession=rng.choice(_PROFESSIONS),
            parente=parente,
            legal=legal,
            pays=False,
            hosts=legal,
            priority=False,
            address=addr,
        )

    draw = rng.random()
    guardians: list[_Guardian]
    if draw < 0.65:
        mother_last = people.surname() if rng.random() < 0.6 else surname
        mother = person(2, mother_last, "10", True, surname if mother_last != surname else None)
        guardians = [mother, person(1, surname, "20", True)]
        if rng.random() < 0.5:
            guardians.reverse()
    elif draw < 0.93:
        guardians = [person(2, surname, "10", True)]
    elif draw < 0.97:
        guardians = [person(1, surname, "20", True)]
    else:
        guardians = [person(rng.choice((1, 2)), people.surname(), "50", True)]
    guardians[0].pays = True
    guardians[0].priority = True
    if rng.random() < 0.06:
        parente = "38" if rng.random() < 0.7 else "90"
        last = surname if parente == "38" and rng.random() < 0.5 else people.surname()
        contact = person(rng.choice((1, 2)), last, parente, False, addr=people.address(dept))
        contact.hosts = False
        guardians.append(contact)
    return guardians, surname


def _plan_families(
    rng: random.Random, schools: list[_School], per_school: int, year: int, export: datetime.date
) -> list[_Family]:
    """Fill every school with exactly `per_school` pupils, grouped in families of 1-3 children.

    ~12 % of younger siblings go to another school of the academy (guaranteed once when there
    are two schools); one homonym pair is forced in the first school.
    """
    capacity = [per_school] * len(schools)
    families: list[_Family] = []
    homonym_source: _Pupil | None = None
    homonym_done = False
    while sum(capacity) > 0:
        open_schools = [i for i, c in enumerate(capacity) if c > 0]
        size = min(rng.choices((1, 2, 3), weights=(45, 38, 17))[0], sum(capacity))
        forced_cross = not families and len(open_schools) >= 2
        if forced_cross:
            size = 2
        primary = (
            open_schools[0]
            if forced_cross
            else rng.choices(open_schools, weights=[capacity[i] for i in open_schools])[0]
        )
        dept = schools[primary].dept
        people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
        guardians, surname = _make_guardians(people, people.surname(), dept)
        if forced_cross:  # the guaranteed shared family must be matchable by name and e-mail
            first = guardians[0]
            first.email = first.email or people.email(first.first, first.usage or first.last)
            first.mobile = first.mobile or people.mobile()
        family = _Family(guardians=guardians)
        for child in range(size):
            target = primary
            if child > 0:
                others = [i for i in range(len(schools)) if i != primary and capacity[i] > 0]
                if others and (forced_cross or rng.random() < 0.12):
                    target = others[0] if forced_cross else rng.choice(others)
            if capacity[target] == 0:
                open_now = [i for i, c in enumerate(capacity) if c > 0]
                if not open_now:
                    break
                target = open_now[0]
            capacity[target] -= 1
            school = schools[target]
            level_index = rng.randrange(len(school.levels))
            pupil = people.pupil(
                surname, school.levels[level_index], level_index, school.college, year, export
            )
            pupil.school, pupil.family = target, len(families)
            while any(s.first == pupil.first for s in family.pupils):  # siblings differ
                pupil.first = people.child_first(pupil.sex)
            if target == 0 and not homonym_done:
                if homonym_source is None:
                    homonym_source = pupil
                elif homonym_source.family != pupil.family:
                    # Same first and last name, another family: rename this family.
                    old = pupil.last
                    pupil.last, pupil.first = homonym_source.last, homonym_source.first
                    pupil.sex, pupil.usage = homonym_source.sex, None
                    for sibling in family.pupils:
                        sibling.last = pupil.last
                    for g in family.guardians:
                        if g.last == old:
                            g.last = pupil.last
                        if g.usage == old:
                            g.usage = pupil.last
                    homonym_done = True
            family.pupils.append(pupil)
            school.pupils.append(pupil)
        families.append(family)
    return families


def _layout_school(rng: random.Random, school: _School) -> None:
    """Divisions of ~25-30 pupils per level, groups, and each pupil's structures and ids."""
    by_level: list[list[_Pupil]] = [[] for _ in school.levels]
    for pupil in school.pupils:
        by_level[pupil.level].append(pupil)
    alsace = school.dept in ("067", "068", "057")
    for level_index, level in enumerate(school.levels):
        members = by_level[level_index]
        rng.shuffle(members)
        n_div = max(1, math.ceil(len(members) / CLASS_SIZE))
        codes = [_division_code(level, i, school.college) for i in range(n_div)]
        school.divisions.extend((code, level) for code in codes)
        _add_level_groups(school, level, codes)
        for position, pupil in enumerate(members):
            division = codes[position % n_div]
            pupil.division = division
            pupil.groups = _pick_groups(rng, school, level, division, alsace)
            if level_index > 0 and rng.random() < 0.6:
                previous = school.levels[level_index - 1]
                pupil.previous = (
                    previous.mef,
                    _division_code(previous, rng.randrange(n_div), school.college),
                )
    school.level_counts = [len(m) for m in by_level]
    order = list(school.pupils)
    rng.shuffle(order)
    eleve_id = rng.randint(100000, 2000000)
    elenoet = rng.randint(1000, 5000)
    for pupil in order:
        eleve_id += rng.randint(1, 3)
        elenoet += 1
        pupil.eleve_id, pupil.elenoet = eleve_id, elenoet
    school.pupils = sorted(order, key=lambda p: p.eleve_id)


def _add_level_groups(school: _School, level: _Level, codes: Sequence[str]) -> None:
    divisions = tuple(codes)
    if level.lv2:
        for suffix, subject, label in _LV2:
            school.groups.append(
                _Group(
                    f"{level.grp_prefix}LV2{suffix}",
                    f"{level.label} {label} LV2",
                    divisions,
                    subject,
                    "CG",
                )
            )
        if school.college:
            school.groups.append(
                _Group(f"{level.grp_prefix}LATIN", f"{level.label} LATIN", divisions, _LATIN, "CG")
            )
    for subject in level.specialities:
        gestion = _SUBJECTS[subject].gestion.replace("-", "")
        school.groups.append(
            _Group(
                f"{level.grp_prefix}SPE{gestion}"[:8],
                f"{level.label} SPECIALITE {_SUBJECTS[subject].short}",
                divisions,
                subject,
                "CG",
            )
        )
    if not level.specialities:
        half_subject = "070100" if school.college else "061800"
        for code in codes:
            for number in (1, 2):
                group = _half_group_code(code, number)
                if group is not None:
                    school.groups.append(
                        _Group(group, f"{code} GROUPE {number}", (code,), half_subject, "TP")
                    )


def _pick_groups(
    rng: random.Random, school: _School, level: _Level, division: str, alsace: bool
) -> tuple[str, ...]:
    """0 to 2 groups: the LV2 (or latin) group and a half-class or speciality group."""
    groups: list[str] = []
    if level.lv2 and rng.random() < 0.9:
        suffix = "ALL" if rng.random() < (0.6 if alsace else 0.25) else "ESP"
        groups.append(f"{level.grp_prefix}LV2{suffix}")
    if level.specialities:
        subject = rng.choice(level.specialities)
        groups.append(f"{level.grp_prefix}SPE{_SUBJECTS[subject].gestion.replace('-', '')}"[:8])
    elif school.college and level.lv2 and not groups and rng.random() < 0.5:
        groups.append(f"{level.grp_prefix}LATIN")
    elif rng.random() < 0.6:
        group = _half_group_code(division, rng.choice((1, 2)))
        if group is not None:
            groups.append(group)
    return tuple(groups[:2])


def _make_teacher(people: _People, function: str, subject: str) -> _Teacher:
    rng = people.rng
    sex = 1 if rng.random() < 0.42 else 2
    last = people.surname()
    birth_name = people.surname() if sex == 2 and rng.random() < 0.35 else last
    birth = _random_date(rng, datetime.date(1962, 1, 1), datetime.date(1999, 12, 31))
    grades = {
        "ENS": ("CERTIFIE", "CERTIFIE", "AGREGE", "CONTRACTUEL", "PLP"),
        "DIR": ("PERDIR",),
        "EDU": ("CPE",),
        "DOC": ("CERTIFIE",),
    }[function]
    return _Teacher(
        last=last,
        birth_name=birth_name,
        first=people.adult_first(sex),
        sex=sex,
        birth=birth,
        grade=rng.choice(grades),
        function=function,
        subject=subject,
    )


def _plan_teachers(rng: random.Random, schools: list[_School], per_school: int) -> list[_Teacher]:
    """~1 teacher per 12 pupils (>= 3) per school, ~10 % of them also in another school."""
    staff: list[_Teacher] = []
    for school in schools:
        people = _People(rng, _GERMAN_SHARE.get(school.dept, 0.05))
        taught = [s for s in school.subjects if s != _LATIN]
        rng.shuffle(taught)
        n_teachers = max(3, round(per_school / 12))
        for k in range(n_teachers):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, "ENS", taught[k % len(taught)]))
        for function in ("DIR", "EDU", "DOC"):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, function, ""))
    if len(schools) < 2:
        return staff
    for school in schools:
        own = [t for t in school.teachers if staff[t].function == "ENS"]
        wanted = max(1 if school.index == 0 else 0, round(len(own) / 10))
        rng.shuffle(own)
        for teacher in own:
            if wanted == 0:
                break
            others = [
                s
                for s in schools
                if s is not school
                and staff[teacher].subject in s.subjects
                and teacher not in s.teachers
            ]
            if others:
                rng.choice(others).teachers.append(teacher)
                wanted -= 1
    return staff


# ---------------------------------------------------------------------------------------------
# Writers


def _text(binary: IO[bytes], encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(binary, encoding=_CODECS[encoding], errors="strict", newline="\n")


def _pupil_xml(p: _Pupil, uai: str, mef: str, export: datetime.date) -> str:
    i = "        "
    out = [f'      <ELEVE ELEVE_ID="{p.eleve_id}">\n']
    _leaf(out, i, "ID_NATIONAL", p.ine)
    out.append(f"{i}<ELENOET>{p.elenoet}</ELENOET>\n")
    out.append(f"{i}<ID_ELEVE_ETAB>{p.elenoet:05d}{uai[1:7]}</ID_ELEVE_ETAB>\n")
    out.append(f"{i}<NOM_DE_FAMILLE>{_esc(_upper(p.last))}</NOM_DE_FAMILLE>\n")
    if p.usage is not None:
        out.append(f"{i}<NOM_USAGE>{_esc(_upper(p.usage))}</NOM_USAGE>\n")
    out.append(f"{i}<PRENOM>{_esc(p.first)}</PRENOM>\n")
    _leaf(out, i, "PRENOM2", p.first2)
    out.append(
        f"{i}<DATE_NAISS>{_fr(p.birth)}</DATE_NAISS>\n"
        f"{i}<DOUBLEMENT>0</DOUBLEMENT>\n"
        f"{i}<CODE_PAYS>100</CODE_PAYS>\n"
        f"{i}<ACCEPTE_SMS>0</ACCEPTE_SMS>\n"
        f"{i}<DATE_MODIFICATION>{_fr(p.entry or export)}</DATE_MODIFICATION>\n"
        f"{i}<CODE_SEXE>{p.sex}</CODE_SEXE>\n"
        f"{i}<CODE_PAYS_NAT>100</CODE_PAYS_NAT>\n"
        f"{i}<CODE_MEF>{mef}</CODE_MEF>\n"
        f"{i}<CODE_REGIME>{p.regime}</CODE_REGIME>\n"
        f"{i}<CODE_STATUT>ST</CODE_STATUT>\n"
    )
    if p.entry is not None:
        out.append(f"{i}<DATE_ENTREE>{_fr(p.entry)}</DATE_ENTREE>\n")
    if p.left is not None:
        out.append(f"{i}<DATE_SORTIE>{_fr(p.left)}</DATE_SORTIE>\n")
        out.append(f"{i}<CODE_MOTIF_SORTIE>02</CODE_MOTIF_SORTIE>\n")
    _leaf(out, i, "MEL", p.mel)
    out.append(
        f"{i}<CODE_DEPARTEMENT_NAISS>0{uai[1:3]}</CODE_DEPARTEMENT_NAISS>\n"
        f"{i}<VILLE_NAISS></VILLE_NAISS>\n"
        f"{i}<ADHESION_TRANSPORT>0</ADHESION_TRANSPORT>\n"
        f"{i}<CODE_PROVENANCE>1</CODE_PROVENANCE>\n"
    )
    if p.previous is not None:
        out.append(
            f"{i}<SCOLARITE_AN_DERNIER>\n"
            f"{i}  <CODE_MEF>{p.previous[0]}</CODE_MEF>\n"
            f"{i}  <CODE_STRUCTURE>{_esc(p.previous[1])}</CODE_STRUCTURE>\n"
            f"{i}  <CODE_RNE>{uai}</CODE_RNE>\n"
            f"{i}</SCOLARITE_AN_DERNIER>\n"
        )
    out.append("      </ELEVE>\n")
    return "".join(out)


def _structures_xml(p: _Pupil) -> str:
    out = [f'      <STRUCTURES_ELEVE ELEVE_ID="{p.eleve_id}">\n']
    for code, kind in ((p.division, "D"), *((g, "G") for g in p.groups)):
        out.append(
            "        <STRUCTURE>\n"
            f"          <CODE_STRUCTURE>{_esc(code)}</CODE_STRUCTURE>\n"
            f"          <TYPE_STRUCTURE>{kind}</TYPE_STRUCTURE>\n"
            "        </STRUCTURE>\n"
        )
    out.append("      </STRUCTURES_ELEVE>\n")
    return "".join(out)


def _write_eleves(
    binary: IO[bytes],
    uai: str,
    year: int,
    when: datetime.datetime,
    pupils: Iterable[_Pupil],
    mefs: Sequence[str],
) -> int:
    """Stream BEE_ELEVES; STRUCTURES go to a spooled temp file and follow ELEVES. Returns count."""
    count = 0
    with (
        _text(binary, ISO) as out,
        tempfile.SpooledTemporaryFile(
            max_size=8 << 20, mode="w+", encoding="utf-8", newline="\n"
        ) as structures,
    ):
        out.write(_siecle_header("BEE_ELEVES", "3.0", uai, year, when))
        out.write("    <ELEVES>\n")
        for pupil in pupils:
            out.write(_pupil_xml(pupil, uai, mefs[pupil.level], when.date()))
            structures.write(_structures_xml(pupil))
            count += 1
        out.write("    </ELEVES>\n    <STRUCTURES>\n")
        structures.seek(0)
        shutil.copyfileobj(structures, out, 1 << 20)
        out.write(
            "    </STRUCTURES>\n    <BOURSES />\n    <ADRESSES />\n  </DONNEES>\n</BEE_ELEVES>\n"
        )
    return count


def _write_responsables(
    binary: IO[bytes],
    rng: random.Random,
    school: _School,
    families: Sequence[_Family],
    year: int,
    when: datetime.datetime,
) -> int:
    """Stream BEE_RESPONSABLES for one school. Returns the number of PERSONNE written."""
    # Per-school database ids: each family met in this school gets its own PERSONNE_IDs.
    person_ids: dict[int, list[int]] = {}
    address_ids: dict[int, list[int]] = {}
    next_person = rng.randint(100000, 900000)
    next_address = rng.randint(100000, 900000)
    family_order: list[int] = []
    for pupil in school.pupils:
        if pupil.family not in person_ids:
            family_order.append(pupil.family)
            ids: list[int] = []
            addresses: list[int] = []
            seen: dict[tuple[str, str, str, str], int] = {}
            for guardian in families[pupil.family].guardians:
                next_person += rng.randint(1, 4)
                ids.append(next_person)
                if guardian.address not in seen:
                    next_address += rng.randint(1, 3)
                    seen[guardian.address] = next_address
                addresses.append(seen[guardian.address])
            person_ids[pupil.family] = ids
            address_ids[pupil.family] = addresses
    version = "2.1" if school.resp_legal else "3.0"
    count = 0
    with _text(binary, ISO) as out:
        out.write(_siecle_header("BEE_RESPONSABLES", version, school.uai, year, when))
        out.write("    <PERSONNES>\n")
        i = "        "
        for family_index in family_order:
            family = families[family_index]
            for g, pid, aid in zip(
                family.guardians, person_ids[family_index], address_ids[family_index], strict=True
            ):
                rows = [
                    f'      <PERSONNE PERSONNE_ID="{pid}">\n',
                    f"{i}<LC_CIVILITE>{g.civility}</LC_CIVILITE>\n",
                    f"{i}<LL_CIVILITE>{'MADAME' if g.civility == 'MME' else 'MONSIEUR'}"
                    "</LL_CIVILITE>\n",
                    f"{i}<NOM_DE_FAMILLE>{_esc(_upper(g.last))}</NOM_DE_FAMILLE>\n",
                ]
                if g.usage is not None:
                    rows.append(f"{i}<NOM_USAGE>{_esc(_upper(g.usage))}</NOM_USAGE>\n")
                rows.append(f"{i}<PRENOM>{_esc(g.first)}</PRENOM>\n")
                _leaf(rows, i, "TEL_PERSONNEL", g.home)
                _leaf(rows, i, "TEL_PORTABLE", g.mobile)
                rows.append(f"{i}<ACCEPTE_SMS>{1 if g.mobile else 0}</ACCEPTE_SMS>\n")
                rows.append(f"{i}<TEL_PROFESSIONNEL></TEL_PROFESSIONNEL>\n")
                _leaf(rows, i, "MEL", g.email)
                rows.append(f"{i}<ADRESSE_ID>{aid}</ADRESSE_ID>\n")
                rows.append(f"{i}<CODE_PROFESSION>{g.profession}</CODE_PROFESSION>\n")
                rows.append("      </PERSONNE>\n")
                out.write("".join(rows))
                count += 1
        out.write("    </PERSONNES>\n    <RESPONSABLES>\n")
        for pupil in school.pupils:
            family = families[pupil.family]
            legal_rank = 0
            for g, pid in zip(family.guardians, person_ids[pupil.family], strict=True):
                if g.legal:
                    legal_rank += 1
                if school.resp_legal:
                    level = f"{i}<RESP_LEGAL>{min(legal_rank, 2) if g.legal else 0}</RESP_LEGAL>\n"
                else:
                    level = (
                        f"{i}<NIVEAU_RESPONSABILITE>{1 if g.legal else 3}</NIVEAU_RESPONSABILITE>\n"
                    )
                hosts = "true" if g.hosts else "false"
                priority = "true" if g.priority else "false"
                out.write(
                    "      <RESPONSABLE_ELEVE>\n"
                    f"{i}<ELEVE_ID>{pupil.eleve_id}</ELEVE_ID>\n"
                    f"{i}<PERSONNE_ID>{pid}</PERSONNE_ID>\n"
                    f"{level}"
                    f"{i}<CODE_PARENTE>{g.parente}</CODE_PARENTE>\n"
                    f"{i}<PAIE_FRAIS_SCOLAIRES>{1 if g.pays else 0}</PAIE_FRAIS_SCOLAIRES>\n"
                    f"{i}<HEBERGE_ELEVE>{hosts}</HEBERGE_ELEVE>\n"
                    f"{i}<A_CONTACTER_EN_PRIORITE>{priority}</A_CONTACTER_EN_PRIORITE>\n"
                    "      </RESPONSABLE_ELEVE>\n"
                )
        out.write("    </RESPONSABLES>\n    <ADRESSES>\n")
        for family_index in family_order:
            family = families[family_index]
            written: set[int] = set()
            for g, aid in zip(family.guardians, address_ids[family_index], strict=True):
                if aid in written:
                    continue
                written.add(aid)
                line1, postcode, insee, label = g.address
                out.write(
                    f'      <ADRESSE ADRESSE_ID="{aid}">\n'
                    f"{i}<LIGNE1_ADRESSE>{_esc(line1)}</LIGNE1_ADRESSE>\n"
                    f"{i}<LIGNE2_ADRESSE></LIGNE2_ADRESSE>\n"
                    f"{i}<CODE_POSTAL>{postcode}</CODE_POSTAL>\n"
                    f"{i}<CODE_PAYS>100</CODE_PAYS>\n"
                    f"{i}<CODE_COMMUNE_INSEE>{insee}</CODE_COMMUNE_INSEE>\n"
                    f"{i}<LL_PAYS>FRANCE</LL_PAYS>\n"
                    f"{i}<CODE_DEPARTEMENT>0{postcode[:2]}</CODE_DEPARTEMENT>\n"
                    f"{i}<LIBELLE_POSTAL>{_esc(label)}</LIBELLE_POSTAL>\n"
                    "      </ADRESSE>\n"
                )
        out.write("    </ADRESSES>\n  </DONNEES>\n</BEE_RESPONSABLES>\n")
    return count


def _write_nomenclature(
    binary: IO[bytes], school: _School, year: int, when: datetime.datetime
) -> None:
    i = "        "
    with _text(binary, ISO) as out:
        out.write(_siecle_header("BEE_NOMENCLATURES", "3.1", school.uai, year, when))
        out.write("    <MEFS>\n")
        for level in school.levels:
            out.write(
                f'      <MEF CODE_MEF="{level.mef}">\n'
                f"{i}<FORMATION>{_esc(level.formation)}</FORMATION>\n"
                f"{i}<LIBELLE_LONG>{_esc(level.label)}</LIBELLE_LONG>\n"
                f"{i}<LIBELLE_EDITION>{_esc(level.edition)}</LIBELLE_EDITION>\n"
                f"{i}<MEF_RATTACHEMENT>{level.mef}</MEF_RATTACHEMENT>\n"
                f"{i}<CODE_MEFSTAT>{level.mefstat}</CODE_MEFSTAT>\n"
                "      </MEF>\n"
            )
        out.write("    </MEFS>\n    <MATIERES>\n")
        for code in school.subjects:
            s = _SUBJECTS[code]
            out.write(
                f'      <MATIERE CODE_MATIERE="{s.code}">\n'
                f"{i}<CODE_GESTION>{_esc(s.gestion)}</CODE_GESTION>\n"
                f"{i}<LIBELLE_COURT>{_esc(s.short)}</LIBELLE_COURT>\n"
                f"{i}<LIBELLE_LONG>{_esc(s.long)}</LIBELLE_LONG>\n"
                f"{i}<LIBELLE_EDITION>{_esc(s.long.capitalize())}</LIBELLE_EDITION>\n"
                "      </MATIERE>\n"
            )
        out.write("    </MATIERES>\n  </DONNEES>\n</BEE_NOMENCLATURES>\n")


def _write_structures(
    binary: IO[bytes], school: _School, year: int, when: datetime.datetime
) -> None:
    i = "        "
    with _text(binary, ISO) as out:
        out.write(_siecle_header("BEE_STRUCTURES", "3.0", school.uai, year, when))
        out.write("    <DIVISIONS>\n")
        for code, level in school.divisions:
            out.write(
                f'      <DIVISION CODE_STRUCTURE="{_attr(code)}">\n'
                f"{i}<LIBELLE_LONG>{_esc(level.label)} {_esc(code)}</LIBELLE_LONG>\n"
                f"{i}<MEFS_APPARTENANCE>\n{i}  <MEF_APPARTENANCE>\n"
                f"{i}    <CODE_MEF>{level.mef}</CODE_MEF>\n"
                f"{i}  </MEF_APPARTENANCE>\n{i}</MEFS_APPARTENANCE>\n"
                "      </DIVISION>\n"
            )
        out.write("    </DIVISIONS>\n    <GROUPES>\n")
        for group in school.groups:
            links = "".join(
                f"{i}  <DIVISION_APPARTENANCE>\n{i}    <CODE_STRUCTURE>{_esc(d)}</CODE_STRUCTURE>\n"
                f"{i}  </DIVISION_APPARTENANCE>\n"
                for d in group.divisions
            )
            out.write(
                f'      <GROUPE CODE_STRUCTURE="{_attr(group.code)}">\n'
                f"{i}<LIBELLE_LONG>{_esc(group.label)}</LIBELLE_LONG>\n"
                f"{i}<DIVISIONS_APPARTENANCE>\n{links}{i}</DIVISIONS_APPARTENANCE>\n"
                "      </GROUPE>\n"
            )
        out.write("    </GROUPES>\n  </DONNEES>\n</BEE_STRUCTURES>\n")


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
    rng: random.Random,
    info: _AcademyInfo,
    school: _School,
    staff: Sequence[_Teacher],
    sts_ids: dict[int, int],
    year: int,
) -> None:
    services, head = _assign_services(rng, school, staff)
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


def _zip_member(
    path: Path, member: str, when: datetime.datetime
) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
    info = zipfile.ZipInfo(
        member, date_time=(when.year, when.month, when.day, when.hour, when.minute, when.second)
    )
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return archive, info


# ---------------------------------------------------------------------------------------------
# Public API


def generate_academy(
    out: Path,
    academy: str,
    schools: int,
    pupils_per_school: int,
    seed: int,
    year: int = 2026,
    export_date: datetime.date | None = None,
) -> GenerateSummary:
    """Write `out/<academy>/<UAI>/` SIECLE zips and an STS file per school; same seed, same bytes.

    Collèges and lycées (every third school from the second is a lycée); every third school
    (index 2, 5, ...) uses the older RESP_LEGAL convention; STS files alternate UTF-8 and
    ISO-8859-15.
    """
    if academy not in ACADEMIES:
        raise ValueError(f"unknown academy {academy!r}; expected one of {sorted(ACADEMIES)}")
    if schools < 1 or pupils_per_school < 1:
        raise ValueError("schools and pupils_per_school must be >= 1")
    info = ACADEMIES[academy]
    export = export_date or datetime.date(year, 10, 1)
    rng = random.Random(seed)
    plan = _plan_schools(rng, info, schools)
    families = _plan_families(rng, plan, pupils_per_school, year, export)
    staff = _plan_teachers(rng, plan, pupils_per_school)
    for school in plan:
        _layout_school(rng, school)
    _ensure_rare_cases(rng, plan)
    next_sts = rng.randint(1000, 9000)
    summary = GenerateSummary(
        academy=academy, schools=[s.uai for s in plan], pupils=0, guardians=0, teachers=0, files=[]
    )
    for school in plan:
        next_sts = _write_school(
            out / academy, rng, info, school, families, staff, next_sts, year, export, summary
        )
    return summary


def _write_school(
    folder_root: Path,
    rng: random.Random,
    info: _AcademyInfo,
    school: _School,
    families: Sequence[_Family],
    staff: Sequence[_Teacher],
    next_sts: int,
    year: int,
    export: datetime.date,
    summary: GenerateSummary,
) -> int:
    """Write one school's four SIECLE zips and its STS file; returns the next STS id."""
    when = datetime.datetime(
        export.year,
        export.month,
        export.day,
        rng.randint(6, 19),
        rng.randrange(60),
        rng.randrange(60),
    )
    folder = folder_root / school.uai
    folder.mkdir(parents=True, exist_ok=True)
    mefs = [level.mef for level in school.levels]

    path = folder / "ExportXML_ElevesSansAdresses.zip"
    archive, member = _zip_member(path, "ElevesSansAdresses.xml", when)
    with archive, archive.open(member, "w", force_zip64=True) as binary:
        summary.pupils += _write_eleves(binary, school.uai, year, when, school.pupils, mefs)
    summary.files.append(path)

    path = folder / "ExportXML_ResponsablesAvecAdresses.zip"
    archive, member = _zip_member(path, "ResponsablesAvecAdresses.xml", when)
    with archive, archive.open(member, "w", force_zip64=True) as binary:
        summary.guardians += _write_responsables(binary, rng, school, families, year, when)
    summary.files.append(path)

    path = folder / "ExportXML_Nomenclature.zip"
    archive, member = _zip_member(path, "Nomenclature.xml", when)
    with archive, archive.open(member, "w") as binary:
        _write_nomenclature(binary, school, year, when)
    summary.files.append(path)

    path = folder / "ExportXML_Structures.zip"
    archive, member = _zip_member(path, "Structures.xml", when)
    with archive, archive.open(member, "w") as binary:
        _write_structures(binary, school, year, when)
    summary.files.append(path)

    school_ids: dict[int, int] = {}  # STS ids are per (school, teacher)
    for teacher in school.teachers:
        next_sts += rng.randint(1, 40)
        school_ids[teacher] = next_sts
    path = folder / f"sts_emp_{school.uai}_{year}.xml"
    with path.open("wb") as binary:
        _write_sts(binary, rng, info, school, staff, school_ids, year)
    summary.files.append(path)
    summary.teachers += sum(1 for t in school.teachers if staff[t].function == "ENS")
    return next_sts


def _ensure_rare_cases(rng: random.Random, schools: Sequence[_School]) -> None:
    """Guarantee at least one pupil without INE and one who left in the academy."""
    pupils = [p for s in schools for p in s.pupils]
    if len(pupils) < 2:
        return
    if all(p.ine is not None for p in pupils):
        rng.choice(pupils).ine = None
    if all(p.left is None for p in pupils):
        pupil = rng.choice(pupils)
        if pupil.entry is not None:
            pupil.left = pupil.entry + datetime.timedelta(days=1)


def _stream_pupils(
    rng: random.Random, pupils: int, uai: str, year: int, export: datetime.date
) -> Iterator[_Pupil]:
    """Pupils of one big collège, generated one at a time (nothing kept in memory)."""
    dept = uai[:3]
    people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
    levels = _COLLEGE_LEVELS
    per_level = math.ceil(pupils / len(levels))
    n_div = max(1, math.ceil(per_level / CLASS_SIZE))
    school = _School(
        index=0,
        uai=uai,
        dept=dept,
        college=True,
        name="",
        levels=levels,
        resp_legal=False,
        sts_encoding=ISO,
    )
    alsace = dept in ("067", "068", "057")
    eleve_id = rng.randint(100000, 2000000)
    for n in range(pupils):
        level_index = n % len(levels)
        level = levels[level_index]
        pupil = people.pupil(people.surname(), level, level_index, True, year, export)
        eleve_id += rng.randint(1, 3)
        pupil.eleve_id, pupil.elenoet = eleve_id, 1000 + n
        pupil.division = _division_code(level, (n // len(levels)) % n_div, True)
        pupil.groups = _pick_groups(rng, school, level, pupil.division, alsace)
        if level_index > 0 and rng.random() < 0.6:
            previous = levels[level_index - 1]
            pupil.previous = (previous.mef, _division_code(previous, rng.randrange(n_div), True))
        yield pupil


def generate_pupils_file(path: Path, pupils: int, seed: int, uai: str) -> Path:
    """Write one bare BEE_ELEVES file (ISO-8859-15, ~1 KB per pupil), streaming, for benchmarks."""
    if len(uai) != 8 or not uai[:7].isdigit() or uai_check_letter(uai[:7]) != uai[7]:
        raise ValueError(f"invalid UAI {uai!r}")
    year = 2026
    export = datetime.date(year, 10, 1)
    rng = random.Random(seed)
    when = datetime.datetime(export.year, export.month, export.day, 9, 45, 58)
    path.parent.mkdir(parents=True, exist_ok=True)
    mefs = [level.mef for level in _COLLEGE_LEVELS]
    with path.open("wb") as binary:
        _write_eleves(binary, uai, year, when, _stream_pupils(rng, pupils, uai, year, export), mefs)
    return path


# ---------------------------------------------------------------------------------------------
# The region: Grand Est's three academies at a chosen scale

#: Grand Est at scale 1.0 (rounded public figures): public collèges and lycées (LGT), and the
#: share of them in each academy.
REGION_COLLEGES = 500
REGION_LYCEES = 180
REGION_SHARES: dict[str, float] = {"ac-nancy-metz": 0.45, "ac-strasbourg": 0.30, "ac-reims": 0.25}
COLLEGE_PUPILS = (300, 700)
LYCEE_PUPILS = (600, 1500)
#: share of younger siblings enrolled in another school of the same department
_SIBLING_ELSEWHERE = 0.12
#: share of teachers who also teach in a second school of the same department
_SHARED_TEACHERS = 0.10


@dataclass
class RegionSummary:
    """What `generate_region` wrote, per academy (row counts as in `GenerateSummary`)."""

    scale: float
    seed: int
    academies: dict[str, GenerateSummary]

    @property
    def schools(self) -> int:
        return sum(len(a.schools) for a in self.academies.values())

    @property
    def pupils(self) -> int:
        return sum(a.pupils for a in self.academies.values())

    @property
    def guardians(self) -> int:
        return sum(a.guardians for a in self.academies.values())

    @property
    def teachers(self) -> int:
        return sum(a.teachers for a in self.academies.values())

    @property
    def files(self) -> int:
        return sum(len(a.files) for a in self.academies.values())


def region_school_counts(scale: float) -> dict[str, tuple[int, int]]:
    """(collèges, lycées) per academy at `scale`; at least one school per academy."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    out: dict[str, tuple[int, int]] = {}
    for academy, share in REGION_SHARES.items():
        colleges = round(REGION_COLLEGES * scale * share)
        lycees = round(REGION_LYCEES * scale * share)
        out[academy] = (max(colleges, 1 if lycees == 0 else 0), lycees)
    return out


def _plan_region_schools(
    rng: random.Random, info: _AcademyInfo, colleges: int, lycees: int
) -> tuple[list[_School], list[int]]:
    """Schools of one academy with their pupil counts, departments dealt round-robin."""
    kinds = [True] * colleges + [False] * lycees
    rng.shuffle(kinds)
    used: set[str] = set()
    schools: list[_School] = []
    sizes: list[int] = []
    for index, college in enumerate(kinds):
        schools.append(_new_school(rng, info, index, college, used))
        sizes.append(rng.randint(*(COLLEGE_PUPILS if college else LYCEE_PUPILS)))
    return schools, sizes


def _plan_region_families(
    rng: random.Random,
    schools: list[_School],
    sizes: list[int],
    year: int,
    export: datetime.date,
) -> list[_Family]:
    """Fill each school to its size with families of 1-3 children, in O(pupils).

    Schools are filled in turn; a younger sibling goes to another school of the same
    department with room left ~12 % of the time (a collège pupil's elder sister at the lycée).
    """
    capacity = list(sizes)
    open_by_dept: dict[str, list[int]] = {}
    for i, school in enumerate(schools):
        open_by_dept.setdefault(school.dept, []).append(i)

    def take(i: int) -> None:
        capacity[i] -= 1
        if capacity[i] == 0:
            open_by_dept[schools[i].dept].remove(i)

    families: list[_Family] = []
    for primary, school in enumerate(schools):
        dept = school.dept
        people = _People(rng, _GERMAN_SHARE.get(dept, 0.05))
        while capacity[primary] > 0:
            size = rng.choices((1, 2, 3), weights=(45, 38, 17))[0]
            guardians, surname = _make_guardians(people, people.surname(), dept)
            family = _Family(guardians=guardians)
            for child in range(size):
                target = primary
                if child > 0 and rng.random() < _SIBLING_ELSEWHERE:
                    others = open_by_dept[dept]
                    pick = others[rng.randrange(len(others))] if others else primary
                    target = pick if capacity[pick] > 0 else primary
                if capacity[target] == 0:
                    break
                take(target)
                where = schools[target]
                level_index = rng.randrange(len(where.levels))
                pupil = people.pupil(
                    surname, where.levels[level_index], level_index, where.college, year, export
                )
                pupil.school, pupil.family = target, len(families)
                while any(s.first == pupil.first for s in family.pupils):  # siblings differ
                    pupil.first = people.child_first(pupil.sex)
                family.pupils.append(pupil)
                where.pupils.append(pupil)
            families.append(family)
    return families


def _plan_region_teachers(
    rng: random.Random, schools: list[_School], sizes: list[int]
) -> list[_Teacher]:
    """~1 teacher per 12 pupils per school plus a head, a CPE and a librarian; ~10 % of the
    teachers also teach in another school of the same department."""
    staff: list[_Teacher] = []
    by_dept: dict[str, list[_School]] = {}
    for school, size in zip(schools, sizes, strict=True):
        by_dept.setdefault(school.dept, []).append(school)
        people = _People(rng, _GERMAN_SHARE.get(school.dept, 0.05))
        taught = [s for s in school.subjects if s != _LATIN]
        rng.shuffle(taught)
        for k in range(max(3, round(size / 12))):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, "ENS", taught[k % len(taught)]))
        for function in ("DIR", "EDU", "DOC"):
            school.teachers.append(len(staff))
            staff.append(_make_teacher(people, function, ""))
    for school in schools:
        neighbours = [s for s in by_dept[school.dept] if s is not school]
        if not neighbours:
            continue
        own = [t for t in school.teachers if staff[t].function == "ENS"]
        for teacher in rng.sample(own, round(len(own) * _SHARED_TEACHERS)):
            other = neighbours[rng.randrange(len(neighbours))]
            if staff[teacher].subject in other.subjects and teacher not in other.teachers:
                other.teachers.append(teacher)
    return staff


def generate_region(
    out: Path,
    scale: float,
    seed: int,
    year: int = 2026,
    export_date: datetime.date | None = None,
) -> RegionSummary:
    """Write the three Grand Est academies' landing folders at `scale` (1.0: the real region).

    Scale multiplies the number of schools (about 500 collèges of 300-700 pupils and 180
    lycées of 600-1500 at 1.0, split 45/30/25 % between Nancy-Metz, Strasbourg and Reims).
    One academy is planned at a time (cheap records), then written school by school; same
    seed, same content: a new `export_date` changes only the dates.
    """
    export = export_date or datetime.date(year, 10, 1)
    summary = RegionSummary(scale=scale, seed=seed, academies={})
    for academy, (colleges, lycees) in region_school_counts(scale).items():
        info = ACADEMIES[academy]
        rng = random.Random(f"{seed}:{academy}")
        plan, sizes = _plan_region_schools(rng, info, colleges, lycees)
        families = _plan_region_families(rng, plan, sizes, year, export)
        staff = _plan_region_teachers(rng, plan, sizes)
        for school in plan:
            _layout_school(rng, school)
        _ensure_rare_cases(rng, plan)
        next_sts = rng.randint(1000, 9000)
        result = GenerateSummary(
            academy=academy, schools=[s.uai for s in plan], pupils=0, guardians=0, teachers=0,
            files=[],
        )
        for school in plan:
            next_sts = _write_school(
                out / academy, rng, info, school, families, staff, next_sts, year, export, result
            )
            school.pupils = []  # written: let the school's records go
        summary.academies[academy] = result
    return summary
