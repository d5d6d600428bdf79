"""The GAR export of an academy: read, build, write, validate, archive, deliver.

``export_academy`` is what ``entsync gar export`` and the ``gar_export__<academy>`` DAG call.
The files of each kind are written in the order the schema's sequences want (all ``GAREleve``
before any ``GARPersonMEF``...): the people are read twice, the schools' structures once per
section, always in the same order (people by uid, schools by UAI, structures by code,
members by uid), so memory stays that of one school and one page of people.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from etl.config import Academy, Settings, get_academy
from etl.errors import ConfigError
from etl.gar import build
from etl.gar.deliver import deliver, parse_target
from etl.gar.read import (
    GarMembership,
    GarRespAff,
    GarSource,
    designated_members,
    person_mef,
    read_designated,
    read_mails,
    resp_aff,
)
from etl.gar.validate import validate_files, xsd_path
from etl.gar.write import KindWriter, prefix_of, stamp_of, write_archive
from etl.store.db import session_factory

log = logging.getLogger(__name__)
_ENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def ent_id_of(settings: Settings, academy: Academy) -> str:
    ent = academy.gar_ent_id or settings.gar.ent_id or ""
    if not ent:
        raise ConfigError(f"academy {academy.code}: no GAR ENT id (gar_ent_id in "
                          "academies.toml, or ENTSYNC_GAR_ENT_ID)")
    if not _ENT_ID.match(ent):
        raise ConfigError(f"GAR ENT id {ent!r}: letters, digits, '.', '_' or '-' only")
    return ent


class _Directory:
    """The few things the export reads from the directory itself: each school's designated
    group (``gar_resp_aff_group``) and the mails of who assigns resources. One connection,
    opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: Any = None

    def _conn(self) -> Any:
        if self.conn is None:
            from etl.apply.stage import ldap_target_from_settings
            from etl.apply.writer import connect

            self.conn = connect(ldap_target_from_settings(self.settings))
        return self.conn

    def designated(self, group: str, uais: list[str]) -> dict[str, set[str]]:
        """uid -> UAIs where the school's group ``group`` lists them."""
        if not group or not uais:
            return {}
        base = self.settings.ldap.base
        return designated_members(read_designated(self._conn(), group, uais, base), base)

    def mails(self, uids: list[str]) -> dict[str, list[str]]:
        return read_mails(self._conn(), uids, self.settings.ldap.base) if uids else {}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.unbind()
            self.conn = None


def export_academy(settings: Settings, academy_code: str, out: Path,
                   now: dt.datetime | None = None, schools: list[str] | None = None,
                   target: str | None = None, send: bool = True,
                   keep: int | None = None) -> dict[str, Any]:
    """Export the academy's schools (``schools``: only these UAIs) into ``out``; validate
    every file, archive them, then deliver the archive and its md5 to ``target`` (else
    ``ENTSYNC_GAR_TARGET``, else the academy's ``gar_target``; none: kept in ``out``).
    An academy with no school in the directory is not exported (``skipped``): a complete
    export of nothing would empty the GAR's copy. Raises ConfigError (setup),
    GarExportInvalid (a file the schema refuses: nothing is archived nor sent),
    GarDeliveryError. ``keep``: the exports left in ``out`` afterwards
    (the newest; None: all)."""
    academy = get_academy(academy_code)
    ent = ent_id_of(settings, academy)
    xsd = xsd_path(settings.gar.xsd)
    target = target or settings.gar.target or academy.gar_target or ""
    if target:
        parse_target(target)  # a bad target is a config error before any work
    when = now or dt.datetime.now(ZoneInfo(academy.timezone))
    stamp = stamp_of(when)
    prefix = prefix_of(ent, stamp)
    folder = Path(out) / prefix
    Session = session_factory(settings.state_url)
    with Session() as session:
        if not GarSource(session, academy, settings.ldap.base).load_schools(schools):
            # a complete export of nothing would empty the GAR's copy of the academy: the
            # directory has no school yet (before the first sync), nothing is written or sent
            log.warning("GAR export %s: no school in the directory, nothing exported",
                        academy.code)
            return {"academy": academy.code, "ent_id": ent, "stamp": stamp, "files": [],
                    "counts": {}, "schools": 0, "skipped": "no school in the directory",
                    "delivered": None}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    base = settings.ldap.base
    counts: Counter[str] = Counter()
    no_mail: list[str] = []
    files: list[Path] = []
    max_nodes = settings.gar.max_nodes
    directory = _Directory(settings)
    with Session() as session, contextlib.closing(directory):
        src = GarSource(session, academy, base)
        etabs = src.load_schools(schools)
        uais = [s.uai for s in etabs]
        designated = directory.designated(academy.gar_resp_aff_group, uais)
        candidates: list[GarRespAff] = []  # who assigns resources: a few per school

        with KindWriter(folder, prefix, "Etab", max_nodes) as w:
            for s in etabs:
                w.write(build.etab(s))
                counts["GAREtab"] += 1
        files += w.files

        with KindWriter(folder, prefix, "Eleve", max_nodes) as eleves, \
                KindWriter(folder, prefix, "Enseignant", max_nodes) as staff:
            for p in src.people():
                if p.pupil:
                    eleves.write(build.eleve(p))
                    counts["GAREleve"] += 1
                    continue
                staff.write(build.enseignant(p))
                counts["GAREnseignant"] += 1
                r = resp_aff(p, academy.gar_resp_aff_profiles, designated)
                if r is not None:
                    candidates.append(r)
            for p in src.people():
                m = person_mef(p)
                if m is not None:
                    eleves.write(build.person_mef(m))
                    counts["GARPersonMEF"] += 1
        files += eleves.files + staff.files

        mails = directory.mails([r.uid for r in candidates])
        with KindWriter(folder, prefix, "RespAff", max_nodes) as w:
            for r in candidates:  # by uid, as read
                found = tuple(sorted(set(r.mails) | set(mails.get(r.uid, []))))
                if not found:  # the schema requires a mail: reported, left out
                    no_mail.append(r.uid)
                    continue
                w.write(build.resp_aff(replace(r, mails=found)))
                counts["GARRespAff"] += 1
        files += w.files

        with KindWriter(folder, prefix, "Groupe", max_nodes) as w:
            empty = 0
            for uai in uais:
                sg = src.school_groups(uai)
                empty += sg.empty
                for g in sg.groups:
                    w.write(build.groupe(g))
                    counts["GARGroupe"] += 1
            for uai in uais:
                sg = src.school_groups(uai)
                for g in sg.groups:
                    for uid in sg.members.get(g.code, []):
                        w.write(build.person_groupe(GarMembership(uai, uid, g.code)))
                        counts["GARPersonGroupe"] += 1
            for division in (False, True):  # GAREnsGroupeMatiere, then GAREnsClasseMatiere
                for uai in uais:
                    sg = src.school_groups(uai, subjects=True)
                    for t in src.teachings(uai, sg, division):
                        w.write(build.ens_matiere(t))
                        counts["GAREnsClasseMatiere" if division else "GAREnsGroupeMatiere"] += 1
        files += w.files

    validate_files(files, xsd, base)
    archive, md5 = write_archive(files, Path(out), prefix, when)
    summary: dict[str, Any] = {
        "academy": academy.code, "ent_id": ent, "stamp": stamp, "folder": str(folder),
        "files": [f.name for f in files], "counts": dict(sorted(counts.items())),
        "archive": str(archive), "md5": str(md5), "md5_hex": md5.read_text("ascii"),
        "schools": len(uais), "structures_without_pupils": empty,
        "resp_aff_without_mail": no_mail, "validated": len(files), "delivered": None,
    }
    if target and send:
        summary["delivered"] = deliver([archive, md5], target, settings.gar)
    if keep is not None:
        prune(Path(out), ent, keep)
    log.info("GAR export %s: %s files, %s", academy.code, len(files), dict(counts))
    return summary


def prune(out: Path, ent: str, keep: int) -> list[str]:
    """Remove all but the ``keep`` newest exports (folder, archive, md5) of ``ent`` in
    ``out``; the names removed. Their stamps sort as their times."""
    start = len(f"{ent}_GAR-ENT_Complet_")
    stamps = sorted({p.name[start:start + 15] for p in out.glob(
        f"{ent}_GAR-ENT_Complet_*_2D*")})
    removed = []
    for stamp in stamps[:max(0, len(stamps) - max(keep, 1))]:
        for p in out.glob(f"{ent}_GAR-ENT_Complet_{stamp}_2D*"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
    return sorted(removed)


__all__ = ["ent_id_of", "export_academy", "prune"]
