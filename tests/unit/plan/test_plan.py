"""The plan file's form of a change: what the applier reads back is what the planner made."""

from __future__ import annotations

import io
import json

import pytest

from etl.errors import EntsyncError, PlanFormatError
from etl.plan.desired import DesiredEntry, content_hash
from etl.plan.diff import (
    PLAN_FORMAT,
    Change,
    apply_order,
    plan_changes,
    plan_changes_lazy,
    plan_lines,
    read_plan,
    wave_key,
)


def test_an_add_is_written_once_and_read_back_whole() -> None:
    attrs = {"objectClass": ["entPerson"], "cn": ["Éloïse"]}
    add = Change("add", "uid=a,ou=people,dc=x", "person", "0671234X", "create", attrs=attrs,
                 after=attrs)
    d = add.as_dict()
    assert d["after"] is None and d["attrs"] == attrs
    back = Change.from_dict(json.loads(json.dumps(d)))
    assert back == add and back.after is back.attrs
    # any other change keeps its after as planned
    mod = Change("modify", "uid=a,ou=people,dc=x", "person", "0671234X", "update",
                 mods={"cn": {"replace": ["Eloise"]}}, before=attrs,
                 after={**attrs, "cn": ["Eloise"]})
    assert Change.from_dict(json.loads(json.dumps(mod.as_dict()))) == mod
    # an add whose after differs (none does today) is not folded
    odd = Change("add", "uid=b,ou=people,dc=x", "person", None, "create", attrs=attrs,
                 after={"cn": ["x"]})
    assert Change.from_dict(json.loads(json.dumps(odd.as_dict()))) == odd


# -- the plan file: JSON lines, read as a stream ---------------------------------------------


def _sample_changes() -> list[Change]:
    person = {"objectClass": ["top", "ENTPerson"], "cn": ["Éloïse ß 漢"], "uid": ["u1"]}
    return apply_order([
        Change("delete", "cn=6A,ou=groups,ENTStructureUAI=X,ou=structures,dc=x", "class", "X",
               "delete", before={"cn": ["6A"]}),
        Change("add", "uid=u1,ou=people,dc=x", "person", "X", "create", attrs=person,
               after=person, uid="u1"),
        Change("modify", "uid=u2,ou=people,dc=x", "person", "X", "update",
               mods={"cn": {"replace": ["B"]}}, before={"cn": ["A"]}, after={"cn": ["B"]},
               uid="u2"),
        Change("add", "ENTStructureUAI=X,ou=structures,dc=x", "school", "X", "create",
               attrs={"ou": ["X"]}, after={"ou": ["X"]}),
        Change("delete", "ou=groups,ENTStructureUAI=X,ou=structures,dc=x", "ou", "X",
               "delete"),
    ])


def test_the_plan_file_reads_back_change_by_change_as_planned() -> None:
    changes = _sample_changes()
    header = {"run_id": "r1", "academy": "ac-x", "docs": {"X": [{"kind": "STS"}]}}
    data = b"".join(plan_lines(header, changes, size=16))
    lines = data.splitlines()
    assert len(lines) == 1 + len(changes)  # a header, then one JSON document a line
    head = json.loads(lines[0])
    assert head["format"] == PLAN_FORMAT and head["change_count"] == len(changes)
    assert [json.loads(x)["dn"] for x in lines[1:]] == [c.dn for c in changes]
    back_header, back = read_plan(io.BytesIO(data))
    assert back_header == head
    assert next(back) == changes[0]  # a stream: changes come one at a time
    assert [changes[0], *back] == changes
    # the uid of each written entry travels with its change (no academy-wide uid map)
    assert [c.uid for c in changes] == [None, "u1", "u2", None, None]


def test_a_plan_in_the_older_one_document_form_is_refused_in_one_line() -> None:
    """A held plan written before the JSON-lines form is no longer read: refused with one
    line saying what to do (reject it; the next run plans the school again)."""
    attrs = {"cn": ["A"]}
    old = {"run_id": "r0", "uids": {"uid=u1,ou=people,dc=x": "u1"}, "docs": {},
           "changes": [{"op": "add", "dn": "uid=u1,ou=people,dc=x", "kind": "person",
                        "uai": "X", "category": "create", "attrs": attrs, "mods": {},
                        "before": None, "after": None}]}
    with pytest.raises(PlanFormatError, match="older one-document form") as e:
        read_plan(io.BytesIO(json.dumps(old, sort_keys=True).encode()))
    assert "\n" not in str(e.value) and "reject it" in str(e.value)
    assert isinstance(e.value, EntsyncError)  # the CLI prints it as one line, exit 1


def test_an_unknown_plan_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown plan format"):
        read_plan(io.BytesIO(b'{"format": "entsync-plan-lines/99"}\n'))


def test_apply_order_writes_parents_first_then_deletes_children_first() -> None:
    kinds = [(c.op, c.kind) for c in _sample_changes()]
    assert kinds == [("add", "school"), ("add", "person"), ("modify", "person"),
                     ("delete", "class"), ("delete", "ou")]
    keys = [wave_key(c) for c in _sample_changes()]
    assert keys == sorted(keys)


def _entry(dn: str, kind: str, attrs: dict[str, list[str]]) -> DesiredEntry:
    return DesiredEntry(dn, kind, "X", attrs, uid=dn.split(",")[0].split("=")[1])


def test_planning_hash_first_reads_attributes_only_of_entries_that_changed() -> None:
    same = {"cn": ["Same"], "objectClass": ["top"]}
    desired = {f"uid=s{i},ou=people,dc=x": _entry(f"uid=s{i},ou=people,dc=x", "person", same)
               for i in range(7)}
    desired["uid=c,ou=people,dc=x"] = _entry("uid=c,ou=people,dc=x", "person",
                                             {"cn": ["New"], "objectClass": ["top"]})
    desired["uid=n,ou=people,dc=x"] = _entry("uid=n,ou=people,dc=x", "person", same)
    desired["uid=m,ou=people,dc=x"] = _entry("uid=m,ou=people,dc=x", "person",
                                             {"cn": ["Same"], "objectClass": ["top"]})
    current = {dn: (content_hash(same), same) for dn in desired if dn != "uid=n,ou=people,dc=x"}
    old = {"cn": ["Old"], "objectClass": ["top"]}
    current["uid=c,ou=people,dc=x"] = (content_hash(old), old)
    # same content, stale hash (written by an older encoder): diffed, nothing to write
    current["uid=m,ou=people,dc=x"] = ("0" * 64, same)
    asked: list[list[str]] = []

    def attrs_of(dns: list[str]) -> dict[str, dict[str, list[str]]]:
        asked.append(list(dns))
        return {dn: current[dn][1] for dn in dns}

    lazy = plan_changes_lazy(desired, lambda dns: {d: current[d][0] for d in dns
                                                   if d in current}, attrs_of, batch=3)
    assert lazy == plan_changes(desired, current)
    assert [(c.op, c.dn, c.uid) for c in lazy] == [
        ("modify", "uid=c,ou=people,dc=x", "c"), ("add", "uid=n,ou=people,dc=x", "n")]
    assert sorted(d for part in asked for d in part) == ["uid=c,ou=people,dc=x",
                                                         "uid=m,ou=people,dc=x"]
    assert all(len(part) <= 3 for part in asked)
