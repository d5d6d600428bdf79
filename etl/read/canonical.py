"""The canonical tables every reader produces and every later stage consumes.

Readers turn SIECLE/STS exports into these tables (one set per school and run); the
normalizer, validator and planner only ever see these column names. Every value is a string
(never a number: codes such as ELEVE_ID or CODE_MEF keep their leading zeros) or missing,
except the boolean columns listed in ``BOOL_COLUMNS`` and ``line``.

Column types (``column_dtype``): strings are pandas' Arrow-backed ``str`` dtype (one buffer per
column instead of one Python object per value: a large export's tables stay several times
smaller than the file); a missing string is ``NaN`` there, so code that turns rows into Python
values goes through ``records``/``values``, which give ``None`` for every missing value (NaN is
truthy: ``if value:`` on a raw NaN is a bug). Columns whose values repeat
(``CATEGORY_COLUMNS``: uai, profile, file, kind, role, names, dates...) are pandas ``category``
over those strings. Booleans are numpy ``bool``; ``line`` is a nullable ``Int32``. Vectorized
pandas works as it did on ``object`` columns: a missing value compares unequal (``==`` gives
False, ``!=`` True), ``isna``/``notna``/``isin`` are unchanged.

Keys:
- ``person_key`` is the source key without the academy prefix, e.g. ``SIECLE$0671234X$1541944``
  (pupil), ``SIECLE-RESP$0671234X$209401`` (guardian), ``STS$0671234X$8949`` (teacher/staff).
  The jointure written to the directory is ``<ACADEMY PREFIX>$<person_key>``.
- ``file`` and ``line`` point back at the source element so a rejected record can be named.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any, Final, cast

import numpy as np
import pandas as pd

SCHOOLS: Final = ("uai", "academy", "name", "school_year", "source", "file")
PERSONS: Final = (
    "person_key",
    "uai",
    "profile",  # ELV, TUT, ENS, DIR, EVS, DOC, ETA
    "source",  # SIECLE, STS
    "source_id",  # ELEVE_ID, PERSONNE_ID or STS INDIVIDU/@ID
    "ine",
    "last_name",
    "birth_name",
    "first_name",
    "birth_date",  # ISO yyyy-mm-dd
    "sex",  # M, F or None
    "email",
    "mobile",
    "mef",
    "function",  # STS FONCTION, e.g. ENS, DIR
    "entry_date",
    "leave_date",
    "has_left",  # bool: DATE_SORTIE in the past
    "file",
    "line",
)
STRUCTURES: Final = ("uai", "code", "kind", "label", "mefs", "divisions", "source", "file", "line")
MEMBERSHIPS: Final = (
    "uai",
    "person_key",
    "code",
    "kind",  # D division (class), G group
    "role",  # pupil, teacher
    "subject",  # CODE_MATIERE for teachers
    "head_teacher",  # bool
    "file",
    "line",
)
GUARDIAN_LINKS: Final = (
    "uai",
    "pupil_key",
    "guardian_key",
    "level",  # 1 legal guardian, 2 person in charge, 3 contact (RESP_LEGAL mapped)
    "legal",  # bool
    "relation",  # CODE_PARENTE
    "pays_fees",
    "lives_with",
    "contact_first",
    "file",
    "line",
)
SUBJECTS: Final = ("uai", "code", "short_label", "long_label", "source")
MEFS: Final = ("uai", "code", "formation", "label", "attached_to", "source")

TABLES: Final[dict[str, tuple[str, ...]]] = {
    "schools": SCHOOLS,
    "persons": PERSONS,
    "structures": STRUCTURES,
    "memberships": MEMBERSHIPS,
    "guardian_links": GUARDIAN_LINKS,
    "subjects": SUBJECTS,
    "mefs": MEFS,
}
BOOL_COLUMNS: Final = frozenset({"has_left", "head_teacher", "legal"})

PROFILE_PUPIL: Final = "ELV"
PROFILE_GUARDIAN: Final = "TUT"
PROFILE_TEACHER: Final = "ENS"
#: STS FONCTION -> SDET profile suffix (National_<suffix>)
STS_FUNCTION_PROFILE: Final[dict[str, str]] = {
    "ENS": "ENS",
    "DIR": "DIR",
    "EDU": "EVS",
    "DOC": "DOC",
    "SUR": "EVS",
    "ADF": "ETA",
    "ADM": "ETA",
    "LAB": "ETA",
    "OUV": "ETA",
    "MDS": "ETA",
    "AED": "EVS",
    "CPE": "EVS",
}


#: integer columns (nullable: a teacher linked by PROF_PRINC alone has no line)
INT_COLUMNS: Final = frozenset({"line"})
#: columns whose values repeat (codes, names, dates): pandas ``category`` (small integer codes
#: plus one copy of each distinct string) instead of one string per row
CATEGORY_COLUMNS: Final[dict[str, frozenset[str]]] = {
    "schools": frozenset(),
    "persons": frozenset({"uai", "profile", "source", "last_name", "birth_name", "first_name",
                          "sex", "mef", "function", "birth_date", "entry_date", "leave_date",
                          "file"}),
    "structures": frozenset({"uai", "kind", "source", "file"}),
    "memberships": frozenset({"uai", "code", "kind", "role", "subject", "file"}),
    "guardian_links": frozenset({"uai", "level", "relation", "pays_fees", "lives_with",
                                 "contact_first", "file"}),
    "subjects": frozenset({"uai", "source"}),
    "mefs": frozenset({"uai", "source"}),
}


def string_dtype() -> Any:
    """pandas' default string dtype, Arrow-backed (missing values are NaN)."""
    return pd.StringDtype("pyarrow", na_value=np.nan)


def column_dtype(column: str, table: str | None = None) -> Any:
    """The dtype a canonical column has in every table built by the readers."""
    if table is not None and column in CATEGORY_COLUMNS[table]:
        return "category"
    if column in BOOL_COLUMNS:
        return np.dtype(bool)
    if column in INT_COLUMNS:
        return pd.Int32Dtype()
    return string_dtype()


def empty_frame(table: str) -> pd.DataFrame:
    """An empty frame with the table's columns and dtypes: a copy of one built once per
    process, since every ``Tables()`` needs all seven, a few per school and document."""
    return _empty_template(table).copy()


@functools.cache
def _empty_template(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=column_dtype(c, table)) for c in TABLES[table]})


def frame(table: str, rows: dict[str, list[object]]) -> pd.DataFrame:
    """Build a table from column lists (absent columns are missing values), typed like the
    readers' tables."""
    cols = TABLES[table]
    n = len(next(iter(rows.values()))) if rows else 0
    data = {}
    for c in cols:
        v = rows.get(c, [None] * n)
        if c in BOOL_COLUMNS:
            v = [bool(x) for x in v]  # a missing flag is False, as the readers write it
        data[c] = pd.Series(v, dtype=column_dtype(c, table))
    return pd.DataFrame(data, columns=list(cols))


def missing(v: object) -> bool:
    """True for every spelling of a missing value: None, NaN, pd.NA, NaT."""
    if v is None:
        return True
    if not pd.api.types.is_scalar(v):  # a list or array is not missing
        return False
    return bool(pd.isna(cast(Any, v)))


def values(s: pd.Series) -> list[Any]:
    """A column as a list of plain Python values (str, int, bool), missing -> None."""
    out: list[Any] = cast(Any, s).to_numpy(dtype=object, na_value=None).tolist()
    return out


def isin(col: pd.Series, values: pd.Series | Iterable[Any]) -> np.ndarray:
    """``col.isin(values)`` as a boolean array, the same answers (a missing value is in
    ``values`` when one of them is missing). For the tables' Arrow-backed string columns,
    pyarrow's ``is_in`` on the Arrow arrays: pandas' own converts each value to a pyarrow
    scalar first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    to_arrow = getattr(col.array, "__arrow_array__", None)
    if to_arrow is None or not isinstance(col.dtype, pd.StringDtype):
        return col.isin(list(values) if not isinstance(values, pd.Series) else values).to_numpy()
    arr = to_arrow()
    from_values = getattr(getattr(values, "array", None), "__arrow_array__", None)
    if from_values is not None and isinstance(getattr(values, "dtype", None), pd.StringDtype):
        vs = from_values()
    else:
        vs = pa.array([v if isinstance(v, str) else None for v in values
                       if isinstance(v, str) or missing(v)], type=arr.type)
    if isinstance(vs, pa.ChunkedArray):
        vs = vs.combine_chunks()
    if not len(vs):
        return np.zeros(len(col), dtype=bool)
    found = pc.fill_null(pc.is_in(arr, value_set=vs.cast(arr.type)), False)
    return cast(np.ndarray, found.to_numpy(zero_copy_only=False))


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values, missing -> None (what per-row code needs)."""
    cols = [str(c) for c in df.columns]
    data = [values(df.iloc[:, i]) for i in range(len(cols))]
    return [dict(zip(cols, row, strict=True)) for row in zip(*data, strict=True)]


def tuples(df: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples of plain Python values, missing -> None."""
    return zip(*(values(df.iloc[:, i]) for i in range(df.shape[1])), strict=True)


def concat_frames(dfs: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` that keeps a column categorical when it is in every frame (pandas would
    fall back to plain strings when the categories differ, e.g. ELV pupils and TUT guardians
    in ``profile``)."""
    if len(dfs) > 1:
        from pandas.api.types import union_categoricals

        dfs = [d.copy(deep=False) for d in dfs]
        for c in dfs[0].columns:
            cols = [d[c] for d in dfs if c in d.columns]
            if len(cols) == len(dfs) and all(isinstance(x.dtype, pd.CategoricalDtype)
                                             for x in cols):
                try:
                    union = union_categoricals(cols).categories
                except TypeError:  # categories of different types: plain concat
                    continue
                for d in dfs:
                    d[c] = d[c].cat.set_categories(union)
    return pd.concat(dfs, ignore_index=True)


class Tables:
    """The canonical tables of one school (or a concatenation of schools)."""

    def __init__(self, **frames: pd.DataFrame) -> None:
        self.frames: dict[str, pd.DataFrame] = {t: empty_frame(t) for t in TABLES}
        for name, df in frames.items():
            if name not in TABLES:
                raise KeyError(name)
            self.frames[name] = df

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    def __setitem__(self, name: str, df: pd.DataFrame) -> None:
        self.frames[name] = df

    def add(self, name: str, df: pd.DataFrame) -> None:
        """Append rows (used when several files feed one table)."""
        cur = self.frames[name]
        self.frames[name] = df if cur.empty else concat_frames([cur, df])

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.frames.items()}

    @staticmethod
    def concat(parts: list[Tables]) -> Tables:
        out = Tables()
        for t in TABLES:
            dfs = [p.frames[t] for p in parts if not p.frames[t].empty]
            if dfs:
                out.frames[t] = concat_frames(dfs)
        return out

    def save(self, path: Any) -> None:
        """Persist for the next stage (XCom carries only a reference). ``path``: a local
        path, an fsspec URL, or a path object with the pathlib API (UPath, ObjectStoragePath)."""
        from upath import UPath

        root = UPath(path) if isinstance(path, str) else path
        if getattr(root, "protocol", "") in ("", "file", "local"):
            root.mkdir(parents=True, exist_ok=True)
        for name, df in self.frames.items():
            with (root / f"{name}.pkl").open("wb") as f:
                df.to_pickle(f)

    @staticmethod
    def load(path: Any) -> Tables:
        from upath import UPath

        root = UPath(path) if isinstance(path, str) else path
        out = Tables()
        for name in TABLES:
            p = root / f"{name}.pkl"
            if p.exists():
                with p.open("rb") as f:
                    out.frames[name] = pd.read_pickle(f)  # noqa: S301 - our own staging files
        return out
