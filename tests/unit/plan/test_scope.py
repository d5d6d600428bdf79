"""The lifecycle and the guards return what they decide: the desired entries they are given
(whose value lists may be shared) are never changed, and they read the state DB only through
the stored view."""

from __future__ import annotations

import copy
from pathlib import Path

from sqlalchemy.orm import Session

from etl.plan.desired import DesiredEntry, content_hash, placeholder_member
from etl.plan.guards import GuardResult, with_older_exports
from etl.plan.scope import keep_protected_members, preserve_other_schools, preserve_uncovered
from etl.plan.stored import StoredView
from etl.store.db import get_engine
from etl.store.models import Entry

BASE = "dc=test"
A, B = "0510001A", "0510002B"
CLASS_DN = f"cn=6A,ou=groups,ENTStructureUAI={A},ou=structures,{BASE}"
KEPT = f"uid=kept,ou=people,{BASE}"
PUPIL = f"uid=p1,ou=people,{BASE}"
TEACHER = f"uid=t1,ou=people,{BASE}"


def _session(tmp_path: Path, rows: list[tuple[str, str, str, dict[str, list[str]]]]) -> Session:
    s = Session(get_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    s.add_all(Entry(dn=dn, academy="ac-reims", uai=uai, kind=kind, uid=None,
                    content_hash=content_hash(a), attrs=a) for dn, uai, kind, a in rows)
    s.commit()
    return s


def test_protected_members_come_back_as_replacements(tmp_path: Path) -> None:
    s = _session(tmp_path, [(CLASS_DN, A, "class", {"member": [KEPT, PUPIL]})])
    targets = {CLASS_DN: DesiredEntry(CLASS_DN, "class", A,
                                      {"member": [placeholder_member(BASE)]})}
    before = copy.deepcopy(targets)
    out = keep_protected_members(StoredView(s, "ac-reims"), targets, {KEPT})
    assert out[CLASS_DN].attrs["member"] == [KEPT]
    assert targets == before  # the input is untouched
    assert keep_protected_members(StoredView(s, "ac-reims"), targets, set()) == {}


def test_uncovered_teachers_are_kept_without_changing_the_input(tmp_path: Path) -> None:
    """No STS file tonight: the class keeps its stored teacher; the entry given is not changed."""
    s = _session(tmp_path, [
        (CLASS_DN, A, "class", {"member": [PUPIL, TEACHER]}),
        (TEACHER, A, "person", {"ENTPersonProfils": ["National_ENS"]}),
        (PUPIL, A, "person", {"ENTPersonProfils": ["National_ELV"]}),
    ])
    members = [PUPIL]
    targets = {CLASS_DN: DesiredEntry(CLASS_DN, "class", A, {"member": members})}
    out = preserve_uncovered(StoredView(s, "ac-reims"), targets, {(A, "SIECLE")}, {A})
    assert out[CLASS_DN].attrs["member"] == sorted([PUPIL, TEACHER])
    assert targets[CLASS_DN].attrs["member"] is members and members == [PUPIL]


def test_other_schools_parts_are_kept_and_equal_entries_come_back_hashed(tmp_path: Path) -> None:
    same = {"uid": ["p1"], "ENTPersonJointure": [f"AC-REIMS$SIECLE${A}$1"]}
    other = f"uid=p2,ou=people,{BASE}"
    stored_other = {"uid": ["p2"], "ENTPersonJointure": [f"AC-REIMS$SIECLE${A}$2",
                                                         f"AC-REIMS$SIECLE${B}$9"]}
    s = _session(tmp_path, [(PUPIL, A, "person", same), (other, A, "person", stored_other)])
    targets = {
        PUPIL: DesiredEntry(PUPIL, "person", A, dict(same), uid="p1"),
        other: DesiredEntry(other, "person", A, {"uid": ["p2"], "ENTPersonJointure": [
            f"AC-REIMS$SIECLE${A}$2"]}, uid="p2"),
    }
    before = copy.deepcopy(targets)
    out = preserve_other_schools(StoredView(s, "ac-reims"), targets, {A})
    assert out[PUPIL].hash_memo == content_hash(same) and out[PUPIL].attrs == same
    assert out[other].attrs["ENTPersonJointure"] == stored_other["ENTPersonJointure"]
    assert targets == before


def test_older_exports_trip_a_guard_on_new_results() -> None:
    given = {A: GuardResult(A)}
    out = with_older_exports(given, {A: ["older"], B: ["older too"]})
    assert [g["guard"] for g in out[A].tripped] == ["older_export"]
    assert out[B].tripped[0]["detail"] == "older too"
    assert given[A].tripped == [] and B not in given
