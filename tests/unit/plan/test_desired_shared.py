"""The desired entries of an academy share their equal values (issue 6: an academy's entries
are all in memory while it is planned): one list object for equal value lists, one string
for a school DN, a class reference or a person's DN however many entries name it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from etl import run as pipeline
from etl import staging
from etl.config import Settings, get_academy
from etl.contracts import dump_all
from etl.match.identity import write_identities
from etl.match.resolve import match_records
from etl.plan.desired import DesiredState, PlanContext, Shared, build_desired, read_night
from etl.plan.stored import StoredView
from etl.read.canonical import Tables
from etl.store.db import session_factory
from tests.integration.test_sync import ACADEMY, school_a


def test_shared_gives_one_list_per_equal_values() -> None:
    sh = Shared()
    a = sh.share(["top", "".join(["EN", "TEleve"])])
    b = sh.share(["top", "ENTEleve"])
    assert a is b and a == ["top", "ENTEleve"]
    assert sh.share(["top"]) is not a


def _read_school_a(tmp_path: Path, state_url: str) -> tuple[Settings, str, list[Any]]:
    """School A read and validated in a dry run: (settings, run id, read results)."""
    env = Settings.from_env({"ENTSYNC_LANDING": str(tmp_path / "landing"),
                             "ENTSYNC_WORKDIR": str(tmp_path / "work"),
                             "ENTSYNC_STATE_URL": state_url})
    school_a(env.landing)
    rid = pipeline.start_run(env, ACADEMY, dry_run=True)
    disc = pipeline.discover_files(env, ACADEMY, rid)
    return env, rid, dump_all(pipeline.read_validate_schools(env, ACADEMY, rid,
                                                             disc.school_docs(), True))


def _desired(tables: Tables, res: list[Any], env: Settings, rid: str, s: Any,
             consume: bool = False) -> DesiredState:
    """Matching then the desired entries, as ``_reconcile`` makes them (decisions written)."""
    academy, names = get_academy(ACADEMY), {r["uai"]: None for r in res}
    view = StoredView(s, ACADEMY)
    night = read_night(tables, names, academy, consume=consume)
    matched = match_records(night.night, academy, view, rid)
    write_identities(s, ACADEMY, matched.decisions)
    return build_desired(night, matched, PlanContext(names, academy, env.ldap.base), view,
                         consume=consume)


def test_desired_entries_share_equal_values(tmp_path: Path, state_url: str) -> None:
    env, rid, res = _read_school_a(tmp_path, state_url)
    tables = Tables.concat([Tables.load(staging.path(env, r["staged"])) for r in res])
    with session_factory(env.state_url)() as s:
        st = _desired(tables, res, env, rid, s)
        s.rollback()
    entries = st.entries
    persons = [e for e in entries.values() if e.kind == "person"]
    pupils = [e for e in persons if "ENTEleve" in e.attrs["objectClass"]]
    assert len(pupils) >= 3
    assert len({id(e.attrs["objectClass"]) for e in pupils}) == 1
    assert len({id(e.attrs["entSyncStatus"]) for e in persons}) == 1
    # pupils of one class: one list of classes, one string per class reference
    by_classes: dict[tuple[str, ...], set[int]] = defaultdict(set)
    for e in pupils:
        by_classes[tuple(e.attrs["ENTEleveClasses"])].add(id(e.attrs["ENTEleveClasses"]))
    assert any(len(ids) == 1 for ids in by_classes.values())
    assert all(len(ids) == 1 for ids in by_classes.values())
    ref_ids: dict[str, set[int]] = defaultdict(set)
    for e in persons:
        for name in ("ENTEleveClasses", "ENTEleveGroupes", "ENTAuxEnsClasses"):
            for ref in e.attrs.get(name, []):
                ref_ids[ref].add(id(ref))
    assert ref_ids and all(len(ids) == 1 for ids in ref_ids.values())
    # a class's members are the very DN strings of the person entries
    classes = [e for e in entries.values() if e.kind == "class"]
    named = [m for c in classes for m in c.attrs["member"] if m in entries]
    assert named and all(m is entries[m].dn for m in named)
    # and one school DN string for every person attached to the school
    assert len({id(e.attrs["ENTPersonStructRattach"][0]) for e in persons}) == 1


def test_consumed_tables_are_emptied_and_give_the_same_entries(tmp_path: Path,
                                                               state_url: str) -> None:
    env, rid, res = _read_school_a(tmp_path, state_url)
    out = []
    for consume in (False, True):
        tables = Tables.concat([Tables.load(staging.path(env, r["staged"])) for r in res])
        with session_factory(env.state_url)() as s:
            st = _desired(tables, res, env, rid, s, consume=consume)
            s.commit()  # the identities of the first pass, found again by the second
        assert bool(tables.frames) is not consume
        out.append({dn: (e.kind, e.uai, e.uid, e.attrs) for dn, e in st.entries.items()})
    assert out[0] == out[1] and len(out[0]) > 5
