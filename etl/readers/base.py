"""Shared streaming machinery for the SIECLE and STS-web readers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from etl import canonical as C
from etl.canonical import Tables
from etl.errors import FileRejected, RecordRejected
from etl.xmlsafe import XmlSource, iterparse, open_source, xml_error


@dataclass
class ReadResult:
    """What one document yields: canonical tables plus the records it had to skip."""

    tables: Tables
    rejected: list[RecordRejected] = field(default_factory=list)
    records: int = 0


#: rows kept as Python objects before they are packed into Arrow arrays
CHUNK_ROWS = 32_768


def _pool() -> Any:
    """Where the readers' Arrow buffers live: jemalloc (hands freed pages back to the system;
    the default mimalloc pool kept about as much again as the tables held), else malloc."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        return pa.system_memory_pool()


POOL = _pool()


def codes(s: pa.ChunkedArray) -> np.ndarray:
    """Integer codes of an Arrow column: equal values, equal codes (0 for a
    missing value). Hashing happens in Arrow, no Python string is made per value."""
    enc = pc.dictionary_encode(s, memory_pool=POOL)
    if not len(s):
        return np.zeros(0, dtype=np.int64)
    out: np.ndarray = np.concatenate(
        [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in enc.chunks]
    ).astype(np.int64) + 1
    return out


def first_rows(*keys: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows where a combination of integer keys (``codes``, >= 0) is seen
    first (hashed, not sorted: a few bytes per row)."""
    import pandas as pd

    n = len(keys[0])
    combined = np.zeros(n, dtype=np.int64)
    for k in keys:
        size = int(k.max(initial=0)) + 1
        if int(combined.max(initial=0)) + 1 > (1 << 62) // size:  # renumber, then combine
            combined = pd.factorize(combined)[0].astype(np.int64)
        combined = combined * size + k
    first: np.ndarray = ~pd.Series(combined, copy=False).duplicated(keep="first").to_numpy()
    return first


class Columns:
    """Column lists for one canonical table, filled row by row.

    Every ``CHUNK_ROWS`` rows the lists are packed into Arrow arrays (strings), numpy arrays
    (booleans) and nullable integers (``line``), so Python objects live for one chunk only;
    ``frame`` wraps the chunks without copying them into one block.
    """

    def __init__(self, table: str, cols: tuple[str, ...], chunk_rows: int | None = None) -> None:
        self.table = table
        self.cols = cols
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        self.data: dict[str, list[object]] = {c: [] for c in cols}
        self.chunks: dict[str, list[Any]] = {c: [] for c in cols}
        self.packed = 0
        self._first = self.data[cols[0]]

    def append(self, **row: object) -> None:
        for c in self.cols:
            self.data[c].append(row.get(c))
        if len(self._first) >= self.chunk_rows:
            self.pack()

    def __len__(self) -> int:
        return self.packed + len(self._first)

    def pack(self) -> None:
        """Move the rows held as Python objects into typed arrays."""
        n = len(self._first)
        if not n:
            return
        for c in self.cols:
            v = self.data[c]
            if c in C.BOOL_COLUMNS:
                self.chunks[c].append(np.array([bool(x) for x in v], dtype=bool))
            elif c in C.INT_COLUMNS:
                self.chunks[c].append(pa.array(v, type=pa.int32(), memory_pool=POOL))
            else:
                self.chunks[c].append(pa.array(v, type=pa.large_string(), memory_pool=POOL))
            v.clear()
        self.packed += n

    def column(self, c: str) -> pa.ChunkedArray:
        """A string or integer column as Arrow (packs what is pending first)."""
        self.pack()
        return pa.chunked_array(self.chunks[c], type=self._arrow_type(c))

    def take(self, c: str, rows: np.ndarray) -> list[Any]:
        """The values of column ``c`` at the given positions, as Python objects."""
        out: list[Any] = self.column(c).take(pa.array(rows, type=pa.int64())).to_pylist()
        return out

    def keep(self, mask: np.ndarray) -> None:
        """Drop the rows where ``mask`` is False, one column at a time (no table copy)."""
        self.pack()
        arrow_mask = pa.array(mask, type=pa.bool_())
        for c in self.cols:
            if c in C.BOOL_COLUMNS:
                self.chunks[c] = [np.concatenate(self.chunks[c])[mask]] if self.chunks[c] else []
            else:
                col = pa.chunked_array(self.chunks[c], type=self._arrow_type(c))
                self.chunks[c] = []
                self.chunks[c] = list(pc.filter(col, arrow_mask, memory_pool=POOL).chunks)
                del col
        self.packed = int(mask.sum())

    @staticmethod
    def _arrow_type(c: str) -> pa.DataType:
        return pa.int32() if c in C.INT_COLUMNS else pa.large_string()

    def frame(self) -> Any:
        """The table, typed as ``canonical.column_dtype`` says."""
        import pandas as pd
        from pandas.arrays import ArrowStringArray

        self.pack()
        data: dict[str, Any] = {}
        for c in self.cols:
            parts, self.chunks[c] = self.chunks[c], []
            if c in C.BOOL_COLUMNS:
                data[c] = pd.Series(np.concatenate(parts) if parts else np.array([], dtype=bool),
                                    copy=False)
            elif c in C.INT_COLUMNS:
                arr = pa.chunked_array(parts, type=pa.int32()).combine_chunks()
                data[c] = pd.Series(pd.array(arr, dtype=C.column_dtype(c)), copy=False)
            else:
                arr = pa.chunked_array(parts, type=pa.large_string())
                strings: Any = ArrowStringArray  # the stubs lack its dtype argument
                data[c] = pd.Series(strings(arr, dtype=C.string_dtype()), copy=False)
        self.packed = 0
        return pd.DataFrame(data, columns=list(self.cols), copy=False)


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
