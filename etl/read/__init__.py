"""Readers: one per export kind, each streaming a document into canonical tables."""

from __future__ import annotations

import datetime as dt

from etl.discover.landing import Discovered
from etl.read.base import ReadResult
from etl.read.siecle import (
    read_siecle_eleves,
    read_siecle_nomenclatures,
    read_siecle_responsables,
    read_siecle_structures,
)
from etl.read.sts import read_sts

__all__ = ["ReadResult", "read_document"]


def read_document(d: Discovered, today: dt.date | None = None,
                  check: bool = False) -> ReadResult:
    """Read one discovered document with the reader of its kind. ``check``: refuse it
    (``FileChanged``) unless it is still what discovery recorded (sha256, size, type)."""
    assert d.uai is not None and d.kind is not None
    src = d.checked_source if check and d.sha256 else d.source
    if d.kind == "ELEVES":
        return read_siecle_eleves(src, d.uai, today)
    if d.kind == "RESPONSABLES":
        return read_siecle_responsables(src, d.uai)
    if d.kind == "NOMENCLATURES":
        return read_siecle_nomenclatures(src, d.uai)
    if d.kind == "STRUCTURES":
        return read_siecle_structures(src, d.uai)
    if d.kind == "STS":
        return read_sts(src, d.uai)
    raise ValueError(f"no reader for kind {d.kind}")
