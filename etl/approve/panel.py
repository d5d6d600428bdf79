"""What the approver reads in Airflow's *Required actions* for one held school.

Built from the state DB (the approval row the night wrote: counts, counts per profile, a few
DNs per action, the guards that tripped) when the approval DAG run starts, so the panel shows
what is pending *now*. Opaque references only: DNs carry a random uid, never a name.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from etl.config import Settings, get_academy
from etl.contracts import ApprovalPanel, ApprovalRequest
from etl.errors import ApprovalRefused
from etl.store.db import session_factory
from etl.store.models import Approval, Run

#: no answer within this long counts as Reject (the approval task's ``response_timeout``)
APPROVAL_TIMEOUT = dt.timedelta(days=3)
ACTIONS = ("created", "updated", "disabled", "restored", "deleted")
PROFILE_ORDER = ("pupils", "guardians", "teachers", "staff", "other")
#: a change's category (``etl.plan.guards.categorize``) -> the action it counts under
_ACTION = {"create": "created", "update": "updated", "membership": "updated",
           "disable": "disabled", "restore": "restored", "delete": "deleted"}


def _value(g: dict[str, Any], key: str) -> str:
    """A guard's value or limit as the approver reads it: a share as a percentage."""
    v = g.get(key)
    if isinstance(v, float) and 0 <= v <= 1 and str(g.get("guard", "")).endswith(
            ("share", "drop")):
        return f"{v:.0%}"
    return str(v)


def _deadline_text(deadline: dt.datetime, tz: str) -> str:
    local = deadline.astimezone(ZoneInfo(tz))
    return f"{local:%A %d %B %Y %H:%M} ({tz})"


def approval_panel(settings: Settings, req: ApprovalRequest, report_link: str | None = None,
                   now: dt.datetime | None = None,
                   timeout: dt.timedelta = APPROVAL_TIMEOUT) -> ApprovalPanel | None:
    """The panel of ``req``'s school, or None when its plan no longer awaits approval
    (decided from the CLI, or superseded by a newer export): nothing to ask. A plan whose
    hash is not the one the night held is refused."""
    with session_factory(settings.state_url)() as s:
        a = s.query(Approval).filter_by(run_id=req.run_id, uai=req.uai).order_by(
            Approval.id.desc()).first()
        run = s.get(Run, req.run_id)
        if a is None or run is None:
            raise ApprovalRefused(f"run {req.run_id} held no plan for school {req.uai}")
        if a.plan_hash != req.plan_hash:
            raise ApprovalRefused(f"held plan of {req.uai} in {req.run_id} is not the one the "
                                  "night held (hash mismatch)")
        if a.status != "pending":
            return None
        academy = get_academy(a.academy)
        summary: dict[str, Any] = dict(a.summary or {})
        guards = list(a.guards or [])
    deadline = (now or dt.datetime.now(dt.UTC)) + timeout
    counts = summary.get("counts") or {}
    by_profile: dict[str, dict[str, int]] = summary.get("by_profile") or {}
    what = ", ".join(f"{k} {counts[k]}" for k in ACTIONS if counts.get(k)) or "no change"
    lines = [
        f"**Default: Reject.** No answer by **{_deadline_text(deadline, academy.timezone)}** "
        f"({timeout.days} days) counts as Reject: nothing of this plan is written.",
        "",
        f"School **{req.uai}** ({academy.name}), sync run `{req.run_id}`: a disaster guard "
        "held its changes; nothing was written for it. **Approve** applies exactly this "
        f"plan (checked by its hash, sha256 `{req.plan_hash[:16]}…`); **Reject** discards it.",
        "",
    ]
    if report_link:
        lines += [f"[Run report]({report_link}): the night's schools, counts and validation.",
                  ""]
    lines += ["#### Guards that tripped", ""]
    for g in guards:
        lines.append(f"- **{g.get('guard')}**: {g.get('detail')} (value {_value(g, 'value')}, "
                     f"limit {_value(g, 'limit')})")
    lines += ["", f"#### Changes: {what}", ""]
    profiles = [p for p in PROFILE_ORDER if any(p in v for v in by_profile.values())]
    if profiles:
        lines.append("| action | " + " | ".join(profiles) + " | total |")
        lines.append("|---|" + "---:|" * (len(profiles) + 1))
        for k in ACTIONS:
            row = by_profile.get(k) or {}
            if row:
                lines.append(f"| {k} | " + " | ".join(str(row.get(p, 0)) for p in profiles)
                             + f" | {sum(row.values())} |")
        lines.append("")
    sample = summary.get("sample") or []
    if sample:
        lines += ["#### Sample accounts, per action", ""]
        for k in ACTIONS:
            for x in (x for x in sample if _ACTION.get(str(x.get("action"))) == k):
                attrs = ", ".join(x.get("attributes") or [])
                lines.append(f"- {k}: `{x['dn']}`" + (f" ({attrs})" if attrs else ""))
        lines.append("")
    return ApprovalPanel(
        subject=f"{academy.name}: school {req.uai} held by a guard ({what}): approve or "
                "reject",
        body="\n".join(lines), deadline=deadline.isoformat(timespec="seconds"))
