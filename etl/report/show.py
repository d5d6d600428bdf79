"""``entsync show``: what the directory holds, read page by page (any size), one academy's
part with ``--academy``, and no personal data unless asked (``--values``).

Accounts are counted per profile, active and disabled apart (``entSyncStatus``); a sample
pupil entry and a sample class are shown by DN and attribute names only: the values of a
real pupil's entry are printed only with ``values=True`` (an operator's explicit choice).
"""

from __future__ import annotations

from typing import Any

import ldap3
from ldap3.utils.conv import escape_filter_chars

from etl.audit.read import DirectoryReader
from etl.config import Settings, get_academy

PROFILES = ("ELV", "TUT", "ENS", "DIR", "EVS", "DOC", "ETA")


def overview(reader: DirectoryReader, settings: Settings, academy_code: str | None,
             values: bool = False) -> dict[str, Any]:
    """What ``render`` prints, read page by page with the audit's reader (any size)."""
    base = settings.ldap.base
    academy = get_academy(academy_code) if academy_code else None

    def people(f: str) -> str:
        if academy is None:
            return f
        return f"(&{f}(ENTPersonJointure={escape_filter_chars(academy.jointure_prefix)}$*))"

    accounts: dict[str, dict[str, int]] = {}
    for prof in PROFILES:
        active = disabled = 0
        for e in reader.search(f"ou=people,{base}",
                               people(f"(ENTPersonProfils=National_{prof})"), ldap3.SUBTREE,
                               ["entSyncStatus"]):
            if "DISABLED" in e.attrs.get("entSyncStatus", []):
                disabled += 1
            else:
                active += 1
        if active or disabled:
            accounts[f"National_{prof}"] = {"active": active, "disabled": disabled}
    school_filter = "(objectClass=ENTEtablissement)" if academy is None else (
        f"(&(objectClass=ENTEtablissement)"
        f"(ENTStructureAcademie={escape_filter_chars(academy.code)}))")
    schools = [e.dn for e in reader.search(f"ou=structures,{base}", school_filter, ldap3.LEVEL,
                                           ["ENTStructureUAI"])]
    bases = [f"ou=structures,{base}"] if academy is None else schools
    classes = groups = 0
    sample_class: dict[str, Any] | None = None
    for b in bases:
        for e in reader.search(b, "(objectClass=ENTClasse)", ldap3.SUBTREE, ["cn", "member"]):
            classes += 1
            if sample_class is None:
                members = e.attrs.get("member", [])
                sample_class = {"dn": e.dn, "members": len(members),
                                "sample_members": members[:10]}
        groups += sum(1 for _ in reader.search(b, "(objectClass=ENTGroupe)", ldap3.SUBTREE,
                                               ["cn"]))
    sample: dict[str, Any] | None = None
    for e in reader.search(f"ou=people,{base}", people("(ENTPersonProfils=National_ELV)"),
                           ldap3.SUBTREE, ["*"], limit=1):
        sample = {"dn": e.dn, "attributes": sorted(e.attrs)}
        if values:
            sample["values"] = dict(sorted(e.attrs.items()))
    return {"directory": settings.ldap.url, "base": base, "academy": academy_code,
            "accounts": accounts, "schools": len(schools), "classes": classes,
            "groups": groups, "sample_pupil": sample, "sample_class": sample_class}


def render(o: dict[str, Any]) -> str:
    lines = [f"directory {o['directory']} base {o['base']}"
             + (f" academy {o['academy']}" if o["academy"] else ""),
             "accounts per profile (active, disabled):"]
    lines += [f"  {k:14} {v['active']}" + (f"  (+{v['disabled']} disabled)" if v["disabled"]
                                           else "")
              for k, v in o["accounts"].items()]
    lines.append(f"schools: {o['schools']}, classes: {o['classes']}, groups: {o['groups']}")
    s = o["sample_pupil"]
    if s:
        lines.append(f"sample pupil entry: {s['dn']}")
        if "values" in s:
            for k, v in s["values"].items():
                lines.append(f"  {k}: {v if isinstance(v, str) else ', '.join(v)}")
        else:
            lines.append(f"  attributes: {', '.join(s['attributes'])} (values: --values)")
    c = o["sample_class"]
    if c:
        lines.append(f"class {c['dn']} ({c['members']} members):")
        lines += [f"  member: {m}" for m in c["sample_members"]]
    return "\n".join(lines)
