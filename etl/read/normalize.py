"""Normalization of canonical tables: vectorized pandas, no per-row Python on the hot path.

- names: invisible characters removed (``INVISIBLE``), NFC, trimmed, inner whitespace
  collapsed; a name that had some is reported (a warning, ``invisible_characters``);
- source keys namespaced by academy: ``SIECLE$0671234X$1541944`` becomes
  ``AC-STRASBOURG$SIECLE$0671234X$1541944`` (ids are unique per academy only), so every key
  column is the jointure written to the directory;
- INE upper-cased, e-mails lower-cased, empty strings -> missing.

Text columns come out in the canonical Arrow-backed string dtype (missing is NaN, never None:
per-row code reads rows through ``etl.read.canonical.records``).
"""

from __future__ import annotations

import pandas as pd

from etl.errors import RecordWarning
from etl.read.canonical import Tables, string_dtype

NAME_COLUMNS = ("last_name", "birth_name", "first_name")
#: characters that show nothing yet change what a name looks like or how it compares: the
#: Unicode format characters (category Cf: bidi overrides and isolates U+202A-202E and
#: U+2066-2069, marks U+200E/200F/061C, zero-width space, joiners and no-break U+200B-200D,
#: U+2060, U+FEFF, soft hyphen U+00AD, tag characters U+E0000...), the C1 controls
#: U+0080-009F and DEL, and the combining grapheme joiner U+034F. A name written RLO...PDF
#: displays as another; one with a zero-width space looks like an existing one and is not.
#: They are removed, not rejected: the person keeps an account under the visible name, and
#: the school is told. Names in SIECLE and STS-web are in Latin script, where joiners have
#: no use; apostrophes, hyphens, accents and every visible letter are kept.
_INVISIBLE_RANGES = (
    (0x007F, 0x009F), (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)
#: the class of those characters, written with the characters themselves (the same pattern
#: for Python's re and for pyarrow's RE2, whichever pandas hands it to)
INVISIBLE = "[" + "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}"
                          for a, b in _INVISIBLE_RANGES) + "]"
_ELEMENT = {"ELV": "ELEVE", "TUT": "PERSONNE"}
KEY_COLUMNS = {
    "persons": ("person_key",),
    "memberships": ("person_key",),
    "guardian_links": ("pupil_key", "guardian_key"),
}


def has_invisible(s: pd.Series) -> pd.Series:
    """Boolean mask of the values holding an ``INVISIBLE`` character (missing: False)."""
    return s.astype(string_dtype()).str.contains(INVISIBLE, regex=True).fillna(False)


def clean_text(s: pd.Series) -> pd.Series:
    """Invisible characters removed, NFC, trim, collapse whitespace; empty -> missing.
    Missing stays missing (NaN in the canonical Arrow-backed string dtype, see
    ``etl.read.canonical``)."""
    out = (
        s.astype(string_dtype())
        .str.replace(INVISIBLE, "", regex=True)
        .str.normalize("NFC")
        .str.replace(r"\s+", " ", regex=True)  # pandas runs \s with Python's re (Unicode)
        .str.strip()
    )
    return out.where(out.notna() & (out != ""))


def prefix_keys(s: pd.Series, prefix: str) -> pd.Series:
    keys = s.astype(string_dtype())
    return (prefix + "$" + keys).where(keys.notna())


def _invisible_warnings(p: pd.DataFrame, marks: dict[str, pd.Series], jointure_prefix: str,
                        ) -> list[RecordWarning]:
    """One warning per person whose names held invisible characters: keys and columns
    only, never the name."""
    any_mark = pd.Series(False, index=p.index)
    for m in marks.values():
        any_mark |= m
    out = []
    for i in any_mark[any_mark].index:
        row = p.loc[i]
        cols = ", ".join(c for c, m in marks.items() if m.loc[i])
        key = row["person_key"]
        who = (f"person {jointure_prefix}${key}" if isinstance(key, str)
               else f"person with source_id {row['source_id']}")
        el = "INDIVIDU" if row["source"] == "STS" else _ELEMENT.get(str(row["profile"]),
                                                                    "PERSONNE")
        line = row["line"]
        out.append(RecordWarning(
            str(row["file"]), str(row["uai"]), None if pd.isna(line) else int(line), el,
            "invisible_characters",
            f"{who}: invisible or direction-control characters removed from {cols}"))
    return out


def normalize_tables(tables: Tables, jointure_prefix: str,
                     warnings: list[RecordWarning] | None = None) -> Tables:
    """Return normalized copies of the tables (the input is not modified); what was
    changed that the school should know (``invisible_characters``) goes to ``warnings``."""
    out = Tables(**{k: v.copy() for k, v in tables.frames.items()})
    p = out["persons"]
    if not p.empty:
        marks = {c: m for c in NAME_COLUMNS if (m := has_invisible(p[c])).any()}
        if marks and warnings is not None:
            warnings.extend(_invisible_warnings(p, marks, jointure_prefix))
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
