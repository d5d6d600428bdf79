"""An LDAP write the directory refuses is logged with its operation, DN, result and slapd's
diagnostic message, never with the attribute values it carried (names, birth dates).

Each case makes the real slapd refuse a write whose values hold personal data, the way a bad
record or a schema drift would; the log line and the error kept for the report must name the
entry (its DN: a random uid) and what went wrong, and none of the values.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from etl.apply.writer import DirectoryWriter, LdapTarget
from etl.devtools.slapd import LdapServer
from etl.plan.diff import Change

pytestmark = pytest.mark.ldap

SURNAME = "Zoéline-Dupontel"
GIVEN = "Marie-Œdipa"
BIRTH = "14/07/2011"
PERSONAL = (SURNAME, GIVEN, BIRTH, "2011-07-14")


def _person(dn: str, **extra: list[str]) -> dict[str, list[str]]:
    uid = dn.split(",", 1)[0].split("=", 1)[1]
    attrs = {"objectClass": ["top", "inetOrgPerson", "ENTPerson", "entSyncAccount"],
             "uid": [uid], "ENTPersonLogin": [f"login.{uid}"], "entSyncStatus": ["ACTIVE"],
             "cn": [f"{GIVEN} {SURNAME}"], "sn": [SURNAME],
             "givenName": [GIVEN], "ENTPersonDateNaissance": [BIRTH]}
    attrs.update(extra)
    return attrs


def _refused(slapd: LdapServer) -> list[Change]:
    base = slapd.base
    people = f"ou=people,{base}"

    def dn() -> str:
        return f"uid=t{secrets.token_hex(5)},{people}"

    bad_syntax = dn()  # IA5 syntax: a name with accents in the birth date
    too_many = dn()  # a single-valued attribute given two values
    no_parent = f"uid=t{secrets.token_hex(5)},ou=nowhere,{base}"
    missing_sn = dn()  # inetOrgPerson without its required sn
    unknown = dn()  # an attribute the schema does not know
    ghost = dn()  # a modify of an entry that is not there, then re-added as it should be
    changes = [
        Change("add", bad_syntax, "person", None, "create",
               attrs=_person(bad_syntax, ENTPersonDateNaissance=[f"{BIRTH} {SURNAME}"])),
        Change("add", too_many, "person", None, "create",
               attrs=_person(too_many, ENTPersonDateNaissance=[BIRTH, "2011-07-14"])),
        Change("add", no_parent, "person", None, "create", attrs=_person(no_parent)),
        Change("add", missing_sn, "person", None, "create",
               attrs={k: v for k, v in _person(missing_sn).items() if k != "sn"}),
        Change("add", unknown, "person", None, "create",
               attrs=_person(unknown, entsyncNickname=[GIVEN])),
        Change("modify", ghost, "person", None, "update",
               mods={"sn": {"replace": [SURNAME]}},
               after=_person(ghost, ENTPersonDateNaissance=[f"{BIRTH} {GIVEN}"])),
    ]
    for c in changes:
        if c.op == "add":
            c.after = c.attrs
    return changes


def test_refused_writes_log_no_attribute_value(slapd: LdapServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    target = LdapTarget(url=slapd.url, bind_dn=slapd.bind_dn, password=slapd.password,
                        base=slapd.base)
    changes = _refused(slapd)
    caplog.set_level(logging.DEBUG)
    res = DirectoryWriter(target, workers=2).apply(changes)

    # every one was refused by slapd itself (not by the client), and reported
    assert res.applied == 0 and res.failed == len(changes), res.errors
    failed = {e["dn"] for e in res.errors}
    assert failed == {c.dn for c in changes}
    assert all(e["description"] and e["result"] not in (0, None, -1) for e in res.errors)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("etl")]
    refused = [line for line in lines if "failed" in line]
    assert len(refused) >= len(changes)
    for c in changes:
        assert any(c.dn in line for line in refused), c.dn  # the log names the entry
    # ... and nothing of what it carried: not in the log, not in the errors for the report
    kept = lines + [str(e) for e in res.errors]
    for value in PERSONAL:
        leaks = [line for line in kept if value in line]
        assert not leaks, leaks
