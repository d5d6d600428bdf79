"""Every GAR file checked against the Ministry's GAR-ENT schema before anything is sent.

The schema is the operator's (``ENTSYNC_GAR_XSD``: the Ministry publishes GAR-ENT.xsd with
the GAR's ENT documentation); a checkout beside the project's shared samples finds their copy.
A refused file raises ``GarExportInvalid`` naming the file, the record (its uid or DN) and
the schema's rule; a value the rule quotes is left out of the message (it may be a name).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from lxml import etree

from etl.errors import ConfigError, GarExportInvalid
from etl.gar.build import NS, q
from etl.plan.desired import person_dn, structure_dn

#: the shared samples' copy, for a checkout that has them (tests, development)
SAMPLES_XSD = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "gar" / \
    "GAR-ENT.xsd"
_QUOTED = re.compile(r"(The value) '[^']*'")


def xsd_path(configured: str | None) -> Path:
    """The schema to validate against: ``ENTSYNC_GAR_XSD``, else the samples' copy."""
    if configured:
        p = Path(configured)
        if not p.is_file():
            raise ConfigError(f"ENTSYNC_GAR_XSD: no file at {configured}")
        return p
    if SAMPLES_XSD.is_file():
        return SAMPLES_XSD
    raise ConfigError("the GAR-ENT schema is not configured: set ENTSYNC_GAR_XSD to the "
                      "GAR-ENT.xsd (version 1.7) the Ministry publishes for ENTs")


@lru_cache(maxsize=4)
def load_schema(path: str) -> etree.XMLSchema:
    try:
        return etree.XMLSchema(etree.parse(path))
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError, OSError) as e:
        raise ConfigError(f"GAR schema {path} cannot be read: {e}") from e


def _record_of(element: etree._Element | None, base: str) -> str:
    """The record an element belongs to: the person's DN (uid), else the class's or group's,
    else the school's UAI."""
    if element is None:
        return "file"
    uid = element.findtext(q("GARPersonIdentifiant"))
    uai = element.findtext(q("GARStructureUAI"))
    code = element.findtext(q("GARGroupeCode"))
    tag = etree.QName(element).localname
    if uid:
        return f"{tag} {person_dn(uid, base)}"
    if code and uai:
        return f"{tag} {structure_dn(uai, code, base)}"
    return f"{tag} {uai or '?'}"


def validate_file(path: Path, schema: etree.XMLSchema, base: str) -> None:
    """Raise ``GarExportInvalid`` for the file's first error against the schema."""
    tree = etree.parse(str(path))
    if schema.validate(tree):
        return
    err: Any = cast(Any, schema.error_log)[0]  # the first error (the stubs lack indexing)
    line = int(err.line or 0)
    record = None
    for child in tree.getroot():  # the record holding the error's line
        at = child.sourceline
        if isinstance(at, int) and at <= line:
            record = child
        else:
            break
    rule = _QUOTED.sub(r"\1", str(err.message)).replace(f"{{{NS}}}", "men:")
    raise GarExportInvalid(path.name, _record_of(record, base), rule, line or None)


def validate_files(files: list[Path], xsd: Path, base: str) -> int:
    """Check every file; the number checked."""
    schema = load_schema(str(xsd))
    for f in files:
        validate_file(f, schema, base)
    return len(files)


__all__ = ["SAMPLES_XSD", "load_schema", "validate_file", "validate_files", "xsd_path"]
