"""Landing-zone discovery: which export files arrived, of what kind, for which school.

``<landing>/<academy>/`` holds zips or bare XML in any sub-folders. The file name does not
carry the school: each document is identified by its root element and the UAI inside. The
academy's AAF files are identified by their name (``etl.discover.aaf.parse_aaf_name``) and
root ``ficAlimMENESR``: kind ``AAF``, no UAI (the feed is the academy's).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from etl.config import Academy
from etl.discover.xmlsafe import (
    PROLOG_SCAN,
    XmlSource,
    digests,
    iterparse,
    list_zip_xml,
    open_source,
    xml_error,
)
from etl.errors import FileRejected

log = logging.getLogger(__name__)

#: root element -> kind
KINDS: dict[str, str] = {
    "BEE_ELEVES": "ELEVES",
    "BEE_RESPONSABLES": "RESPONSABLES",
    "BEE_NOMENCLATURES": "NOMENCLATURES",
    "BEE_STRUCTURES": "STRUCTURES",
    "STS_EDT": "STS",
}
KNOWN_OTHER_ROOTS: dict[str, str] = {
    "EDT_STS": "EDT_STS is the timetable software's export, not STS-web's STS_EDT",
    "ficAlimMENESR": ("an AAF file whose name does not say its mode, date and type: AAF files "
                      "are named <prefix>_(Complet|Delta)_<YYYYMMDD>_<Type>_<NNNN>.xml"),
}
UAI_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


#: a UAI in a SIECLE (<UAJ>X</UAJ>) or STS-web (<UAJ CODE="X"/>) header, found by a plain
#: byte search (used only to name the school of a file that cannot be parsed)
_UAI_SNIFF = re.compile(
    rb"<UAJ>\s*([0-9]{7}[A-Z])\s*</UAJ>|<UAJ\s+CODE\s*=\s*[\"']([0-9]{7}[A-Z])[\"']"
)


#: a document's root element, found the same way (the kind of a file that cannot be parsed)
_ROOT_SNIFF = re.compile(rb"<(" + "|".join(KINDS).encode("ascii") + rb")[\s>/]")


def sniff_header(src: XmlSource) -> tuple[str | None, str | None]:
    """The school and the kind a rejected document claims, without parsing it.

    A DOCTYPE, a truncated or wrongly encoded file is refused before or while parsing, but
    its report should still say which school sent it and what it was (a refused pupils
    export, with no other tonight, leaves its school untouched): the first ``PROLOG_SCAN``
    bytes are searched for the header's UAI and a known root element. Only a well-formed UAI
    (check letter) is returned; both are hints for the report, never used to route data.
    """
    try:
        with open_source(src) as f:
            head = f.read(PROLOG_SCAN)
    except (FileRejected, OSError, ValueError, EOFError):
        return None, None
    root = _ROOT_SNIFF.search(head)
    kind = KINDS[root.group(1).decode("ascii")] if root else None
    m = _UAI_SNIFF.search(head)
    if m is None:
        return None, kind
    uai = (m.group(1) or m.group(2)).decode("ascii")
    return (uai if uai_is_valid(uai) else None), kind


def uai_check_letter(first7: str) -> str:
    """The UAI check letter of its 7 leading digits (formats.md)."""
    return UAI_LETTERS[int(first7) % 23]


def uai_is_valid(uai: str | None) -> bool:
    """7 digits-or-letters + check letter = LETTERS[int(first 7) mod 23] (formats.md)."""
    if not uai or len(uai) != 8 or not uai[:7].isdigit():
        return False
    return uai_check_letter(uai[:7]) == uai[7]


@dataclass
class Discovered:
    """One XML document found in the landing zone, with its header."""

    path: str
    member: str | None
    kind: str | None = None
    uai: str | None = None
    school_year: int | None = None
    export_date: str | None = None  # ISO datetime (HORODATAGE or DATE_EXPORT)
    sha256: str | None = None
    #: sha256 of the bytes past the header: the same records in a new export (another date)
    content_sha256: str | None = None
    size: int = 0
    status: str = "discovered"  # discovered, rejected
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> XmlSource:
        return XmlSource(Path(self.path), self.member)

    @property
    def checked_source(self) -> XmlSource:
        """The source checked, as it is read, against what discovery recorded (sha256, size,
        a regular file): ``etl.discover.xmlsafe.open_source`` raises FileChanged otherwise."""
        return XmlSource(Path(self.path), self.member, self.sha256, self.size or None)

    @property
    def name(self) -> str:
        return self.source.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_fr_datetime(date: str | None, stamp: str | None) -> str | None:
    for value, fmt in ((stamp, "%d/%m/%Y %H:%M:%S"), (date, "%d/%m/%Y")):
        if value:
            try:
                return dt.datetime.strptime(value.strip(), fmt).isoformat()
            except ValueError:
                continue
    return None


def _mtime_iso(src: XmlSource) -> str:
    if src.member is not None:
        try:
            with zipfile.ZipFile(src.path) as zf:
                return dt.datetime(*zf.getinfo(src.member).date_time).isoformat()
        except (zipfile.BadZipFile, KeyError, OSError, ValueError):
            pass
    return dt.datetime.fromtimestamp(int(os.stat(src.path).st_mtime)).isoformat()


def read_header(src: XmlSource) -> Discovered:
    """Root element, UAI, school year and export date, reading only the head of the file."""
    d = Discovered(path=str(src.path), member=src.member)
    name = src.name
    try:
        with open_source(src) as f:
            ctx = iterparse(f, name, events=("start", "end"))
            root_tag: str | None = None
            vals: dict[str, str] = {}
            for event, el in ctx:
                tag = el.tag if isinstance(el.tag, str) else ""
                if root_tag is None:
                    root_tag = etree.QName(tag).localname if tag else ""
                    if root_tag not in KINDS:
                        why = KNOWN_OTHER_ROOTS.get(root_tag, "not a SIECLE or STS-web export")
                        raise FileRejected(name, f"unknown root element <{root_tag}>: {why}")
                    d.kind = KINDS[root_tag]
                    d.extra["version"] = el.get("VERSION")
                    continue
                if event == "start":
                    if d.kind == "STS" and tag == "UAJ":
                        vals["UAJ"] = el.get("CODE", "")
                    elif d.kind == "STS" and tag == "ANNEE_SCOLAIRE":
                        vals["ANNEE_SCOLAIRE"] = el.get("ANNEE", "")
                    continue
                if tag in ("UAJ", "ANNEE_SCOLAIRE", "DATE_EXPORT", "HORODATAGE"):
                    if d.kind != "STS":
                        vals[tag] = (el.text or "").strip()
                elif tag in ("DATE_DEBUT", "DATE_FIN") and d.kind == "STS":
                    vals[tag] = (el.text or "").strip()
                if tag == "PARAMETRES":
                    break
                if tag in ("DONNEES", "NOMENCLATURES"):
                    break
    except FileRejected:
        raise
    except etree.XMLSyntaxError as e:
        raise xml_error(name, e) from e
    except (OSError, ValueError, EOFError) as e:
        raise FileRejected(name, f"unreadable: {e}") from e
    if root_tag is None:
        raise FileRejected(name, "no root element (empty or truncated file)")
    d.uai = (vals.get("UAJ") or "").strip().upper() or None
    if not d.uai:
        raise FileRejected(name, "no UAJ (school UAI) in PARAMETRES")
    if not uai_is_valid(d.uai):
        raise FileRejected(name, f"UAI {d.uai!r} is not valid (format or check letter)", uai=d.uai)
    year = vals.get("ANNEE_SCOLAIRE", "")
    d.school_year = int(year) if year.isdigit() else None
    if d.kind == "STS":
        # STS-web carries no export timestamp: the member's or the file's mtime stands in
        d.export_date = _mtime_iso(src)
    else:
        d.export_date = _parse_fr_datetime(vals.get("DATE_EXPORT"), vals.get("HORODATAGE"))
    return d


def discover(landing: Path, academy: Academy) -> list[Discovered]:
    """Every document under ``<landing>/<academy>/``, identified or rejected with a reason.

    Documents are returned sorted by path so runs are deterministic.
    """
    root = landing / academy.code
    out: list[Discovered] = []
    if not root.is_dir():
        log.warning("landing folder %s does not exist", root)
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        # hidden folders (.tmp, .partial uploads, .snapshot) are not documents: skip them;
        # a symlinked folder is reported, never followed (it could point anywhere)
        kept: list[str] = []
        for dn in sorted(dirnames):
            if dn.startswith("."):
                continue
            if (here / dn).is_symlink():
                out.append(_rejected(here / dn, None, "symbolic links are not followed"))
                continue
            kept.append(dn)
        dirnames[:] = kept
        for fn in sorted(filenames):
            p = here / fn
            if fn.startswith("."):
                continue  # hidden: an upload in progress or editor litter
            if p.is_symlink():
                out.append(_rejected(p, None, "symbolic links are not followed"))
                continue
            if not p.is_file():
                out.append(_rejected(p, None, "not a regular file"))
                continue
            out.extend(_discover_file(p, academy))
    out.sort(key=lambda d: (d.path, d.member or ""))
    return out


def _rejected(path: Path, member: str | None, reason: str) -> Discovered:
    return Discovered(path=str(path), member=member, status="rejected", reason=reason)


def _discover_file(p: Path, academy: Academy) -> list[Discovered]:
    low = p.name.lower()
    sources: list[XmlSource] = []
    if low.endswith(".zip"):
        try:
            members, others = list_zip_xml(p)
        except FileRejected as e:
            return [_rejected(p, None, e.reason)]
        res = [_rejected(p, m, why) for m, why in others]
        sources = [XmlSource(p, m) for m in members]
        if not members and not others:
            res.append(_rejected(p, None, "empty zip"))
    elif low.endswith(".xml"):
        res, members = [], []
        sources = [XmlSource(p)]
    else:
        return [_rejected(p, None, "not an XML file or a zip of XML files")]
    from etl.discover.aaf import aaf_header, name_extra, parse_aaf_name

    for src in sources:
        aaf = parse_aaf_name(src.member or src.path.name)
        try:
            d = aaf_header(src, aaf) if aaf is not None else read_header(src)
            d.sha256, d.content_sha256 = digests(src)
            d.size = p.stat().st_size
        except FileRejected as e:
            d = _rejected(src.path, src.member, e.reason)
            if aaf is not None:  # a part of an AAF document: the document is bad
                d.kind, d.extra["aaf"] = "AAF", name_extra(aaf)
                d.export_date = f"{aaf.date}T00:00:00"
                with contextlib.suppress(FileRejected, OSError, ValueError, EOFError):
                    d.sha256, d.content_sha256 = digests(src)
                res.append(d)
                continue
            uai, d.kind = sniff_header(src)
            d.uai = e.uai or uai
            res.append(d)
            continue
        if d.uai and not academy.owns_uai(d.uai):
            d.status = "rejected"
            d.reason = (
                f"UAI {d.uai} is not a school of {academy.code} "
                f"(departments {', '.join(academy.departments)})"
            )
        res.append(d)
    if members:
        # every XML document of the zip and its school: a quarantine keeps the zip under its
        # school (or as several schools'), and removes it from the landing zone only once
        # each of them was quarantined (etl.discover.quarantine)
        uais = {d.member: d.uai for d in res if d.member in members}
        for d in res:
            if d.member in members:
                d.extra["members"] = list(members)
                d.extra["member_uais"] = uais
    return res
