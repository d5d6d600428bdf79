"""Streaming reader of one AAF file part (root ``ficAlimMENESR``) into ``AafRecord``s.

An AAF file is a flat list of requests: ``addRequest`` (a whole record: in a Complet every
record is one), ``modifyRequest`` (``modifications/modification[@operation="replace"]``: the
attributes it replaces, whole) and ``deleteRequest`` (the identifier only). Each carries
``operationalAttributes`` (``categoriePersonne`` Eleve, PersRelEleve, PersEducNat;
``categorieStructure`` EtabEducNat; ``categorieMatiere``, ... for the other files) and
``identifier/id``. An attribute's values are its ``value`` elements, in order; an empty
``<value/>`` is kept as ``''`` (the mapping treats it as absent).

The file is walked once with lxml iterparse (``etl.discover.xmlsafe.iterparse``: no DTD
loaded, no entity resolved, no network), each request freed once read, so memory does not
grow with the file. The one DOCTYPE accepted is ``<!DOCTYPE ficAlimMENESR SYSTEM
"ficAlimMENESR.dtd">`` (``xmlsafe.allowed_doctype``); any other DOCTYPE, an internal subset
or an entity declaration refuses the file (``FileRejected``), as does another root element or
a request outside the root.

A malformed request is one bad record, not a bad file: it is not yielded but appended to the
caller's ``rejected`` list as a ``RecordRejected`` (file, line of the request, rule):
``required`` (no ``identifier/id``, no category, an add without ``attributes``, a modify
without ``modification``), ``unknown_request`` (a child of the root other than the three
requests), ``operation`` (a ``modification`` whose operation is not ``replace``),
``attr_name`` (an ``attr``/``modification`` without ``name``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Final

import msgspec
from lxml import etree

from etl.discover.xmlsafe import XmlSource, iterparse, open_source, xml_error
from etl.errors import FileRejected, RecordRejected

log = logging.getLogger(__name__)

ROOT: Final = "ficAlimMENESR"
#: request element -> ``AafRecord.op``
REQUESTS: Final[dict[str, str]] = {"addRequest": "add", "modifyRequest": "modify",
                                   "deleteRequest": "delete"}
#: categories of person records (their identifier is a person's source key)
PERSON_CATEGORIES: Final = frozenset({"Eleve", "PersRelEleve", "PersEducNat"})


class AafRecord(msgspec.Struct, frozen=True):
    """One request of an AAF file.

    ``attrs``: attribute name -> its values in document order (``''`` for ``<value/>``); for a
    ``modify``, only the attributes it replaces; for a ``delete``, empty."""

    category: str  # Eleve | PersRelEleve | PersEducNat | EtabEducNat | MefEducNat | ...
    op: str  # add | modify | delete
    identifier: str  # <identifier><id>
    attrs: dict[str, tuple[str, ...]]
    file: str  # the file (part) it came from: XmlSource.short_name
    line: int  # the line of its request element

    def first(self, name: str) -> str | None:
        """The attribute's first non-blank value, stripped; None when absent or all empty."""
        for v in self.attrs.get(name, ()):
            v = v.strip()
            if v:
                return v
        return None

    def values(self, name: str) -> list[str]:
        """The attribute's non-blank values, stripped, in order (``<value/>`` is absent)."""
        return [s for v in self.attrs.get(name, ()) if (s := v.strip())]


def _reject(name: str, el: Any, rule: str, message: str, category: str | None = None,
            identifier: str | None = None) -> RecordRejected:
    key = identifier if identifier and category in PERSON_CATEGORIES else None
    return RecordRejected(name, None, getattr(el, "sourceline", None),
                          el.tag if isinstance(el.tag, str) else "?", rule, message,
                          source_key=key)


def _values(el: Any) -> tuple[str, ...]:
    return tuple(v.text or "" for v in el.iterchildren("value"))


def _category(req: Any) -> str | None:
    for attr in req.iterfind("operationalAttributes/attr"):
        name = attr.get("name") or ""
        if name.startswith("categorie"):
            for v in _values(attr):
                if v.strip():
                    return v.strip()
    return None


def _request(name: str, req: Any, default_category: str | None
             ) -> AafRecord | RecordRejected:
    """The record a request element holds, or why it cannot be used."""
    op = REQUESTS[req.tag]
    identifier = (req.findtext("identifier/id") or "").strip()
    category = _category(req) or default_category
    if not identifier:
        return _reject(name, req, "required", f"<{req.tag}> without <identifier><id>")
    if category is None:
        return _reject(name, req, "required",
                       f"<{req.tag}> {identifier}: no category in <operationalAttributes>")
    attrs: dict[str, tuple[str, ...]] = {}
    if op == "add":
        block = req.find("attributes")
        if block is None:
            return _reject(name, req, "required", f"addRequest {identifier}: no <attributes>",
                           category, identifier)
        for attr in block.iterchildren("attr"):
            an = (attr.get("name") or "").strip()
            if not an:
                return _reject(name, req, "attr_name",
                               f"addRequest {identifier}: an <attr> without name",
                               category, identifier)
            attrs[an] = attrs.get(an, ()) + _values(attr)
    elif op == "modify":
        mods = list(req.iterfind("modifications/modification"))
        if not mods:
            return _reject(name, req, "required",
                           f"modifyRequest {identifier}: no <modification>",
                           category, identifier)
        for mod in mods:
            an = (mod.get("name") or "").strip()
            operation = (mod.get("operation") or "").strip()
            if not an:
                return _reject(name, req, "attr_name",
                               f"modifyRequest {identifier}: a <modification> without name",
                               category, identifier)
            if operation != "replace":
                shown = operation if operation.isalnum() and len(operation) < 32 else "?"
                return _reject(name, req, "operation",
                               f"modifyRequest {identifier}: operation {shown!r} on {an} "
                               "(only 'replace' is defined)", category, identifier)
            attrs[an] = attrs.get(an, ()) + _values(mod)
    return AafRecord(category=category, op=op, identifier=identifier, attrs=attrs,
                     file=name, line=int(req.sourceline or 0))


def _unknown(name: str, el: Any, out: list[RecordRejected]) -> None:
    """A child of the root that is no request: one rejected record."""
    tag = el.tag if isinstance(el.tag, str) else None
    if tag is None or tag in REQUESTS:
        return
    shown = tag if tag.isascii() and tag.replace("_", "").isalnum() and len(tag) < 64 else "?"
    out.append(RecordRejected(name, None, el.sourceline, shown, "unknown_request",
                              f"<{shown}> is not addRequest, modifyRequest or deleteRequest"))


def release(root: Any, el: Any) -> None:
    """Free a request read and every child of the root before it: memory stays flat."""
    el.clear(keep_tail=True)
    while el.getprevious() is not None:
        del root[0]


def iter_aaf_records(source: XmlSource, *, rejected: list[RecordRejected] | None = None,
                     category: str | None = None) -> Iterator[AafRecord]:
    """The requests of one AAF file part, in document order, as ``AafRecord``s.

    ``rejected``: where malformed requests go (``RecordRejected``, in document order); when
    None they are only counted in the log. ``category``: what to assume for a request whose
    ``operationalAttributes`` names none (the file name's type, e.g. ``Eleve``); without it
    such a request is rejected. Raises ``FileRejected`` (file, line, one-line reason) for a
    file that cannot be read: not XML, truncated, a DTD other than the AAF's plain DOCTYPE,
    a root other than ``ficAlimMENESR``."""
    name = source.short_name
    bad: list[RecordRejected] = [] if rejected is None else rejected
    n_bad = len(bad)
    root: Any = None
    with open_source(source) as f:
        ctx = iterparse(f, name, events=("start", "end"), tag=(ROOT, *REQUESTS))
        try:
            for event, el in ctx:
                if event == "start":
                    if el.tag == ROOT and root is None:
                        if el.getparent() is not None:
                            top = el.getroottree().getroot().tag
                            raise FileRejected(name, f"root element is <{top}>, not <{ROOT}>",
                                               line=el.sourceline)
                        root = el
                    continue
                if el.tag == ROOT:
                    if el is root:
                        for child in el:
                            _unknown(name, child, bad)
                    continue
                if root is None:
                    top = el.getroottree().getroot().tag
                    shown = top if isinstance(top, str) and len(top) < 64 else "?"
                    raise FileRejected(name, f"root element is <{shown}>, not <{ROOT}>",
                                       line=el.sourceline)
                if el.getparent() is not root:
                    raise FileRejected(name, f"<{el.tag}> is not a child of the <{ROOT}> "
                                       "root element", line=el.sourceline)
                for sib in el.itersiblings(preceding=True):
                    _unknown(name, sib, bad)
                got = _request(name, el, category)
                release(root, el)
                if isinstance(got, RecordRejected):
                    bad.append(got)
                else:
                    yield got
        except etree.XMLSyntaxError as e:
            raise xml_error(name, e) from e
        except (EOFError, OSError) as e:
            raise FileRejected(name, f"unreadable: {e}") from e
        if root is None:
            top = ctx.root.tag if getattr(ctx, "root", None) is not None else "?"
            shown = top if isinstance(top, str) and len(top) < 64 else "?"
            raise FileRejected(name, f"root element is <{shown}>, not <{ROOT}>")
    if rejected is None and len(bad) > n_bad:
        log.warning("%s: %d malformed AAF requests skipped", name, len(bad) - n_bad)
