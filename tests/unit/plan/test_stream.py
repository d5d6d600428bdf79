"""The pure parts of a streamed night (etl/plan/stream.py, etl/run.py): the groups, what a
group saw of its people, and the groups' counts merged into one run's."""

from __future__ import annotations

from pathlib import Path

from etl.config import Settings
from etl.contracts import Applied, Reconciled
from etl.plan.desired import DesiredEntry, school_dn
from etl.plan.diff import Change
from etl.plan.stream import (
    Earlier,
    Presence,
    earlier_mains,
    earlier_presences,
    fold_into_held,
    merge_applied,
    merge_reconciled,
    pending_entries,
    plan_order,
    read_presences,
    tonight_parts,
    write_presence,
)
from etl.run import stream_groups

BASE = "dc=ent"


def person(uid: str, uai: str, keys: list[str], classes: list[str] = ()) -> DesiredEntry:
    attrs = {"ENTPersonJointure": keys, "ENTPersonStructRattach": [school_dn(uai, BASE)]}
    if classes:
        attrs["ENTAuxEnsClasses"] = [f"{school_dn(u, BASE)}${c}" for u, c in classes]
    return DesiredEntry(f"uid={uid},ou=people,{BASE}", "person", uai, attrs, uid=uid)


def test_the_first_group_is_small_and_every_school_in_one_group() -> None:
    uais = [f"U{i:02d}" for i in range(37)]
    groups = stream_groups(uais, 16)
    assert [len(g) for g in groups] == [2, 16, 16, 3]
    assert [u for g in groups for u in g] == uais
    assert stream_groups(uais[:3], 1) == [["U00"], ["U01"], ["U02"]]


def test_orders_keep_the_groups() -> None:
    groups = [["A"], ["B"], ["C"], ["D"]]
    assert plan_order(groups, "uai") == groups
    assert plan_order(groups, "reverse") == groups[::-1]
    shuffled = plan_order(groups, "shuffle", "run-1")
    assert sorted(shuffled) == groups and shuffled == plan_order(groups, "shuffle", "run-1")


def test_a_persons_schools_tonight_by_keys_and_by_classes() -> None:
    t = {e.dn: e for e in (
        person("a", "S1", ["AC$SIECLE$S1$1", "AC$INE$X"]),
        # an AAF key names no school: its classes and main school do
        person("b", "S2", ["AC$77"], classes=[("S2", "3A"), ("S3", "4B")]),
    )}
    assert tonight_parts(t, {"S1", "S2"}) == {"a": ["S1"], "b": ["S2"]}


def test_the_main_school_is_the_first_read_tonight_whatever_the_group() -> None:
    earlier = Earlier.of([Presence("0000", parts={"a": ["S1"]})])
    t = {e.dn: e for e in (person("a", "S2", ["AC$SIECLE$S2$1"]),
                           person("b", "S2", ["AC$SIECLE$S2$2"]))}
    out = earlier_mains(t, earlier, BASE)
    (e,) = out.values()
    assert e.uid == "a" and e.uai == "S1"
    assert e.attrs["ENTPersonStructRattach"] == [school_dn("S1", BASE)]
    # read first in S1, then S2: nothing to change
    assert not earlier_mains({e.dn: e for e in [person("a", "S1", [])]},
                             Earlier.of([Presence("0", parts={"a": ["S2"]})]), BASE)


def rec(changes: int, per: dict[str, dict[str, int]], held: dict[str, object] | None = None,
        absent: int = 0) -> Reconciled:
    return Reconciled.from_json({
        "plan": f"p{changes}", "changes": changes, "per_school": per,
        "by_kind_op": {"person.add": changes}, "held": held or {}, "mode": "normal",
        "absent": absent, "guards": {u: [{"guard": "g"}] for u in per},
        "new_identities": changes, "skipped": {"x": 1}, "matches": {"ine": 1},
        "duplicates": []})


def test_the_groups_counts_are_one_runs() -> None:
    held = {"S2": {"plan": "h", "hash": "1", "guards": [], "counts": {}}}
    merged = merge_reconciled([
        rec(3, {"S1": {"created": 3, "unchanged": 5}}),
        rec(2, {"S2": {"created": 2, "unchanged": 0}}, held),
        rec(1, {"S1": {"disabled": 1}}, absent=1),  # the absences, last
    ])
    assert merged.changes == 6 and merged.absent == 1 and merged.plan == "p1"
    assert merged.per_school["S1"] == {"created": 3, "disabled": 1, "unchanged": 4}
    assert merged.by_kind_op == {"person.add": 6} and merged.skipped == {"x": 3}
    assert set(merged.held) == {"S2"} and len(merged.guards["S1"]) == 2
    app = merge_applied([
        Applied(applied=3, failed=0, failed_schools=["S1"], errors=[{"e": 1}],
                written_counts={"total": {"written": {"created": 3}}}),
        Applied(applied=2, failed=1, failed_schools=["S2"], errors=[{"e": 2}],
                written_counts={"total": {"written": {"created": 2}}}),
    ])
    assert (app.applied, app.failed, app.failed_schools) == (5, 1, ["S1", "S2"])
    assert app.written_counts == {"total": {"written": {"created": 5}}}
    assert app.errors == [{"e": 1}, {"e": 2}]


def test_a_group_reads_the_earlier_groups_without_who_was_present(tmp_path: Path) -> None:
    settings = Settings.from_env({"ENTSYNC_LANDING": str(tmp_path / "landing"),
                                  "ENTSYNC_WORKDIR": str(tmp_path / "work")})
    for tag, uai in (("0000", "S1"), ("0001", "S2")):
        write_presence(settings, "run-1", Presence(
            tag, present=[f"AC$SIECLE${uai}$1"], parts={f"u-{uai}": [uai]},
            processed=[uai], accounts={uai: 1}, held=[], mains={f"u-{uai}": ""}))
    heads = list(earlier_presences(settings, "run-1", "0001"))
    assert [(type(h).__name__, h.tag, h.parts) for h in heads] == [
        ("PresenceHead", "0000", {"u-S1": ["S1"]})]
    whole = read_presences(settings, "run-1")
    assert [(p.tag, p.present) for p in whole] == [("0000", ["AC$SIECLE$S1$1"]),
                                                   ("0001", ["AC$SIECLE$S2$1"])]
    assert list(earlier_presences(settings, "run-2", "0000")) == []


def test_a_later_groups_change_to_a_held_person_is_folded_into_the_held_plan() -> None:
    written = {"ENTEleveClasses": ["C$3A"], "sn": ["X"]}
    lycee = {"ENTEleveClasses": ["C$3A", "L$2NDE"], "sn": ["X"]}
    held = {
        "uid=a": ("LYCEE", Change("modify", "uid=a", "person", "LYCEE", "update",
                                  mods={"ENTEleveClasses": {"add": ["L$2NDE"]}},
                                  before=written, after=lycee, uid="a")),
        "uid=b": ("LYCEE", Change("add", "uid=b", "person", "LYCEE", "create",
                                  attrs=lycee, after=lycee, uid="b")),
        "uid=c": ("LYCEE", Change("modify", "uid=c", "person", "LYCEE", "update",
                                  mods={"sn": {"replace": ["Y"]}}, before=written,
                                  after={**written, "sn": ["Y"]}, uid="c")),
    }
    left = {"ENTEleveClasses": ["L$2NDE"], "sn": ["X"]}  # the collège's part dropped
    mine = Change("modify", "uid=z", "person", "COLLEGE", "update",
                  mods={"sn": {"replace": ["Z"]}}, before=written, after=written, uid="z")
    changes = [
        Change("modify", "uid=a", "person", "COLLEGE", "update",
               mods={"ENTEleveClasses": {"delete": ["C$3A"]}}, before=lycee, after=left),
        Change("modify", "uid=b", "person", "COLLEGE", "update",
               mods={"ENTEleveClasses": {"delete": ["C$3A"]}}, before=lycee, after=left),
        Change("modify", "uid=c", "person", "COLLEGE", "update",
               mods={"sn": {"replace": ["X"]}}, before={**written, "sn": ["Y"]},
               after=written),
        mine,
    ]
    kept, folded = fold_into_held(changes, held)
    assert kept == [mine]
    a, b, c = (folded["LYCEE"][dn] for dn in ("uid=a", "uid=b", "uid=c"))
    # from what is written to what the later group plans, in the held school's plan
    assert a is not None and (a.op, a.uai, a.before, a.after) == ("modify", "LYCEE", written,
                                                                  left)
    assert a.mods == {"ENTEleveClasses": {"add": ["L$2NDE"], "delete": ["C$3A"]}}
    assert b is not None and (b.op, b.attrs) == ("add", left)
    assert c is None  # back as written: nothing left to approve for it


def test_a_held_person_is_seen_as_the_held_plan_leaves_it() -> None:
    after = {"ENTPersonStructRattach": [school_dn("LYCEE", BASE)], "sn": ["X"]}
    held = {"uid=a,ou=people": ("LYCEE", Change("add", "uid=a,ou=people", "person", None,
                                                "create", attrs=after, after=after,
                                                uid="a"))}
    (e,) = pending_entries(held).values()
    assert (e.dn, e.uid, e.uai, e.attrs) == ("uid=a,ou=people", "a", "LYCEE", after)


def test_a_directory_empty_before_the_first_group_stays_known_as_such() -> None:
    # the first group found the academy's part of the directory empty: the later groups need
    # not search it for the source keys of the accounts they create (this run wrote it all)
    assert Earlier.of([]).fresh is None
    assert Earlier.of([Presence("0000", fresh=True), Presence("0001", fresh=True)]).fresh
    assert Earlier.of([Presence("0000", fresh=True), Presence("0001")]).fresh is False
    assert Earlier.of([Presence("0000")]).fresh is False


def test_only_a_heavy_night_reads_ahead_after_its_first_group() -> None:
    """A night that is not a first load reads its next groups ahead when its first group's
    plan changes a quarter of the records it read (la rentrée), not on a 2 % night."""
    from types import SimpleNamespace
    from typing import Any

    from etl.run import heavy_night

    def night(changes: int, *records: int) -> tuple[Any, Any]:
        group = SimpleNamespace(reconciled=SimpleNamespace(changes=changes))
        return group, [SimpleNamespace(records_read=n, counts={}) for n in records]

    assert heavy_night(*night(2600, 1400, 1300))  # la rentrée: about one change a record
    assert not heavy_night(*night(80, 1400, 1300))  # a 2 % night
    assert heavy_night(*night(1, 0))  # nothing read: a change is enough
    assert not heavy_night(*night(0))


def test_a_light_night_of_many_groups_reads_ahead_from_its_first() -> None:
    """A light night reads in turn when few groups are left (the reader's start would cost
    more than it hides), ahead from its first group when at least ``READ_AHEAD_GROUPS`` are
    left to read (an academy of scale 1.0); a first load always, never past the last group."""
    from types import SimpleNamespace

    from etl.run import READ_AHEAD_GROUPS, reads_ahead

    light = SimpleNamespace(reconciled=SimpleNamespace(changes=80))
    heavy = SimpleNamespace(reconciled=SimpleNamespace(changes=2600))
    read = [SimpleNamespace(records_read=1400, counts={})]
    many = READ_AHEAD_GROUPS + 1
    assert reads_ahead(0, many, False, None, read)
    assert not reads_ahead(0, READ_AHEAD_GROUPS, False, None, read)
    assert not reads_ahead(1, READ_AHEAD_GROUPS, False, light, read)  # a 2 % night
    assert reads_ahead(1, READ_AHEAD_GROUPS, False, heavy, read)  # la rentrée
    assert reads_ahead(0, 2, True, None, read)  # a first load
    assert not reads_ahead(1, 2, True, heavy, read)  # the last group: nothing to read next
    assert not reads_ahead(many - 1, many, False, light, read)
