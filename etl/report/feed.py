"""The change feed: what the syncs changed in the directory, read from the state DB's journal.

ENT backends that cannot follow the directory with syncrepl ask "what changed since run X"
(or since a time) instead. By default a change says where (DN), what (operation, names of
the attributes that changed), and when (run, applied_at); the attribute values carry
personal data and are only given to operators who ask for them (``include_values=True``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from etl.errors import ConfigError
from etl.store.db import session_factory
from etl.store.models import JournalEntry, Run


def _values(attrs: Mapping[str, list[str]] | None) -> dict[str, frozenset[str]]:
    """Attribute name (lower-cased, as LDAP compares names) -> set of values; empty dropped."""
    return {k.lower(): frozenset(map(str, v)) for k, v in (attrs or {}).items() if v}


def changed_attributes(op: str, before: Mapping[str, list[str]] | None,
                       after: Mapping[str, list[str]] | None) -> list[str]:
    """Names of the attributes a journaled change touched, as the entry spells them."""
    spelled = {k.lower(): k for k in (*(before or {}), *(after or {}))}
    b, a = _values(before), _values(after)
    if op == "add":
        names = set(a)
    elif op == "delete":
        names = set(b)
    else:
        names = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return sorted((spelled[k] for k in names), key=str.lower)


def _parse_since(since: str) -> dt.datetime | None:
    """An ISO timestamp as a naive UTC datetime (the journal's convention), else None."""
    try:
        t = dt.datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t


def changes_since(state_url: str, since: str, include_values: bool = False,
                  academy: str | None = None) -> list[dict[str, Any]]:
    """The journaled changes after ``since``, oldest first.

    ``since`` is a run id (changes of the runs that started after that run, the run itself
    excluded) or an ISO timestamp (changes applied at or after it; a timestamp without zone
    is UTC). Raises ConfigError for a run id the state DB does not know.
    """
    Session = session_factory(state_url)
    with Session() as s:
        q = select(JournalEntry, Run.academy).join(Run, Run.id == JournalEntry.run_id)
        ref = s.get(Run, since)
        if ref is not None:
            q = q.where(Run.started_at > ref.started_at, Run.id != ref.id)
        else:
            t = _parse_since(since)
            if t is None:
                raise ConfigError(f"--since {since!r} is neither a known run id nor an ISO "
                                  "timestamp (e.g. 2026-10-01T02:00:00Z)")
            q = q.where(JournalEntry.applied_at >= t)
        if academy:
            q = q.where(Run.academy == academy)
        q = q.order_by(Run.started_at, JournalEntry.run_id, JournalEntry.seq)
        out: list[dict[str, Any]] = []
        for j, run_academy in s.execute(q):
            item: dict[str, Any] = {
                "run_id": j.run_id, "academy": run_academy, "seq": j.seq, "dn": j.dn,
                "op": j.op, "attributes": changed_attributes(j.op, j.before, j.after),
                "applied_at": j.applied_at.replace(tzinfo=dt.UTC).isoformat(),
            }
            if include_values:
                item["before"], item["after"] = j.before, j.after
            out.append(item)
        return out
