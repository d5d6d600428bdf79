"""Property-based tests (hypothesis): escaping, logins and the parsers' failure mode.

- DN escaping: any text put in an RDN with ``escape_rdn`` (and our ``person_dn``,
  ``structure_dn``, ``school_dn``) parses back, with ``parse_dn``, to one RDN holding exactly
  that text; the rest of the DN is intact.
- A real slapd stores and returns any name (no NUL) intact, and an escaped filter finds
  exactly the entry holding it, never a decoy.
- Logins are always ``[a-z0-9.-]``, at most 32 characters, and unique.
- The parsers never crash: on arbitrary bytes or mutated exports, ``read_header`` and every
  reader either return or raise ``FileRejected``.
"""

from __future__ import annotations

import itertools
import re
import uuid
import zipfile
from pathlib import Path

import ldap3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from etl.devtools.slapd import LdapServer
from etl.discover.landing import read_header
from etl.discover.xmlsafe import XmlSource
from etl.errors import FileRejected
from etl.match.identity import MAX_LOGIN, IdentityRegistry, base_login
from etl.plan.desired import person_dn, school_dn, structure_dn
from etl.plan.stored import StoredView
from etl.read import (
    read_siecle_eleves,
    read_siecle_nomenclatures,
    read_siecle_responsables,
    read_siecle_structures,
)
from etl.read.sts import read_sts
from etl.store.db import session_factory
from tests.builders import Guardian, Pupil, Teacher, eleves_xml, responsables_xml, sts_xml
from tests.ldap_fixture import admin_connection

BASE = "dc=ent,dc=grandest,dc=fr"
LOGIN = re.compile(r"[a-z0-9.-]+")
_HEX = re.compile(r"\\([0-9a-fA-F]{2})|\\(.)", re.DOTALL)
FAST = settings(max_examples=200, deadline=None)


def unescape_rdn_value(value: str) -> str:
    """RFC 4514 unescaping: ``\\XX`` hex pairs (UTF-8 bytes) and ``\\c``."""
    out = bytearray()
    pos = 0
    for m in _HEX.finditer(value):
        out += value[pos:m.start()].encode("utf-8")
        out += bytes([int(m.group(1), 16)]) if m.group(1) else m.group(2).encode("utf-8")
        pos = m.end()
    out += value[pos:].encode("utf-8")
    return out.decode("utf-8")


# ------------------------------------------------------------------------------------------
# DN escaping
# ------------------------------------------------------------------------------------------


#: ldap3's escape_rdn escapes '#' only in first position (enough for RFC 4514) but its own
#: parse_dn refuses an unescaped '#' anywhere: see test_interior_hash_does_not_round_trip; and
#: escape_rdn(" ") is wrong: see test_single_space_does_not_round_trip
rdn_text = st.text(min_size=1).filter(lambda t: "#" not in t[1:] and t != " ")


@FAST
@given(rdn_text)
def test_escape_rdn_round_trips_through_parse_dn(text: str) -> None:
    parsed = parse_dn(f"cn={escape_rdn(text)},ou=people,{BASE}")
    assert [p[0] for p in parsed] == ["cn", "ou", "dc", "dc", "dc"]
    assert unescape_rdn_value(parsed[0][1]) == text
    assert [p[1] for p in parsed[1:]] == ["people", "ent", "grandest", "fr"]


@FAST
@given(uai=rdn_text, code=rdn_text, uid=rdn_text)
def test_our_dns_round_trip(uai: str, code: str, uid: str) -> None:
    parsed = parse_dn(structure_dn(uai, code, BASE))
    assert [p[0].lower() for p in parsed[:4]] == ["cn", "ou", "entstructureuai", "ou"]
    assert unescape_rdn_value(parsed[0][1]) == code
    assert unescape_rdn_value(parsed[2][1]) == uai
    assert len(parsed) == 7
    assert unescape_rdn_value(parse_dn(school_dn(uai, BASE))[0][1]) == uai
    person = parse_dn(person_dn(uid, BASE))
    assert len(person) == 5 and unescape_rdn_value(person[0][1]) == uid


def test_interior_hash_round_trips() -> None:
    """ldap3's escape_rdn leaves a non-leading '#' bare (valid RFC 4514, and slapd takes it)
    but ldap3's own parse_dn refuses it: etl.plan.desired escapes every '#'."""
    dn = structure_dn("0510001Z", "3#A", BASE)
    assert unescape_rdn_value(parse_dn(dn)[0][1]) == "3#A"


@pytest.mark.xfail(strict=True, reason="ldap3 escape_rdn(' ') gives '\\\\ ' (an escaped "
                   "backslash and a bare space): the leading and the trailing escapes collide")
def test_single_space_does_not_round_trip() -> None:
    assert unescape_rdn_value(parse_dn(f"cn={escape_rdn(' ')},{BASE}")[0][1]) == " "


def test_nul_is_escaped_in_a_form_slapd_refuses() -> None:
    """NUL cannot come from XML 1.0; were it to reach a DN, escape_rdn writes a backslash
    and a raw NUL (slapd answers invalidDNSyntax) where RFC 4514 wants ``\\00``."""
    assert escape_rdn("a\x00b") == "a\\\x00b"


# ------------------------------------------------------------------------------------------
# A real directory: names stored intact, escaped filters exact
# ------------------------------------------------------------------------------------------

#: LDAP directory strings: no NUL (the protocol's strings cannot hold it), not blank
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=64).filter(lambda s: s.strip() != "")


def hex_filter_value(value: str) -> str:
    """Every byte of the value as ``\\XX``: the filter value that survives any parser."""
    return "".join(f"\\{b:02x}" for b in value.encode("utf-8"))


@pytest.mark.ldap
@pytest.mark.xfail(strict=True, reason="ldap3 strips the filter value: escape_filter_chars "
                   "leaves \\r, \\x0b, \\x85... unescaped, so (sn=0\\r) looks for '0'")
def test_escape_filter_chars_edge_gap(slapd: LdapServer, container: str) -> None:
    conn = admin_connection(slapd)
    try:
        uid = f"p{uuid.uuid4().hex[:12]}"
        assert conn.add(f"uid={uid},{container}", ["inetOrgPerson"],
                        {"uid": uid, "cn": "0\r", "sn": "0\r"})
        value = escape_filter_chars("0\r")
        conn.search(container, f"(&(uid={uid})(sn={value}))", attributes=["uid"])
        assert len(conn.response) == 1
    finally:
        conn.unbind()


@pytest.fixture(scope="module")
def container(slapd: LdapServer) -> str:
    dn = f"ou=props-{uuid.uuid4().hex[:8]},ou=people,{slapd.base}"
    conn = admin_connection(slapd)
    try:
        assert conn.add(dn, ["organizationalUnit"], {"ou": dn.split(",")[0][3:]}), conn.result
    finally:
        conn.unbind()
    return dn


@pytest.mark.ldap
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
def test_any_name_is_stored_intact_and_found_by_an_escaped_filter(
        slapd: LdapServer, container: str, name: str) -> None:
    conn = admin_connection(slapd)
    try:
        here = f"ou=x{uuid.uuid4().hex[:10]},{container}"
        assert conn.add(here, ["organizationalUnit"], {"ou": here.split(",")[0][3:]})
        uid = f"p{uuid.uuid4().hex[:12]}"
        dn = f"uid={uid},{here}"
        attrs = {"uid": uid, "cn": name, "sn": name}
        assert conn.add(dn, ["inetOrgPerson"], attrs), (name, conn.result)
        # a decoy an unescaped '*', '(' or '\\' in the filter would match
        decoy = f"uid=d{uid},{here}"
        assert conn.add(decoy, ["inetOrgPerson"], {"uid": f"d{uid}", "cn": name + "x",
                                                    "sn": name + "x"}), conn.result
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["cn", "sn"])
        got = conn.response[0]["raw_attributes"]
        assert [v.decode("utf-8") for v in got["sn"]] == [name]
        assert [v.decode("utf-8") for v in got["cn"]] == [name]
        filters = [f"(sn={hex_filter_value(name)})"]
        if name == name.strip(" ") and name.strip() == name.strip(" "):
            # escape_filter_chars is exact unless the value starts or ends with a control
            # character Python counts as whitespace (see test_escape_filter_chars_edge_gap)
            filters.append(f"(sn={escape_filter_chars(name)})")
        for flt in filters:
            assert conn.search(here, flt, ldap3.SUBTREE, attributes=["uid"]), (name, flt)
            found = [e["dn"].lower() for e in conn.response
                     if e.get("type") == "searchResEntry"]
            assert found == [dn.lower()], (name, flt)
    finally:
        conn.unbind()


# ------------------------------------------------------------------------------------------
# Logins
# ------------------------------------------------------------------------------------------

person_names = st.one_of(st.none(), st.text(max_size=80),
                         st.sampled_from(["Jean", "Zoé", "Anne-Sophie", "de La Fontaine",
                                          "N'Diaye", "Œdipe", "ßtraße", "  ", "-", "'", "李"]))


@FAST
@given(first=person_names, last=person_names)
def test_base_login_is_always_valid(first: str | None, last: str | None) -> None:
    login = base_login(first, last)
    assert LOGIN.fullmatch(login), login
    assert 0 < len(login) <= MAX_LOGIN - 3


@pytest.fixture(scope="module")
def state_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('logins') / 'state.db'}"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(st.tuples(person_names, person_names), min_size=1, max_size=40),
       taken=st.lists(st.sampled_from(["jean.dupont", "x.x", "zoe.martin", "jean.dupont2"]),
                      max_size=3, unique=True))
def test_allocated_logins_are_valid_and_unique(state_url: str,
                                               people: list[tuple[str | None, str | None]],
                                               taken: list[str]) -> None:
    people = [*people, ("Jean", "Dupont"), ("jean", "DUPONT"), (None, None), (None, None)]
    with session_factory(state_url)() as s:
        registry = IdentityRegistry(StoredView(s, "ac-reims"))
        for login in taken:  # logins handed out before (even to deleted accounts)
            registry.allocate_login(*login.split("."), uid=f"old-{login}")
        logins = [registry.create("ELV", first, last, [f"AC-REIMS$T${i}"], "run").login
                  for i, (first, last) in enumerate(people)]
        s.rollback()
    assert len(set(logins)) == len(logins)
    assert not set(logins) & set(taken)  # a login is never handed out twice
    for login in logins:
        assert LOGIN.fullmatch(login) and len(login) <= MAX_LOGIN, login


# ------------------------------------------------------------------------------------------
# Parsers: return or FileRejected, nothing else
# ------------------------------------------------------------------------------------------

UAI = "0510001Z"
GOOD = [
    eleves_xml(UAI, [Pupil("1", "MARTIN", "Zoé", "3A", ine="070876696HA", groups=["G1"])]),
    responsables_xml(UAI, [Guardian("5", "MARTIN", "Claire", ["1"])]),
    sts_xml(UAI, [Teacher("9", "LEBLANC", "Henri", ["3A"], head_of=["3A"])]),
]
READERS = [read_siecle_eleves, read_siecle_responsables, read_siecle_nomenclatures,
           read_siecle_structures, read_sts]
_counter = itertools.count()


@st.composite
def mutated_exports(draw: st.DrawFn) -> bytes:
    """A valid export with a few bytes replaced, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(GOOD)).encode("utf-8"))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
            [b"<", b">", b"&", b"&#0;", b"<!DOCTYPE x>", b"\x00", b"\xff\xfe", b"]]>",
             b"<ELEVE>", b"</DONNEES>", b"\xc3", b"&lol;"]))
        if how == "replace":
            data[pos:pos + len(chunk)] = chunk
        elif how == "insert":
            data[pos:pos] = chunk
        elif how == "delete":
            del data[pos:pos + len(chunk)]
        else:
            del data[pos:]
    return bytes(data)


def _check_parsers(folder: Path, data: bytes, zipped: bool) -> None:
    n = next(_counter)
    if zipped:
        path = folder / f"doc{n}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("doc.xml", data)
        src = XmlSource(path, "doc.xml")
    else:
        path = folder / f"doc{n}.xml"
        path.write_bytes(data)
        src = XmlSource(path)
    try:
        try:
            read_header(src)
        except FileRejected:
            pass
        for reader in READERS:
            try:
                reader(src, UAI)
            except FileRejected:
                pass
    finally:
        path.unlink()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parsers")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), zipped=st.booleans())
def test_parsers_on_arbitrary_bytes(scratch: Path, data: bytes, zipped: bool) -> None:
    _check_parsers(scratch, data, zipped)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_exports(), zipped=st.booleans())
def test_parsers_on_mutated_exports(scratch: Path, data: bytes, zipped: bool) -> None:
    _check_parsers(scratch, data, zipped)
