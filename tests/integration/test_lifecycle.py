"""Lifecycle, scope and guards against a real slapd: disable, restore, delete, hold, approve,
reject, undo."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from etl import run as pipeline
from etl.apply import stage as apply_stage
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.errors import EntsyncError, RunLocked, UndoRefused
from etl.ops.retention import purge_expired
from etl.ops.undo import undo_run
from etl.store.db import session_factory
from etl.store.models import Account, Entry, JournalEntry, Run, utcnow
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.integration.test_sync import search

pytestmark = pytest.mark.ldap
ACADEMY = "ac-strasbourg"
UAI = "0670010" + uai_check_letter("0670010")
UAI_2 = "0680020" + uai_check_letter("0680020")
NOV = dt.date(2026, 11, 16)  # outside the September roll-over window


def roster(n: int, *, skip: set[int] | None = None, left: set[int] | None = None,
           uai: str = UAI) -> list[Pupil]:
    """n pupils of one school (INEs unique to the school), some skipped or gone."""
    skip, left = skip or set(), left or set()
    return [Pupil(str(1000 + i), f"ELEVE{i}", "Léa", "5A" if i % 2 else "5B",
                  ine=f"{uai[1:7]}{i:03d}AB", leave="01/09/2026" if i in left else None)
            for i in range(n) if i not in skip]


def drop(env: Settings, pupils: list[Pupil], day: int, uai: str = UAI,
         guardians: bool = True) -> None:
    guards = [Guardian(str(5000 + int(p.eleve_id)), p.last, "Marc", [p.eleve_id])
              for p in pupils] if guardians else []
    d = write_school(env.landing, ACADEMY, uai, pupils, guards,
                     [Teacher("77", "PROF", "Ada", ["5A", "5B"])], date=f"{day:02d}/10/2026")
    if not guardians:
        (d / "ExportXML_ResponsablesAvecAdresses.zip").unlink()


def sync(env: Settings, **kw: Any) -> dict[str, Any]:
    return pipeline.run_sync(env, RunRequest(ACADEMY, today=NOV, **kw))


def pupil(server: LdapServer, eleve_id: str, uai: str = UAI) -> dict[str, Any]:
    found = search(server, f"(ENTPersonJointure=AC-STRASBOURG$SIECLE${uai}${eleve_id})",
                   f"ou=people,{server.base}")
    assert len(found) == 1, found
    return found[0]


def class_members(server: LdapServer, code: str, uai: str = UAI) -> set[str]:
    sdn = f"ENTStructureUAI={uai},ou=structures,{server.base}"
    return set(search(server, f"(cn={code})", sdn)[0]["member"])


def dump(server: LdapServer) -> dict[str, dict[str, list[str]]]:
    """Every entry's user attributes, values sorted: a full comparable dump."""
    return {e["dn"]: {k: sorted(v) for k, v in e.items() if k != "dn"}
            for e in search(server, "(objectClass=*)", server.base, ["*"])}


def state(env: Settings) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    """What the state DB remembers: each entry as written (not which run wrote it, nor when,
    nor the school of a person's entry: an undo knows it only from the DN) and each account's
    status."""
    with session_factory(env.state_url)() as s:
        entries = {e.dn: (e.academy, e.uai if e.kind != "person" else "", e.kind, e.uid,
                          e.content_hash, e.attrs)
                   for e in s.scalars(select(Entry))}
        accounts = {a.uid: (a.status, a.disabled_at) for a in s.scalars(select(Account))}
    return entries, accounts


def test_absent_pupil_is_disabled_then_restored(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    assert sync(env)["status"] == "success"
    before = pupil(server, "1003")
    assert before["dn"] in class_members(server, "5A")
    # next night pupil 1003 is missing from a complete pupils export: disabled, out of class
    drop(env, roster(30, skip={3}), day=2)
    s2 = sync(env)
    assert s2["status"] == "success"
    assert s2["schools"][UAI]["disabled"] == 2  # the pupil and his only guardian
    gone = pupil(server, "1003")
    assert gone["entSyncStatus"] == ["DISABLED"]
    assert gone["entSyncDisabledAt"][0].endswith("Z")
    assert gone["dn"] not in class_members(server, "5A")
    assert gone["ENTPersonLogin"] == before["ENTPersonLogin"]
    # back the night after: same entry, uid and login, active, in his class again
    drop(env, roster(30), day=3)
    s3 = sync(env)
    assert s3["schools"][UAI]["restored"] == 2
    back = pupil(server, "1003")
    assert back["dn"] == before["dn"] and back["uid"] == before["uid"]
    assert back["ENTPersonLogin"] == before["ENTPersonLogin"]
    assert back["entSyncStatus"] == ["ACTIVE"] and "entSyncDisabledAt" not in back
    assert back["dn"] in class_members(server, "5A")
    # the restore undone: disabled again, and its account counts its retention from the undo
    undo_run(env, s3["run_id"])
    again = pupil(server, "1003")
    assert again["entSyncStatus"] == ["DISABLED"] and again["dn"] == before["dn"]
    with session_factory(env.state_url)() as s:
        acc = s.get(Account, before["uid"][0])
        assert acc is not None and acc.status == "DISABLED" and acc.disabled_at is not None
        entry = s.get(Entry, before["dn"])
        assert entry is not None and entry.uid == before["uid"][0]


def test_pupil_with_past_date_sortie_is_disabled(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    drop(env, roster(30, left={4}), day=2)
    s = sync(env)
    # the pupil, and his guardian who is still in the guardians file but no longer has a
    # pupil here
    assert s["schools"][UAI]["disabled"] == 2
    assert pupil(server, "1004")["entSyncStatus"] == ["DISABLED"]


def test_missing_exports_change_nothing_for_the_people_they_cover(env: Settings,
                                                                  server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    drop(env, roster(10, uai=UAI_2), day=1, uai=UAI_2)
    sync(env)
    before = dump(server)
    # school 2 sends nothing tonight; school 1 sends pupils but no guardians file
    for f in (env.landing / ACADEMY / UAI_2).iterdir():
        f.unlink()
    drop(env, roster(30), day=2, guardians=False)
    s = sync(env)
    assert s["status"] == "success" and s["changes"] == 0
    assert dump(server) == before
    tut = search(server, "(ENTPersonProfils=National_TUT)", f"ou=people,{server.base}")
    assert len(tut) == 40 and all(t["entSyncStatus"] == ["ACTIVE"] for t in tut)


def test_guard_holds_a_school_then_approve_applies_exactly_that_plan(
        env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    drop(env, roster(10, uai=UAI_2), day=1, uai=UAI_2)
    sync(env)
    before = dump(server)
    # a truncated-looking export: 30 % of the pupils missing; school 2 has a newcomer
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    drop(env, roster(11, uai=UAI_2), day=2, uai=UAI_2)
    s = sync(env)
    assert s["status"] == "awaiting_approval"
    sch = s["schools"][UAI]
    assert sch["status"] == "awaiting_approval"
    assert {g["guard"] for g in sch["held"]} >= {"disable_share", "pupil_drop"}
    assert s["schools"][UAI_2]["created"] == 2  # a pupil and his guardian
    assert s["schools"][UAI_2]["status"] == "ok"
    after = dump(server)
    held_dns = {dn for dn in before if f"SIECLE${UAI}$" in json.dumps(before[dn])}
    assert all(after.get(dn) == before[dn] for dn in held_dns)  # nothing written for it
    pending = pipeline.pending_approvals(env, s["run_id"])
    assert [p["uai"] for p in pending] == [UAI]
    assert pending[0]["summary"]["counts"]["disabled"] == 20  # pupils and their guardians
    assert pending[0]["summary"]["sample"]
    # the CLI says so with exit code 3 (a rerun sees the same files: already applied, so use
    # a fresh export date)
    res = pipeline.decide(env, s["run_id"], approve=True, by="test",
                          expected_hash=pending[0]["plan_hash"])
    assert res["schools"][UAI]["decision"] == "approved"
    assert res["schools"][UAI]["applied"] == s["held_changes"]
    disabled = search(server, "(entSyncStatus=DISABLED)", f"ou=people,{server.base}")
    assert len(disabled) == 10 + 10  # pupils and their guardians
    assert pipeline.pending_approvals(env, s["run_id"]) == []
    with pytest.raises(EntsyncError):
        pipeline.decide(env, s["run_id"], approve=True)


def test_guard_reject_leaves_the_directory_as_it_was(env: Settings,
                                                     server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    before = dump(server)
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    s = sync(env)
    assert s["status"] == "awaiting_approval"
    pipeline.decide(env, s["run_id"], approve=False, by="test")
    assert dump(server) == before
    assert pipeline.pending_approvals(env) == []


def test_an_approval_waits_for_the_run_writing_the_academy_and_holds_off_new_ones(
        env: Settings, server: LdapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    s = sync(env)
    assert s["status"] == "awaiting_approval"
    before = dump(server)
    night = pipeline.start_run(env, ACADEMY)  # a run of the academy is writing
    with pytest.raises(RunLocked, match=night):
        pipeline.decide(env, s["run_id"], approve=True, by="test")
    assert dump(server) == before  # nothing applied, the school still waits
    assert [p["uai"] for p in pipeline.pending_approvals(env, s["run_id"])] == [UAI]
    pipeline.fail_run(env, night, "test")  # that run ends without syncing the school

    refused: list[str] = []
    apply_changes = apply_stage._apply_changes

    def while_applying(*a: Any, **kw: Any) -> dict[str, Any]:
        # no run of the academy starts while the approved plan is being written
        with pytest.raises(RunLocked, match=s["run_id"]):
            pipeline.start_run(env, ACADEMY)
        refused.append("start_run")
        return apply_changes(*a, **kw)

    monkeypatch.setattr("etl.approve.decide._apply_changes", while_applying)
    res = pipeline.decide(env, s["run_id"], approve=True, by="test")
    assert res["schools"][UAI]["decision"] == "approved" and refused == ["start_run"]
    assert len(search(server, "(entSyncStatus=DISABLED)", f"ou=people,{server.base}")) == 20
    pipeline.fail_run(env, pipeline.start_run(env, ACADEMY), "test")  # the lock is free again


def test_old_runs_staged_files_are_purged_but_not_a_held_plan_nor_reports(
        env: Settings, server: LdapServer) -> None:
    from etl.ops.retention import purge_staging

    staged = env.workdir / "staging"
    drop(env, roster(30), day=1)
    first = sync(env)["run_id"]
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    held = sync(env)
    assert held["status"] == "awaiting_approval"
    names = {rid: sorted(p.name for p in (staged / rid).iterdir()) for rid in (first,
                                                                              held["run_id"])}
    assert {"plan.json", "reports"} <= set(names[first]) and len(names[first]) > 2  # tables
    assert "held" in names[held["run_id"]]
    assert purge_staging(env, ACADEMY)["runs"] == 0  # both ended today: kept 14 days
    later = utcnow() + dt.timedelta(days=env.staging_keep_days + 1)
    dry = purge_staging(env, ACADEMY, now=later, dry_run=True)
    assert dry["runs"] == 1 and sorted(p.name for p in (staged / first).iterdir()) == names[first]
    res = purge_staging(env, ACADEMY, now=later)
    assert res["runs"] == 1 and res["removed"] == len(names[first]) - 1
    assert [p.name for p in (staged / first).iterdir()] == ["reports"]
    assert any((staged / first / "reports").rglob("*.json"))
    # the run awaiting approval keeps its held plans, and the approval still applies them
    assert sorted(p.name for p in (staged / held["run_id"]).iterdir()) == names[held["run_id"]]
    assert purge_staging(env, ACADEMY, now=later)["runs"] == 0  # each run purged once
    with session_factory(env.state_url)() as s, s.begin():  # it waited a month for a decision
        run = s.get(Run, held["run_id"])
        assert run is not None and run.ended_at is not None
        run.ended_at -= dt.timedelta(days=30)
    pipeline.decide(env, held["run_id"], approve=True, by="test")
    assert len(search(server, "(entSyncStatus=DISABLED)", f"ou=people,{server.base}")) == 20
    tomorrow = utcnow() + dt.timedelta(days=1)
    assert purge_staging(env, ACADEMY, now=tomorrow)["runs"] == 0  # decided a day ago
    gone = purge_staging(env, ACADEMY, now=later)
    assert gone["runs"] == 1
    assert [p.name for p in (staged / held["run_id"]).iterdir()] == ["reports"]


def test_a_changed_held_plan_is_refused(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    s = sync(env)
    path = Path(pipeline.pending_approvals(env)[0]["summary"] and
                next((env.workdir / "staging" / s["run_id"] / "held").iterdir()))
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) > 2  # the header, then one change a line
    path.write_bytes(b"".join(lines[:2]))  # all but the first change dropped
    with pytest.raises(EntsyncError, match="differs"):
        pipeline.decide(env, s["run_id"], approve=True)


def test_cli_exit_code_3_when_held(env: Settings, server: LdapServer, tmp_path: Path) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    drop(env, roster(30, skip=set(range(0, 30, 3))), day=2)
    cli_env = {"PATH": "/usr/bin:/bin", "ENTSYNC_LANDING": str(env.landing),
               "ENTSYNC_WORKDIR": str(env.workdir), "ENTSYNC_STATE_URL": env.state_url,
               **server.env()}
    r = subprocess.run([sys.executable, "-m", "etl.cli", "sync", "--academy", ACADEMY,
                        "--mode", "normal", "--json"], env=cli_env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    run_id = json.loads(r.stdout)["run_id"]
    r2 = subprocess.run([sys.executable, "-m", "etl.cli", "reject", run_id], env=cli_env,
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "rejected" in r2.stdout


def test_retention_deletes_and_logins_are_never_reused(env: Settings,
                                                      server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    login = pupil(server, "1003")["ENTPersonLogin"][0]
    drop(env, roster(30, skip={3}), day=2)
    sync(env)
    assert purge_expired(env, ACADEMY)["deleted"] == 0  # still within retention
    later = utcnow() + dt.timedelta(days=91)
    res = purge_expired(env, ACADEMY, now=later)
    assert res["deleted"] == 2  # the pupil and his guardian
    assert not search(server, "(ENTPersonJointure=AC-STRASBOURG$SIECLE$*$1003)",
                      f"ou=people,{server.base}")
    # a new pupil with the same name (and even the same source id) gets a new account
    drop(env, roster(30), day=3)
    sync(env)
    again = pupil(server, "1003")
    assert again["ENTPersonLogin"][0] != login
    assert again["ENTPersonLogin"][0].startswith(login.rstrip("0123456789"))


def test_create_only_and_no_disable_modes(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    drop(env, roster(31, skip={3}), day=2)  # one leaves, one arrives
    s = pipeline.run_sync(env, RunRequest(ACADEMY, mode="no_disable", today=NOV))
    assert s["schools"][UAI]["disabled"] == 0 and s["schools"][UAI]["created"] >= 1
    assert pupil(server, "1003")["entSyncStatus"] == ["ACTIVE"]
    # in the roll-over window the default mode does not disable either
    drop(env, roster(31, skip={3, 4}), day=3)
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=dt.date(2026, 9, 5)))
    assert s["mode"] == "no_disable" and s["schools"][UAI]["disabled"] == 0


def test_undo_restores_the_directory(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    before = dump(server)
    entries, accounts = state(env)
    changed = roster(31, skip={3})
    changed[0].last = "RENAMED"
    changed[1].division = "5B" if changed[1].division == "5A" else "5A"
    drop(env, changed, day=2)
    s = sync(env)
    assert s["changes"] > 0 and s["status"] == "success"
    assert dump(server) != before
    res = undo_run(env, s["run_id"])
    assert res["failed"] == 0
    assert dump(server) == before
    # the state DB too: what was written at each DN, and the accounts (the new pupil's stays,
    # its entry gone); the undo journaled like any run
    after_entries, after_accounts = state(env)
    assert after_entries == entries
    assert {u: after_accounts[u] for u in accounts} == accounts
    with session_factory(env.state_url)() as db:
        rows = list(db.scalars(select(JournalEntry).where(JournalEntry.run_id == res["run_id"])
                               .order_by(JournalEntry.seq)))
    assert [r.seq for r in rows] == list(range(1, res["applied"] + 1))
    assert all(r.status == "applied" and r.applied_at is not None for r in rows)
    assert {r.op for r in rows} == {"modify", "delete"}  # the new pupil removed
    assert all((r.after is None) == (r.op == "delete") for r in rows)
    with pytest.raises(UndoRefused):
        undo_run(env, s["run_id"])


def test_undo_refuses_when_a_later_run_touched_the_entries(env: Settings,
                                                           server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    first = sync(env)
    changed = roster(30)
    changed[0].last = "RENAMED"
    drop(env, changed, day=2)
    sync(env)
    with pytest.raises(UndoRefused, match="later run"):
        undo_run(env, first["run_id"])


def test_pupil_moving_school_keeps_account_and_old_school_attachments_go(
        env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    drop(env, roster(10, uai=UAI_2), day=1, uai=UAI_2)
    sync(env)
    mover = pupil(server, "1003")
    # night 2: school 1 no longer lists him; school 2 does, under its own ELEVE_ID, same INE
    drop(env, roster(30, skip={3}), day=2)
    arrivals = [*roster(10, uai=UAI_2),
                Pupil("2999", "ELEVE3", "Léa", "5A", ine=f"{UAI[1:7]}003AB")]
    drop(env, arrivals, day=2, uai=UAI_2)
    s = sync(env)
    assert s["status"] == "success", s
    moved = pupil(server, "2999", uai=UAI_2)
    assert moved["dn"] == mover["dn"] and moved["ENTPersonLogin"] == mover["ENTPersonLogin"]
    assert moved["entSyncStatus"] == ["ACTIVE"]
    assert all(UAI_2 in c for c in moved["ENTEleveClasses"])
    assert moved["dn"] not in class_members(server, "5A", UAI)
    assert moved["dn"] in class_members(server, "5A", UAI_2)


def test_school_not_synced_tonight_keeps_its_part_of_a_shared_account(
        env: Settings, server: LdapServer) -> None:
    # the same pupil (same INE) listed by two schools: one account with both schools' classes
    shared = Pupil("2999", "ELEVE3", "Léa", "5A", ine=f"{UAI[1:7]}003AB")
    drop(env, roster(30), day=1)
    drop(env, [*roster(10, uai=UAI_2), shared], day=1, uai=UAI_2)
    sync(env)
    both = pupil(server, "1003")
    assert {c.split(",")[0] for c in both["ENTEleveClasses"]} == {
        f"ENTStructureUAI={UAI}", f"ENTStructureUAI={UAI_2}"}
    # night 2: only school 1 sends an export: school 2's part of the account stays
    for f in (env.landing / ACADEMY / UAI_2).iterdir():
        f.unlink()
    changed = roster(30)
    changed[3].last = "ELEVE3-BIS"
    drop(env, changed, day=2)
    sync(env)
    after = pupil(server, "1003")
    assert after["sn"] == ["ELEVE3-BIS"]
    assert set(after["ENTEleveClasses"]) == set(both["ENTEleveClasses"])
    assert set(after["ENTPersonJointure"]) == set(both["ENTPersonJointure"])
    assert after["dn"] in class_members(server, "5A", UAI_2)


def test_rollover_archives_last_years_classes(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    sdn = f"ENTStructureUAI={UAI},ou=structures,{server.base}"
    old_5a = class_members(server, "5A")
    # September: school year 2027, the same pupils moved up to 4A/4B; 5A/5B are gone
    nxt = roster(30)
    for p in nxt:
        p.division = "4" + p.division[1:]
    write_school(env.landing, ACADEMY, UAI, nxt, [], [Teacher("77", "PROF", "Ada", ["4A"])],
                 date="01/09/2027", year=2027)
    s = pipeline.run_sync(env, RunRequest(ACADEMY, today=dt.date(2027, 9, 3)))
    assert s["status"] == "success", s
    assert s["mode"] == "no_disable"  # roll-over window: absences wait
    live = {c["cn"][0] for c in search(server, "(objectClass=ENTClasse)",
                                       f"ou=groups,{sdn}") if ",ou=archives," not in c["dn"]}
    assert live == {"4A", "4B"}
    archived = search(server, "(objectClass=ENTClasse)", f"ou=2026,ou=archives,ou=groups,{sdn}")
    assert {c["cn"][0] for c in archived} == {"5A", "5B"}
    assert set(next(c for c in archived if c["cn"] == ["5A"])["member"]) == old_5a
    # no pupil is in both a class of last year and one of this year: live classes and the
    # pupils' class attributes are this year's only
    assert not search(server, "(|(cn=5A)(cn=5B))", f"ou=groups,{sdn}", ["cn"]) or all(
        ",ou=archives," in c["dn"] for c in search(server, "(|(cn=5A)(cn=5B))",
                                                   f"ou=groups,{sdn}", ["cn"]))
    for p in search(server, "(ENTPersonProfils=National_ELV)", f"ou=people,{server.base}"):
        assert all(c.endswith(("$4A", "$4B")) for c in p["ENTEleveClasses"]), p["dn"]
    # accounts persist: same uids
    assert len(search(server, "(ENTPersonProfils=National_ELV)",
                      f"ou=people,{server.base}")) == 30
    # and the next night changes nothing (the archive is not removed as stale)
    write_school(env.landing, ACADEMY, UAI, nxt, [], [Teacher("77", "PROF", "Ada", ["4A"])],
                 date="02/09/2027", year=2027)
    again = pipeline.run_sync(env, RunRequest(ACADEMY, today=dt.date(2027, 9, 4)))
    assert again["changes"] == 0, again


def test_a_rejected_record_is_skipped_not_disabled(env: Settings, server: LdapServer) -> None:
    drop(env, roster(30), day=1)
    sync(env)
    before = {i: pupil(server, str(1000 + i)) for i in (3, 4)}
    nxt = roster(30)
    nxt[3].birth = "31/13/2012"  # the reader rejects it (bad date)
    nxt[4].first = " "  # validation rejects it (empty first name)
    nxt[5].last = "ELEVE5-NEW"  # a real change elsewhere in the school
    drop(env, nxt, day=2)
    s = sync(env)
    assert s["status"] == "success", s
    sch = s["schools"][UAI]
    assert sch["rejected"] >= 2 and sch["disabled"] == 0 and sch["updated"] >= 1
    for i, old in before.items():
        now = pupil(server, str(1000 + i))
        assert now["entSyncStatus"] == ["ACTIVE"]
        assert now == old  # skipped: untouched
        code = old["ENTEleveClasses"][0].rsplit("$", 1)[1]
        assert now["dn"] in class_members(server, code)


def test_entsync_undo_shows_first_and_asks(env: Settings, server: LdapServer,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`undo --dry-run` says what it would revert and changes nothing; without a terminal and
    without --yes it refuses (exit 2, nothing changed); --yes reverts."""
    from etl import cli

    drop(env, roster(12), day=1)
    sync(env)
    before = dump(server)
    changed = roster(12)
    changed[0].last = "RENAMED"
    drop(env, changed, day=2)
    s = sync(env)
    after = dump(server)
    assert after != before
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    common = ["--state-url", env.state_url, "--workdir", str(env.workdir)]
    capsys.readouterr()
    assert cli.main(["undo", s["run_id"], "--dry-run", "--json", *common]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert preview["changes"] >= 1 and preview["ops"].get("modify", 0) >= 1
    assert preview["sample_dns"] and dump(server) == after
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    assert cli.main(["undo", s["run_id"], *common]) == 2
    assert "--yes" in capsys.readouterr().err and dump(server) == after
    assert cli.main(["undo", s["run_id"], "--yes", *common]) == 0
    assert dump(server) == before
