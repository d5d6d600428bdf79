"""Shared streaming machinery for the SIECLE and STS-web readers."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from etl.discover.xmlsafe import XmlSource, iterparse, open_source, xml_error
from etl.errors import FileRejected, RecordRejected, RecordWarning
from etl.read import canonical as C
from etl.read.canonical import Tables

log = logging.getLogger(__name__)


@dataclass
class ReadResult:
    """What one document yields: canonical tables plus the records it had to skip and what
    it skipped without rejecting anything (unknown elements)."""

    tables: Tables
    rejected: list[RecordRejected] = field(default_factory=list)
    records: int = 0
    warnings: list[RecordWarning] = field(default_factory=list)


#: a tag shown in a report as it is; any other (odd characters, very long) as ``?``
_PLAIN_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class UnknownElements:
    """Children of the containers a reader knows whose tag it does not know.

    Why: a wrong element name (``RESPONSABLES/RESPONSABLE`` for ``RESPONSABLE_ELEVE``,
    ``MEFS_APPARTENANCE/MEF``) made the reader skip every guardian link or class MEF without
    a word. ``expected`` maps a container tag to the child tags the reader reads (or frees)
    in it; record fields are not checked (real exports carry many the ENT does not use).
    Each (container, tag) is reported once, with how many and the first line.
    """

    def __init__(self, src: XmlSource, uai: str | None,
                 expected: dict[str, frozenset[str]]) -> None:
        self.src, self.uai, self.expected = src, uai, expected
        self.found: dict[tuple[str, str], list[Any]] = {}  # -> [first line, count]

    def _note(self, container: str, tag: Any, line: int | None) -> None:
        if not isinstance(tag, str):
            return  # a comment or processing instruction
        key = (container, tag)
        seen = self.found.get(key)
        if seen is None:
            self.found[key] = [line, 1]
        else:
            seen[1] += 1

    def check(self, container: Any) -> None:
        """The children of ``container`` still in the tree (those read were freed)."""
        known = self.expected.get(container.tag)
        if known is not None:
            for c in container:
                if c.tag not in known:
                    self._note(container.tag, c.tag, c.sourceline)

    def within(self, el: Any) -> None:
        """The known containers inside a record (its whole subtree is in memory)."""
        for c in el:
            if c.tag in self.expected:
                known = self.expected[c.tag]
                for cc in c:
                    if cc.tag in known:
                        self.within(cc)
                    else:
                        self._note(c.tag, cc.tag, cc.sourceline)

    def released(self, el: Any) -> Any:
        """``el``, once the siblings ``release(el)`` is about to free are looked at (one
        read before is known; an unknown one was never read)."""
        parent = el.getparent()
        known = self.expected.get(parent.tag) if parent is not None else None
        if known is not None:
            for sib in el.itersiblings(preceding=True):
                if sib.tag not in known:
                    self._note(parent.tag, sib.tag, sib.sourceline)
        return el

    def warnings(self) -> list[RecordWarning]:
        out = []
        for (container, tag), (line, n) in self.found.items():
            shown = tag if _PLAIN_TAG.fullmatch(tag) else "?"
            known = ", ".join(f"<{k}>" for k in sorted(self.expected[container]))
            out.append(RecordWarning(
                self.src.short_name, self.uai, line, f"{container}/{shown}", "unknown_element",
                f"<{shown}> inside <{container}> is not an element the reader knows "
                f"(expected {known}): skipped, {n} time(s), first at line {line}"))
            log.warning("%s (school %s): %d unknown <%s> inside <%s> skipped, first at line "
                        "%s", self.src.short_name, self.uai, n, shown, container, line)
        return sorted(out, key=lambda w: w.line or 0)


#: rows kept as Python objects before they are packed (8k rows: a few MB of Python objects;
#: larger chunks raised the peak, smaller ones did not lower it)
CHUNK_ROWS = 8_192


def _pool() -> Any:
    """Where the readers' Arrow buffers live: jemalloc, else malloc (both peak lower than
    pyarrow's default mimalloc pool, which keeps the chunks' freed buffers)."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        return pa.system_memory_pool()


POOL = _pool()


STRINGS: Final = pa.large_string()


class Columns:
    """Column lists for one canonical table, filled row by row.

    Every ``CHUNK_ROWS`` rows the lists are packed: strings into Arrow arrays, the columns of
    ``canonical.CATEGORY_COLUMNS`` into integer codes (one Python string kept per distinct
    value), booleans into numpy, ``line`` into Arrow integers. Python objects live for one
    chunk only; ``frame`` turns the chunks into pandas columns of the types
    ``canonical.column_dtype`` names, without a table-wide copy.
    """

    def __init__(self, table: str, cols: tuple[str, ...], chunk_rows: int | None = None,
                 prefixes: dict[str, str] | None = None) -> None:
        self.table = table
        self.cols = cols
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        #: column -> text put in front of every value when packing (keys are appended as the
        #: bare source id, so no per-row key string is made in Python)
        self.prefixes = prefixes or {}
        #: categorical column -> {value: code}, codes in order of first appearance
        self.categories: dict[str, dict[str, int]] = {
            c: {} for c in cols if c in C.CATEGORY_COLUMNS[table]}
        self.data: dict[str, list[Any]] = {c: [] for c in cols}
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
            elif c in self.categories:
                d = self.categories[c]
                self.chunks[c].append(np.array(
                    [-1 if x is None else d.setdefault(x, len(d)) for x in v], dtype=np.int32))
            elif c in self.prefixes:
                ids = pa.array(v, type=STRINGS, memory_pool=POOL)
                prefix = pa.scalar(self.prefixes[c], type=STRINGS)
                self.chunks[c].append(
                    pc.binary_join_element_wise(prefix, ids, pa.scalar("", type=STRINGS),
                                                memory_pool=POOL))
                del ids
            else:
                self.chunks[c].append(pa.array(v, type=STRINGS, memory_pool=POOL))
            v.clear()
        self.packed += n

    def _codes(self, c: str) -> np.ndarray:
        self.pack()
        parts = self.chunks[c]
        if len(parts) > 1:
            self.chunks[c] = parts = [np.concatenate(parts)]
        return parts[0] if parts else np.zeros(0, dtype=np.int32)

    def column(self, c: str) -> pa.ChunkedArray:
        """A string or integer column as Arrow (packs what is pending first)."""
        self.pack()
        return pa.chunked_array(self.chunks[c],
                                type=pa.int32() if c in C.INT_COLUMNS else STRINGS)

    def equals(self, c: str, value: str) -> np.ndarray:
        """Boolean mask of the rows where column ``c`` is ``value``."""
        if c in self.categories:
            code = self.categories[c].get(value)
            codes = self._codes(c)
            return codes == code if code is not None else np.zeros(len(codes), dtype=bool)
        out: np.ndarray = pc.equal(self.column(c), value).fill_null(False).to_numpy(
            zero_copy_only=False)
        return out

    def take(self, c: str, rows: np.ndarray) -> list[Any]:
        """The values of column ``c`` at the given positions, as Python objects."""
        if c in self.categories:
            values = list(self.categories[c])
            return [values[i] if i >= 0 else None for i in self._codes(c)[rows].tolist()]
        out: list[Any] = self.column(c).take(pa.array(rows, type=pa.int64())).to_pylist()
        return out

    def keep(self, mask: np.ndarray) -> None:
        """Drop the rows where ``mask`` is False, one column at a time (no table copy)."""
        self.pack()
        arrow_mask = pa.array(mask, type=pa.bool_())
        for c in self.cols:
            if c in C.BOOL_COLUMNS or c in self.categories:
                self.chunks[c] = [np.concatenate(self.chunks[c])[mask]] if self.chunks[c] else []
            else:
                col = self.column(c)
                self.chunks[c] = []
                self.chunks[c] = list(pc.filter(col, arrow_mask, memory_pool=POOL).chunks)
                del col
        self.packed = int(mask.sum())

    def frame(self) -> Any:
        """The table, typed as ``canonical.column_dtype`` says."""
        import pandas as pd

        self.pack()
        data: dict[str, Any] = {}
        for c in self.cols:
            if c in C.BOOL_COLUMNS:
                parts = self.chunks[c]
                data[c] = pd.Series(np.concatenate(parts) if parts else np.array([], dtype=bool),
                                    copy=False)
            elif c in C.INT_COLUMNS:
                arr = self.column(c).combine_chunks(memory_pool=POOL)
                data[c] = pd.Series(pd.array(arr, dtype=C.column_dtype(c)), copy=False)
            elif c in self.categories:
                categories = pd.Index(list(self.categories[c]), dtype=C.string_dtype())
                data[c] = pd.Series(pd.Categorical.from_codes(
                    self._codes(c), dtype=pd.CategoricalDtype(categories)), copy=False)
                self.categories[c] = {}
            else:
                data[c] = pd.Series(_strings(self.column(c)), copy=False)
            self.chunks[c] = []
        self.packed = 0
        return pd.DataFrame(data, columns=list(self.cols), copy=False)


def _strings(col: pa.ChunkedArray) -> Any:
    """Arrow strings as pandas' ``str`` extension array (no copy)."""
    from pandas.arrays import ArrowStringArray

    strings: Any = ArrowStringArray  # the stubs lack its dtype argument
    return strings(col, dtype=C.string_dtype())


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
