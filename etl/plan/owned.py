"""The attributes the sync owns: the one list the planner's entries, the writer, the audit and
its repair agree on (docs/operations.md, "What the sync owns").

The sync writes these and only these; any other attribute of an entry is someone else's (a
``userPassword`` or ``preferredLanguage`` the ENT sets, an attribute a script adds) and
survives its writes: the writer diffs what it reads back from the directory through
``owned_view``, and the audit neither reports nor repairs anything else. Of ``objectClass``
only the classes in ``SYNC_CLASSES`` are the sync's: an auxiliary class the ENT adds stays.
"""

from __future__ import annotations

from collections.abc import Mapping

#: every attribute the sync writes, on any of its entries (people, schools, their ``ou``
#: entries, classes, groups, archives)
OWNED_ATTRIBUTES = (
    # every entry
    "objectClass", "cn", "ou", "description",
    # people (docs/directory.md, "People")
    "uid", "ENTPersonLogin", "sn", "givenName", "displayName", "ENTPersonJointure",
    "ENTPersonProfils", "ENTPersonStructRattach", "ENTPersonDateNaissance", "ENTPersonSexe",
    "mail", "ENTPersonFonctions", "ENTEleveINE", "ENTEleveMEF", "ENTEleveClasses",
    "ENTEleveGroupes", "ENTElevePersRelEleve", "ENTAuxPersRelEleveEleve", "ENTAuxEnsClasses",
    "ENTAuxEnsGroupes", "ENTAuxEnsClassesPrincipal", "ENTAuxEnsMatiereEnseignEtab",
    "entSyncStatus", "entSyncDisabledAt",
    # schools, classes and groups
    "ENTStructureUAI", "ENTStructureAcademie", "ENTStructureNomCourant",
    "ENTStructureAnneeScolaire", "member",
)
#: the object classes the sync gives its entries; any other value of ``objectClass`` is not
#: its own
SYNC_CLASSES = (
    "top", "person", "organizationalPerson", "inetOrgPerson", "ENTPerson", "ENTEleve",
    "ENTAuxPersRelEleve", "ENTAuxEnseignant", "ENTAuxNonEnsEtab", "entSyncAccount",
    "ENTEtablissement", "ENTClasse", "ENTGroupe", "entSyncObject", "organizationalUnit",
)

OWNED = frozenset(a.lower() for a in OWNED_ATTRIBUTES)
_CLASSES = frozenset(c.lower() for c in SYNC_CLASSES)

Attrs = dict[str, list[str]]


def is_owned(name: str) -> bool:
    return name.lower() in OWNED


def owned_view(attrs: Mapping[str, list[str]],
               also: Mapping[str, list[str]] | None = None) -> Attrs:
    """The part of an entry (as the directory has it) that is the sync's: its owned
    attributes, and of ``objectClass`` the sync's classes. What the writer diffs against and
    what the audit compares, so a foreign attribute is never written over nor reported.
    ``also``: an entry about to be written, whose attributes count as owned too."""
    extra = {k.lower() for k in also} if also else set()
    out: Attrs = {}
    for k, v in attrs.items():
        key = k.lower()
        if (key not in OWNED and key not in extra) or not v:
            continue
        if key == "objectclass":
            v = [c for c in v if c.lower() in _CLASSES]
            if not v:
                continue
        out[k] = list(v)
    return out


def foreign_names(attrs: Mapping[str, list[str]]) -> list[str]:
    """The attributes of an entry that are not the sync's (sorted): kept by its writes."""
    return sorted(k for k, v in attrs.items() if v and k.lower() not in OWNED)


def kind_of(dn: str, attrs: Mapping[str, list[str]]) -> str:
    """What a directory entry is, by its object classes."""
    oc = {x.lower() for x in attrs.get("objectClass", [])}
    if "entperson" in oc or dn.lower().startswith("uid="):
        return "person"
    if "entclasse" in oc:
        return "class"
    if "entgroupe" in oc:
        return "group"
    if "entetablissement" in oc:
        return "school"
    return "ou"


def uai_of(dn: str, attrs: Mapping[str, list[str]] | None = None) -> str | None:
    """The school of an entry: the UAI in its DN, else (an account) its main school's."""
    for part in dn.split(","):
        if part.lower().startswith("entstructureuai="):
            return part.split("=", 1)[1]
    for v in (attrs or {}).get("ENTPersonStructRattach", [])[:1]:
        return uai_of(v)
    return None


__all__ = ["OWNED", "OWNED_ATTRIBUTES", "SYNC_CLASSES", "foreign_names", "is_owned", "kind_of",
           "owned_view", "uai_of"]
