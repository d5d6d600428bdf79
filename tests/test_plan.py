"""The plan file's form of a change: what the applier reads back is what the planner made."""

from __future__ import annotations

import json

from etl.plan import Change


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
