"""Adoption: the state DB's rows rebuilt from the directory, so nothing is ever created twice.

- ``adopt_entries``: directory entries the sync wrote (its object classes, ``entSyncAccount``
  and ``entSyncObject``) taken into the state DB: ``entries`` (the sync's part of the entry and
  its content hash, ``etl.plan.owned``), and for an account ``accounts``, ``logins`` and
  ``identities`` (each source key). What the state DB knows already is left as it is (the
  audit reports where it differs); a source key or login the state DB gives another account
  is a conflict, counted and not adopted.
- ``adopt_academy`` (``entsync audit --adopt``): the academy's whole part, and the guards'
  baseline per school (``school_state``), so a lost state DB is recovered, not re-created.
- ``claimed_in_directory``: what the sync path asks before it creates accounts: the source
  keys of tonight's new accounts searched in the directory (one indexed search per batch); an
  account found is adopted, and a login found in the directory is registered as taken, so it
  is never handed out again.
- ``require_adopted``: a state DB that knows nothing of an academy whose part of the
  directory is populated refuses to write (``StateNotAdopted``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, insert, select
from sqlalchemy.orm import Session

from etl.audit.compare import kind_of, uai_of
from etl.audit.read import DirectoryReader, DirEntry
from etl.config import Academy, Settings
from etl.errors import StateNotAdopted
from etl.plan.desired import content_hash, people_dn
from etl.plan.owned import owned_view
from etl.store.models import Account, Entry, Identity, Login, SchoolState, table, utcnow

log = logging.getLogger(__name__)

#: directory entries adopted per state DB batch
BATCH = 500
#: ``ENTPersonProfils`` -> the account's profile, the first found in this order
_PROFILES = ("ELV", "ENS", "DIR", "EVS", "DOC", "ETA", "TUT")


def _oc(attrs: dict[str, list[str]]) -> set[str]:
    return {x.lower() for x in attrs.get("objectClass", [])}


def sync_kind(e: DirEntry) -> str | None:
    """The entry's kind if the sync wrote it (its own classes, or an ``ou`` below a school),
    None for anything else (an entry added by hand stays foreign)."""
    oc = _oc(e.attrs)
    kind = kind_of(e.dn, e.attrs)
    if kind == "person":
        ok = "entsyncaccount" in oc and e.attrs.get("uid") and e.attrs.get("ENTPersonLogin")
        return "person" if ok else None
    if kind == "ou":
        return "ou" if "organizationalunit" in oc and uai_of(e.dn) else None
    if "entsyncobject" not in oc:
        return None
    if kind in ("class", "group") and ",ou=archives," in e.dn.lower():
        return "archive"
    return kind


def _profile(attrs: dict[str, list[str]]) -> str:
    have = {p.removeprefix("National_") for p in attrs.get("ENTPersonProfils", [])}
    return next((p for p in _PROFILES if p in have), sorted(have)[0] if have else "ETA")


def _disabled_at(attrs: dict[str, list[str]]) -> dt.datetime | None:
    for v in attrs.get("entSyncDisabledAt", [])[:1]:
        try:
            return dt.datetime.strptime(v[:14], "%Y%m%d%H%M%S")
        except ValueError:
            return None
    return None


def adopt_entries(s: Session, academy: str, entries: Iterable[DirEntry], run_id: str,
                  baseline: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
    """Take the sync's entries among ``entries`` into the state DB (the caller commits).
    ``baseline``: filled with per-school counts (pupils, guardians, staff, school year) of
    what was adopted, for ``school_state``. Counts: entries, accounts, identities adopted,
    conflicts (a source key or login the state DB gives another account), foreign entries
    skipped."""
    counts = dict.fromkeys(("entries", "accounts", "identities", "conflicts", "skipped"), 0)
    batch: list[tuple[DirEntry, str]] = []

    def flush() -> None:
        _adopt_batch(s, academy, batch, run_id, counts, baseline)
        batch.clear()

    for e in entries:
        kind = sync_kind(e)
        if kind is None:
            counts["skipped"] += 1
            continue
        batch.append((e, kind))
        if len(batch) >= BATCH:
            flush()
    flush()
    return counts


def _adopt_batch(s: Session, academy: str, batch: list[tuple[DirEntry, str]], run_id: str,
                 counts: dict[str, int], baseline: dict[str, dict[str, Any]] | None) -> None:
    if not batch:
        return
    now = utcnow()
    dns = [e.dn for e, _k in batch]
    known_dns = set(s.scalars(select(Entry.dn).where(Entry.dn.in_(dns))))
    people = [(e, k) for e, k in batch if k == "person"]
    uids = [e.attrs["uid"][0] for e, _k in people]
    logins = [e.attrs["ENTPersonLogin"][0] for e, _k in people]
    joints = sorted({j for e, _k in people for j in e.attrs.get("ENTPersonJointure", [])})
    known_uids = set(s.scalars(select(Account.uid).where(Account.uid.in_(uids or [""]))))
    login_of = dict(s.execute(select(Login.login, Login.uid)
                              .where(Login.login.in_(logins or [""]))).all())
    joint_of = dict(s.execute(select(Identity.jointure, Identity.uid)
                              .where(Identity.jointure.in_(joints or [""]))).all())
    new_entries: list[dict[str, Any]] = []
    new_accounts: list[dict[str, Any]] = []
    new_logins: list[dict[str, Any]] = []
    new_ids: list[dict[str, Any]] = []
    for e, kind in batch:
        uid = e.attrs["uid"][0] if kind == "person" else None
        if uid is not None:
            login = e.attrs["ENTPersonLogin"][0]
            if login_of.get(login, uid) != uid:
                counts["conflicts"] += 1  # its login is another account's here: not adopted
                continue
            if uid not in known_uids:
                status = "DISABLED" if e.attrs.get("entSyncStatus") == ["DISABLED"] \
                    else "ACTIVE"
                new_accounts.append({"uid": uid, "academy": academy,
                                     "profile": _profile(e.attrs), "login": login,
                                     "status": status, "created_at": now,
                                     "disabled_at": _disabled_at(e.attrs)
                                     if status == "DISABLED" else None})
                known_uids.add(uid)
                counts["accounts"] += 1
                if login not in login_of:
                    new_logins.append({"login": login, "uid": uid, "assigned_at": now})
                    login_of[login] = uid
            for j in e.attrs.get("ENTPersonJointure", []):
                if j not in joint_of:
                    new_ids.append({"jointure": j, "uid": uid, "rule": "adopted",
                                    "created_run": run_id, "created_at": now})
                    joint_of[j] = uid
                    counts["identities"] += 1
                elif joint_of[j] != uid:
                    counts["conflicts"] += 1
        if e.dn in known_dns:
            continue
        mine = owned_view(e.attrs)
        uai = uai_of(e.dn, e.attrs) if kind == "person" else uai_of(e.dn)
        new_entries.append({"dn": e.dn, "academy": academy, "uai": uai, "kind": kind,
                            "uid": uid, "content_hash": content_hash(mine), "attrs": mine,
                            "run_id": run_id, "updated_at": now})
        known_dns.add(e.dn)
        counts["entries"] += 1
        if baseline is not None and uai:
            _count(baseline.setdefault(uai, {"pupils": 0, "guardians": 0, "staff": 0,
                                             "school_year": None}), kind, e.attrs)
    for model, rows in ((Login, new_logins), (Account, new_accounts), (Identity, new_ids),
                        (Entry, new_entries)):
        if rows:
            s.execute(insert(table(model)), rows)


def _count(school: dict[str, Any], kind: str, attrs: dict[str, list[str]]) -> None:
    if kind == "person" and attrs.get("entSyncStatus") != ["DISABLED"]:
        profile = _profile(attrs)
        key = "pupils" if profile == "ELV" else "guardians" if profile == "TUT" else "staff"
        school[key] += 1
    year = (attrs.get("ENTStructureAnneeScolaire") or [""])[0]
    if kind in ("class", "group") and year.isdigit():
        school["school_year"] = max(int(year), school["school_year"] or 0)


def adopt_academy(s: Session, academy: Academy, entries: Iterable[DirEntry],
                  run_id: str) -> dict[str, int]:
    """The academy's part of the directory (``etl.audit.read.academy_part``) taken into the
    state DB, and each school's guard baseline where the state DB has none."""
    baseline: dict[str, dict[str, Any]] = {}
    counts = adopt_entries(s, academy.code, entries, run_id, baseline)
    have = set(s.scalars(select(SchoolState.uai).where(SchoolState.academy == academy.code)))
    for uai, c in sorted(baseline.items()):
        if uai not in have:
            s.add(SchoolState(academy=academy.code, uai=uai, pupils=c["pupils"],
                              guardians=c["guardians"], staff=c["staff"],
                              school_year=c["school_year"], run_id=run_id))
    counts["schools"] = len(baseline)
    log.info("adopted from the directory for %s: %d entries, %d accounts, %d source keys "
             "(%d conflicts, %d foreign entries left)", academy.code, counts["entries"],
             counts["accounts"], counts["identities"], counts["conflicts"], counts["skipped"])
    return counts


# -- the sync path ------------------------------------------------------------------------------


def _reader(settings: Settings) -> DirectoryReader | None:
    """A reader on the sync's directory, None when none is configured (a dry run without
    one: nothing to check against)."""
    from etl.apply.stage import ldap_target_from_settings

    l = settings.ldap  # noqa: E741
    if not (l.url and l.bind_dn and l.password):
        return None
    return DirectoryReader(ldap_target_from_settings(settings))


def directory_fresh(settings: Settings, academy: Academy) -> bool | None:
    """Whether the directory holds nothing of the academy (None: no directory configured)."""
    from etl.audit.read import populated

    reader = _reader(settings)
    if reader is None:
        return None
    with reader:
        return not populated(reader, academy, settings.ldap.base)


@dataclass
class Searched:
    """What one group's planning has looked up in the directory and not found there: source
    keys and logins. Matching again after a login was found taken hands out new logins for
    that login's name only; only those are searched then, not the whole group's again."""

    keys: set[str] = field(default_factory=set)
    logins: set[str] = field(default_factory=set)


def claimed_in_directory(settings: Settings, s: Session, academy: Academy,
                         decisions: Any, run_id: str, fresh: bool | None = None,
                         searched: Searched | None = None) -> int:
    """Before accounts are created: the source keys of matching's new accounts
    (``IdentityDecisions``) searched in the directory, and their logins. An account found
    there is adopted (``adopt_entries``), a login found is registered as taken (``logins``).
    The rows adopted or registered (0: create as planned; else match again, the caller's
    session now knows them). ``fresh``: the academy's part of the directory was empty when
    the run started (a streamed first load's later groups: what is there now, this run wrote
    and the state DB knows), so its source keys are not searched; None: found out here.
    ``searched``: what earlier rounds of this planning searched and did not find, not searched
    again (and what this round does not find is added to it)."""
    new = {uid for uid, _p, _l in decisions.accounts}
    if not new:
        return 0
    reader = _reader(settings)
    if reader is None:
        return 0
    done = searched if searched is not None else Searched()
    ou = people_dn(settings.ldap.base)
    with reader:
        from etl.audit.read import populated

        # source keys are the academy's own: none can be found where it has nothing (a
        # first load: two searches instead of one per batch)
        keys = [j for j, uid, _r, _run in decisions.identities
                if uid in new and j not in done.keys]
        found = list(reader.find_values(ou, "ENTPersonJointure", keys)) if keys and (
            not fresh) and populated(reader, academy, settings.ldap.base) else []
        done.keys.update(keys)
        n = 0
        if found:
            c = adopt_entries(s, academy.code, found, run_id)
            n += c["accounts"] + c["identities"]
            log.warning("%d accounts of %s about to be created are in the directory already: "
                        "adopted (uid and login kept), not created twice", c["accounts"],
                        academy.code)
        logins = [login for _u, _p, login in decisions.accounts if login not in done.logins]
        taken: dict[str, str] = {}
        # a name found taken: the numbers after it are searched at once too, until a window
        # finds none (another state DB's forty "lea.martin" cost a search or two, not a
        # round of matching for each number it handed out)
        while logins:
            held = _logins_in(reader, ou, logins)
            done.logins.update(login for login in logins if login.lower() not in held)
            taken.update(held)
            logins = [x for x in _next_numbers(held) if x not in done.logins
                      and x not in taken]
    if taken:
        registered = set(s.scalars(select(Login.login).where(Login.login.in_(sorted(taken)))))
        rows = [{"login": k, "uid": u, "assigned_at": utcnow()}
                for k, u in sorted(taken.items()) if k not in registered]
        if rows:
            s.execute(insert(table(Login)), rows)
            n += len(rows)
            log.warning("%d logins about to be handed out are taken in the directory: "
                        "registered, others allocated (accounts another state DB wrote? The "
                        "academies writing one directory share one state DB: "
                        "docs/production.md)", len(rows))
    return n


def _logins_in(reader: DirectoryReader, ou: str, logins: list[str]) -> dict[str, str]:
    """The logins of ``logins`` the directory holds -> the uid holding each."""
    out: dict[str, str] = {}
    for e in reader.find_values(ou, "ENTPersonLogin", logins, ["ENTPersonLogin", "uid"]):
        for v in e.attrs.get("ENTPersonLogin", [])[:1]:
            out[v.lower()] = (e.attrs.get("uid") or [""])[0]
    return out


#: numbers searched past the highest of a name found taken, besides as many as were found
LOGIN_WINDOW = 8
_NUMBERED = re.compile(r"(.+?)(\d+)")


def _next_numbers(found: Iterable[str]) -> list[str]:
    """For each name among logins found taken (``lea.martin``, ``lea.martin7``), the logins
    ``allocate_login`` would hand out next for it: the numbers past the highest found, as
    many as were found and ``LOGIN_WINDOW`` more."""
    top: dict[str, tuple[int, int]] = {}
    for login in found:
        m = _NUMBERED.fullmatch(login)
        base, n = (m.group(1), int(m.group(2))) if m and int(m.group(2)) >= 2 else (login, 1)
        hi, count = top.get(base, (1, 0))
        top[base] = (max(hi, n), count + 1)
    return [f"{base}{k}" for base, (hi, count) in sorted(top.items())
            for k in range(max(hi + 1, 2), hi + count + LOGIN_WINDOW + 1)]


def state_knows(s: Session, academy: str) -> bool:
    """Whether the state DB has anything of the academy (an entry written or an account)."""
    return bool(s.scalar(select(exists().where(Entry.academy == academy)))
                or s.scalar(select(exists().where(Account.academy == academy))))


def require_adopted(settings: Settings, academy: Academy) -> None:
    """Refuse to write (``StateNotAdopted``) when the state DB knows nothing of the academy
    and its part of the directory is populated: a new or wrong state DB (a mistyped
    ``--state-url``, a fresh worker's default SQLite) would create every account twice."""
    from etl.audit.read import populated
    from etl.store.db import session_factory

    with session_factory(settings.state_url)() as s:
        if state_knows(s, academy.code):
            return
    reader = _reader(settings)
    if reader is None:
        return
    with reader:
        if not populated(reader, academy, settings.ldap.base):
            return
    raise StateNotAdopted(
        f"the state DB ({_safe_url(settings.state_url)}) knows nothing of {academy.code} but "
        f"the directory holds its schools or accounts: refusing to write (every account "
        f"would be created twice). Check --state-url / ENTSYNC_STATE_URL, or rebuild the "
        f"state DB from the directory: entsync audit --academy {academy.code} --adopt")


def _safe_url(url: str) -> str:
    """The state DB URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


__all__ = ["Searched", "adopt_academy", "adopt_entries", "claimed_in_directory",
           "directory_fresh", "require_adopted", "state_knows", "sync_kind"]

