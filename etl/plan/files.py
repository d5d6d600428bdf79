"""Plan files in the staging area: a header line, then one change per line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from etl import staging
from etl.config import Settings

log = logging.getLogger(__name__)


def _write_plan(settings: Settings, ref: str, header: dict[str, Any],
                changes: list[Any]) -> str:
    """Write a plan file (``etl.plan.diff.plan_lines``: a header line, then one change a line,
    in apply order) into the staging area, as a stream; returns the sha256 of exactly the
    bytes written."""
    from etl.plan.diff import plan_lines

    return staging.write_chunks(settings, ref, plan_lines(header, changes))


def _plan_file_lines(settings: Settings, ref: str) -> Iterator[bytes]:
    """A staged plan file's lines, read as they are consumed (the file closes at the end)."""
    with staging.path(settings, ref).open("rb") as f:
        yield from f


def read_plan_file(settings: Settings, ref: str) -> tuple[dict[str, Any], Iterator[Any]]:
    """A staged plan: its header and an iterator of its changes (``etl.plan.diff.Change``), read
    line by line in apply order."""
    from etl.plan.diff import read_plan

    return read_plan(_plan_file_lines(settings, ref))
