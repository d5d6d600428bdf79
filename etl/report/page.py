"""The run's plan/result report as a page an operator reads (the JSON is summary.json)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from etl.errors import ReportNotFound

#: per school: what was written by category (a dry run: what would be), then what the
#: directory refused, what is pending (held for approval, or left by a directory that went
#: down) and the records rejected
COLUMNS = ("created", "updated", "disabled", "restored", "deleted", "unchanged", "failed",
           "pending", "rejected")
CATEGORIES = ("created", "updated", "disabled", "restored", "deleted")


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _duration(seconds: Any) -> str:
    try:
        sec = float(seconds)
    except (TypeError, ValueError):
        return ""
    m, s = divmod(round(sec), 60)
    return f"{m} min {s:02d} s" if m else f"{sec:.1f} s"


def _times(summary: dict[str, Any]) -> str:
    """Start, end, duration of the run and of each stage (``run_context``)."""
    t = summary.get("times") or {}
    if not t:
        return ""
    stages = " — ".join(f"{_e(k)} {_e(_duration(v))}" for k, v in (t.get("stages") or {}).items())
    return (f"<p>Started {_e(t.get('started_at') or '?')}, ended {_e(t.get('ended_at') or '?')}"
            + (f" ({_e(_duration(t['duration_s']))})" if t.get("duration_s") is not None else "")
            + (f"; stages: {stages}" if stages else "") + ".</p>")


def _links(summary: dict[str, Any]) -> str:
    """The run's Airflow DAG run, the schools' pages, the academy's history."""
    out = []
    af = summary.get("airflow") or {}
    if af.get("url"):
        out.append(f"<a href='{_e(af['url'])}'>Airflow run {_e(af.get('dag_id'))} / "
                   f"{_e(af.get('dag_run_id'))}</a>")
    if summary.get("school_index"):
        out.append(f"<a href='{_e(summary['school_index'])}'>schools' pages (French)</a>")
    if summary.get("history"):
        out.append(f"<a href='{_e(summary['history'])}'>academy history</a>")
    return f"<p>{' — '.join(out)}</p>" if out else ""


def _decisions(summary: dict[str, Any]) -> str:
    """Decisions taken on the held plans after the run (``decisions``: UAI -> decision, by,
    at)."""
    dec = summary.get("decisions") or {}
    if not dec:
        return ""
    rows = "".join(f"<tr><td>{_e(u)}</td><td>{_e(_name(summary, u))}</td>"
                   f"<td class='st {_e(d.get('decision'))}'>{_e(d.get('decision'))}</td>"
                   f"<td>{_e(d.get('by'))}</td><td>{_e(d.get('at'))}</td></tr>"
                   for u, d in sorted(dec.items()))
    return ("<h2>Decisions on held plans</h2><table><tr><th>UAI</th><th>school</th>"
            f"<th>decision</th><th>by</th><th>at</th></tr>{rows}</table>")


def _name(summary: dict[str, Any], uai: str) -> str:
    return str(((summary.get("schools") or {}).get(uai) or {}).get("name") or "")


def render_run_report(summary: dict[str, Any]) -> str:
    rows = []
    decisions = summary.get("decisions") or {}
    for uai, s in sorted(summary.get("schools", {}).items()):
        cells = "".join(f"<td class=n>{_e(s.get(c, 0))}</td>" for c in COLUMNS)
        tripped = [g for g in s.get("guards", []) if g.get("tripped")]
        guards = "; ".join(_e(g.get("detail", g.get("guard"))) for g in tripped) or "—"
        link = (f"<a href='{_e(Path(s['report']).relative_to(Path(s['report']).parents[2]))}'>"
                "validation</a>" if s.get("report") else "")
        if s.get("retours"):
            link += f" <a href='{_e(s['retours'])}' hreflang=fr>page de l'établissement</a>"
        status = _e(s.get("status"))
        if uai in decisions:
            d = decisions[uai]
            status += f" → {_e(d.get('decision'))} by {_e(d.get('by'))}"
        rows.append(f"<tr><td>{_e(uai)}</td><td>{_e(s.get('name') or '')}</td>"
                    f"<td class='st {_e(s.get('status'))}'>{status}</td>{cells}<td>{guards}</td>"
                    f"<td>{link}</td></tr>")
    guard_rows = []
    for uai, s in sorted(summary.get("schools", {}).items()):
        for g in s.get("guards", []):
            guard_rows.append(
                f"<tr><td>{_e(uai)}</td><td>{_e(s.get('name') or '')}</td>"
                f"<td>{_e(g.get('guard'))}</td><td>{_e(g.get('value'))}"
                f"</td><td>{_e(g.get('limit'))}</td><td>{'TRIPPED' if g.get('tripped') else 'ok'}"
                f"</td><td>{_e(g.get('detail'))}</td></tr>")
    quarantined = "".join(
        f"<li>{_e(q['file'])} (school {_e(q.get('uai') or '-')}"
        + (f", {_e(_name(summary, str(q.get('uai'))))}" if _name(summary, str(q.get("uai")))
           else "") + f"): {_e(q['reason'])}"
        + (f" — kept at <code>{_e(q['moved_to'])}</code>" if q.get("moved_to") else "")
        + (f", why in <code>{_e(q['reason_file'])}</code>" if q.get("reason_file") else "")
        + "</li>" for q in summary.get("quarantined", []))
    rejected = "".join(f"<li>{_e(f['file'])}: {_e(f['reason'])}</li>"
                       for f in summary.get("rejected_files", []))
    errors = "".join(f"<li>{_e(e.get('op'))} {_e(e.get('dn'))}: {_e(e.get('description'))}</li>"
                     for e in summary.get("errors", []))
    dups = "".join(
        f"<tr><td>{_e(d.get('rule'))}</td><td>{_e(d.get('score'))}</td>"
        f"<td>{_e(', '.join(d.get('uids', [])))}</td>"
        f"<td>{_e(', '.join(d.get('records') or ([d['source']] if d.get('source') else [])))}"
        f"</td><td>{_e(d.get('evidence'))}</td>"
        f"<td>{_e(d.get('action'))}</td></tr>" for d in summary.get("duplicates", []))
    listed = len(summary.get("duplicates", []))
    total = int(summary.get("duplicates_total", listed))
    by_rule = ", ".join(f"{k} {v}" for k, v in (summary.get("duplicates_by_rule") or {}).items())
    dup_note = "" if total <= listed else (
        f"<p>{total} in all ({_e(by_rule)}): "
        f"the first {listed} here, INE conflicts first; every one in "
        f"<code>{_e(summary.get('duplicates_file'))}</code> beside this page, one a line.</p>")
    matches = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in summary.get("matches", {}).items()
                        if v) or "none"
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    by_cat = "".join(
        f"<tr><td>{label}</td>" + "".join(
            f"<td class=n>{_e((summary.get(key) or {}).get(c, 0))}</td>" for c in CATEGORIES)
        + "</tr>" for key, label in (("planned", "planned"), ("written", "written"),
                                     ("failed_by", "failed"), ("pending_by", "pending")))
    cat_head = "".join(f"<th>{c}</th>" for c in CATEGORIES)
    stopped = (f"<p class=error><b>{_e(summary['error'])}</b></p>" if summary.get("error")
               else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>entsync run {_e(summary.get('run_id'))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}td.n{{text-align:right}}
.awaiting_approval,.held,.quarantined,.error,.partial,.failed{{background:#fde2c8}}.ok{{background:#e3f5e1}}
</style></head><body>
<h1>Run {_e(summary.get('run_id'))}</h1>
<p>Academy <b>{_e(summary.get('academy'))}</b> — status <b>{_e(summary.get('status'))}</b>
{'(dry run: nothing written)' if summary.get('dry_run') else ''} — mode
{_e(summary.get('mode') or 'normal')} — {_e(summary.get('changes', 0))} changes planned,
{_e(summary.get('applied', 0))} applied, {_e(summary.get('failed', 0))} failed,
{_e(summary.get('held_changes', 0))} held for approval, {_e(summary.get('pending', 0))}
pending.</p>{stopped}{_times(summary)}{_links(summary)}{_decisions(summary)}
<h2>Changes by category</h2><table><tr><th></th>{cat_head}</tr>{by_cat}</table>
<h2>Schools</h2><p>Counts are what was written{
' (a dry run: what would be)' if summary.get('dry_run') else ''}; a school with failed or
pending writes is <i>partial</i> (some written) or <i>failed</i> (none).</p>
<table><tr><th>UAI</th><th>school</th><th>status</th>{head}<th>guards tripped</th><th></th>
</tr>{''.join(rows)}</table>
<h2>Guards evaluated</h2><table><tr><th>UAI</th><th>school</th><th>guard</th><th>value</th>
<th>limit</th><th></th><th>detail</th></tr>{''.join(guard_rows)}</table>
<h2>Identity</h2><p>Accounts matched across schools or sources by rule: {matches}.</p>
<h3>Suspected duplicates (never merged automatically; <code>entsync merge KEEP OTHER</code>)</h3>
{dup_note}
<table><tr><th>rule</th><th>score</th><th>accounts (uid)</th><th>records (source keys)</th>
<th>evidence</th><th>action</th>
</tr>{dups}</table>
<h2>Quarantined files</h2><ul>{quarantined or '<li>none</li>'}</ul>
<h2>Rejected files</h2><ul>{rejected or '<li>none</li>'}</ul>
<h2>Directory errors</h2><ul>{errors or '<li>none</li>'}</ul>
</body></html>"""


def write_run_report(summary: dict[str, Any], path: Path) -> Path:
    path.write_text(render_run_report(summary), "utf-8")
    return path


#: the Airflow task's environment names its DAG run (Airflow exports its context there)
AIRFLOW_ENV: Final = ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID")


def airflow_run_url(base: str | None, dag_id: str, dag_run_id: str) -> str:
    """The Airflow UI's page of a DAG run: ``<base>/dags/<dag_id>/runs/<run_id>``; without a
    base, relative to a report the api-server serves (``<base_url>/entsync/reports/<run>/``)."""
    path = f"dags/{quote(dag_id, safe='')}/runs/{quote(dag_run_id, safe='')}"
    return f"{base.rstrip('/')}/{path}" if base else f"../../../{path}"


def run_context(settings: Any, run_id: str, env: Mapping[str, str] | None = None,
                ) -> dict[str, Any]:
    """What the run report shows beside the summary's counts: ``times`` (start, end, duration,
    per stage the durations ``run_metrics`` holds: a stage run per school, the sum of its
    schools'), and ``airflow`` (its DAG run and the address of its page) when the run was made
    by an Airflow task."""
    import os

    from sqlalchemy import select

    from etl.store.db import session_factory
    from etl.store.models import Run, RunMetric, utcnow

    env = os.environ if env is None else env
    now = utcnow()
    stages: dict[str, float] = {}
    with session_factory(settings.state_url)() as s:
        run = s.get(Run, run_id)
        for stage, value in s.execute(select(RunMetric.stage, RunMetric.value).where(
                RunMetric.run_id == run_id, RunMetric.name == "duration_s")
                .order_by(RunMetric.id)):
            stages[stage] = stages.get(stage, 0.0) + float(value)
    out: dict[str, Any] = {}
    if run is not None:
        started = run.started_at
        out["times"] = {"started_at": started.isoformat(timespec="seconds") + "Z",
                        "ended_at": now.isoformat(timespec="seconds") + "Z",
                        "duration_s": round((now - started).total_seconds(), 1),
                        "stages": {k: round(v, 2) for k, v in stages.items()}}
    dag_id, dag_run = (env.get(k) for k in AIRFLOW_ENV)
    if dag_id and dag_run:
        out["airflow"] = {"dag_id": dag_id, "dag_run_id": dag_run,
                          "url": airflow_run_url(getattr(settings, "airflow_url", None),
                                                 dag_id, dag_run)}
    return out


# --------------------------------------------------------------------------------------------
# Serving the reports (the Airflow plugin ``plugins/entsync_reports.py`` is a thin shell on
# these): a run's folder ``<workdir>/reports/<run_id>/`` and nothing else
# --------------------------------------------------------------------------------------------

#: where the api-server mounts the reports app; a run's report is
#: ``<base_url>/entsync/reports/<run_id>/report.html``
REPORTS_URL_PREFIX = "/entsync/reports"
#: what may be served from a run's folder: the pages and the JSON summaries, nothing staged
SERVED_SUFFIXES = {".html": "text/html; charset=utf-8", ".json": "application/json"}
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def report_url(base_url: str, run_id: str, name: str = "report.html") -> str:
    """The address of a run's report on the Airflow api-server (``[api] base_url``)."""
    return f"{base_url.rstrip('/')}{REPORTS_URL_PREFIX}/{quote(run_id, safe='')}/{name}"


def academy_of_run(run_id: str, codes: Iterable[str]) -> str | None:
    """The academy a sync run belongs to (run ids are ``<academy>-<timestamp>-<hex>``); the
    academy's own folder (``reports/<academy>/history.html``) is its academy's too."""
    found = [c for c in codes if run_id.startswith(f"{c}-") or run_id == c]
    return max(found, key=len) if found else None


def resolve_report_file(reports_dir: Path, run_id: str, relpath: str) -> Path:
    """The file ``relpath`` of run ``run_id``'s report folder, or ReportNotFound.

    Refused: a run id or path part that is not a plain name (``..``, ``.``, empty, a
    separator, anything but letters, digits, ``._-``), a suffix other than .html/.json, and
    anything that resolves (symbolic links included) outside ``reports_dir/run_id``.
    """
    parts = relpath.split("/")
    if not _PART.fullmatch(run_id) or not all(_PART.fullmatch(p) for p in parts):
        raise ReportNotFound(relpath)
    if any(p in (".", "..") or p.startswith("..") for p in (run_id, *parts)):
        raise ReportNotFound(relpath)
    if Path(parts[-1]).suffix.lower() not in SERVED_SUFFIXES:
        raise ReportNotFound(relpath)
    root = (Path(reports_dir) / run_id).resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ReportNotFound(relpath)
    return path


def media_type(path: Path) -> str:
    return SERVED_SUFFIXES[path.suffix.lower()]


# --------------------------------------------------------------------------------------------
# A school's name, for people reading the Airflow UI (the mapped tasks are labelled with it)
# --------------------------------------------------------------------------------------------

#: the longest name label kept (Airflow keeps a task's rendered map index short)
NAME_MAX = 80


def school_name(docs: list[dict[str, Any]]) -> str | None:
    """The school's name as its STS-web export states it (``DENOM_PRINC`` + ``DENOM_COMPL``
    in ``PARAMETRES/UAJ``), reading only the head of the file; None when the school sent no
    STS-web export tonight or its head cannot be read (the UAI then names the school alone).
    SIECLE exports carry no name."""
    from lxml import etree

    from etl.discover.xmlsafe import XmlSource, iterparse, open_source
    from etl.errors import EntsyncError

    for d in docs:
        if d.get("kind") == "AAF":  # the name its EtabEducNat record gives
            name = ((d.get("extra") or {}).get("aaf") or {}).get("name")
            if name:
                return str(name)
            continue
        if d.get("kind") != "STS" or not d.get("path"):
            continue
        src = XmlSource(Path(d["path"]), d.get("member"))
        parts: dict[str, str] = {}
        try:
            with open_source(src) as f:
                for _event, el in iterparse(f, src.name):
                    tag = el.tag if isinstance(el.tag, str) else ""
                    if tag in ("DENOM_PRINC", "DENOM_COMPL"):
                        parts[tag] = " ".join((el.text or "").split())
                    if tag in ("UAJ", "PARAMETRES"):
                        break
        except (EntsyncError, etree.LxmlError, OSError, ValueError):
            return None
        name = " ".join(p for p in (parts.get("DENOM_PRINC"), parts.get("DENOM_COMPL")) if p)
        return name[:NAME_MAX] or None
    return None
