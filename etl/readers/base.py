"""Shared streaming machinery for the SIECLE and STS-web readers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lxml import etree

from etl.canonical import Tables
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
        """The table, built as one object block: each column list is copied into it and freed
        at once, and pandas takes the block as is (no consolidation copy)."""
        import pandas as pd

        data, self.data = self.data, {c: [] for c in self.cols}
        n = len(data[self.cols[0]]) if self.cols else 0
        block = np.empty((n, len(self.cols)), dtype=object)
        for i, c in enumerate(self.cols):
            block[:, i] = data.pop(c)
        return pd.DataFrame(block, columns=list(self.cols), dtype=object, copy=False)


class Interner:
    """One shared string object per distinct value (names, dates and codes repeat a lot:
    keeping one copy each is most of what keeps a large export's tables small)."""

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def __call__(self, v: str | None) -> str | None:
        if v is None:
            return None
        return self._d.setdefault(v, v)


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
    """dd/mm/yyyy -> yyyy-mm-dd; None when absent, empty or blank; ValueError when malformed.

    Parsed by hand (strptime is the reader's hot spot and accepts ``1/9/2026``).
    """
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    day, month, year = v.split("/")  # ValueError unless exactly three parts
    if len(day) != 2 or len(month) != 2 or len(year) != 4 or not (day + month + year).isdigit():
        raise ValueError(f"not dd/mm/yyyy: {v!r}")
    return dt.date(int(year), int(month), int(day)).isoformat()


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
    src: XmlSource, uai: str | None, el: Any, element: str, rule: str, message: str,
    source_key: str | None = None,
) -> RecordRejected:
    return RecordRejected(
        src.short_name, uai, getattr(el, "sourceline", None), element, rule, message,
        source_key=source_key,
    )
