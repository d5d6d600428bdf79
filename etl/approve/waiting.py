"""A school whose plan awaits approval, seen again by a later night.

The night does not wait for the decision (the approval has its own DAG run, `ent_approval__*`),
so it meets the held school again while the approver has not answered:

- the **same exports** (the files the held plan was made from, by their sha256): the school
  *waits*; it is not read nor planned again (a second request for the same plan would only
  double the approver's work), the night reports it ``awaiting_approval`` naming the run
  whose plan waits (``pending_run``), and the other schools go on;
- a **newer export**: it *supersedes* the pending plan, which is closed ``superseded``
  (``etl.approve.decide.supersede``: the older run's summary and report say so, an answer to
  its request applies nothing); the new export is read and planned as usual, and held again
  if a guard trips.

A dry run neither waits nor supersedes: it plans the school as it stands.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import msgspec
from sqlalchemy import select

from etl.approve.decide import supersede
from etl.config import Settings
from etl.contracts import Discovery
from etl.store.db import session_factory
from etl.store.models import Approval, SourceFile

log = logging.getLogger(__name__)

#: a file discovery chose for a school whose same plan awaits approval (not read tonight)
AWAITING = "awaiting_approval"


def _held_exports(s: object, run_id: str, uai: str) -> set[str]:
    """The sha256 of the exports the school's plan in ``run_id`` was made from."""
    return {str(sha) for (sha,) in s.execute(  # type: ignore[attr-defined]
        select(SourceFile.sha256).where(
            SourceFile.run_id == run_id, SourceFile.uai == uai,
            SourceFile.status.in_(("discovered", "held", AWAITING))))}


def wait_or_supersede(settings: Settings, academy: str, disc: Discovery,
                      dry_run: bool) -> Discovery:
    """Tonight's discovery with the schools whose same plan awaits approval taken out (they
    wait: ``awaiting`` names the run of that plan), the pending plans of schools with a newer
    export closed as superseded."""
    docs = disc.school_docs()
    if dry_run or not docs:
        return disc
    Session = session_factory(settings.state_url)
    with Session() as s:
        pending: dict[str, list[str]] = defaultdict(list)
        for uai, rid in s.execute(select(Approval.uai, Approval.run_id).where(
                Approval.academy == academy, Approval.status == "pending",
                Approval.run_id != disc.run_id, Approval.uai.in_(sorted(docs)))
                .order_by(Approval.id)):
            pending[str(uai)].append(str(rid))
        same = {}
        for uai, runs in pending.items():
            tonight = {str(d.get("sha256")) for d in docs[uai]}
            if _held_exports(s, runs[-1], uai) == tonight:
                same[uai] = runs[-1]
    for uai in sorted(set(pending) - set(same)):
        supersede(settings, academy, uai, disc.run_id)
    if not same:
        return disc
    with Session() as s, s.begin():
        for f in s.scalars(select(SourceFile).where(
                SourceFile.run_id == disc.run_id, SourceFile.uai.in_(sorted(same)),
                SourceFile.status == "discovered")):
            f.status, f.reason = AWAITING, f"its plan of run {same[str(f.uai)]} awaits approval"
    for uai, rid in sorted(same.items()):
        log.info("school %s waits: its plan of run %s (the same exports) awaits approval",
                 uai, rid)
    return msgspec.structs.replace(
        disc, schools={u: d for u, d in docs.items() if u not in same},
        awaiting={**disc.awaiting, **same})
