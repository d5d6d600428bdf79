"""Shared streaming machinery for the SIECLE and STS-web readers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from etl.canonical import Tables, frame
from etl.errors import FileRejected, RecordRejected
from etl.xmlsafe import XmlSource, iterparse, open_source, xml_error


@dataclass
class ReadResult:
    """What one document yields: canonical tables plus the records it had to skip."""

    tables: Tables
    rejected: list[RecordRejected] = field(default_factory=list)
    records: int = 0


class Columns:
    """Column lists for one canonical table, filled row by row, framed once."""

    def __init__(self, table: str, cols: tuple[str, ...]) -> None:
        self.table = table
        self.cols = cols
        self.data: dict[str, list[object]] = {c: [] for c in cols}

    def append(self, **row: object) -> None:
        for c in self.cols:
            self.data[c].append(row.get(c))

    def __len__(self) -> int:
        return len(self.data[self.cols[0]])

    def frame(self) -> Any:
        return frame(self.table, self.data)


def children(el: Any) -> dict[str, str]:
    """Direct children as tag -> text. An absent element is a missing key (NULL in SIECLE);
    an empty element is ``""`` (an empty string). Both are kept distinct."""
    out: dict[str, str] = {}
    for c in el:
        tag = c.tag
        if isinstance(tag, str) and tag not in out:
            out[tag] = c.text or ""
    return out


def release(el: Any) -> None:
    """Free a processed element and the siblings before it (keeps memory flat)."""
    el.clear(keep_tail=True)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


def stream(src: XmlSource, tags: tuple[str, ...], uai: str | None) -> Iterator[Any]:
    """Yield completed elements with one of ``tags``; XML errors become FileRejected."""
    name = src.short_name
    with open_source(src) as f:
        ctx = iterparse(f, name, events=("end",), tag=tags)
        try:
            yield from (el for _, el in ctx)
        except etree.XMLSyntaxError as e:
            raise xml_error(name, e, uai) from e
        except (EOFError, OSError) as e:
            raise FileRejected(name, f"unreadable: {e}", uai=uai) from e


def fr_date(value: str | None) -> str | None:
    """dd/mm/yyyy -> yyyy-mm-dd; None when absent, empty or blank; ValueError when malformed."""
    if value is None or not value.strip():
        return None
    return dt.datetime.strptime(value.strip(), "%d/%m/%Y").date().isoformat()


def iso_date(value: str | None) -> str | None:
    """yyyy-mm-dd (a time part is dropped) -> yyyy-mm-dd; None when absent or blank."""
    if value is None or not value.strip():
        return None
    return dt.date.fromisoformat(value.strip()[:10]).isoformat()


def blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip()
    return v or None


def reject(
    src: XmlSource, uai: str | None, el: Any, element: str, rule: str, message: str
) -> RecordRejected:
    return RecordRejected(src.short_name, uai, getattr(el, "sourceline", None), element, rule,
                          message)
