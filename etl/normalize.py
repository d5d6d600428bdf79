"""Normalization of canonical tables: vectorized pandas, no per-row Python on the hot path.

- names: NFC, trimmed, inner whitespace collapsed;
- source keys namespaced by academy: ``SIECLE$0671234X$1541944`` becomes
  ``AC-STRASBOURG$SIECLE$0671234X$1541944`` (ids are unique per academy only), so every key
  column is the jointure written to the directory;
- INE upper-cased, e-mails lower-cased, empty strings -> missing.

Text columns come out in the canonical Arrow-backed string dtype (missing is NaN, never None:
per-row code reads rows through ``etl.canonical.records``).
"""

from __future__ import annotations

import pandas as pd

from etl.canonical import Tables, string_dtype

NAME_COLUMNS = ("last_name", "birth_name", "first_name")
KEY_COLUMNS = {
    "persons": ("person_key",),
    "memberships": ("person_key",),
    "guardian_links": ("pupil_key", "guardian_key"),
}


def clean_text(s: pd.Series) -> pd.Series:
    """NFC, trim, collapse whitespace; empty -> missing. Missing stays missing (NaN in the
    canonical Arrow-backed string dtype, see ``etl.canonical``)."""
    out = (
        s.astype(string_dtype())
        .str.normalize("NFC")
        .str.replace(r"\s+", " ", regex=True)  # pandas runs \s with Python's re (Unicode)
        .str.strip()
    )
    return out.where(out.notna() & (out != ""))


def prefix_keys(s: pd.Series, prefix: str) -> pd.Series:
    keys = s.astype(string_dtype())
    return (prefix + "$" + keys).where(keys.notna())


def normalize_tables(tables: Tables, jointure_prefix: str) -> Tables:
    """Return normalized copies of the tables (the input is not modified)."""
    out = Tables(**{k: v.copy() for k, v in tables.frames.items()})
    p = out["persons"]
    if not p.empty:
        for col in NAME_COLUMNS:
            p[col] = clean_text(p[col])
        p["ine"] = clean_text(p["ine"]).str.upper()
        p["email"] = clean_text(p["email"]).str.lower()
        p["sex"] = p["sex"].where(p["sex"].isin(["M", "F"]))
        out["persons"] = p
    s = out["structures"]
    if not s.empty:
        s["label"] = clean_text(s["label"])
        out["structures"] = s
    for table, cols in KEY_COLUMNS.items():
        df = out[table]
        if df.empty:
            continue
        for col in cols:
            df[col] = prefix_keys(df[col], jointure_prefix)
        out[table] = df
    return out
