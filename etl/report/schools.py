"""The schools' pages once a run has ended: each school's night, its French page, the academy's
index of them, and a folder per school an academy can serve to its schools.

Why at the end of the run: the page a school reads is written when it is read
(``etl.validate.school``), but only the run's end knows the whole night: whether its plan was
held by a guard (and why), what was written, which export it usually sends did not come. The
night's facts (``school_night``) are kept beside the page (``night_<UAI>.json``) so that a
decision taken later (``decisions`` in the summary) rewrites it (``refresh_school_pages``).

Delivery beyond Airflow: ``<school_pages_dir>/<UAI>/retours_<date>.html`` and ``latest.html``
(``ENTSYNC_SCHOOL_PAGES_DIR``, default ``<workdir>/schools``), one folder per school, for the
academy's own web server or ENT to expose to that school alone (the pages hold classes and
INEs). A dry run delivers nothing; a school whose exports were all applied before gets no new
page there.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from etl import staging
from etl.config import Settings, load_academies
from etl.contracts import SchoolResult
from etl.discover.xmlsafe import XmlSource
from etl.store.db import session_factory
from etl.store.models import Run, SourceFile

log = logging.getLogger(__name__)

#: school statuses that get no page (not synced tonight: only their groups changed)
NO_PAGE: Final = ("collateral",)
#: school statuses whose page is not delivered (nothing new since the last page)
NOT_DELIVERED: Final = ("collateral", "already_applied")
#: a school's status in French (the index, the run report's pages)
STATUS_FR: Final = {
    "ok": "pris en compte", "unchanged": "inchangé", "already_applied": "déjà pris en compte",
    "quarantined": "fichier non traité", "error": "incident technique",
    "file_changed": "fichier remplacé pendant la synchronisation",
    "awaiting_approval": "en attente de validation", "held": "en attente de validation",
    "partial": "écrit en partie", "failed": "non écrit", "collateral": "non synchronisé",
    "approved": "validé", "rejected": "refusé"}
#: SourceFile statuses as the page's export table says them
_FILE_STATE: Final = {"rejected": "refused", "superseded": "superseded", "held": "held",
                      "skipped_applied": "already_applied", "changed": "not_applied"}
#: how many earlier runs' summaries a school's name is looked for in
NAME_LOOKBACK: Final = 30


def _short(path: str, member: str | None) -> str:
    return XmlSource(Path(path), member).short_name


def _local_date(at: dt.datetime | None, tz: str) -> dt.datetime | None:
    """A UTC time of the state DB (naive) where the academy is."""
    from zoneinfo import ZoneInfo

    if at is None:
        return None
    return at.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def school_nights(settings: Settings, summary: Mapping[str, Any],
                  schools: Sequence[SchoolResult]) -> dict[str, dict[str, Any]]:
    """Per school of the run's summary (but those only collateral): what its page tells,
    JSON-able: name, run date, exports received (file, kind, export date, records read, what
    became of it), exports it usually sends that did not come (``missing``), its held plan
    (counts per action, guards tripped), what was written, the decision when taken."""
    academy = load_academies().get(str(summary.get("academy")))
    tz = academy.timezone if academy is not None else "Europe/Paris"
    run_id = str(summary["run_id"])
    results = {r.uai: r for r in schools}
    per_school: Mapping[str, Any] = summary.get("schools") or {}
    uais = sorted(u for u, s in per_school.items() if s.get("status") not in NO_PAGE)
    with session_factory(settings.state_url)() as s:
        run = s.get(Run, run_id)
        started = _local_date(run.started_at if run is not None else None, tz)
        tonight = s.execute(select(SourceFile.uai, SourceFile.path, SourceFile.member,
                                   SourceFile.kind, SourceFile.export_date, SourceFile.status)
                            .where(SourceFile.run_id == run_id,
                                   SourceFile.uai.in_(uais))
                            .order_by(SourceFile.id)).all()
        before = s.execute(select(SourceFile.uai, SourceFile.kind, SourceFile.export_date)
                           .where(SourceFile.academy == summary.get("academy"),
                                  SourceFile.uai.in_(uais), SourceFile.status == "applied",
                                  SourceFile.run_id != run_id)
                           .order_by(SourceFile.id)).all()
    unnamed = [u for u in uais if not (u in results and isinstance(results[u].name, str))]
    names = _earlier_names(settings, str(summary.get("academy")), run_id, unnamed)
    usual: dict[str, dict[str, str | None]] = {}
    for uai, kind, exp in before:
        if uai and kind:
            usual.setdefault(uai, {})[kind] = exp or usual.get(uai, {}).get(kind)
    out: dict[str, dict[str, Any]] = {}
    for uai in uais:
        ps = per_school[uai]
        status = str(ps.get("status"))
        r = results.get(uai)
        exports: list[dict[str, Any]] = []
        seen: set[str] = set()
        rows = [x for x in tonight if x.uai == uai]
        state_of = {_short(x.path, x.member): _FILE_STATE.get(str(x.status)) for x in rows}
        for ex in (r.exports if r is not None and isinstance(r.exports, list) else []):
            exports.append({**ex, "state": state_of.get(str(ex.get("file")))
                            or _school_state(status)})
            seen.add(str(ex.get("file")))
        for row in rows:
            f = _short(row.path, row.member)
            if f not in seen:
                seen.add(f)
                exports.append({"file": f, "kind": row.kind, "export_date": row.export_date,
                                "records": None, "state": _FILE_STATE.get(str(row.status))
                                or _school_state(status)})
        kinds = {str(x.get("kind")) for x in exports if x.get("kind")}
        missing = [{"kind": k, "last_export_date": d} for k, d in sorted(usual.get(uai, {}).items())
                   if k not in kinds]
        held = None
        if status in ("awaiting_approval", "held"):
            held = {"counts": dict(ps.get("planned") or {}),
                    "guards": list(ps.get("held") or [g for g in ps.get("guards") or []
                                                      if g.get("tripped")])}
        name = (r.name if r is not None and isinstance(r.name, str) else None) or names.get(uai)
        out[uai] = {
            "uai": uai, "name": name, "run_id": run_id, "academy": summary.get("academy"),
            "academy_name": academy.name if academy is not None else None,
            "date": started.strftime("%d/%m/%Y à %H:%M") if started else None,
            "day": started.date().isoformat() if started else dt.date.today().isoformat(),
            "status": status, "dry_run": bool(summary.get("dry_run")),
            "exports": exports, "missing": missing, "held": held,
            "written": {k: ps.get(k, 0) for k in ("created", "updated", "disabled", "restored",
                                                  "deleted")},
            "rejected": int(ps.get("rejected") or 0),
            "quarantined": [{"file": Path(str(q.get("file"))).name,
                             "reason": q.get("reason") or ""}
                            for q in (r.quarantined if r is not None else [])
                            if r is not None and not r.report_json],
            "decision": (summary.get("decisions") or {}).get(uai),
        }
    return out


def _school_state(status: str) -> str:
    """What became of a school's export read tonight, by the school's status."""
    if status in ("awaiting_approval", "held"):
        return "held"
    if status in ("unchanged", "already_applied"):
        return "already_applied"
    if status in ("quarantined", "error", "file_changed"):
        return "not_applied"
    return "read"


def _earlier_names(settings: Settings, academy: str, run_id: str,
                   uais: list[str]) -> dict[str, str]:
    """Schools' names as earlier runs' summaries gave them (tonight's exports may not hold
    the STS-web one that names a school)."""
    out: dict[str, str] = {}
    want = set(uais)
    if not want:
        return out
    with session_factory(settings.state_url)() as s:
        rows = s.scalars(select(Run.summary).where(Run.academy == academy, Run.id != run_id)
                         .order_by(Run.started_at.desc()).limit(NAME_LOOKBACK))
        for summ in rows:
            data: Any = summ or {}
            found: dict[str, Any] = data.get("schools") or {}
            for uai, x in found.items():
                if uai in want and uai not in out and isinstance(x, dict) and x.get("name"):
                    out[uai] = str(x["name"])
    return out


def _validation_json(settings: Settings, run_id: str, uai: str) -> Path | None:
    """The school's validation report of the run, here (copied from the staging area when
    another worker wrote it); None when the school was not validated."""
    local = settings.reports_dir / run_id / "schools" / uai / f"validation_{uai}.json"
    ref = f"{run_id}/reports/schools/{uai}/{local.name}"
    if not local.exists() and staging.exists(settings, ref):
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(staging.read_bytes(settings, ref))
    return local if local.exists() else None


def write_school_pages(settings: Settings, summary: dict[str, Any],
                       schools: Sequence[SchoolResult]) -> dict[str, Any]:
    """Each school's French page for the whole night (and its ``night_<UAI>.json``), the
    academy's index of them (``schools/index.html``), and each school's delivery folder.
    Adds ``name`` and ``retours`` (the page, relative to the run's folder) to each school of
    the summary; returns the nights."""
    nights = school_nights(settings, summary, schools)
    _write(settings, summary, nights)
    return nights


def refresh_school_pages(settings: Settings, summary: dict[str, Any]) -> None:
    """Rewrite the run's school pages from their kept nights with the summary's
    ``decisions`` (a held plan approved or rejected after the run)."""
    run_id = str(summary["run_id"])
    nights: dict[str, dict[str, Any]] = {}
    for uai in summary.get("schools") or {}:
        f = settings.reports_dir / run_id / "schools" / uai / f"night_{uai}.json"
        ref = f"{run_id}/reports/schools/{uai}/{f.name}"
        if not f.exists() and staging.exists(settings, ref):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(staging.read_bytes(settings, ref))
        if f.exists():
            night = json.loads(f.read_text("utf-8"))
            night["decision"] = (summary.get("decisions") or {}).get(uai)
            nights[uai] = night
    _write(settings, summary, nights)


def _write(settings: Settings, summary: dict[str, Any],
           nights: dict[str, dict[str, Any]]) -> None:
    from etl.validate.feedback import write_school_feedback

    run_id = str(summary["run_id"])
    root = settings.reports_dir / run_id / "schools"
    per_school = summary.get("schools") or {}
    for uai, night in sorted(nights.items()):
        out = root / uai
        out.mkdir(parents=True, exist_ok=True)
        (out / f"night_{uai}.json").write_text(json.dumps(night, ensure_ascii=False, indent=1),
                                               "utf-8")
        page = write_school_feedback(_validation_json(settings, run_id, uai), out, None, night)
        for f in (page, out / f"night_{uai}.json"):
            staging.copy_in(settings, f, f"{run_id}/reports/schools/{uai}/{f.name}")
        if uai in per_school:
            per_school[uai]["name"] = night.get("name")
            per_school[uai]["retours"] = f"schools/{uai}/{page.name}"
        if not night.get("dry_run") and night.get("status") not in NOT_DELIVERED:
            deliver(settings, uai, str(night.get("day")), page)
    index = root / "index.html"
    root.mkdir(parents=True, exist_ok=True)
    index.write_text(render_index(summary, nights), "utf-8")
    staging.copy_in(settings, index, f"{run_id}/reports/schools/index.html")
    summary["school_index"] = "schools/index.html"


def deliver(settings: Settings, uai: str, day: str, page: Path) -> Path:
    """A school's page into its own folder: ``<dir>/<UAI>/retours_<day>.html`` and
    ``latest.html`` (the academy's web server exposes each folder to its school only)."""
    if not re.fullmatch(r"[0-9A-Z]{8}", uai) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise ValueError(f"not a UAI and a day: {uai!r} {day!r}")
    folder = settings.school_pages_dir / uai
    folder.mkdir(parents=True, exist_ok=True)
    data = page.read_bytes()
    dated = folder / f"retours_{day}.html"
    for target in (dated, folder / "latest.html"):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # a reader never sees half a page
    return dated


def _needs(night: dict[str, Any], problems: int) -> str:
    """What the school has to do, for the index."""
    if night.get("held") and not night.get("decision"):
        return "vérifier l'export (changements en attente)"
    if night.get("quarantined") or night.get("status") == "quarantined":
        return "refaire un export"
    if night.get("missing"):
        return "déposer l'export manquant"
    if problems:
        return "corriger dans SIECLE / STS-web"
    return "rien"


def render_index(summary: Mapping[str, Any], nights: Mapping[str, dict[str, Any]]) -> str:
    """The academy's index of its schools' pages for one run (French): per school its name,
    what became of its exports, records set aside, and what it has to do."""
    e = html.escape
    per_school = summary.get("schools") or {}
    rows = []
    todo = 0
    for uai, night in sorted(nights.items(), key=lambda kv: (kv[1].get("name") or "", kv[0])):
        ps = per_school.get(uai) or {}
        status = str(night.get("status"))
        dec = (night.get("decision") or {}).get("decision")
        problems = int(ps.get("rejected") or 0)
        need = _needs(night, problems)
        todo += need != "rien"
        rows.append(
            f"<tr><td>{e(uai)}</td><td>{e(str(night.get('name') or ''))}</td>"
            f"<td class='st {e(status)}'>{e(STATUS_FR.get(str(dec or status), status))}</td>"
            f"<td class=n>{problems}</td>"
            f"<td class=n>{len(night.get('missing') or [])}</td><td>{e(need)}</td>"
            f"<td><a href='{e(uai)}/retours_{e(uai)}.html'>page de l'établissement</a></td></tr>")
    first = next(iter(nights.values()), {})
    return f"""<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">
<title>Retours aux établissements : {e(str(summary.get('academy')))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}td.n{{text-align:right}}
.awaiting_approval,.held,.quarantined,.error,.partial,.failed{{background:#fde2c8}}
.ok{{background:#e3f5e1}}</style></head><body>
<h1>Retours aux établissements : {e(str(first.get('academy_name') or summary.get('academy')))}</h1>
<p>Synchronisation du {e(str(first.get('date') or ''))}
(run <code>{e(str(summary.get('run_id')))}</code>, <a href="../report.html">rapport du run</a>) :
{len(nights)} établissement(s), dont {todo} avec quelque chose à faire. Chaque page est à
transmettre à son établissement seul (elle cite des classes et des INE).</p>
<table><tr><th>UAI</th><th>Établissement</th><th>Résultat</th><th>Enregistrements écartés</th>
<th>Exports manquants</th><th>À faire</th><th></th></tr>{''.join(rows)}</table>
</body></html>"""
