"""Identity: source keys -> stable opaque uid, and human logins.

Rules (see README "Identity and logins"):
- a person is found by its source keys (jointures), never by its name. Pupils carry two
  keys: ``<AC>$INE$<ine>`` when they have an INE (national, survives a change of school)
  and ``<AC>$SIECLE$<uai>$<ELEVE_ID>``; the INE key wins when both are known;
- a uid is random, opaque, generated once, never derived from a name, never reused;
- a login is ``prenom.nom``: lower case, ASCII-folded (œ→oe, æ→ae, ß→ss, accents dropped),
  particles and apostrophes glued (``de La Fontaine`` → ``delafontaine``, ``N'Diaye`` →
  ``ndiaye``), hyphens kept, only ``[a-z0-9.-]``, at most 32 characters; on collision a number
  from 2 is appended (``jean.dupont2``). It is assigned once, kept when the name changes, and
  registered forever in the ``logins`` table so it is never handed out again.
"""

from __future__ import annotations

import functools
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from etl.plan.stored import StoredView, ranges_indexed
from etl.store.models import Account, Identity, Login, table

MAX_LOGIN = 32
#: rows per INSERT statement when new accounts and identities are written
WRITE_BATCH = 5000
#: logins looked up base by base (``IdentityRegistry.allocate_login``) before the registry
#: reads every login once instead: a normal night's few hundred new accounts cost a lookup
#: each, a first load's or la rentrée's tens of thousands one read of the table
LOGIN_LOOKUPS = 1000
_FOLD = str.maketrans({
    "œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ø": "o", "Ø": "o", "ł": "l",
    "Ł": "l", "đ": "d", "Đ": "d", "ð": "d", "þ": "th", "ı": "i",
})
_UID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
PROFILE_UID_LETTER = {"ELV": "e", "TUT": "r", "ENS": "p", "DIR": "d", "EVS": "v", "DOC": "c"}


@functools.lru_cache(maxsize=1 << 16)
def fold(text: str) -> str:
    """ASCII-fold: ligatures expanded, accents dropped, lower case. Remembered: an academy's
    names repeat (a night folds every record's names several times: match keys, homonyms)."""
    if text.isascii():
        return text.lower()
    t = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in t if not unicodedata.combining(c)).lower()


def login_part(name: str | None, keep_spaces_as_hyphen: bool) -> str:
    t = fold(name or "")
    t = re.sub(r"['’`´]", "", t)
    t = re.sub(r"\s+", "-" if keep_spaces_as_hyphen else "", t.strip())
    t = re.sub(r"[^a-z0-9-]", "", t)
    t = re.sub(r"-{2,}", "-", t).strip("-")
    return t


def base_login(first_name: str | None, last_name: str | None) -> str:
    """The collision-free form of the login, before any number is added."""
    first = login_part(first_name, keep_spaces_as_hyphen=True) or "x"
    last = login_part(last_name, keep_spaces_as_hyphen=False) or "x"
    login = f"{first}.{last}"
    if len(login) > MAX_LOGIN - 3:  # room for a collision number
        login = login[: MAX_LOGIN - 3].rstrip("-.")
    return login


def new_uid(profile: str) -> str:
    """The profile's letter and 9 characters of a 32-letter alphabet: 45 bits drawn at once
    (one ``secrets`` call per uid, not nine)."""
    letter = PROFILE_UID_LETTER.get(profile, "s")
    bits = secrets.randbits(45)
    return letter + "".join(_UID_ALPHABET[(bits >> (5 * i)) & 31] for i in range(9))


@dataclass
class Resolved:
    uid: str
    login: str
    created: bool


@dataclass(frozen=True)
class IdentityDecisions:
    """What matching decided that the state DB must learn (``write_identities``): new
    accounts with their logins, source keys attached, known keys moved to other accounts, and
    the match keys seen tonight (new rows, and known rows whose strong evidence grew)."""

    #: (uid, profile, login)
    accounts: list[tuple[str, str, str]] = field(default_factory=list)
    #: (jointure, uid, rule, run_id)
    identities: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: (jointure, uid, rule, run_id) of known jointures pointed at another account, in order
    moves: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: ``match_keys`` rows to insert, and (kind, key, uid, strong) of rows to update
    match_keys_new: list[dict[str, Any]] = field(default_factory=list)
    match_keys_grown: list[dict[str, Any]] = field(default_factory=list)


class IdentityRegistry:
    """Identity map and login allocation over the stored view; it writes nothing.

    New accounts, logins and source keys are collected in memory and handed over as
    ``decisions`` (``write_identities`` writes them in bulk, one INSERT per table and batch).
    Logins are allocated against every login ever registered, loaded once; two academies
    allocating the same login at the same moment collide on the ``logins`` primary key at
    commit, and the retried task allocates again.
    """

    def __init__(self, view: StoredView) -> None:
        self.view = view
        self.academy = view.academy
        #: every login registered, once read (after ``LOGIN_LOOKUPS`` bases looked up)
        self._logins: set[str] | None = None
        #: base login -> the registered logins of that base (``base``, ``base<n>``)
        self._by_base: dict[str, set[str]] = {}
        #: the logins handed out by this registry
        self._mine: set[str] = set()
        #: (uid, profile, login) and (jointure, uid, rule, run_id): tuples, a third of a
        #: dict's size, for an academy's every account on a first load
        self._new_accounts: list[tuple[str, str, str]] = []
        self._new_identities: list[tuple[str, str, str, str]] = []
        self._moves: list[tuple[str, str, str, str]] = []
        self._new_login_of: dict[str, str] = {}
        #: base login -> the number its next allocation tries first (``allocate_login``)
        self._next_n: dict[str, int] = {}

    def lookup(self, jointures: Iterable[str]) -> dict[str, str]:
        """Known jointure -> uid, queried in chunks."""
        return self.view.identities(jointures)

    def logins_of(self, uids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(uids))
        out: dict[str, str] = {u: self._new_login_of[u] for u in ids if u in self._new_login_of}
        out.update(self.view.logins_of(u for u in ids if u not in out))
        return out

    def _all_logins(self) -> set[str]:
        if self._logins is None:
            self._logins = self.view.all_logins() | self._mine
            self._by_base.clear()
        return self._logins

    def _taken(self, base: str) -> set[str]:
        """The logins registered that ``base`` could collide with: read base by base (a
        range of the logins' key each), every login at once past ``LOGIN_LOOKUPS`` bases.
        Reading them all in each group of a streamed night made it grow with the square of
        the academy."""
        if self._logins is not None:
            return self._logins
        got = self._by_base.get(base)
        if got is None:
            if len(self._by_base) >= LOGIN_LOOKUPS or not ranges_indexed(self.view.session):
                return self._all_logins()
            got = self._by_base[base] = self.view.logins_of_base(base)
        return got

    def allocate_login(self, first_name: str | None, last_name: str | None, uid: str) -> str:
        """``base``, else the lowest ``base<n>`` (n ≥ 2) not taken. The search for a base
        resumes where its last allocation stopped (logins are never released, so every
        number below is taken): the n-th "lea.martin" of a first load costs one look, not n.
        Taken: registered (``_taken``) or handed out by this registry (another base's
        number can spell it: "lea.martin" + 22, "lea.martin2" + 2)."""
        base = base_login(first_name, last_name)
        taken, mine = self._taken(base), self._mine
        login, n = base, self._next_n.get(base, 1)
        if n > 1:
            login = f"{base}{n}"
        while login in taken or login in mine:
            n += 1
            login = f"{base}{n}"
        mine.add(login)
        if self._logins is not None:
            self._logins.add(login)
        self._next_n[base] = n + 1
        self._new_login_of[uid] = login
        return login

    def create(self, profile: str, first_name: str | None, last_name: str | None,
               jointures: list[str], run_id: str, rule: str = "source_key") -> Resolved:
        # 45 random bits: a collision is astronomically rare, and the primary key refuses it
        uid = new_uid(profile)
        login = self.allocate_login(first_name, last_name, uid)
        self._new_accounts.append((uid, profile, login))
        self.attach(uid, jointures, run_id, rule)
        return Resolved(uid, login, True)

    def attach(self, uid: str, jointures: Iterable[str], run_id: str, rule: str) -> None:
        for j in jointures:
            self._new_identities.append((j, uid, rule, run_id))

    def rules_of(self, jointures: Iterable[str]) -> dict[str, str]:
        """Known jointure -> the rule that attached it (``merge``: an operator's decision)."""
        return self.view.rules_of(jointures)

    def move(self, moves: dict[str, str], run_id: str, rule: str) -> None:
        """Point known jointures at other accounts (written after the new accounts)."""
        self._moves.extend((j, uid, rule, run_id) for j, uid in sorted(moves.items()))

    def decisions(self) -> IdentityDecisions:
        """What was decided so far, handed over once (the registry forgets it)."""
        out = IdentityDecisions(self._new_accounts, self._new_identities, self._moves)
        self._new_accounts, self._new_identities, self._moves = [], [], []
        return out


def write_identities(s: Session, academy: str, d: IdentityDecisions) -> int:
    """Write what matching decided, in bulk (the caller commits or rolls back): new logins,
    accounts and source keys, then the moves, then the match keys. The new accounts' count."""
    from sqlalchemy import and_, bindparam, insert, update

    from etl.store.models import MatchKey, utcnow

    now = utcnow()
    step = WRITE_BATCH  # rows per statement: the parameters of a first load's hundreds of
    # thousands of rows are never built at once; Core inserts (the tables, not the ORM
    # classes): the ORM's bulk path is much slower
    new = d.accounts
    for i in range(0, len(new), step):
        part = new[i:i + step]
        s.execute(insert(table(Login)), [
            {"login": login, "uid": uid, "assigned_at": now} for uid, _profile, login in part])
        s.execute(insert(table(Account)), [
            {"uid": uid, "academy": academy, "profile": profile, "login": login,
             "status": "ACTIVE", "created_at": now} for uid, profile, login in part])
    ids = d.identities
    for i in range(0, len(ids), step):
        s.execute(insert(table(Identity)), [
            {"jointure": j, "uid": uid, "rule": rule, "created_run": run, "created_at": now}
            for j, uid, rule, run in ids[i:i + step]])
    for j, uid, rule, run in d.moves:
        s.execute(update(Identity).where(Identity.jointure == j)
                  .values(uid=uid, rule=rule, created_run=run))
    t = table(MatchKey)
    if d.match_keys_new:
        s.execute(insert(t), d.match_keys_new)  # Core: no ORM bulk path
    if d.match_keys_grown:
        s.execute(update(t).where(and_(
            t.c.academy == academy, t.c.kind == bindparam("k_kind"),
            t.c.key == bindparam("k_key"), t.c.uid == bindparam("k_uid")))
            .values(strong=bindparam("strong")).execution_options(synchronize_session=False),
            d.match_keys_grown)
    return len(new)
