"""Escaping, dates and the SIECLE header: the text pieces every writer streams out."""

from __future__ import annotations

import datetime
import io
from typing import IO

ISO = "ISO-8859-15"
UTF8 = "UTF-8"
_CODECS = {ISO: "iso8859_15", UTF8: "utf-8"}


def _upper(name: str) -> str:
    """Upper-case as SIECLE stores names; keeps ß, which has no ISO-8859-15 capital."""
    return "".join(c if c == "ß" else c.upper() for c in name)


def _esc(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _attr(text: str) -> str:
    return _esc(text).replace('"', "&quot;")


def _fr(d: datetime.date) -> str:
    return f"{d.day:02d}/{d.month:02d}/{d.year:04d}"


def _prolog(encoding: str) -> str:
    return f'<?xml version="1.0" encoding="{encoding}"?>\n'


def _siecle_header(root: str, version: str, uai: str, year: int, when: datetime.datetime) -> str:
    return (
        f'{_prolog(ISO)}<{root} VERSION="{version}">\n'
        "  <PARAMETRES>\n"
        f"    <UAJ>{uai}</UAJ>\n"
        f"    <ANNEE_SCOLAIRE>{year}</ANNEE_SCOLAIRE>\n"
        f"    <DATE_EXPORT>{_fr(when.date())}</DATE_EXPORT>\n"
        f"    <HORODATAGE>{_fr(when.date())} {when:%H:%M:%S}</HORODATAGE>\n"
        "  </PARAMETRES>\n"
        "  <DONNEES>\n"
    )


def _leaf(out: list[str], indent: str, tag: str, value: str | None) -> None:
    """Append `<tag>value</tag>`; None means NULL (no element), "" an empty element."""
    if value is not None:
        out.append(f"{indent}<{tag}>{_esc(value)}</{tag}>\n")


def _text(binary: IO[bytes], encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(binary, encoding=_CODECS[encoding], errors="strict", newline="\n")
