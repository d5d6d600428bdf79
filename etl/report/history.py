"""An academy's history page: its last nights side by side, in the spirit of
great-expectations' Data Docs (one page that shows how each night went and where it goes).

``reports/<academy>/history.html`` (the latest, which the Airflow plugin serves under
``/entsync/reports/<academy>/history.html``) and a copy in each run's folder
(``reports/<run_id>/history.html``, the history as that run left it), written at each run's end
from the state DB's runs (their summaries). Per night: date, status, duration, schools,
changes written (created, updated, disabled), held for approval, rejected records, quarantined
files, with the change from the night before; then the schools that were not ok on some
night, night by night. Counts, statuses, UAIs and school names only.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from etl import staging
from etl.config import Settings
from etl.store.db import session_factory
from etl.store.models import Run

#: nights shown
NIGHTS: Final = 30
#: the run statuses that are nights (a refused or dry run is not)
_SKIP: Final = ("refused", "running")
#: the columns of a night, from its summary
COLUMNS: Final = ("created", "updated", "disabled", "held", "rejected", "quarantined")
_GOOD: Final = ("ok", "unchanged", "already_applied", "collateral")


def night_row(run_id: str, started: str, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A night's numbers from its summary."""
    written = summary.get("written") or {}
    schools = summary.get("schools") or {}
    return {"run_id": run_id, "started_at": started, "status": status,
            "duration_s": (summary.get("times") or {}).get("duration_s"),
            "schools": len(schools),
            "created": int(written.get("created") or 0),
            "updated": int(written.get("updated") or 0),
            "disabled": int(written.get("disabled") or 0),
            "held": int(summary.get("held_changes") or 0),
            "rejected": sum(int(x.get("rejected") or 0) for x in schools.values()),
            "quarantined": len(summary.get("quarantined") or []),
            "not_ok": {u: str(x.get("status")) for u, x in schools.items()
                       if x.get("status") not in _GOOD},
            "names": {u: x.get("name") for u, x in schools.items() if x.get("name")},
            "decisions": {u: str(d.get("decision")) for u, d in
                          (summary.get("decisions") or {}).items()}}


def academy_nights(settings: Settings, academy: str, limit: int = NIGHTS) -> list[dict[str, Any]]:
    """The academy's last nights, newest first (dry runs and refused runs left out)."""
    with session_factory(settings.state_url)() as s:
        rows = s.execute(select(Run.id, Run.started_at, Run.status, Run.summary)
                         .where(Run.academy == academy, Run.dry_run.is_(False),
                                Run.status.not_in(_SKIP), Run.summary.is_not(None))
                         .order_by(Run.started_at.desc()).limit(limit)).all()
    return [night_row(rid, started.isoformat(timespec="minutes"), str(status), summ or {})
            for rid, started, status, summ in rows if (summ or {}).get("schools") is not None]


def _trend(now: int, before: int | None) -> str:
    if before is None or now == before:
        return ""
    return f" <span class=up>▲{now - before}</span>" if now > before else \
        f" <span class=down>▼{before - now}</span>"


def _bar(n: int, top: int) -> str:
    width = 0 if not top else max(1, round(60 * n / top)) if n else 0
    return f"<span class=bar style='width:{width}px'></span>"


def render_history(academy: str, nights: Sequence[dict[str, Any]], here: str = "") -> str:
    """The page; ``here``: the run whose folder holds this copy (its row is marked)."""
    e = html.escape
    top = {c: max([n[c] for n in nights] or [0]) for c in COLUMNS}
    rows = []
    for i, n in enumerate(nights):
        prev = nights[i + 1] if i + 1 < len(nights) else None
        cells = "".join(f"<td class=n>{n[c]}{_trend(n[c], prev[c] if prev else None)}"
                        f"{_bar(n[c], top[c])}</td>" for c in COLUMNS)
        dur = n.get("duration_s")
        mark = " class=here" if n["run_id"] == here else ""
        rows.append(f"<tr{mark}><td>{e(n['started_at'].replace('T', ' '))}</td>"
                    f"<td><a href='../{e(n['run_id'])}/report.html'>{e(n['run_id'])}</a></td>"
                    f"<td class='st {e(n['status'])}'>{e(n['status'])}</td>"
                    f"<td class=n>{'' if dur is None else e(f'{float(dur):.0f} s')}</td>"
                    f"<td class=n>{n['schools']}</td>{cells}</tr>")
    # the schools that were not ok on some night, night by night (oldest left)
    shown = list(reversed(nights))
    bad = sorted({u for n in nights for u in n["not_ok"]})
    names: dict[str, str] = {}
    for n in shown:
        names.update({u: str(v) for u, v in n["names"].items()})
    grid = []
    for u in bad:
        cells = "".join(
            f"<td class='st {e(n['not_ok'].get(u, 'ok'))}' title='{e(n['not_ok'].get(u, ''))}'>"
            f"{e(_short_status(n['not_ok'].get(u), n['decisions'].get(u)))}</td>" for n in shown)
        streak = 0
        for n in nights:
            if u not in n["not_ok"]:
                break
            streak += 1
        grid.append(f"<tr><td>{e(u)}</td><td>{e(names.get(u, ''))}</td>"
                    f"<td class=n>{streak}</td>{cells}</tr>")
    heads = "".join(f"<th>{e(n['started_at'][5:10])}</th>" for n in shown)
    col_heads = "".join(f"<th>{c}</th>" for c in COLUMNS)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>entsync history {e(academy)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 6px}}td.n{{text-align:right;white-space:nowrap}}
.bar{{display:inline-block;height:.6em;background:#8ab;margin-left:4px}}.up{{color:#b40}}
.down{{color:#070}}tr.here{{outline:2px solid #36c}}
.awaiting_approval,.held,.quarantined,.error,.partial,.failed,.abandoned{{background:#fde2c8}}
.ok,.success{{background:#e3f5e1}}</style></head><body>
<h1>Academy {e(academy)}: the last {len(nights)} nights</h1>
<p>Newest first. Changes as written in the directory; <i>held</i>: changes held for approval;
<i>rejected</i>: records set aside; ▲▼: change from the night before.</p>
<table><tr><th>started (UTC)</th><th>run</th><th>status</th><th>duration</th><th>schools</th>
{col_heads}</tr>{''.join(rows) or '<tr><td colspan=11>no night yet</td></tr>'}</table>
<h2>Schools not ok on some night</h2>
<p>{len(bad)} school(s); <i>nights</i>: how many of the last nights in a row it was not ok.
Q quarantined, H held or awaiting approval, E error, P partial, F failed, C file changed;
A/R approved/rejected afterwards.</p>
<table><tr><th>UAI</th><th>school</th><th>nights</th>{heads}</tr>{''.join(grid)}</table>
</body></html>"""


_LETTER: Final = {"quarantined": "Q", "awaiting_approval": "H", "held": "H", "error": "E",
                  "partial": "P", "failed": "F", "file_changed": "C"}


def _short_status(status: str | None, decision: str | None) -> str:
    if not status:
        return ""
    letter = _LETTER.get(status, status[:1].upper())
    return letter + ({"approved": "/A", "rejected": "/R"}.get(decision or "", ""))


def write_history(settings: Settings, academy: str, run_id: str) -> Path:
    """Write the academy's history (``reports/<academy>/history.html``) and the run's copy
    (``reports/<run_id>/history.html``); return the academy's."""
    nights = academy_nights(settings, academy)
    latest = settings.reports_dir / academy / "history.html"
    latest.parent.mkdir(parents=True, exist_ok=True)
    latest.write_text(render_history(academy, nights), "utf-8")
    mine = settings.reports_dir / run_id / "history.html"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text(render_history(academy, nights, here=run_id), "utf-8")
    staging.copy_in(settings, mine, f"{run_id}/reports/history.html")
    return latest
