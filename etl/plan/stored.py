"""The stored view: what the state DB says was written, as plain read-only values.

Planning (matching, the lifecycle, the guards, the diff) reads the state DB only through this
view and never writes through it: what it decides comes back as values that ``_reconcile``
writes (``etl.match.resolve.write_decisions``). The view answers in batches of ``BATCH`` keys
(never a query per entry); the per-DN parts (hashes, attributes) are read on demand, a batch at
a time, because an academy's every stored entry held at once would be the planning peak.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from etl.store.models import Account, Entry, Identity, Login, MatchKey, SchoolState, SourceFile

#: keys per ``IN (...)`` query
BATCH = 500
Attrs = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as last written (``entries``); ``attrs`` is shared with nobody: copy before
    building on it (the lifecycle does)."""

    dn: str
    kind: str
    uai: str | None
    uid: str | None
    attrs: Attrs


@dataclass(frozen=True, slots=True)
class StoredAccount:
    uid: str
    profile: str
    status: str


@dataclass(frozen=True, slots=True)
class StoredSchool:
    """What the last applied night of a school left (``school_states``): the guards' baseline."""

    pupils: int | None
    school_year: int | None


def _chunks(keys: Iterable[str]) -> Iterator[list[str]]:
    ordered = list(dict.fromkeys(keys))
    for i in range(0, len(ordered), BATCH):
        yield ordered[i:i + BATCH]


#: PostgreSQL collations whose order is the bytes' (a key range is a prefix there)
_BYTE_ORDER = {"c", "posix", "c.utf-8", "c.utf8", "ucs_basic"}
_ranges_indexed: dict[str, bool] = {}


def ranges_indexed(session: Session) -> bool:
    """Whether a prefix of a text key can be read as a range of its index: SQLite (binary
    order), PostgreSQL in a database of the C collation (libc's). In another collation
    punctuation such as ``$`` sorts apart, and a range compared ``COLLATE "C"`` cannot use
    the index: each range would read the whole table."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return True
    key = str(bind.engine.url)
    if key not in _ranges_indexed:
        collate = str(session.execute(text(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"))
            .scalar() or "")
        provider = "c"
        if int(str(session.execute(text("SHOW server_version_num")).scalar())) >= 150000:
            provider = str(session.execute(text(
                "SELECT datlocprovider FROM pg_database WHERE datname = current_database()"))
                .scalar() or "c")
        _ranges_indexed[key] = provider == "c" and collate.lower() in _BYTE_ORDER
    return _ranges_indexed[key]


def key_range(column: Any, prefix: str) -> tuple[Any, Any]:
    """The conditions of the keys of ``column`` that start with ``prefix``, as a range of its
    index (``LIKE`` is case-blind in SQLite and reads the whole table there); only where
    ``ranges_indexed``."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return column >= prefix, column < end


@dataclass(frozen=True)
class StoredView:
    """Read-only, batched access to an academy's stored state (one Session, the caller's)."""

    session: Session
    academy: str

    def _q(self, stmt: Any) -> Any:
        """A read on the session's connection, its transaction: rows as Core gives them (the
        ORM's result machinery, for columns only, cost a third of each read), after the
        session's pending objects are flushed as its own ``execute`` would."""
        s = self.session
        if s.autoflush and (s.new or s.dirty or s.deleted):
            s.flush()
        return s.connection().execute(stmt)

    # -- entries ------------------------------------------------------------------------------
    def hashes(self, dns: Iterable[str]) -> dict[str, str]:
        """dn -> content hash, for the DNs stored."""
        out: dict[str, str] = {}
        for part in _chunks(dns):
            out.update(self._q(select(Entry.dn, Entry.content_hash)
                                            .where(Entry.dn.in_(part))).all())
        return out

    def attrs(self, dns: Iterable[str]) -> dict[str, Attrs]:
        """dn -> attributes as last written."""
        out: dict[str, Attrs] = {}
        for part in _chunks(dns):
            out.update(self._q(select(Entry.dn, Entry.attrs)
                                            .where(Entry.dn.in_(part))).all())
        return out

    def kinds(self, dns: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(dns):
            out.update(self._q(select(Entry.dn, Entry.kind)
                                            .where(Entry.dn.in_(part))).all())
        return out

    def uais(self, dns: Iterable[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for part in _chunks(dns):
            out.update(self._q(select(Entry.dn, Entry.uai)
                                            .where(Entry.dn.in_(part))).all())
        return out

    def entries(self, dns: Iterable[str]) -> dict[str, StoredEntry]:
        """dn -> the stored entry, for the DNs stored."""
        out: dict[str, StoredEntry] = {}
        for part in _chunks(dns):
            for dn, kind, uai, uid, attrs in self._q(
                    select(Entry.dn, Entry.kind, Entry.uai, Entry.uid, Entry.attrs)
                    .where(Entry.dn.in_(part))):
                out[dn] = StoredEntry(dn, kind, uai, uid, attrs)
        return out

    def person_entries(self, uids: Iterable[str]) -> dict[str, StoredEntry]:
        """uid -> the account's person entry (the first found), for the accounts written."""
        out: dict[str, StoredEntry] = {}
        for part in _chunks(uids):
            for dn, kind, uai, uid, attrs in self._q(
                    select(Entry.dn, Entry.kind, Entry.uai, Entry.uid, Entry.attrs)
                    .where(Entry.uid.in_(part), Entry.kind == "person")):
                if uid is not None and uid not in out:
                    out[uid] = StoredEntry(dn, kind, uai, uid, attrs)
        return out

    def structures(self, uais: Iterable[str] | None = None) -> Iterator[StoredEntry]:
        """The academy's classes and groups (archives too), of the given schools if any."""
        q = select(Entry.dn, Entry.kind, Entry.uai, Entry.uid, Entry.attrs, Entry.academy).where(
            or_(Entry.kind == "class", Entry.kind == "group"))
        # given schools: by their UAI's index, the academy checked here (with both in the
        # query SQLite reads the academy's index, the whole academy, for each group of a
        # streamed night)
        q = (q.where(Entry.academy == self.academy) if uais is None
             else q.where(Entry.uai.in_(sorted(uais))))
        for dn, kind, uai, uid, attrs, academy in self._q(q):
            if academy == self.academy:
                yield StoredEntry(dn, kind, uai, uid, attrs)

    def school_accounts(self, uais: Iterable[str]) -> dict[str, int]:
        """Active accounts written per main school (the guards' denominator), counted by the
        database: the status is read from the stored attributes there (SQLite's
        ``json_extract``, PostgreSQL's ``#>>``), not by parsing every account's attributes."""
        first = Entry.attrs[("entSyncStatus", 0)].as_string()
        second = Entry.attrs[("entSyncStatus", 1)].as_string()
        # active: anything but exactly ["DISABLED"] (as ``attrs.get("entSyncStatus") !=
        # ["DISABLED"]`` reads it: no status, another status, or more than one value)
        active = or_(first.is_(None), first != "DISABLED", second.is_not(None))
        # by the UAI's index, the academy checked here (as ``structures``)
        rows = self._q(select(Entry.uai, Entry.academy, func.count()).where(
            Entry.kind == "person", Entry.uai.in_(list(uais)),
            Entry.uai.is_not(None), Entry.uai != "", active).group_by(Entry.uai, Entry.academy))
        return {str(uai): int(n) for uai, academy, n in rows if academy == self.academy}

    # -- schools and source files -------------------------------------------------------------
    def schools(self, uais: Iterable[str]) -> dict[str, StoredSchool]:
        return {uai: StoredSchool(pupils, year) for uai, pupils, year in self._q(
            select(SchoolState.uai, SchoolState.pupils, SchoolState.school_year).where(
                SchoolState.academy == self.academy, SchoolState.uai.in_(list(uais))))}

    def held_reasons(self, run_id: str, uais: list[str]) -> dict[str, list[str]]:
        """UAI -> why discovery held its exports in this run (an older export), in order."""
        why: dict[str, list[str]] = defaultdict(list)
        for uai, reason in self._q(
                select(SourceFile.uai, SourceFile.reason)
                .where(SourceFile.run_id == run_id, SourceFile.status == "held",
                       SourceFile.uai.in_(uais or [""])).order_by(SourceFile.id)):
            if reason and reason not in why[str(uai)]:
                why[str(uai)].append(reason)
        return dict(why)

    # -- identities and accounts --------------------------------------------------------------
    def identities(self, jointures: Iterable[str]) -> dict[str, str]:
        """Known jointure -> uid."""
        out: dict[str, str] = {}
        for part in _chunks(jointures):
            out.update(self._q(select(Identity.jointure, Identity.uid)
                                            .where(Identity.jointure.in_(part))).all())
        return out

    def rules_of(self, jointures: Iterable[str]) -> dict[str, str]:
        """Known jointure -> the rule that attached it (``merge``: an operator's decision)."""
        out: dict[str, str] = {}
        for part in _chunks(sorted(set(jointures))):
            out.update(self._q(select(Identity.jointure, Identity.rule)
                                            .where(Identity.jointure.in_(part))).all())
        return out

    def academy_identities(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(jointure, uid) of every source key of the academy (``<prefix>$...``), streamed."""
        for j, uid in self._q(select(Identity.jointure, Identity.uid)
                                           .where(Identity.jointure.like(f"{prefix}$%"))):
            yield str(j), str(uid)

    def school_identities(self, prefix: str, sources: Iterable[str], uais: Iterable[str]
                          ) -> Iterator[tuple[str, str]]:
        """(jointure, uid) of the source keys of these schools (``<prefix>$<source>$<uai>$``,
        for each source): a range of the primary key per school and source, read as its
        own, where ``academy_identities`` reads the whole academy's."""
        if not ranges_indexed(self.session):  # one read of the academy's keys
            wanted = {(src, uai) for src in sources for uai in uais}
            for j, uid in self.academy_identities(prefix):
                parts = j.split("$", 3)
                if len(parts) == 4 and parts[0] == prefix and (parts[1], parts[2]) in wanted:
                    yield j, uid
            return
        for uai in sorted(set(uais)):
            for src in sources:
                for j, uid in self._q(
                        select(Identity.jointure, Identity.uid)
                        .where(*key_range(Identity.jointure, f"{prefix}${src}${uai}$"))):
                    yield str(j), str(uid)

    def keys_of(self, uids: Iterable[str]) -> dict[str, set[str]]:
        """uid -> all its jointures."""
        out: dict[str, set[str]] = defaultdict(set)
        for part in _chunks(sorted(set(uids))):
            for j, uid in self._q(select(Identity.jointure, Identity.uid)
                                               .where(Identity.uid.in_(part))):
                out[uid].add(j)
        return out

    def accounts(self, uids: Iterable[str]) -> dict[str, StoredAccount]:
        out: dict[str, StoredAccount] = {}
        for part in _chunks(uids):
            for uid, profile, status in self._q(
                    select(Account.uid, Account.profile, Account.status)
                    .where(Account.uid.in_(part))):
                out[uid] = StoredAccount(uid, profile, status)
        return out

    def logins_of(self, uids: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(uids):
            out.update(self._q(select(Account.uid, Account.login)
                                            .where(Account.uid.in_(part))).all())
        return out

    def logins_of_base(self, base: str) -> set[str]:
        """The logins registered (any academy) that are ``base`` or ``base<n>``."""
        n = len(base)
        return {x for x in self._q(
            select(Login.login).where(*key_range(Login.login, base))).scalars()
            if x == base or x[n:].isdigit()}

    def all_logins(self) -> set[str]:
        """Every login ever registered (any academy): a login is never handed out again."""
        return set(self._q(select(Login.login)).scalars())

    def match_keys(self, wanted: Mapping[str, Iterable[str]]
                   ) -> dict[tuple[str, str], dict[str, set[str]]]:
        """(kind, key) -> uid -> strong tokens, for the wanted keys of each kind."""
        known: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
        for kind, keys in wanted.items():
            for part in _chunks(sorted(keys)):
                for key, uid, strong in self._q(
                        select(MatchKey.key, MatchKey.uid, MatchKey.strong)
                        .where(MatchKey.academy == self.academy, MatchKey.kind == kind,
                               MatchKey.key.in_(part))):
                    known[(kind, key)][uid] = set(strong or [])
        return known

    def all_match_keys(self) -> dict[tuple[str, str], dict[str, set[str]]]:
        """Every match key of the academy."""
        known: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
        for kind, key, uid, strong in self._q(
                select(MatchKey.kind, MatchKey.key, MatchKey.uid, MatchKey.strong)
                .where(MatchKey.academy == self.academy)):
            known[(kind, key)][uid] = set(strong or [])
        return known

    def match_key_rows(self, keys: Iterable[tuple[str, str]]
                       ) -> dict[tuple[str, str, str], list[str]]:
        """(kind, key, uid) -> strong tokens stored, for the (kind, key) pairs given. Queried
        kind by kind: the primary key is (academy, kind, key, uid), and a query without the
        kind read every key of the academy for each batch (a streamed night's groups each
        paid for the whole academy)."""
        by_kind: dict[str, set[str]] = defaultdict(set)
        for kind, key in keys:
            by_kind[kind].add(key)
        existing: dict[tuple[str, str, str], list[str]] = {}
        for kind, wanted in sorted(by_kind.items()):
            for part in _chunks(sorted(wanted)):
                for key, uid, strong in self._q(
                        select(MatchKey.key, MatchKey.uid, MatchKey.strong).where(
                            MatchKey.academy == self.academy, MatchKey.kind == kind,
                            MatchKey.key.in_(part))):
                    existing[(kind, key, uid)] = list(strong or [])
        return existing


_V = TypeVar("_V")

#: the content hash a pending entry shows (never a real one: its attributes are always read)
PENDING_HASH = "pending"


@dataclass(frozen=True)
class PendingView(StoredView):
    """The stored view with some persons as a plan held earlier in the run would leave them
    (``pending``: dn -> the entry after that plan; an entry it would add shows as stored).
    What a streamed night's later group plans for them is planned on top of the held plan,
    then folded into it (``etl.plan.stream.fold_into_held``): one change per person, whatever
    order the held plans are approved in."""

    pending: Mapping[str, StoredEntry] = field(default_factory=dict)

    def hashes(self, dns: Iterable[str]) -> dict[str, str]:
        return self._over(super().hashes, dns, lambda e: PENDING_HASH)

    def attrs(self, dns: Iterable[str]) -> dict[str, Attrs]:
        return self._over(super().attrs, dns, lambda e: e.attrs)

    def kinds(self, dns: Iterable[str]) -> dict[str, str]:
        return self._over(super().kinds, dns, lambda e: e.kind)

    def uais(self, dns: Iterable[str]) -> dict[str, str | None]:
        return self._over(super().uais, dns, lambda e: e.uai)

    def entries(self, dns: Iterable[str]) -> dict[str, StoredEntry]:
        return self._over(super().entries, dns, lambda e: e)

    def person_entries(self, uids: Iterable[str]) -> dict[str, StoredEntry]:
        uids = list(uids)
        out = super().person_entries(uids)
        mine = {e.uid: e for e in self.pending.values() if e.uid}
        out.update({u: mine[u] for u in uids if u in mine})
        return out

    def _over(self, stored: Callable[[list[str]], dict[str, _V]], dns: Iterable[str],
              pick: Callable[[StoredEntry], _V]) -> dict[str, _V]:
        """``stored(dns)``, the pending entries' ``pick`` in place of what is stored."""
        dns = list(dns)
        out = stored(dns)
        out.update({dn: pick(self.pending[dn]) for dn in dns if dn in self.pending})
        return out


def load_stored(session: Session, academy: str) -> StoredView:
    """The academy's stored view over ``session`` (read-only: planning writes nothing)."""
    return StoredView(session, academy)


__all__ = ["BATCH", "PENDING_HASH", "PendingView", "StoredAccount", "StoredEntry",
           "StoredSchool", "StoredView", "load_stored"]
