"""A streamed night (etl/plan/stream.py, issue 24) on real slapds: the schools planned and
written group by group, the absences judged after the last group, give the directory one run
over the whole academy gives, whatever the order of the groups.

Each variant syncs the same three nights into a directory and state DB of its own: a first
load, la rentrée outside the roll-over window (normal mode: leavers disabled, pupils and
teachers moving between schools of different groups, new classes, last year's archived; the
guards relaxed so that it is written), then the same rentrée exported again a day later (the
no-change night). The dumps, people named by their source keys (their uid is drawn at random)
and logins by their stem (the homonyms' number follows who was created first), must be equal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from etl import config
from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import Rentree, generate_academy
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd
from tests.ldap_fixture import admin_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-strasbourg"
TONIGHT = dt.date(2026, 10, 1)
RENTREE = dt.date(2027, 10, 5)  # outside the window: normal mode, absences judged
AGAIN = RENTREE + dt.timedelta(days=1)

#: (plan_group, plan_order, read_ahead): the whole academy at once (the reference), then
#: groups, the next one read ahead in a process of its own or (the last) in the sync's own
VARIANTS = [(0, "uai", 1), (1, "uai", 1), (1, "reverse", 1), (2, "shuffle", 1),
            (1, "uai", 0)]


@pytest.fixture
def relaxed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The academy's guards wide open: la rentrée in normal mode is written, not held."""
    real = config.load_academies

    def load(path: Path | None = None) -> dict[str, config.Academy]:
        return {c: dataclasses.replace(a, max_update_share=100.0, max_disable_share=100.0,
                                       max_disable_count=10 ** 6, max_pupil_drop_share=1.0,
                                       hold_school_year_advance=False)
                for c, a in real(path).items()}

    monkeypatch.setattr(config, "load_academies", load)


def landings(tmp: Path) -> tuple[Path, Path, Path]:
    generate_academy(tmp / "tonight", ACADEMY, 4, 40, seed=5,
                     rentree=Rentree(tmp / "rentree", RENTREE))
    generate_academy(tmp / "t2", ACADEMY, 4, 40, seed=5,
                     rentree=Rentree(tmp / "again", AGAIN))
    return tmp / "tonight", tmp / "rentree", tmp / "again"


#: attributes a run stamps with its own time, and the service accounts' passwords (each
#: slapd draws its own)
VOLATILE = {"entSyncDisabledAt", "userPassword"}


def dump(server: LdapServer) -> dict[str, dict[str, list[str]]]:
    """The directory below the base, people named by their source keys."""
    c = admin_connection(server)
    try:
        entries = c.extend.standard.paged_search(server.base, "(objectClass=*)",
                                                 attributes=["*"], paged_size=500,
                                                 generator=False)
        rows = {e["dn"]: {k: sorted(str(x) for x in v) if isinstance(v, list) else [str(v)]
                          for k, v in e["attributes"].items()}
                for e in entries if e.get("type") == "searchResEntry"}
    finally:
        c.unbind()
    names: dict[str, str] = {}
    for dn, a in rows.items():
        if "ENTPersonJointure" in a:
            names[dn] = "person:" + "|".join(a["ENTPersonJointure"])
            names[a["uid"][0]] = names[dn]

    def norm(v: str) -> str:
        return names.get(v, v)

    out = {}
    for dn, a in rows.items():
        attrs = {k: sorted(norm(x) for x in v) for k, v in a.items() if k not in VOLATILE}
        if "ENTPersonLogin" in attrs:
            attrs["ENTPersonLogin"] = [re.sub(r"\d+$", "", x) for x in attrs["ENTPersonLogin"]]
        out[norm(dn)] = attrs
    return out


def nights(tmp: Path, group: int, order: str, read_ahead: int, tonight: Path, rentree: Path,
           again: Path) -> list[Any]:
    server = start_slapd(tmp / "slapd")
    try:
        env = Settings.from_env({
            "ENTSYNC_LANDING": str(tonight), "ENTSYNC_WORKDIR": str(tmp / "work"),
            "ENTSYNC_STATE_URL": f"sqlite:///{tmp / 'state.db'}",
            "ENTSYNC_PLAN_GROUP": str(group), "ENTSYNC_PLAN_ORDER": order,
            "ENTSYNC_READ_AHEAD": str(read_ahead), **server.env()})
        out: list[Any] = []
        for landing, day in ((tonight, TONIGHT), (rentree, RENTREE), (again, AGAIN)):
            s = pipeline.run_sync(dataclasses.replace(env, landing=landing),
                                  RunRequest(ACADEMY, today=day))
            assert s["status"] == "success", (group, order, day, s)
            out.append((s["changes"], s["applied"], dump(server)))
        return out
    finally:
        stop_slapd(tmp / "slapd")


def test_the_order_of_the_groups_changes_nothing(tmp_path: Path, relaxed: None) -> None:
    tonight, rentree, again = landings(tmp_path / "landing")
    runs = {v: nights(tmp_path / "-".join(map(str, v)), *v, tonight, rentree, again)
            for v in VARIANTS}
    ref = runs[VARIANTS[0]]
    # la rentrée did something of every kind the streaming must get right
    before, after = ref[0][2], ref[1][2]
    disabled = [dn for dn, a in after.items() if a.get("entSyncStatus") == ["DISABLED"]]
    assert disabled, "nobody left: the rentrée judged no absence"
    def school_of(d: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
        return {a["ENTEleveINE"][0]: a.get("ENTPersonStructRattach", [])
                for a in d.values() if a.get("ENTEleveINE")}

    was, now = school_of(before), school_of(after)
    assert any(now[i] != was[i] for i in set(was) & set(now)), "no pupil changed school"
    assert any(",ou=archives," in dn for dn in after)
    for v, got in runs.items():
        for night, ((_c0, _a0, want), (_c, _a, have)) in enumerate(zip(ref, got, strict=True)):
            assert set(have) == set(want), (v, night, sorted(set(have) ^ set(want))[:5])
            diff = [dn for dn in want if have[dn] != want[dn]]
            assert not diff, (v, night, len(diff), [
                (d, {k: (want[d].get(k), have[d].get(k)) for k in {*want[d], *have[d]}
                     if want[d].get(k) != have[d].get(k)}) for d in diff[:15]])
        # the no-change night: nothing planned, nothing written
        assert got[2][0] == 0 and got[2][1] == 0, (v, got[2][:2])


def test_only_a_first_loads_first_group_leads(tmp_path: Path, env: Settings,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed first load's first group (what its first writes wait for) reads and plans
    as the CPU slots' holders do, slot or none (``etl.runtime.cpu.cpu_bound``'s ``lead``);
    its later groups, and every group of a later night, do not."""
    from etl.plan import reconcile as rec_mod
    from etl.runtime import cpu
    from etl.validate import school as school_mod

    seen: list[tuple[str, bool, bool]] = []

    def spy(settings: Settings, fn: Any, *args: Any, slot: bool = False,
            lead: bool = False) -> Any:
        seen.append((fn.__name__, slot, lead))
        return cpu.cpu_bound(settings, fn, *args, slot=slot, lead=lead)

    monkeypatch.setattr(school_mod, "cpu_bound", spy)
    monkeypatch.setattr(rec_mod, "cpu_bound", spy)
    tonight, rentree, _again = landings(tmp_path / "landing")
    streamed = dataclasses.replace(env, landing=tonight, plan_group=1, read_ahead=0)
    s = pipeline.run_sync(streamed, RunRequest(ACADEMY, today=TONIGHT))
    assert s["status"] == "success", s
    stages = [x for x in seen if x[0] in ("_read_validate_schools", "_reconcile")]
    assert len(stages) == 8, seen  # 4 schools, a group each: read, then plan
    assert stages[:2] == [("_read_validate_schools", True, True), ("_reconcile", True, True)]
    assert all(slot and not lead for _f, slot, lead in stages[2:]), stages
    seen.clear()
    s = pipeline.run_sync(dataclasses.replace(streamed, landing=rentree),
                          RunRequest(ACADEMY, today=RENTREE))
    assert s["status"] in ("success", "awaiting_approval"), s
    assert seen and not any(slot or lead for _f, slot, lead in seen), seen


def test_a_streamed_cli_night_prints_only_its_log(tmp_path: Path, server: LdapServer) -> None:
    """The CLI's streamed night, the next group read ahead in a process of its own: on its
    terminal nothing but the log's own lines (the reader ended as a process ends, leaving the
    resource tracker nothing to warn about at exit)."""
    import os
    import subprocess
    import sys

    tonight, _rentree, _again = landings(tmp_path / "landing")
    env = {**os.environ, "ENTSYNC_LANDING": str(tonight), "ENTSYNC_WORKDIR":
           str(tmp_path / "work"), "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
           "ENTSYNC_PLAN_GROUP": "1", "ENTSYNC_READ_AHEAD": "1", **server.env()}
    r = subprocess.run([sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY,
                        "--today", TONIGHT.isoformat()], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) [\w.]+: ")
    other = [x for x in r.stderr.splitlines() if x.strip() and not line.match(x)]
    assert not other, other
