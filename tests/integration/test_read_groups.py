"""The CLI reads schools in groups whose GX rules run together (issue 6: GX's fixed cost
per school was most of the read stage): each school must come out as it does read alone
(the DAG's way, one task per school), whatever the group, a crashing GX run or a school that
crashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etl import run as pipeline
from etl.config import Settings
from etl.contracts import dump_all
from etl.devtools.generate import uai_check_letter
from etl.validate import school as validate_school
from tests.builders import Guardian, Pupil, Teacher, write_school
from tests.integration.test_sync import ACADEMY, UAI_A, UAI_B, school_a, school_b

#: a school whose exports break column rules: a mis-decoded name (its file is quarantined),
#: a bad e-mail (the value is blanked)
UAI_C = "0510003" + uai_check_letter("0510003")

#: what a school's read says, without the run's paths
KEYS = ("uai", "status", "counts", "rejected", "school_year", "records_read", "fingerprint",
        "protected")


def _env(tmp_path: Path, state_url: str) -> Settings:
    env = Settings.from_env({"ENTSYNC_LANDING": str(tmp_path / "landing"),
                             "ENTSYNC_WORKDIR": str(tmp_path / "work"),
                             "ENTSYNC_STATE_URL": state_url})
    school_a(env.landing)
    school_b(env.landing)
    write_school(env.landing, ACADEMY, UAI_C,
                 [Pupil("3001", "MARTIN", "Ã©lise", "5A"), Pupil("3002", "LEROY", "Max", "5A")],
                 [Guardian("701", "LEROY", "Ana", ["3002"], email="ana at example.org")],
                 [Teacher("9201", "NOIR", "Eve", ["5A"])])
    return env


def _summary(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["uai"]: {k: r.get(k) for k in KEYS} | {
        "quarantined": [q["file"] for q in r.get("quarantined") or []]} for r in results}


def _read(env: Settings, grouped: int | None) -> dict[str, dict[str, Any]]:
    rid = pipeline.start_run(env, ACADEMY, dry_run=True)
    disc = pipeline.discover_files(env, ACADEMY, rid)
    if grouped is None:
        res = [r for u, d in disc.school_docs().items()
               for r in pipeline.read_validate_schools(env, ACADEMY, rid, {u: d}, True)]
    else:
        res = pipeline.read_validate_schools(env, ACADEMY, rid, disc.school_docs(), True,
                                             group=grouped)
    return _summary(dump_all(res))


def test_a_group_reads_what_each_school_reads_alone(tmp_path: Path, state_url: str) -> None:
    env = _env(tmp_path, state_url)
    alone = _read(env, None)
    assert set(alone) == {UAI_A, UAI_B, UAI_C}
    assert alone[UAI_A]["status"] == alone[UAI_B]["status"] == "ok"
    assert alone[UAI_A]["rejected"] == alone[UAI_B]["rejected"] == 0
    # the mis-decoded name blocks its file, the bad e-mail is blanked, the pupil's link goes
    assert alone[UAI_C]["status"] == "quarantined" and alone[UAI_C]["rejected"] == 3
    assert _read(env, 16) == alone
    assert _read(env, 1) == alone


def test_a_crashing_group_run_falls_back_to_each_school(tmp_path: Path, state_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path, state_url)
    alone = _read(env, None)

    def crash(_schools: list[Any]) -> list[Any]:
        raise RuntimeError("GX fell over")

    monkeypatch.setattr("etl.validate.rules.run_suites", crash)
    assert _read(env, 16) == alone


def test_a_school_that_crashes_leaves_the_others(tmp_path: Path, state_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path, state_url)
    alone = _read(env, None)
    real = validate_school._read_school

    def flaky(settings: Settings, academy: str, run_id: str, uai: str, *a: Any) -> Any:
        if uai == UAI_A:
            raise ValueError("a record the reader chokes on")
        return real(settings, academy, run_id, uai, *a)

    monkeypatch.setattr(validate_school, "_read_school", flaky)
    got = _read(env, 16)
    assert got[UAI_A]["status"] == "error"
    assert got[UAI_B] == alone[UAI_B] and got[UAI_C] == alone[UAI_C]
