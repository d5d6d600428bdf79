"""``entsync audit`` against a real slapd: drift reported exactly, repaired through the apply
path, a rolled-back directory held, a lost state DB adopted, nothing ever created twice."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import ldap3
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etl import run as pipeline
from etl.audit.stage import exit_code, run_audit
from etl.config import Settings
from etl.contracts import RunRequest
from etl.devtools.generate import uai_check_letter
from etl.devtools.slapd import LdapServer
from etl.errors import StateNotAdopted
from etl.store.db import dispose_all, get_engine
from etl.store.models import Approval, JournalEntry, SchoolState, SourceFile
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.ldap_fixture import admin_connection

pytestmark = pytest.mark.ldap
ACADEMY = "ac-reims"
PREFIX = "AC-REIMS"
UAI = "0510003" + uai_check_letter("0510003")
NAMES = ["MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS",
         "MOREAU", "LAURENT"]


def school(landing: Path, date: str = "01/10/2026", renamed: int = 0, extra: int = 0,
           first: str = "Zoé") -> None:
    """Ten pupils in 3A and 3B; ``renamed``: that many of them with a new family name;
    ``extra``: that many more pupils (the first ``1099``)."""
    pupils = [Pupil(str(1001 + i), (n + "-NEUF") if i < renamed else n, first if i == 0
                    else f"Prenom{i}", "3A" if i < 5 else "3B", ine=f"07087669{i:02d}HA")
              for i, n in enumerate(NAMES)]
    pupils += [Pupil(str(1099 - i), "NOUVEAU", f"Noé{i}", "3B", ine=f"07087669{99 - i}HA")
               for i in range(extra)]
    write_school(landing, ACADEMY, UAI, pupils,
                 [Guardian("501", "MARTIN", "Claire", ["1001"])],
                 [Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"], head_of=["3A"])],
                 date=date)


def entries(server: LdapServer, base: str, flt: str = "(objectClass=*)",
            attrs: list[str] | None = None) -> dict[str, dict[str, list[str]]]:
    c = admin_connection(server)
    c.search(base, flt, attributes=attrs or ["*"])
    out = {e["dn"]: {k: [x.decode() for x in v] for k, v in e["raw_attributes"].items()}
           for e in c.response if e.get("type") == "searchResEntry"}
    c.unbind()
    return out


def pupil(server: LdapServer, eleve_id: str) -> tuple[str, dict[str, list[str]]]:
    found = entries(server, f"ou=people,{server.base}",
                    f"(ENTPersonJointure={PREFIX}$SIECLE${UAI}${eleve_id})")
    assert len(found) == 1, found
    return next(iter(found.items()))


def class_dn(server: LdapServer, code: str) -> str:
    return f"cn={code},ou=groups,ENTStructureUAI={UAI},ou=structures,{server.base}"


def drift_set(out: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(d["kind"], d["dn"], tuple(d["attributes"])) for d in out["listed"]}


def resync_from_scratch(env: Settings, date: str) -> dict[str, Any]:
    """A sync that plans for real: the exports' shortcuts (same content, same fingerprint)
    forgotten, so the planner itself compares."""
    with Session(get_engine(env.state_url)) as s, s.begin():
        s.query(SchoolState).update({"fingerprint": None})
        s.query(SourceFile).update({"content_sha256": None})
    school(env.landing, date=date)
    return pipeline.run_sync(env, RunRequest(ACADEMY))


def test_audit_reports_exactly_the_drift_and_repair_restores_it(
        env: Settings, server: LdapServer) -> None:
    school(env.landing)
    assert pipeline.run_sync(env, RunRequest(ACADEMY))["status"] == "success"
    clean = run_audit(env, ACADEMY)
    assert clean["differences"] == 0 and exit_code(clean) == 0, clean["listed"]
    assert clean["entries_read"] > 10

    gone_dn, gone = pupil(server, "1001")
    changed_dn, _ = pupil(server, "1002")
    kept_dn, _ = pupil(server, "1003")
    stray = f"uid=intrus,ou=people,{server.base}"
    sdn = f"ENTStructureUAI={UAI},ou=structures,{server.base}"
    c = admin_connection(server)
    assert c.delete(gone_dn)
    assert c.modify(changed_dn, {"sn": [(ldap3.MODIFY_REPLACE, ["CHANGÉ"])]})
    assert c.add(stray, ["top", "person", "organizationalPerson", "inetOrgPerson"],
                 {"uid": "intrus", "sn": "X", "cn": "X", "ENTPersonStructRattach": sdn}) \
        or c.result["description"] == "objectClassViolation", c.result
    if c.result["description"] == "objectClassViolation":  # ENTPersonStructRattach: ENTPerson
        assert c.add(stray, ["top", "person", "organizationalPerson", "inetOrgPerson",
                             "ENTPerson"],
                     {"uid": "intrus", "sn": "X", "cn": "X", "ENTPersonLogin": "intrus",
                      "ENTPersonStructRattach": sdn}), c.result
    assert c.modify(class_dn(server, "3A"), {"member": [(ldap3.MODIFY_ADD, [stray])]})
    assert c.modify(kept_dn, {"userPassword": [(ldap3.MODIFY_REPLACE, ["{SSHA}secret"])],
                              "preferredLanguage": [(ldap3.MODIFY_REPLACE, ["fr-FR"])]})
    c.unbind()

    out = run_audit(env, ACADEMY)
    assert drift_set(out) == {("missing", gone_dn, ()), ("attribute", changed_dn, ("sn",)),
                              ("member", class_dn(server, "3A"), ("member",)),
                              ("foreign", stray, ())}
    assert out["total"] == {"missing": 1, "attribute": 1, "member": 1, "foreign": 1,
                            "orphan": 0}
    assert out["per_school"][UAI]["foreign"] == 1 and exit_code(out) == 4
    assert "values" not in out["listed"][0]
    shown = run_audit(env, ACADEMY, values=True)
    assert {d["dn"]: d.get("values") for d in shown["listed"]}[changed_dn] == {
        "sn": {"directory": ["CHANGÉ"], "state": ["BERNARD"]}}
    kept = (Path(shown["report_dir"]) / "audit.json").read_text("utf-8")
    assert "CHANGÉ" not in kept and "BERNARD" not in kept  # never a value on disk

    # repair, foreign entries kept: all the sync's part back, the stranger stays (exit 4)
    fixed = run_audit(env, ACADEMY, repair=True)
    assert fixed["repaired"]["applied"] == 3 and fixed["repaired"]["held"] == {}
    assert exit_code(fixed) == 4 and fixed["remaining"] == 1
    dn, back = pupil(server, "1001")
    assert dn == gone_dn and back["uid"] == gone["uid"]
    assert back["ENTPersonLogin"] == gone["ENTPersonLogin"] == ["zoe.martin"]
    members = entries(server, class_dn(server, "3A"))[class_dn(server, "3A")]["member"]
    assert gone_dn in members and stray not in members
    assert pupil(server, "1002")[1]["sn"] == ["BERNARD"]
    foreign_attrs = entries(server, kept_dn)[kept_dn]
    assert foreign_attrs["preferredLanguage"] == ["fr-FR"]
    assert foreign_attrs["userPassword"] == ["{SSHA}secret"]
    assert stray in entries(server, f"ou=people,{server.base}")
    with Session(get_engine(env.state_url)) as s:  # journaled under the audit's run
        assert s.scalar(select(func.count()).select_from(JournalEntry).where(
            JournalEntry.run_id == fixed["run_id"])) == 3

    # the foreign entry removed by an explicit policy; then nothing differs, a sync agrees
    gone_too = run_audit(env, ACADEMY, repair=True, foreign="delete")
    assert gone_too["repaired"]["applied"] == 1 and exit_code(gone_too) == 0
    again = run_audit(env, ACADEMY)
    assert again["differences"] == 0 and exit_code(again) == 0, again["listed"]
    sync = resync_from_scratch(env, "02/10/2026")
    assert sync["schools"][UAI]["status"] == "ok"
    assert sync["changes"] == 0 and sync["applied"] == 0
    assert entries(server, kept_dn)[kept_dn]["preferredLanguage"] == ["fr-FR"]
    # the DAG's task: counts for XCom; an academy owning none of the schools asked is skipped
    from etl.audit.stage import airflow_audit

    task = airflow_audit(env, ACADEMY)
    assert task["differences"] == 0 and task["status"] == "success" and "listed" not in task
    assert "skipped" in airflow_audit(env, ACADEMY, schools=["0670001A"])


def test_a_directory_rolled_back_by_a_restore_is_held_not_rewritten(
        env: Settings, server: LdapServer) -> None:
    school(env.landing)
    pipeline.run_sync(env, RunRequest(ACADEMY))
    backup = {**entries(server, f"ou=structures,{server.base}"),
              **entries(server, f"ou=people,{server.base}")}
    # night 2 (under the sync's own guards): 5 of 12 accounts renamed, 3 new pupils
    school(env.landing, date="02/10/2026", renamed=5, extra=3)
    night2 = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert night2["status"] == "success", night2["schools"][UAI]
    assert night2["schools"][UAI]["updated"] >= 5 and night2["schools"][UAI]["created"] == 3
    # the restore: the directory as it was after night 1 (children deleted first)
    c = admin_connection(server)
    now = {**entries(server, f"ou=structures,{server.base}"),
           **entries(server, f"ou=people,{server.base}")}
    for dn in sorted(now, key=lambda d: -d.count(",")):
        if dn not in (f"ou=structures,{server.base}", f"ou=people,{server.base}"):
            assert c.delete(dn), (dn, c.result)
    for dn, attrs in sorted(backup.items(), key=lambda x: x[0].count(",")):
        if dn not in (f"ou=structures,{server.base}", f"ou=people,{server.base}"):
            assert c.add(dn, attributes=attrs), (dn, c.result)
    c.unbind()

    out = run_audit(env, ACADEMY, repair=True)
    assert out["total"]["missing"] == 3 and out["total"]["attribute"] >= 5
    assert exit_code(out) == 3 and UAI in out["repaired"]["held"]
    assert out["repaired"]["applied"] == 0
    assert {g["guard"] for g in out["repaired"]["held"][UAI]["guards"]} >= {"repair_share"}
    assert pupil(server, "1002")[1]["sn"] == ["BERNARD"]  # nothing rewritten
    with Session(get_engine(env.state_url)) as s:
        held = s.scalars(select(Approval).where(Approval.run_id == out["run_id"])).all()
        assert [a.uai for a in held] == [UAI] and held[0].status == "pending"
    # an operator approves: written back as the state DB says, then nothing differs
    pipeline.decide(env, out["run_id"], approve=True)
    assert pupil(server, "1002")[1]["sn"] == ["BERNARD-NEUF"]
    assert run_audit(env, ACADEMY)["differences"] == 0


def test_a_fresh_state_db_refuses_to_write_until_adopted(
        env: Settings, server: LdapServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a login already in the directory (an account the ENT created) is never handed out
    c = admin_connection(server)
    assert c.add(f"uid=ent0001,ou=people,{server.base}",
                 ["top", "person", "organizationalPerson", "inetOrgPerson", "ENTPerson"],
                 {"uid": "ent0001", "sn": "M", "cn": "M", "ENTPersonLogin": "zoe.martin"}), \
        c.result
    c.unbind()
    school(env.landing)
    first = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert first["status"] == "success"
    assert pupil(server, "1001")[1]["ENTPersonLogin"] == ["zoe.martin2"]
    people = entries(server, f"ou=people,{server.base}", attrs=["uid"])

    # the same sync with a mistyped --state-url: a fresh SQLite file
    fresh = Settings.from_env({
        "ENTSYNC_LANDING": str(env.landing), "ENTSYNC_WORKDIR": str(tmp_path / "work2"),
        "ENTSYNC_STATE_URL": f"sqlite:///{tmp_path / 'mistyped.db'}", **server.env()})
    with pytest.raises(StateNotAdopted, match="--adopt"):
        pipeline.run_sync(fresh, RunRequest(ACADEMY))
    from etl.cli import main

    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    assert main(["sync", "--academy", ACADEMY, "--state-url",
                 f"sqlite:///{tmp_path / 'mistyped.db'}", "--workdir",
                 str(tmp_path / "work2"), "--landing", str(env.landing)]) == 5
    assert entries(server, f"ou=people,{server.base}", attrs=["uid"]) == people

    adopted = run_audit(fresh, ACADEMY, adopt=True)
    assert adopted["adopted"]["accounts"] == 12  # 10 pupils, a guardian, a teacher
    assert adopted["total"]["foreign"] == 0 and exit_code(adopted) == 0, adopted["listed"]
    assert main(["audit", "--academy", ACADEMY, "--state-url",
                 f"sqlite:///{tmp_path / 'mistyped.db'}", "--workdir",
                 str(tmp_path / "work2")]) == 0
    after = pipeline.run_sync(fresh, RunRequest(ACADEMY))
    assert after["status"] == "success", after
    assert after["changes"] == 0 and after["applied"] == 0
    assert entries(server, f"ou=people,{server.base}", attrs=["uid"]) == people
    # a new pupil of the same first and family name: a login never handed out before
    write_school(env.landing, ACADEMY, UAI, [
        *[Pupil(str(1001 + i), n, "Zoé" if i == 0 else f"Prenom{i}", "3A" if i < 5 else "3B",
                ine=f"07087669{i:02d}HA") for i, n in enumerate(NAMES)],
        Pupil("1097", "MARTIN", "Zoé", "3B", ine="0708766997HA")],
        [Guardian("501", "MARTIN", "Claire", ["1001"])],
        [Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"], head_of=["3A"])], date="03/10/2026")
    pipeline.run_sync(fresh, RunRequest(ACADEMY))
    logins = [v["ENTPersonLogin"][0] for v in entries(
        server, f"ou=people,{server.base}", attrs=["ENTPersonLogin"]).values()
              if v.get("ENTPersonLogin")]
    assert pupil(server, "1097")[1]["ENTPersonLogin"] == ["zoe.martin3"]
    assert len(logins) == len(set(logins)) == len(people)  # + the new one - ou=people


def test_an_account_in_the_directory_is_adopted_not_created_twice(
        env: Settings, server: LdapServer, tmp_path: Path) -> None:
    """A state DB restored from an older backup: tonight's "new" pupil is in the directory
    already (written after the backup): its account is adopted, never created twice."""
    school(env.landing)
    pipeline.run_sync(env, RunRequest(ACADEMY))
    db = Path(env.state_url.removeprefix("sqlite:///"))
    if not db.is_file():
        pytest.skip("copies the SQLite state DB file")
    dispose_all()
    shutil.copy(db, tmp_path / "backup.db")
    school(env.landing, date="02/10/2026", extra=1)
    pipeline.run_sync(env, RunRequest(ACADEMY))
    dn, written = pupil(server, "1099")
    dispose_all()
    shutil.copy(tmp_path / "backup.db", db)  # the state DB rolled back by a night
    school(env.landing, date="03/10/2026", extra=1)
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["status"] == "success", again
    assert again["schools"][UAI]["created"] == 0
    assert pupil(server, "1099") == (dn, written)  # one entry, same uid and login
    assert run_audit(env, ACADEMY)["differences"] == 0


def test_a_write_reconciled_against_the_directory_keeps_foreign_attributes(
        env: Settings, server: LdapServer) -> None:
    """The writer re-reads an entry when the directory disagrees with the state DB (here the
    state DB lost the entry's row: the add finds it there) and diffs only what the sync owns
    (``etl.plan.owned``): an attribute set by the ENT survives."""
    from etl.store.models import Entry

    school(env.landing)
    pipeline.run_sync(env, RunRequest(ACADEMY))
    dn, _ = pupil(server, "1003")
    c = admin_connection(server)
    assert c.modify(dn, {"preferredLanguage": [(ldap3.MODIFY_REPLACE, ["fr-FR"])],
                         "sn": [(ldap3.MODIFY_REPLACE, ["AUTRE"])]})
    c.unbind()
    with Session(get_engine(env.state_url)) as s, s.begin():
        s.query(Entry).filter(Entry.dn == dn).delete()
    sync = resync_from_scratch(env, "02/10/2026")
    assert sync["status"] == "success" and sync["applied"] == 1
    after = entries(server, dn)[dn]
    assert after["preferredLanguage"] == ["fr-FR"] and after["sn"] == ["THOMAS"]
    assert run_audit(env, ACADEMY)["differences"] == 0


def test_logins_taken_in_the_directory_are_never_handed_out(
        env: Settings, server: LdapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts the state DB does not know (another academy's state DB, made by hand) hold
    zoe.martin, zoe.martin2 and zoe.martin4: tonight's Zoé MARTIN gets zoe.martin3, the next
    one zoe.martin5. A name found taken has its next numbers searched at once; the round of
    matching after it searches only the logins handed out anew (here none: zoe.martin3 was
    among those numbers), and no login is ever searched twice."""
    from etl.audit.read import DirectoryReader

    c = admin_connection(server)
    for n, login in enumerate(["zoe.martin", "zoe.martin2", "zoe.martin4"]):
        assert c.add(f"uid=foreign{n},ou=people,{server.base}",
                     ["inetOrgPerson", "ENTPerson"],
                     {"cn": "Zoé Martin", "sn": "Martin", "uid": f"foreign{n}",
                      "ENTPersonLogin": login}), c.result
    c.unbind()
    searched: list[list[str]] = []
    real = DirectoryReader.find_values

    def spy(self: DirectoryReader, base: str, attr: str, values: Any,
            attributes: Any = ("*",)) -> Any:
        if attr == "ENTPersonLogin":
            searched.append(sorted(values))
        return real(self, base, attr, values, attributes)

    monkeypatch.setattr(DirectoryReader, "find_values", spy)
    school(env.landing)
    out = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert out["status"] == "success", out
    assert pupil(server, "1001")[1]["ENTPersonLogin"] == ["zoe.martin3"]
    # the whole group once (10 pupils, a guardian, a teacher), then the numbers after
    # zoe.martin (2-10), then those after zoe.martin4 not searched yet (11-14)
    assert len(searched[0]) == 12 and "zoe.martin" in searched[0], searched
    assert searched[1:] == [sorted(f"zoe.martin{k}" for k in range(2, 11)),
                            sorted(f"zoe.martin{k}" for k in range(11, 15))], searched
    flat = [v for s in searched for v in s]
    assert len(flat) == len(set(flat))
    write_school(env.landing, ACADEMY, UAI, [
        *[Pupil(str(1001 + i), n, "Zoé" if i == 0 else f"Prenom{i}", "3A" if i < 5 else "3B",
                ine=f"07087669{i:02d}HA") for i, n in enumerate(NAMES)],
        Pupil("1097", "MARTIN", "Zoé", "3B", ine="0708766997HA")],
        [Guardian("501", "MARTIN", "Claire", ["1001"])],
        [Teacher("9001", "LEBLANC", "Henri", ["3A", "3B"], head_of=["3A"])], date="03/10/2026")
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["status"] == "success", again
    assert pupil(server, "1097")[1]["ENTPersonLogin"] == ["zoe.martin5"]
    logins = [v["ENTPersonLogin"][0] for v in entries(
        server, f"ou=people,{server.base}", attrs=["ENTPersonLogin"]).values()
              if v.get("ENTPersonLogin")]
    assert len(logins) == len(set(logins))
