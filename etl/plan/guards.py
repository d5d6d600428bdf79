"""Disaster guards, evaluated per school on the plan before anything is written.

Share of the school's accounts disabled, share updated, absolute number disabled, a pupils
export much smaller than the last applied one, a school year going backwards, or forwards
outside the roll-over window (normal mode), an export older than the one applied. A tripped
guard holds that school's changes for approval; the other schools proceed. The guards read the
stored state through ``etl.plan.stored.StoredView`` and return their results; they change
nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.config import Academy
from etl.plan.diff import RETYPE, Change
from etl.plan.stored import StoredView


def categorize(ch: Change) -> str:
    """create, update, membership, disable, restore."""
    if ch.op == "add":
        return "create"
    if ch.op == "delete":
        return RETYPE if ch.category == RETYPE else "delete"
    after = (ch.after or {}).get("entSyncStatus")
    before = (ch.before or {}).get("entSyncStatus")
    if ch.kind == "person" and after != before:
        if after == ["DISABLED"]:
            return "disable"
        if before == ["DISABLED"]:
            return "restore"
    return ch.category


@dataclass
class GuardResult:
    uai: str
    tripped: list[dict[str, Any]] = field(default_factory=list)
    evaluated: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str, value: float, limit: float, tripped: bool, detail: str) -> None:
        row = {"guard": name, "value": value, "limit": limit, "tripped": tripped,
               "detail": detail}
        self.evaluated.append(row)
        if tripped:
            self.tripped.append(row)


def evaluate_guards(academy: Academy, changes: list[Change], view: StoredView,
                    counts: Mapping[str, Mapping[str, int]],
                    years: Mapping[str, int | None], mode: str,
                    no_pupil_drop: set[str] | frozenset[str] = frozenset(),
                    existing: Mapping[str, int] | None = None,
                    ) -> dict[str, GuardResult]:
    """Guards per school. ``counts``: persons read tonight per school and profile;
    ``no_pupil_drop``: schools whose pupils came as an AAF Delta on the last applied state
    (a Delta removing pupils is no export that vanished: the pupils-drop guard judges
    complete exports and Complets); ``existing``: the schools' accounts when they were counted
    before a write of this run (a streamed run's absences, ``etl.plan.stream``), else now."""
    per_school: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ch in changes:
        if ch.uai and ch.kind == "person":
            per_school[ch.uai][categorize(ch)] += 1
    uais = sorted(set(per_school) | set(counts))
    if existing is None:
        existing = view.school_accounts(uais)
    states = view.schools(uais)
    max_update = (academy.rollover_max_update_share if mode != "normal"
                  else academy.max_update_share)
    out: dict[str, GuardResult] = {}
    for uai in uais:
        g = GuardResult(uai)
        n = existing.get(uai, 0)
        c = per_school.get(uai, {})
        dis, upd = c.get("disable", 0), c.get("update", 0) + c.get("membership", 0)
        min_n = academy.guard_min_changes
        share = dis / n if n else 0.0
        g.check("disable_share", round(share, 4), academy.max_disable_share,
                dis >= min_n and share > academy.max_disable_share,
                f"{dis} of {n} accounts would be disabled")
        g.check("disable_count", dis, academy.max_disable_count,
                dis > academy.max_disable_count, f"{dis} accounts would be disabled")
        ushare = upd / n if n else 0.0
        g.check("update_share", round(ushare, 4), max_update,
                upd >= min_n and ushare > max_update, f"{upd} of {n} accounts would change")
        st = states.get(uai)
        pupils = counts.get(uai, {}).get("ELV")
        if st is not None and st.pupils and pupils is not None and uai not in no_pupil_drop:
            drop = 1 - pupils / st.pupils
            g.check("pupil_drop", round(drop, 4), academy.max_pupil_drop_share,
                    drop > academy.max_pupil_drop_share,
                    f"pupils export has {pupils} pupils, last applied one had {st.pupils}")
        year = years.get(uai)
        if st is not None and st.school_year and year:
            older = year < st.school_year
            g.check("school_year", year, st.school_year, older,
                    f"the export's school year {year} is before the applied {st.school_year}"
                    if older else f"the export's school year {year}, the applied one "
                    f"{st.school_year}")
            # a new school year outside the roll-over window (normal mode): la rentrée
            # written only once someone approved it
            newer = (academy.hold_school_year_advance and mode == "normal"
                     and year > st.school_year)
            g.check("school_year_advance", year, st.school_year, newer,
                    f"the export starts school year {year} outside the roll-over window"
                    if newer else f"the export's school year {year}")
        out[uai] = g
    return out


def with_older_exports(guards: Mapping[str, GuardResult],
                       held: Mapping[str, list[str]]) -> dict[str, GuardResult]:
    """``guards`` with the ``older_export`` guard tripped for the schools discovery held
    because an export is older than the one applied (``held``: UAI -> reasons): their plan
    waits for approval like any held plan. The results given are not changed."""
    return with_held(guards, {uai: [{"guard": "older_export", "detail": "; ".join(reasons)}]
                              for uai, reasons in held.items()})


def with_held(guards: Mapping[str, GuardResult],
              held: Mapping[str, list[dict[str, Any]]]) -> dict[str, GuardResult]:
    """``guards`` with guards discovery tripped (``held``: UAI -> ``{"guard", "detail"}``:
    an export older than the applied one, an AAF Delta without its base ``aaf_gap``, a
    school's first AAF night ``source_switch``): their plan waits for approval like any held
    plan. The results given are not changed."""
    out = dict(guards)
    for uai, rows in held.items():
        had = out.get(uai) or GuardResult(uai)
        new = [{"guard": str(g["guard"]), "value": None, "limit": None, "tripped": True,
                "detail": str(g["detail"])} for g in rows]
        out[uai] = GuardResult(uai, [*had.tripped, *new], [*had.evaluated, *new])
    return out
