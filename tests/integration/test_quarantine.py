"""Issue 19, items 1 and 8: the quarantine keeps every bad file, byte for byte, under its
school, with its reason beside it; a file that changed between discovery and reading is
refused (its school left untouched), not quarantined.

Against a real slapd and a real state DB (the ``env`` fixture)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from etl import cli
from etl import run as pipeline
from etl.config import Settings
from etl.contracts import RunRef, RunRequest
from etl.devtools.slapd import LdapServer
from etl.discover import quarantine as quarantine_mod
from etl.store.models import utcnow
from tests.builders import Pupil, eleves_xml, write_zip
from tests.integration.test_sync import ACADEMY, UAI_A, UAI_B, people, school_a, school_b, search

pytestmark = pytest.mark.ldap
PUPILS_ZIP = "ExportXML_ElevesSansAdresses.zip"


def truncate_pupils(landing: Path, uai: str) -> Path:
    """Cut a school's pupils export in half (a truncated upload): a file to quarantine."""
    p = landing / ACADEMY / uai / PUPILS_ZIP
    with zipfile.ZipFile(p) as zf:
        (name,) = zf.namelist()
        text = zf.read(name)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(name, text[: len(text) // 2])
    return p


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reason_of(entry: dict[str, Any]) -> dict[str, Any]:
    rfile = Path(entry["reason_file"])
    assert rfile == Path(entry["moved_to"] + ".reason.json")
    out: dict[str, Any] = json.loads(rfile.read_text("utf-8"))
    return out


def test_same_named_files_of_two_schools_are_both_kept(env: Settings,
                                                       server: LdapServer) -> None:
    """Both schools send ExportXML_ElevesSansAdresses.zip, both truncated: two copies, each
    byte for byte the school's own, each with its reason; the originals leave the landing
    zone only once kept."""
    school_a(env.landing)
    school_b(env.landing)
    originals = {u: truncate_pupils(env.landing, u).read_bytes() for u in (UAI_A, UAI_B)}
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["status"] == "success"
    assert {summary["schools"][u]["status"] for u in (UAI_A, UAI_B)} == {"quarantined"}
    q = {e["uai"]: e for e in summary["quarantined"]}
    assert set(q) == {UAI_A, UAI_B} and len(summary["quarantined"]) == 2
    assert q[UAI_A]["moved_to"] != q[UAI_B]["moved_to"]
    for uai, data in originals.items():
        kept = Path(q[uai]["moved_to"])
        assert kept.read_bytes() == data  # byte for byte, not the other school's
        assert kept.parent.name == uai and kept.name == PUPILS_ZIP
        assert kept.parent.parent.name == summary["run_id"]
        why = reason_of(q[uai])
        assert why["sha256"] == sha(data) and why["size"] == len(data)
        assert why["run_id"] == summary["run_id"] and why["schools"] == [uai]
        (problem,) = why["problems"]
        assert problem["school"] == uai and problem["member"] == "ElevesSansAdresses.xml"
        assert problem["rule"] == "file_rejected" and "truncated" in problem["reason"]
        assert why["removed_from_landing"] is True
        assert not (env.landing / ACADEMY / uai / PUPILS_ZIP).exists()
        assert q[uai]["removed_from_landing"] is True
    # no personal data in the reason files
    text = " ".join(Path(e["reason_file"]).read_text("utf-8") for e in q.values())
    assert not any(n in text for n in ("MARTIN", "ROBERT", "Zoé", "Jules", "2012"))
    # nothing of either school was written
    assert people(server, "ELV") == []


def _two_school_zip(landing: Path, bad: set[str]) -> Path:
    """One zip holding both schools' pupils exports (members A.xml and B.xml); those of the
    schools in ``bad`` cut in half."""
    p = landing / ACADEMY / PUPILS_ZIP
    p.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for uai, member, pupils in (
                (UAI_A, "A.xml", [Pupil("1001", "MARTIN", "Zoé", "3A", ine="070876696HA")]),
                (UAI_B, "B.xml", [Pupil("2001", "ROBERT", "Jules", "6A", ine="111111111AA")])):
            data = eleves_xml(uai, pupils).encode()
            zf.writestr(member, data[: len(data) // 2] if uai in bad else data)
    return p


def test_a_zip_of_two_schools_is_kept_once_and_left_while_a_member_is_good(
        env: Settings, server: LdapServer) -> None:
    zpath = _two_school_zip(env.landing, bad={UAI_A})
    data = zpath.read_bytes()
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert summary["schools"][UAI_A]["status"] == "quarantined"
    assert summary["schools"][UAI_B]["status"] == "ok"  # its member was read, and applied
    assert len(people(server, "ELV")) == 1
    (e,) = summary["quarantined"]
    kept = Path(e["moved_to"])
    assert kept.read_bytes() == data and kept.parent.name == "plusieurs-uai"
    assert zpath.read_bytes() == data  # B's member is good: the zip stays where it is
    why = reason_of(e)
    assert [p["member"] for p in why["problems"]] == ["A.xml"]
    assert why["removed_from_landing"] is False and e["removed_from_landing"] is False

    # both members bad: the zip is kept once, with both problems, and then leaves the landing
    zpath = _two_school_zip(env.landing, bad={UAI_A, UAI_B})
    data = zpath.read_bytes()
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert len(summary["quarantined"]) == 2
    assert len({q["moved_to"] for q in summary["quarantined"]}) == 1
    why = reason_of(summary["quarantined"][0])
    assert sorted((p["member"], p["school"]) for p in why["problems"]) == [
        ("A.xml", UAI_A), ("B.xml", UAI_B)]
    assert why["schools"] == sorted([UAI_A, UAI_B]) and why["sha256"] == sha(data)
    assert why["removed_from_landing"] is True and not zpath.exists()
    assert Path(summary["quarantined"][0]["moved_to"]).read_bytes() == data


def test_a_file_naming_no_school_is_kept_apart(env: Settings) -> None:
    src = env.landing / ACADEMY / "orphan.xml"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"<BEE_ELEVES>")
    run_id = pipeline.start_run(env, ACADEMY)
    e = quarantine_mod.keep(env, ACADEMY, run_id, {"path": str(src), "member": None,
                                                   "uai": None, "kind": None},
                            "no UAJ", rule="file_rejected")
    kept = Path(e["moved_to"])
    assert kept.parent.name == "sans-uai" and kept.read_bytes() == b"<BEE_ELEVES>"
    assert reason_of(e)["schools"] == [] and not src.exists()


def test_dry_run_and_check_move_nothing(env: Settings, server: LdapServer,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    school_a(env.landing)
    bad = truncate_pupils(env.landing, UAI_A)
    data = bad.read_bytes()
    summary = pipeline.run_sync(env, RunRequest(ACADEMY, dry_run=True))
    assert summary["schools"][UAI_A]["status"] == "quarantined"
    assert summary["quarantined"][0]["moved_to"] == str(bad)
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    assert cli.main(["check", "--academy", ACADEMY, "--landing", str(env.landing),
                     "--workdir", str(env.workdir), "--state-url", env.state_url,
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schools"][UAI_A]["status"] == "quarantined"
    assert bad.read_bytes() == data
    assert not env.quarantine_dir.exists() or not any(
        p.is_file() and not p.name.startswith(".") for p in env.quarantine_dir.rglob("*"))


def test_quarantine_on_another_filesystem(env: Settings, server: LdapServer,
                                          tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    work = other / f"entsync-q-{tmp_path.name}-{os.getpid()}"
    try:
        from dataclasses import replace

        st = replace(env, workdir=work)
        school_a(st.landing)
        data = truncate_pupils(st.landing, UAI_A).read_bytes()
        summary = pipeline.run_sync(st, RunRequest(ACADEMY))
        (e,) = summary["quarantined"]
        kept = Path(e["moved_to"])
        assert kept.is_relative_to(work) and kept.read_bytes() == data
        assert os.stat(kept).st_dev != os.stat(st.landing).st_dev
        assert not (st.landing / ACADEMY / UAI_A / PUPILS_ZIP).exists()
        # no temporary copy left behind
        assert {p.name for p in kept.parent.iterdir()} == {kept.name,
                                                            kept.name + ".reason.json"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Crash(BaseException):
    """The process dies (kill -9) between the copy and the removal of the original."""


def test_a_crash_between_copy_and_removal_loses_nothing(env: Settings, server: LdapServer,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    school_a(env.landing)
    bad = truncate_pupils(env.landing, UAI_A)
    data = bad.read_bytes()

    def crash(*_a: Any) -> bool:
        raise Crash

    monkeypatch.setattr(quarantine_mod, "_remove_original", crash)
    with pytest.raises(Crash):
        pipeline.run_sync(env, RunRequest(ACADEMY))
    monkeypatch.undo()
    assert bad.read_bytes() == data  # the original is still there ...
    copies = [p for p in env.quarantine_dir.rglob(PUPILS_ZIP)]
    assert len(copies) == 1 and copies[0].read_bytes() == data  # ... and so is its copy
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI_A]["status"] == "quarantined"
    (e,) = again["quarantined"]
    assert Path(e["moved_to"]).read_bytes() == data and not bad.exists()


def test_a_retried_read_finds_the_file_it_already_kept(env: Settings,
                                                       server: LdapServer) -> None:
    """An Airflow retry of read_validate (same run) after the file was kept and removed:
    quarantined again from the copy, not taken for a file that changed."""
    school_a(env.landing)
    truncate_pupils(env.landing, UAI_A)
    run_id = pipeline.start_run(env, ACADEMY)
    disc = pipeline.discover_files(env, ACADEMY, run_id)
    (first,) = pipeline.read_validate_schools(env, ACADEMY, run_id, disc.school_docs())
    (retry,) = pipeline.read_validate_schools(env, ACADEMY, run_id, disc.school_docs())
    assert first.status == retry.status == "quarantined"
    assert [q["moved_to"] for q in retry.quarantined] == [
        q["moved_to"] for q in first.quarantined]


def test_status_and_report_point_to_the_kept_file(env: Settings, server: LdapServer,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    school_a(env.landing)
    truncate_pupils(env.landing, UAI_A)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    (e,) = summary["quarantined"]
    assert cli.main(["status", "--state-url", env.state_url, "--workdir", str(env.workdir),
                     "--academy", ACADEMY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (q,) = out["academies"][0]["last_run"]["quarantined"]
    assert q["path"] == e["moved_to"] and Path(q["path"]).exists()
    assert q["school"] == UAI_A and q["reason_file"] == e["reason_file"]
    assert cli.main(["status", "--state-url", env.state_url, "--workdir", str(env.workdir),
                     "--academy", ACADEMY]) == 0
    assert e["moved_to"] in capsys.readouterr().out
    html = (env.reports_dir / summary["run_id"] / "report.html").read_text("utf-8")
    assert e["moved_to"] in html


def test_old_quarantine_folders_are_purged(env: Settings, server: LdapServer) -> None:
    from dataclasses import replace

    school_a(env.landing)
    truncate_pupils(env.landing, UAI_A)
    summary = pipeline.run_sync(env, RunRequest(ACADEMY))
    folder = env.quarantine_dir / ACADEMY / summary["run_id"]
    assert folder.is_dir()
    assert quarantine_mod.purge_quarantine(env, ACADEMY)["runs"] == 0  # ended today
    later = utcnow() + dt.timedelta(days=91)
    dry = quarantine_mod.purge_quarantine(env, ACADEMY, now=later, dry_run=True)
    assert dry["runs"] == 1 and dry["files"] == 1 and folder.is_dir()
    short = replace(env, quarantine_keep_days=100)
    assert quarantine_mod.purge_quarantine(short, ACADEMY, now=later)["runs"] == 0
    assert quarantine_mod.purge_quarantine(env, ACADEMY, now=later)["runs"] == 1
    assert not folder.exists()
    assert Settings.from_env({"ENTSYNC_QUARANTINE_KEEP_DAYS": "7"}).quarantine_keep_days == 7


# --- item 8: a file that changes between discovery and reading ------------------------------


def _sync_in_stages(env: Settings, between: Any) -> dict[str, Any]:
    """``run_sync``'s stages one by one (as the DAG's tasks run them, minutes apart), with
    ``between`` done after discovery."""
    run_id = pipeline.start_run(env, ACADEMY)
    disc = pipeline.discover_files(env, ACADEMY, run_id)
    between()
    results = pipeline.read_validate_schools(env, ACADEMY, run_id, disc.school_docs())
    rec = pipeline.reconcile(env, ACADEMY, run_id, results)
    app = pipeline.apply_plan(env, ACADEMY, run_id, rec.plan)
    return pipeline.finish_run(env, RunRef(academy=ACADEMY, run_id=run_id), disc, results, rec,
                               app)


def _no_quarantine(env: Settings) -> bool:
    return not env.quarantine_dir.exists() or not any(
        p.is_file() and not p.name.startswith(".") for p in env.quarantine_dir.rglob("*"))


def test_a_file_rewritten_after_discovery_is_refused_not_quarantined(
        env: Settings, server: LdapServer) -> None:
    school_a(env.landing)
    school_b(env.landing)
    sts = env.landing / ACADEMY / UAI_A / f"sts_emp_{UAI_A}_2026.xml"
    # the same size, other bytes: only the sha256 can tell
    original = sts.read_text("utf-8")

    def rewrite() -> None:
        text = original.replace("LEBLANC", "LEBLANX")
        assert len(text) == len(original) and text != original
        sts.write_text(text, "utf-8")

    summary = _sync_in_stages(env, rewrite)
    a = summary["schools"][UAI_A]
    assert a["status"] == "file_changed" and "changed since discovery" in a["reason"]
    assert summary["schools"][UAI_B]["status"] == "ok"  # the other school goes on
    assert summary["status"] == "success" and summary["quarantined"] == []
    assert _no_quarantine(env) and sts.exists()
    assert not search(server, "(sn=LEBLANX)", f"ou=people,{server.base}")
    assert {p["sn"][0] for p in people(server, "ELV")} == {"ROBERT"}  # nothing of A
    # the next run discovers it again and applies it
    again = pipeline.run_sync(env, RunRequest(ACADEMY))
    assert again["schools"][UAI_A]["status"] == "ok"
    assert search(server, "(sn=LEBLANX)", f"ou=people,{server.base}")


@pytest.mark.parametrize("swap", ["symlink", "fifo", "directory", "gone", "zip_rewritten"])
def test_a_file_replaced_after_discovery_is_refused(env: Settings, server: LdapServer,
                                                    tmp_path: Path, swap: str) -> None:
    school_a(env.landing)
    pupils = env.landing / ACADEMY / UAI_A / PUPILS_ZIP
    elsewhere = tmp_path / "elsewhere.zip"
    shutil.copyfile(pupils, elsewhere)

    def replace_it() -> None:
        pupils.unlink()
        if swap == "symlink":
            pupils.symlink_to(elsewhere)
        elif swap == "fifo":
            os.mkfifo(pupils)  # reading it would block: refused without opening it for long
        elif swap == "directory":
            pupils.mkdir()
        elif swap == "zip_rewritten":
            write_zip(pupils, "ElevesSansAdresses.xml", eleves_xml(
                UAI_A, [Pupil("1001", "AUTRE", "Zoé", "3A", ine="070876696HA")]))

    summary = _sync_in_stages(env, replace_it)
    a = summary["schools"][UAI_A]
    assert a["status"] == "file_changed", a
    assert {"symlink": "symbolic link", "fifo": "regular file", "directory": "regular file",
            "gone": "gone", "zip_rewritten": "since discovery"}[swap] in a["reason"]
    assert summary["quarantined"] == [] and _no_quarantine(env)
    assert people(server, "ELV") == [] and people(server, "TUT") == []
