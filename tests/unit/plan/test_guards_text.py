"""The guards' details read right whether they tripped or not (the panel and `pending` show
every evaluated guard)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from etl.config import get_academy
from etl.plan.guards import evaluate_guards
from etl.plan.stored import StoredView


class _View:
    """What evaluate_guards asks of the stored view: one school of 100 accounts, applied in
    school year 2026."""

    def school_accounts(self, uais: list[str]) -> dict[str, int]:
        return {u: 100 for u in uais}

    def schools(self, uais: list[str]) -> dict[str, Any]:
        return {u: SimpleNamespace(pupils=80, school_year=2026) for u in uais}


def _school_year(year: int) -> dict[str, Any]:
    g = evaluate_guards(get_academy("ac-reims"), [], cast(StoredView, _View()),
                        {"0510001A": {"ELV": 80}}, {"0510001A": year}, "normal")["0510001A"]
    return next(r for r in g.evaluated if r["guard"] == "school_year")


def test_a_passing_school_year_guard_does_not_say_before() -> None:
    same = _school_year(2026)
    assert not same["tripped"] and "before" not in same["detail"]
    older = _school_year(2025)
    assert older["tripped"] and "2025 is before the applied 2026" in older["detail"]
