"""Canonical tables: column types, and the one way rows become Python values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from etl.read import canonical as C
from etl.read.canonical import Tables, frame, missing, records, tuples, values


def persons() -> pd.DataFrame:
    return frame("persons", {
        "person_key": ["SIECLE$0671234C$1", "SIECLE$0671234C$2"],
        "uai": ["0671234C", "0671234C"],
        "profile": ["ELV", "ELV"],
        "ine": ["123456789AB", None],
        "last_name": ["Nom", None],
        "has_left": [False, True],
        "line": [12, None],
    })


def test_frame_has_the_canonical_types() -> None:
    p = persons()
    assert isinstance(p["uai"].dtype, pd.CategoricalDtype)  # repeated: categorical
    assert p["person_key"].dtype == C.string_dtype()  # Arrow-backed strings
    assert p["has_left"].dtype == np.dtype(bool)
    assert p["line"].dtype == pd.Int32Dtype()
    # a missing string is NaN in the frame: truthy, hence never handed out raw
    assert p["ine"].isna().tolist() == [False, True]


def test_rows_reach_python_with_none_for_every_missing_value() -> None:
    p = persons()
    rows = records(p)
    assert rows[1]["ine"] is None and rows[1]["last_name"] is None and rows[1]["line"] is None
    assert rows[1]["email"] is None  # a column never filled
    assert rows[0]["line"] == 12 and type(rows[0]["line"]) is int
    assert rows[0]["has_left"] is False and rows[1]["has_left"] is True
    assert type(rows[0]["uai"]) is str and rows[0]["uai"] == "0671234C"
    assert list(tuples(p[["ine", "line"]])) == [("123456789AB", 12), (None, None)]
    assert values(p["ine"]) == ["123456789AB", None]
    assert values(pd.Series(["a", None, np.nan, pd.NA], dtype=object)) == ["a", None, None, None]


def test_missing_knows_every_spelling() -> None:
    assert all(missing(v) for v in (None, np.nan, pd.NA, pd.NaT, float("nan")))
    assert not any(missing(v) for v in ("", "nan", 0, False, [None]))


def test_concat_keeps_categories_of_different_files() -> None:
    guardians = frame("persons", {"person_key": ["SIECLE-RESP$0671234C$9"], "uai": ["0671234C"],
                                  "profile": ["TUT"], "line": [3]})
    out = Tables.concat([Tables(persons=persons()), Tables(persons=guardians)])["persons"]
    assert isinstance(out["profile"].dtype, pd.CategoricalDtype)
    assert values(out["profile"]) == ["ELV", "ELV", "TUT"]
    assert values(out["line"]) == [12, None, 3]


@pytest.mark.parametrize("values", [
    ["a", "c"], {"a", "zz"}, ("c", None), [], [float("nan"), "b"],
    pd.Series(["b", None, "a"], dtype="str"), pd.Series(["c"], dtype="str"),
    pd.Series([], dtype="str"), pd.Series([1, 2]),
])
def test_isin_answers_as_pandas_does(values: Any) -> None:
    """etl.read.canonical.isin, pyarrow's is_in on the tables' string columns, gives pandas'
    Series.isin answers, missing values included."""
    from etl.read.canonical import isin

    col = pd.Series(["a", "b", None, "c", "a", None], dtype="str")
    expected = col.isin(list(values) if not isinstance(values, pd.Series) else values)
    got = isin(col, values)
    assert isinstance(got, np.ndarray) and got.dtype == bool
    assert got.tolist() == expected.tolist()
    other = pd.Series([1, 2, None], dtype="float64")  # not a string column: pandas itself
    assert isin(other, [1.0]).tolist() == other.isin([1.0]).tolist()
