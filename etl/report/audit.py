"""An audit's report page (``reports/<run_id>/report.html``; the JSON is ``audit.json``):
counts per kind and school, each difference by DN and attribute names, never a value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etl.report.page import _e

KINDS = ("missing", "attribute", "member", "foreign", "orphan")


def render_audit_report(summary: dict[str, Any]) -> str:
    head = "".join(f"<th>{k}</th>" for k in KINDS)
    rows = "".join(
        f"<tr><td>{_e(uai)}</td>" + "".join(f"<td class=n>{_e(c.get(k, 0))}</td>"
                                            for k in KINDS) + "</tr>"
        for uai, c in sorted((summary.get("per_school") or {}).items()))
    total = summary.get("total") or {}
    listed = "".join(
        f"<tr><td>{_e(d.get('kind'))}</td><td>{_e(d.get('uai') or '-')}</td>"
        f"<td>{_e(d.get('entry'))}</td><td><code>{_e(d.get('dn'))}</code></td>"
        f"<td>{_e(', '.join(d.get('attributes') or []))}</td></tr>"
        for d in summary.get("listed") or [])
    rep = summary.get("repaired")
    repaired = ""
    if rep:
        held = "".join(
            f"<li>{_e(u)}: " + "; ".join(_e(g.get("detail")) for g in h.get("guards", []))
            + f" — <code>entsync approve {_e(summary.get('run_id'))} --school {_e(u)}</code>"
            "</li>" for u, h in sorted((rep.get("held") or {}).items()))
        repaired = (f"<h2>Repair</h2><p>{_e(rep.get('planned', 0))} changes planned, "
                    f"{_e(rep.get('applied', 0))} written, {_e(rep.get('failed', 0))} failed, "
                    f"{_e(rep.get('held_changes', 0))} held for approval (foreign entries: "
                    f"{_e(summary.get('foreign_policy'))}).</p><ul>{held}</ul>")
    adopted = summary.get("adopted")
    adopt = ("<h2>Adopted from the directory</h2><p>"
             + ", ".join(f"{_e(k)} {_e(v)}" for k, v in adopted.items()) + "</p>"
             if adopted else "")
    more = (f"<p>Only the first {len(summary.get('listed') or [])} differences are listed.</p>"
            if summary.get("truncated") else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>entsync audit {_e(summary.get('run_id'))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}td.n{{text-align:right}}</style></head><body>
<h1>Audit {_e(summary.get('run_id'))}</h1>
<p>Academy <b>{_e(summary.get('academy'))}</b> — status <b>{_e(summary.get('status'))}</b>
— {_e(summary.get('entries_read', 0))} directory entries read in
{_e(summary.get('schools_read', 0))} schools — <b>{_e(summary.get('differences', 0))}</b>
differences ({', '.join(f'{k} {_e(total.get(k, 0))}' for k in KINDS)}).</p>
{adopt}{repaired}
<h2>Differences per school</h2><table><tr><th>UAI</th>{head}</tr>{rows}</table>
<h2>Differences</h2><p>Attribute names only, never their values.</p>{more}
<table><tr><th>kind</th><th>UAI</th><th>entry</th><th>DN</th><th>attributes</th></tr>
{listed}</table></body></html>"""


def write_audit_report(summary: dict[str, Any], path: Path) -> Path:
    path.write_text(render_audit_report(summary), "utf-8")
    return path
