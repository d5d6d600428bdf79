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


def test_a_new_school_year_outside_the_window_is_held_and_said_in_french() -> None:
    from etl.validate.feedback import guard_reason

    row = {"guard": "school_year_advance", "value": 2027, "limit": 2026, "tripped": True,
           "detail": "the export starts school year 2027 outside the roll-over window"}
    assert "2027" in guard_reason(row) and "rentrée" in guard_reason(row)


def test_a_new_school_year_trips_in_normal_mode_only() -> None:
    def advance(mode: str) -> dict[str, Any]:
        g = evaluate_guards(get_academy("ac-reims"), [], cast(StoredView, _View()),
                            {"0510001A": {"ELV": 80}}, {"0510001A": 2027}, mode)["0510001A"]
        return next(r for r in g.evaluated if r["guard"] == "school_year_advance")

    assert advance("normal")["tripped"]
    assert not advance("no_disable")["tripped"]  # the roll-over window's mode
    assert not _school_year(2027)["tripped"]  # not a year going backwards
