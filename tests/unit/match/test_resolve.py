"""Matching decides, the caller writes: ``match_records`` reads the stored view and writes
nothing; what it decided (accounts, logins, source keys, match keys) is written by
``write_identities``, after which the same records are found again by their keys."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etl.config import get_academy
from etl.match.identity import write_identities
from etl.match.resolve import NightRecords, match_records
from etl.plan.stored import StoredView
from etl.store.db import get_engine
from etl.store.models import Account, Identity, MatchKey

UAI = "0510001A"


def _night() -> NightRecords:
    pupil = {"person_key": f"AC-REIMS$SIECLE${UAI}$1", "uai": UAI, "profile": "ELV",
             "ine": "0123456789A", "last_name": "Martin", "first_name": "Léa",
             "birth_date": "2012-05-03"}
    teacher = {"person_key": f"AC-REIMS$STS${UAI}$7", "uai": UAI, "profile": "ENS",
               "ine": None, "last_name": "Durand", "first_name": "Paul",
               "birth_date": "1970-01-02"}
    return NightRecords([pupil, teacher], [], set())


def test_matching_writes_nothing_and_its_decisions_are_found_again(tmp_path: Path) -> None:
    academy = get_academy("ac-reims")
    engine = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with Session(engine) as s:
        got = match_records(_night(), academy, StoredView(s, academy.code), "r1")
        assert got.created == 2 and len(got.decisions.accounts) == 2
        assert len(got.decisions.identities) == 3  # the pupil's INE and SIECLE keys, the STS key
        assert sorted(got.logins.values()) == ["lea.martin", "paul.durand"]
        assert len(got.decisions.match_keys_new) == 1  # the teacher's (name, birth date)
        assert s.scalar(select(func.count()).select_from(Account)) == 0
        assert s.scalar(select(func.count()).select_from(Identity)) == 0
        assert s.scalar(select(func.count()).select_from(MatchKey)) == 0
        write_identities(s, academy.code, got.decisions)
        s.commit()
    with Session(engine) as s:
        again = match_records(_night(), academy, StoredView(s, academy.code), "r2")
    assert again.created == 0 and again.key_uid == got.key_uid
    assert again.logins == got.logins
    assert not again.decisions.accounts and not again.decisions.identities
