"""Safe opening of untrusted XML and zips: no DTD, no entity, no path trick, no bomb."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from etl.discover.xmlsafe import (
    PROLOG_SCAN,
    XmlSource,
    check_member_name,
    iterparse,
    list_zip_xml,
    open_source,
    xml_error,
)
from etl.errors import FileRejected
from etl.read.siecle import read_siecle_eleves
from tests.conftest import FIXTURES

LANDING = FIXTURES / "landing"
UAI = "0671234C"


def parse_all(data: bytes, name: str = "doc.xml") -> list[str]:
    return [el.tag for _, el in iterparse(io.BytesIO(data), name)]


def xxe_document(target: Path, padding: bytes = b"") -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        + padding
        + b'<!DOCTYPE BEE_ELEVES [<!ENTITY secret SYSTEM "'
        + target.as_uri().encode()
        + b'">]>\n<BEE_ELEVES><PARAMETRES><UAJ>0671234C</UAJ></PARAMETRES><DONNEES><ELEVES>'
        + b'<ELEVE ELEVE_ID="1"><NOM_DE_FAMILLE>&secret;</NOM_DE_FAMILLE></ELEVE>'
        + b"</ELEVES></DONNEES></BEE_ELEVES>\n"
    )


@pytest.mark.hostile
@pytest.mark.parametrize(
    "padding",
    [b"", b"<!--" + b"x" * (PROLOG_SCAN + 10) + b"-->\n"],
    ids=["doctype_in_head", "doctype_after_long_comment"],
)
def test_external_entity_is_refused_and_nothing_is_read(tmp_path: Path, padding: bytes) -> None:
    marker = "MARQUEUR-SECRET-7f3a"
    secret = tmp_path / "secret.txt"
    secret.write_text(marker)
    doc = tmp_path / "doctype_entite_externe.xml"
    doc.write_bytes(xxe_document(secret, padding))
    with pytest.raises(FileRejected) as ei:
        read_siecle_eleves(XmlSource(doc), UAI)
    assert "DOCTYPE" in ei.value.reason
    assert marker not in str(ei.value)
    # and parsing the raw stream never surfaces the marker either
    with pytest.raises(FileRejected):
        for _, el in iterparse(io.BytesIO(doc.read_bytes()), doc.name):
            assert marker not in (el.text or "")


@pytest.mark.hostile
def test_billion_laughs_is_refused_quickly() -> None:
    t0 = time.monotonic()
    with pytest.raises(FileRejected) as ei:
        read_siecle_eleves(XmlSource(LANDING / "billion_laughs.xml"), UAI)
    assert time.monotonic() - t0 < 1.0
    assert "DOCTYPE" in ei.value.reason


def test_external_dtd_is_refused_before_any_fetch() -> None:
    with pytest.raises(FileRejected, match="DOCTYPE"):
        parse_all((LANDING / "doctype_dtd_externe.xml").read_bytes())


def test_lxml_propagates_file_rejected_from_the_stream_unchanged() -> None:
    # the refusal happens inside read(), called by libxml2: it must come back as itself
    late = b"<r>" + b"<a>x</a>" * (PROLOG_SCAN // 8 + 10) + b"<!DOCTYPE r></r>"
    with pytest.raises(FileRejected) as ei:
        parse_all(late, "late.xml")
    assert ei.value.file == "late.xml"
    assert not isinstance(ei.value, etree.LxmlError)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"   \n  ", "empty file"),
        ('<?xml version="1.0" encoding="UTF-16"?><r/>'.encode("utf-16"), "binary or UTF-16"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "binary"),
    ],
    ids=["zero_bytes", "blank", "utf16", "binary"],
)
def test_prolog_check_refuses_non_documents(data: bytes, reason: str) -> None:
    with pytest.raises(FileRejected, match=reason):
        parse_all(data)


def test_bom_utf8_and_declared_encodings() -> None:
    assert parse_all(b"\xef\xbb\xbf<r><n>\xc3\xa9</n></r>") == ["n", "r"]
    for enc, text in [(b"ISO-8859-1", "¤½"), (b"ISO-8859-15", "€œ")]:
        doc = b'<?xml version="1.0" encoding="' + enc + b'"?><r>\xa4\xbd</r>'
        (root,) = [el for _, el in iterparse(io.BytesIO(doc), "enc.xml")]
        assert root.text == text


def test_xml_error_carries_the_line() -> None:
    with pytest.raises(etree.XMLSyntaxError) as ei:
        etree.fromstring(b"<r>\n<a>\n</r>")
    err = xml_error("f.xml", ei.value, "0671234C")
    assert err.line == 3
    assert err.uai == "0671234C"
    assert err.reason.startswith("malformed or truncated XML: ")
    assert "<string>" not in err.reason
    assert str(err).startswith("f.xml:3 (school 0671234C)")


@pytest.mark.parametrize(
    "name", ["../evil.xml", "a/../../evil.xml", "/etc/evil.xml", "C:/evil.xml", "..\\evil.xml"]
)
def test_unsafe_member_names(name: str) -> None:
    with pytest.raises(FileRejected, match="unsafe path"):
        check_member_name(Path("x.zip"), name)


def test_safe_member_names() -> None:
    for name in ["Eleves.xml", "export/ElevesSansAdresses.xml", "a..b.xml"]:
        check_member_name(Path("x.zip"), name)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return path


def test_list_zip_xml_sorts_xml_and_others(tmp_path: Path) -> None:
    z = write_zip(
        tmp_path / "ExportXML_Eleves.zip",
        {
            "ElevesSansAdresses.xml": (FIXTURES / "siecle" / "eleves_date_sortie.xml").read_bytes(),
            "LISEZMOI.txt": b"notes",
        },
    )
    xml, other = list_zip_xml(z)
    assert xml == ["ElevesSansAdresses.xml"]
    assert other == [("LISEZMOI.txt", "not an XML member")]
    res = read_siecle_eleves(XmlSource(z, "ElevesSansAdresses.xml"), UAI)
    assert len(res.tables["persons"]) == 3
    assert res.tables["persons"]["file"][0] == "ExportXML_Eleves.zip!ElevesSansAdresses.xml"


def test_zip_bomb_is_refused_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    z = write_zip(tmp_path / "bomb.zip", {"Eleves.xml": b"\0" * (50 * 1024 * 1024)})
    assert z.stat().st_size < 1024 * 1024

    def no_extract(*_a: object, **_k: object) -> None:
        raise AssertionError("a member was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_extract)
    with pytest.raises(FileRejected, match="compression ratio"):
        list_zip_xml(z)


def test_uncompressed_size_is_enforced_while_reading(tmp_path: Path) -> None:
    # open_source does not trust the header: past ratio x compressed size it stops reading
    z = write_zip(tmp_path / "bomb.zip", {"Eleves.xml": b"<r>" + b" " * (8 * 1024 * 1024)})
    with pytest.raises(FileRejected, match="uncompressed size exceeds"):
        with open_source(XmlSource(z, "Eleves.xml")) as f:
            while f.read(1024 * 1024):
                pass


def test_corrupt_or_missing_members_are_file_rejected(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "x.zip", {"Eleves.xml": b"<r>" + b"<a/>" * 5000 + b"</r>"})
    with pytest.raises(FileRejected, match="not found"):
        with open_source(XmlSource(z, "Autre.xml")):
            pass
    data = bytearray(z.read_bytes())
    start = data.index(b"Eleves.xml") + len(b"Eleves.xml")  # the local header's name
    data[start + 20 : start + 40] = b"\xff" * 20  # damage the deflate stream
    z.write_bytes(bytes(data))
    with pytest.raises(FileRejected):
        parse_all_from(XmlSource(z, "Eleves.xml"))
    with pytest.raises(FileRejected, match="not a readable zip"):
        list_zip_xml(LANDING / "pas_du_xml.xml")


def parse_all_from(src: XmlSource) -> None:
    with open_source(src) as f:
        for _ in iterparse(f, src.short_name):
            pass
