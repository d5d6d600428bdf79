"""The change journal's one writer: what a run applied to the directory, for the nightly sync,
an approval, an undo, a merge and the retention purge alike.

Each applied change becomes a ``JournalEntry`` row (numbered ``seq`` within its run, what was
there before and what was written), and the state DB remembers what was written at the DN
(``Entry``) and whether the person's account is active or disabled (``Account``): what
``entsync undo``, ``entsync changes`` and the feed read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from etl.plan.desired import content_hash
from etl.plan.diff import Change
from etl.store.models import Account, Entry, JournalEntry, table, utcnow


class Journal:
    """A run's journal, continued from its last row (a rerun or an approval of the same run
    numbers after what is there). ``record`` writes a batch in the caller's transaction, in a
    few bulk statements: per-row ORM merges dominated the apply stage."""

    def __init__(self, s: Session, academy: str, run_id: str) -> None:
        self.academy, self.run_id = academy, run_id
        self.seq = int(s.scalar(select(func.max(JournalEntry.seq))
                                .where(JournalEntry.run_id == run_id)) or 0)

    def record(self, s: Session, done: Sequence[Change]) -> None:
        """Journal ``done`` (applied, in the order they were) and remember what was written.
        A person's change names its account (``Change.uid``)."""
        if not done:
            return
        now = utcnow()
        journal: list[dict[str, Any]] = []
        entries: dict[str, dict[str, Any]] = {}
        gone: list[str] = []
        disabled: set[str] = set()
        active: set[str] = set()
        for ch in done:
            self.seq += 1
            after = None if ch.op == "delete" else (ch.after or ch.attrs)
            journal.append({"run_id": self.run_id, "seq": self.seq, "dn": ch.dn, "op": ch.op,
                            "before": ch.before, "after": after, "status": "applied",
                            "applied_at": now})
            if after is None:
                gone.append(ch.dn)
                entries.pop(ch.dn, None)
                continue
            entries[ch.dn] = {"dn": ch.dn, "academy": self.academy, "uai": ch.uai,
                              "kind": ch.kind, "uid": ch.uid, "content_hash": content_hash(after),
                              "attrs": after, "run_id": self.run_id, "updated_at": now}
            if ch.kind == "person" and ch.uid:
                (disabled if after.get("entSyncStatus") == ["DISABLED"] else active).add(ch.uid)
        s.execute(insert(table(JournalEntry)), journal)  # Core: faster than the ORM's bulk path
        if gone:
            s.execute(delete(Entry).where(Entry.dn.in_(gone)))
        if entries:
            from sqlalchemy.dialects import postgresql, sqlite

            bind = s.get_bind()
            dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
            stmt: Any = dialect.insert(table(Entry))
            stmt = stmt.on_conflict_do_update(index_elements=[Entry.dn], set_={
                c: stmt.excluded[c] for c in ("academy", "uai", "kind", "uid", "content_hash",
                                              "attrs", "run_id", "updated_at")})
            s.execute(stmt, list(entries.values()))
        if disabled:
            ids = sorted(disabled)
            s.execute(update(Account).where(Account.uid.in_(ids), Account.disabled_at.is_(None))
                      .values(disabled_at=now))
            s.execute(update(Account).where(Account.uid.in_(ids)).values(status="DISABLED"))
        if active:
            s.execute(update(Account).where(Account.uid.in_(sorted(active)))
                      .values(status="ACTIVE", disabled_at=None))


def person_uid(kind: str, attrs: dict[str, list[str]] | None) -> str | None:
    """The account a change outside the sync (undo, merge) is about: a person entry's uid."""
    uids = attrs.get("uid") if kind == "person" and attrs else None
    return uids[0] if uids else None
