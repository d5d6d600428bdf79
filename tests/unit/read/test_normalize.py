"""Names and what can hide in them (issue 18): invisible characters removed and reported."""

from __future__ import annotations

import sys
import unicodedata

import pandas as pd

from etl.errors import RecordWarning
from etl.read import canonical as C
from etl.read.canonical import Tables, string_dtype
from etl.read.normalize import INVISIBLE, clean_text, has_invisible, normalize_tables


def test_invisible_characters_are_format_or_control_characters_only() -> None:
    """What is removed is invisible by definition (Unicode Cf, C1 controls, the combining
    grapheme joiner); every format character this Python knows is removed."""
    every = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    pattern = pd.Series([chr(c) for c in every], dtype=string_dtype())
    removed = {ord(c) for c in pattern[has_invisible(pattern)]}
    for cp in removed:
        assert unicodedata.category(chr(cp)) in ("Cf", "Cc") or cp == 0x034F, hex(cp)
    cf = {cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"}
    assert cf <= removed
    for cp in (0x202E, 0x202A, 0x2066, 0x2069, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
               0xFEFF, 0x00AD, 0x2060, 0x0085, 0x009F, 0xE0041):
        assert cp in removed, hex(cp)
    assert INVISIBLE.startswith("[")


def test_names_keep_every_visible_character() -> None:
    s = pd.Series(["O'BRIEN", "N'DIAYE-PETIT", "Zoé", "e\u0301", "Ærøskøbing", "Łukasz",
                   "D\u2019ARC", "\u202eNITRAM\u202c", "Zo\u200b\u00e9", "\u200b", None],
                  dtype=string_dtype())
    out = list(clean_text(s))
    assert out[:7] == ["O'BRIEN", "N'DIAYE-PETIT", "Zoé", "é", "Ærøskøbing", "Łukasz",
                       "D\u2019ARC"]
    assert out[7:9] == ["NITRAM", "Zoé"]
    assert pd.isna(out[9]) and pd.isna(out[10])  # nothing visible left: missing


def test_each_person_with_invisible_characters_is_reported_without_its_name() -> None:
    persons = C.empty_frame("persons")
    rows = {"person_key": ["SIECLE$0510001Z$1", "SIECLE$0510001Z$2", "STS$0510001Z$9"],
            "uai": ["0510001Z"] * 3, "profile": ["ELV", "ELV", "ENS"],
            "source": ["SIECLE", "SIECLE", "STS"], "source_id": ["1", "2", "9"],
            "last_name": ["MAR\u202eNITR", "DURAND", "ROUX"],
            "first_name": ["Zoé", "Hél\u200bène", "In\u00adès"], "has_left": [False] * 3,
            "file": ["e.xml", "e.xml", "s.xml"], "line": [5, 6, 7]}
    persons = pd.DataFrame({c: rows.get(c, [None] * 3) for c in C.PERSONS})
    warnings: list[RecordWarning] = []
    out = normalize_tables(Tables(persons=persons), "AC-REIMS", warnings)
    assert list(out["persons"]["last_name"]) == ["MARNITR", "DURAND", "ROUX"]
    assert [(w.file, w.line, w.element, w.rule) for w in warnings] == [
        ("e.xml", 5, "ELEVE", "invisible_characters"),
        ("e.xml", 6, "ELEVE", "invisible_characters"),
        ("s.xml", 7, "INDIVIDU", "invisible_characters")]
    assert warnings[0].message == ("person AC-REIMS$SIECLE$0510001Z$1: invisible or "
                                   "direction-control characters removed from last_name")
    for w in warnings:
        for name in ("MAR", "NITR", "DURAND", "Hél", "ROUX", "Inès", "In"):
            assert name not in w.message.split(": ", 1)[1]
