"""Logins and uids: deterministic policy, unique, never reused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from etl.match.identity import (
    MAX_LOGIN,
    IdentityRegistry,
    base_login,
    fold,
    new_uid,
    write_identities,
)
from etl.plan.stored import StoredView
from etl.store.db import get_engine
from etl.store.models import Login

LOGIN_RE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)?[0-9]*$")


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("Jean-Marie", "DUPONT", "jean-marie.dupont"),
        ("Anne", "de La Fontaine", "anne.delafontaine"),
        ("Aïssata", "N'Diaye", "aissata.ndiaye"),
        ("Jürgen", "Müller-Lüdenscheidt", "jurgen.muller-ludenscheidt"),
        ("Cœur", "GROß", "coeur.gross"),
        ("Æsa", "Łukasz", "aesa.lukasz"),
        ("Marie Hélène", "Le Goff", "marie-helene.legoff"),
        ("Zoé", "Van der Berg", "zoe.vanderberg"),
        ("*)(uid=*", "\\,+=#", "uid.x"),
        ("", "", "x.x"),
    ],
)
def test_login_policy(first: str, last: str, expected: str) -> None:
    assert base_login(first, last) == expected


def test_long_names_are_cut_with_room_for_a_number() -> None:
    login = base_login("Marie-Charlotte-Alexandrine", "de Montmorency-Laval-Bourbon")
    assert len(login) <= MAX_LOGIN - 3
    assert not login.endswith(("-", "."))


def test_fold_ligatures() -> None:
    assert fold("Œdipe Straße") == "oedipe strasse"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fold_is_the_full_folding_whatever_its_shortcuts(text: str) -> None:
    """``fold`` remembers its answers and lower-cases ASCII at once: the same text as the
    whole NFKD folding, asked once or twice."""
    import unicodedata

    from etl.match.identity import _FOLD

    t = unicodedata.normalize("NFKD", text.translate(_FOLD))
    full = "".join(c for c in t if not unicodedata.combining(c)).lower()
    assert fold(text) == full
    assert fold(text) == full


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_login_always_valid(first: str, last: str) -> None:
    login = base_login(first, last)
    assert 3 <= len(login) <= MAX_LOGIN
    assert re.fullmatch(r"[a-z0-9.-]+", login)


def test_uid_is_opaque() -> None:
    uids = {new_uid("ELV") for _ in range(2000)}
    assert len(uids) == 2000
    assert all(re.fullmatch(r"[a-z2-9]{10}", u) for u in uids)


def test_logins_unique_and_never_reused(tmp_path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with Session(engine) as s:
        reg = IdentityRegistry(StoredView(s, "ac-reims"))
        a = reg.create("ELV", "Jean", "Dupont", ["AC-REIMS$SIECLE$0510001B$1"], "r1")
        b = reg.create("ELV", "Jean", "Dupont", ["AC-REIMS$SIECLE$0510001B$2"], "r1")
        c = reg.create("TUT", "Jean", "DUPONT", ["AC-REIMS$SIECLE-RESP$0510001B$9"], "r1")
        assert write_identities(s, "ac-reims", reg.decisions()) == 3
        s.commit()
        assert (a.login, b.login, c.login) == ("jean.dupont", "jean.dupont2", "jean.dupont3")
        # the account goes away, its login stays registered: a newcomer never gets it
        s.query(Login).filter_by(login="jean.dupont").one()
    with Session(engine) as s:
        from etl.store.models import Account, Identity

        s.query(Identity).filter_by(uid=a.uid).delete()
        s.query(Account).filter_by(uid=a.uid).delete()
        s.commit()
        reg = IdentityRegistry(StoredView(s, "ac-strasbourg"))
        d = reg.create("ELV", "Jean", "Dupont", ["AC-STRASBOURG$SIECLE$0670001X$1"], "r2")
        write_identities(s, "ac-strasbourg", reg.decisions())
        s.commit()
        assert d.login == "jean.dupont4"
        assert reg.lookup(["AC-REIMS$SIECLE$0510001B$2"]) == {"AC-REIMS$SIECLE$0510001B$2": b.uid}


def test_login_numbers_fill_gaps_then_go_on_like_a_search_from_the_start(tmp_path) -> None:
    """Allocation resumes where the base's last one stopped: the same logins as searching
    from ``base`` each time (gaps left by earlier runs are filled first, lowest number)."""
    engine = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with Session(engine) as s:
        s.add_all([Login(login=x, uid=f"u{i}") for i, x in enumerate(
            ["lea.martin", "lea.martin3", "lea.martin4", "lea.martin7", "zoe.roux2"])])
        s.commit()
        reg = IdentityRegistry(StoredView(s, "ac-reims"))
        got = [reg.allocate_login("Léa", "MARTIN", f"n{i}") for i in range(6)]
        assert got == ["lea.martin2", "lea.martin5", "lea.martin6", "lea.martin8",
                       "lea.martin9", "lea.martin10"]
        assert [reg.allocate_login("Zoé", "Roux", f"z{i}") for i in range(3)] == [
            "zoe.roux", "zoe.roux3", "zoe.roux4"]
        # the same as a search from the start each time, over many homonyms
        taken = set(reg._all_logins())
        for i in range(300):
            expect, n = "jean.petit", 1
            while expect in taken:
                n += 1
                expect = f"jean.petit{n}"
            taken.add(expect)
            assert reg.allocate_login("Jean", "Petit", f"j{i}") == expect


def test_new_accounts_written_in_batches(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write_identities sends WRITE_BATCH rows per statement (a first load's parameters are never
    built at once): every account, login and source key arrives, across batch edges."""
    import etl.match.identity
    from etl.store.models import Account, Identity

    monkeypatch.setattr(etl.match.identity, "WRITE_BATCH", 2)
    engine = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with Session(engine) as s:
        reg = IdentityRegistry(StoredView(s, "ac-reims"))
        made = [reg.create("ELV", "Ana", f"Nom{i}", [f"AC-REIMS$SIECLE$0510001B${i}",
                                                    f"AC-REIMS$INE$00000000{i}AA"], "r1")
                for i in range(5)]
        assert write_identities(s, "ac-reims", reg.decisions()) == 5
        s.commit()
    with Session(engine) as s:
        accounts = {(a.uid, a.login, a.profile, a.academy, a.status)
                    for a in s.query(Account)}
        assert accounts == {(m.uid, m.login, "ELV", "ac-reims", "ACTIVE") for m in made}
        assert {(x.login, x.uid) for x in s.query(Login)} == {(m.login, m.uid) for m in made}
        keys = {(i.jointure, i.uid, i.rule, i.created_run) for i in s.query(Identity)}
        assert len(keys) == 10
        assert keys >= {(f"AC-REIMS$INE$00000000{i}AA", m.uid, "source_key", "r1")
                        for i, m in enumerate(made)}
    assert reg.decisions().accounts == []  # handed over once: nothing left


def test_logins_looked_up_base_by_base_are_those_of_a_read_of_every_login(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few new accounts look their bases up one by one; past ``LOGIN_LOOKUPS`` bases the
    registry reads every login once. Either way the same logins, never one taken, never one
    handed out twice in the run (another base's number can spell it)."""
    import etl.match.identity as identity_mod

    engine = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    stored = ["lea.martin", *(f"lea.martin{n}" for n in range(2, 22)), "zoe.roux", "ana.petit2"]
    with Session(engine) as s:
        s.add_all([Login(login=x, uid=f"u{i}") for i, x in enumerate(stored)])
        s.commit()
        names = [("Léa", "Martin"), ("Léa", "Martin2"), ("Léa", "Martin"), ("Zoé", "Roux"),
                 ("Ana", "Petit"), ("Léa", "Martin2"), ("Ana", "Petit"), ("Léa", "Martin")]
        runs = {}
        for lookups in (0, 2, 1000, -1):
            monkeypatch.setattr(identity_mod, "LOGIN_LOOKUPS", lookups if lookups >= 0 else 1000)
            if lookups == -1:  # a base's logins cannot be read as a range: all at once
                monkeypatch.setattr(identity_mod, "ranges_indexed", lambda session: False)
            reg = IdentityRegistry(StoredView(s, "ac-reims"))
            reads: list[int] = []

            def counted(self: StoredView, reads: list[int] = reads,
                        read: Any = StoredView.all_logins) -> set[str]:
                reads.append(1)
                return read(self)

            monkeypatch.setattr(StoredView, "all_logins", counted)
            runs[lookups] = [reg.allocate_login(f, n, f"n{i}") for i, (f, n) in
                             enumerate(names)]
            assert len(reads) == (1 if lookups < 4 else 0)
            monkeypatch.undo()
        assert runs[0] == runs[2] == runs[1000] == runs[-1]
        got = runs[0]
        assert len(set(got)) == len(got) and not set(got) & set(stored)
        assert got == ["lea.martin22", "lea.martin23", "lea.martin24", "zoe.roux2", "ana.petit",
                       "lea.martin25", "ana.petit3", "lea.martin26"]

