"""Reading the academy's part of the directory: paged searches, streamed entry by entry.

The academy's part: its schools (``ENTStructureAcademie``) and every entry below them
(``ou=groups``, classes, groups, archives, anything added by hand), and the accounts attached
to it below ``ou=people`` (a source key of the academy, or a main school of the academy).
Pages of ``PAGE`` entries (RFC 2696 simple paged results) are read one after the other and
handed on as they come: an academy's every entry is never held at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from etl.apply.writer import LdapTarget, connect
from etl.config import Academy
from etl.errors import DirectoryError
from etl.plan.desired import people_dn, school_dn

#: entries per page
PAGE = 1000
#: values per ``(|(attr=v1)(attr=v2)...)`` search of ``find_values`` (one indexed search)
FIND_BATCH = 200
PAGED_OID = "1.2.840.113556.1.4.319"
RESULT_NO_SUCH_OBJECT = 32

Attrs = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class DirEntry:
    """An entry as the directory has it (the attributes the service account may read)."""

    dn: str
    attrs: Attrs


def _entries(response: Any) -> Iterator[DirEntry]:
    for item in response or []:
        if item.get("type") == "searchResEntry":
            yield DirEntry(item["dn"], {k: [x.decode("utf-8") for x in v]
                                        for k, v in item["raw_attributes"].items()})


class DirectoryReader:
    """Paged, read-only searches on one connection (the sync's service account)."""

    def __init__(self, target: LdapTarget, page: int = PAGE) -> None:
        self.target = target
        self.page = max(1, page)
        self._conn: ldap3.Connection | None = None

    def _c(self) -> ldap3.Connection:
        if self._conn is None:
            self._conn = connect(self.target)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.unbind()
            except (LDAPException, OSError):
                pass
            self._conn = None

    def __enter__(self) -> DirectoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, base: str, flt: str, scope: str = ldap3.SUBTREE,
               attributes: Iterable[str] = ("*",), limit: int = 0) -> Iterator[DirEntry]:
        """Every entry found, page by page (``limit``: at most that many, one page). A base
        that does not exist yields nothing."""
        cookie: bytes | None = None
        while True:
            _st, result, resp, _req = self._c().search(
                base, flt, search_scope=scope, attributes=list(attributes),
                size_limit=limit, paged_size=None if limit else self.page,
                paged_cookie=cookie)
            code = result.get("result") if result else -1
            if code == RESULT_NO_SUCH_OBJECT:
                return
            if code not in (0, 4):  # 4: size limit reached (``limit``)
                raise DirectoryError(f"search below {base} failed: "
                                     f"{(result or {}).get('description')}")
            yield from _entries(resp)
            if limit:
                return
            cookie = ((result.get("controls") or {}).get(PAGED_OID) or {}).get(
                "value", {}).get("cookie")
            if not cookie:
                return

    def read(self, dn: str) -> DirEntry | None:
        """One entry, or None when there is none at ``dn``."""
        return next(iter(self.search(dn, "(objectClass=*)", ldap3.BASE, limit=1)), None)

    def find_values(self, base: str, attr: str, values: Iterable[str],
                    attributes: Iterable[str] = ("*",)) -> Iterator[DirEntry]:
        """The entries right below ``base`` holding any of ``values`` in ``attr`` (an
        indexed equality attribute): one search per ``FIND_BATCH`` values, never one per
        value."""
        todo = sorted(set(values))
        for i in range(0, len(todo), FIND_BATCH):
            part = todo[i:i + FIND_BATCH]
            flt = "(|" + "".join(f"({attr}={escape_filter_chars(v)})" for v in part) + ")"
            yield from self.search(base, flt, ldap3.LEVEL, attributes)


def schools_filter(academy: Academy) -> str:
    return (f"(&(objectClass=ENTEtablissement)"
            f"(ENTStructureAcademie={escape_filter_chars(academy.code)}))")


def people_filter(academy: Academy, school_dns: Iterable[str]) -> str:
    """The academy's accounts: a source key of the academy, or a main school of it."""
    terms = [f"(ENTPersonJointure={escape_filter_chars(academy.jointure_prefix)}$*)"]
    terms += [f"(ENTPersonStructRattach={escape_filter_chars(d)})" for d in sorted(school_dns)]
    return "(|" + "".join(terms) + ")"


def academy_schools(reader: DirectoryReader, academy: Academy, base: str) -> list[str]:
    """The UAIs of the academy's schools in the directory."""
    out = []
    for e in reader.search(f"ou=structures,{base}", schools_filter(academy), ldap3.LEVEL,
                           ["ENTStructureUAI"]):
        out += e.attrs.get("ENTStructureUAI", [])[:1]
    return sorted(out)


def academy_part(reader: DirectoryReader, academy: Academy, base: str,
                 uais: Iterable[str]) -> Iterator[DirEntry]:
    """The academy's part of the directory, streamed: every entry below each school of
    ``uais`` (the school itself first), then the accounts attached to the academy."""
    uais = sorted(set(uais))
    for uai in uais:
        yield from reader.search(school_dn(uai, base), "(objectClass=*)", ldap3.SUBTREE)
    yield from reader.search(people_dn(base), people_filter(
        academy, [school_dn(u, base) for u in uais]), ldap3.LEVEL)


def populated(reader: DirectoryReader, academy: Academy, base: str) -> bool:
    """Whether the directory holds anything of the academy (one school, or one account with
    a source key of it): two searches of one entry."""
    if any(True for _ in reader.search(f"ou=structures,{base}", schools_filter(academy),
                                       ldap3.LEVEL, ["1.1"], limit=1)):
        return True
    return any(True for _ in reader.search(people_dn(base), people_filter(academy, []),
                                           ldap3.LEVEL, ["1.1"], limit=1))


__all__ = ["PAGE", "DirEntry", "DirectoryReader", "academy_part", "academy_schools",
           "people_filter", "populated", "schools_filter"]
