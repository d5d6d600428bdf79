"""People factories: one random stream draws names, dates, contacts, families and staff."""

from __future__ import annotations

import datetime
import random
import unicodedata

from etl.devtools.generate.catalog import _Level
from etl.devtools.generate.names import (
    _BOYS,
    _COMMUNES,
    _GIRLS,
    _MAIL_DOMAINS,
    _MEN,
    _PROFESSIONS,
    _REGIMES,
    _STREETS,
    _SURNAMES_DE,
    _SURNAMES_FR,
    _WOMEN,
)
from etl.devtools.generate.records import _Guardian, _Pupil, _Teacher

_FOLD = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"})


def _ascii_slug(name: str) -> str:
    """Lower-case ASCII form of a name for e-mail local parts."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLD))
    kept = [c for c in decomposed.lower() if c.isascii() and (c.isalnum() or c == "-")]
    return "".join(kept)


def _random_date(rng: random.Random, first: datetime.date, last: datetime.date) -> datetime.date:
    return first + datetime.timedelta(days=rng.randint(0, (last - first).days))


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
