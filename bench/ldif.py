"""LDIF for the reference runs: the directory's own tools (`ldapadd`, `ldapmodify`) load the
same entries and apply the same changes as the pipeline, so the two can be timed side by side.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from etl.plan.diff import diff_attrs


def _safe(value: str) -> bool:
    """RFC 2849 SAFE-STRING: ASCII without NUL/CR/LF, no leading space, colon or '<'."""
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return all(0 < ord(c) < 128 and c not in "\r\n" for c in value)


def attr_line(name: str, value: str) -> str:
    if _safe(value):
        return f"{name}: {value}\n"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"


def entry_ldif(dn: str, attrs: Mapping[str, Iterable[str]]) -> str:
    lines = [attr_line("dn", dn)]
    for name, values in attrs.items():
        lines.extend(attr_line(name, v) for v in values)
    return "".join(lines) + "\n"


def change_ldif(dn: str, op: str, before: Mapping[str, list[str]] | None,
                after: Mapping[str, list[str]] | None) -> str:
    """One journal row as an LDIF change record (the same operation the applier sent)."""
    head = attr_line("dn", dn)
    if op == "add":
        return head + "changetype: add\n" + entry_ldif(dn, after or {}).split("\n", 1)[1]
    if op == "delete":
        return head + "changetype: delete\n\n"
    if op != "modify":
        raise ValueError(op)
    parts = [head, "changetype: modify\n"]
    for attr, mod in diff_attrs(before or {}, after or {}).items():
        for kind in ("replace", "delete", "add"):
            if kind in mod:
                parts.append(f"{kind}: {attr}\n")
                parts.extend(attr_line(attr, v) for v in mod[kind])
                parts.append("-\n")
    return "".join(parts) + "\n"


def journal_rows(state_db: Path, run_ids: Iterable[str]) -> Iterator[tuple[str, str, Any, Any]]:
    """(dn, op, before, after) of the given runs, in the order they were applied."""
    with sqlite3.connect(state_db) as db:
        for run_id in run_ids:
            for dn, op, before, after in db.execute(
                "SELECT dn, op, before, after FROM journal WHERE run_id = ? ORDER BY seq",
                (run_id,),
            ):
                yield dn, op, _json(before), _json(after)


def journal_count(state_db: Path, run_id: str) -> int:
    with sqlite3.connect(state_db) as db:
        row = db.execute("SELECT count(*) FROM journal WHERE run_id = ?", (run_id,)).fetchone()
    return int(row[0])


def shared_logins(state_dbs: Iterable[Path]) -> int:
    """Logins held by accounts of more than one of these state DBs: with a state DB per
    academy and the academies running at once, the directory search before creating
    accounts (``etl.audit.adopt.claimed_in_directory``) cannot see what another academy has
    planned and not yet written; one state DB shared by the academies (its ``logins`` table)
    makes them unique."""
    seen: dict[str, int] = {}
    for i, path in enumerate(state_dbs):
        with sqlite3.connect(path) as db:
            for (login,) in db.execute("SELECT login FROM accounts"):
                if seen.setdefault(login, i) != i:
                    seen[login] = -1
    return sum(1 for v in seen.values() if v == -1)


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


def write_changes(out: IO[str], rows: Iterable[tuple[str, str, Any, Any]]) -> int:
    n = 0
    for dn, op, before, after in rows:
        out.write(change_ldif(dn, op, before, after))
        n += 1
    return n


def filter_dump(dump: Iterable[str], out: IO[str], skip_dns: set[str],
                seen: set[str] | None = None) -> tuple[int, int]:
    """Copy an `ldapsearch -LLL -o ldif-wrap=no` dump without the skipped DNs and comments.

    Returns (entries written, entries under ou=people); `seen` collects every lower-case DN.
    """
    entries = people = 0
    record: list[str] = []

    def flush() -> None:
        nonlocal entries, people
        if not record:
            return
        dn_line = record[0]
        dn = (base64.b64decode(dn_line[4:]).decode() if dn_line.startswith("dn::")
              else dn_line[4:]).strip()
        if seen is not None:
            seen.add(dn.lower())
        if dn.lower() not in skip_dns:
            out.write("".join(record) + "\n")
            entries += 1
            if ",ou=people," in dn.lower():
                people += 1
        record.clear()

    for line in dump:
        if line.startswith("#"):
            continue
        if line.strip() == "":
            flush()
        else:
            record.append(line if line.endswith("\n") else line + "\n")
    flush()
    return entries, people
