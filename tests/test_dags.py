"""The Airflow DAGs: every academy's DAG parses cleanly and cheaply, and one runs end to end.

Airflow never runs in the test process: it would read and write its config and metadata DB
wherever AIRFLOW_HOME points. Every Airflow step runs in a subprocess with its own env.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ldap3
import pytest

from etl.config import load_academies
from etl.generate import generate_academy
from etl.ldapserver import LdapServer
from tests.ldap_fixture import admin_connection

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
AIRFLOW = Path(sys.executable).with_name("airflow")
HEAVY = ("great_expectations", "pandas", "ldap3", "sqlalchemy")

# Runs in a subprocess: what parsing the DAG file imports, then what DagBag makes of the folder.
PROBE = r"""
import json, runpy, sys
import airflow.sdk, pendulum  # what any DAG file pays for; airflow.sdk itself loads sqlalchemy
before = set(sys.modules)
runpy.run_path(sys.argv[1])
added = sorted(set(sys.modules) - before)

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    rv = dag.get_task("read_validate")
    dags[dag_id] = {
        "task_ids": sorted(dag.task_ids),
        "schedule": getattr(dag.timetable, "expression", None),
        "timetable_tz": str(getattr(dag.timetable, "timezone", "")),
        "timezone": str(dag.timezone),
        "params": {k: dag.params[k] for k in dag.params},
        "doc_md": dag.doc_md or "",
        "mapped": sorted(t.task_id for t in dag.tasks if "Mapped" in type(t).__name__),
        "map_index_template": getattr(rv, "map_index_template", None),
        "trigger_rules": {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule)
                          for t in dag.tasks},
    }
print(json.dumps({"added": added,
                  "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                  "dags": dags}))
"""


def _clean_env(airflow_home: Path) -> dict[str, str]:
    """The parent's environment minus any Airflow or entsync settings, with our AIRFLOW_HOME."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ENTSYNC_", "_AIRFLOW"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PATH": f"{AIRFLOW.parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


# --------------------------------------------------------------------------------------------
# Integrity: fast, no slapd
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow_probe")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS / "ent_sync.py")],
        env=_clean_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_dag_file_parses_without_heavy_imports(probe: dict[str, Any]) -> None:
    # airflow.sdk already brings sqlalchemy; what matters is that the DAG file adds none of
    # these, and none of the etl modules that would need them at parse time.
    heavy = [m for m in probe["added"] if m.split(".")[0] in HEAVY]
    assert heavy == []
    etl = {m for m in probe["added"] if m.startswith("etl")}
    assert etl <= {"etl", "etl.config", "etl.errors"}, etl


def test_dagbag_has_one_dag_per_academy(probe: dict[str, Any]) -> None:
    assert probe["import_errors"] == {}
    academies = load_academies()
    assert set(probe["dags"]) == {
        "ent_sync__ac_nancy_metz",
        "ent_sync__ac_reims",
        "ent_sync__ac_strasbourg",
    }
    assert set(probe["dags"]) == {a.dag_id for a in academies.values()}
    for academy in academies.values():
        dag = probe["dags"][academy.dag_id]
        assert {"discover", "read_validate", "reconcile", "apply", "report"} <= set(dag["task_ids"])
        assert dag["mapped"] == ["read_validate"]
        assert "batch" in dag["map_index_template"] and "uai" in dag["map_index_template"]
        assert dag["schedule"] == academy.schedule
        assert dag["timezone"] == dag["timetable_tz"] == "Europe/Paris"
        assert dag["params"] == {"dry_run": False, "schools": [], "mode": None}
        assert "ENT directory sync" in dag["doc_md"]
        # an empty night (read_validate skipped) must still reconcile, apply and report
        for tid in ("reconcile", "apply", "report"):
            assert dag["trigger_rules"][tid] == "none_failed"


# --------------------------------------------------------------------------------------------
# End to end: a real Airflow run against the session slapd
# --------------------------------------------------------------------------------------------


class AirflowRunner:
    """`airflow dags test` in a subprocess, against a throwaway SQLite metadata DB."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env

    def run(self, *args: str, timeout: int = 240) -> str:
        out = subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.home,
        )
        log = out.stdout + out.stderr
        (self.home / "last.log").write_text(log, "utf-8")
        assert out.returncode == 0, f"airflow {' '.join(args)} failed:\n{log[-5000:]}"
        return log

    def dag_test(
        self, dag_id: str, workdir: Path, landing: Path, conf: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run the DAG once and return the summary.json its report task wrote."""
        self.env.update(ENTSYNC_WORKDIR=str(workdir), ENTSYNC_LANDING=str(landing))
        before = set(workdir.glob("reports/*/summary.json"))
        args = ["dags", "test", dag_id]
        if conf is not None:
            args += ["-c", json.dumps(conf)]
        self.run(*args)  # `airflow dags test` exits non-zero when the DAG run failed
        new = set(workdir.glob("reports/*/summary.json")) - before
        assert len(new) == 1, f"expected one new run summary, got {sorted(new)}"
        summary: dict[str, Any] = json.loads(new.pop().read_text("utf-8"))
        return summary


@pytest.fixture(scope="module")
def airflow_runner(tmp_path_factory: pytest.TempPathFactory, slapd: LdapServer) -> AirflowRunner:
    """One Airflow home per module: `airflow db migrate` runs once."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = _clean_env(home)
    env.update(slapd.env())
    # INFO costs ~2 s per run in log rendering; task failures are still logged with traceback
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    runner = AirflowRunner(home, env)
    runner.run("db", "migrate", timeout=180)
    return runner


def _snapshot(conn: ldap3.Connection, base: str) -> dict[str, str]:
    """Every entry's DN and entryCSN: any write to any entry changes it."""
    entries = conn.extend.standard.paged_search(
        base, "(objectClass=*)", attributes=["entryCSN"], paged_size=1000, generator=False
    )
    snap = {
        e["dn"].lower(): str(e["attributes"].get("entryCSN") or "")
        for e in entries
        if e.get("type") == "searchResEntry"
    }
    assert snap and all(snap.values()), "entryCSN missing: the snapshot would prove nothing"
    return snap


def _people(
    conn: ldap3.Connection, base: str, profile: str, school_dns: list[str]
) -> list[dict[str, Any]]:
    rattach = "".join(
        f"(ENTPersonStructRattach={ldap3.utils.conv.escape_filter_chars(d)})" for d in school_dns
    )
    entries = conn.extend.standard.paged_search(
        f"ou=people,{base}",
        f"(&(ENTPersonProfils=National_{profile})(|{rattach}))",
        attributes=["*"],
        paged_size=1000,
        generator=False,
    )
    return [e for e in entries if e.get("type") == "searchResEntry"]


def _lower(values: Any) -> set[str]:
    return {str(v).lower() for v in (values if isinstance(values, list) else [values])}


@pytest.mark.airflow
@pytest.mark.ldap
def test_academy_dag_runs_end_to_end(
    airflow_runner: AirflowRunner, slapd: LdapServer, tmp_path: Path
) -> None:
    academy, dag_id, prefix = "ac-reims", "ent_sync__ac_reims", "AC-REIMS$"
    landing, workdir = tmp_path / "landing", tmp_path / "work"
    gen = generate_academy(landing, academy, schools=2, pupils_per_school=60, seed=4242)
    school_dns = [f"ENTStructureUAI={u},ou=structures,{slapd.base}" for u in gen.schools]

    # 1. first night: everything is created
    first = airflow_runner.dag_test(dag_id, workdir, landing)
    assert first["status"] == "success"
    assert first["applied"] == first["changes"] > 0 and first["failed"] == 0
    assert set(first["schools"]) == set(gen.schools)
    assert {s["status"] for s in first["schools"].values()} == {"ok"}

    conn = admin_connection(slapd)
    try:
        pupils = _people(conn, slapd.base, "ELV", school_dns)
        guardians = _people(conn, slapd.base, "TUT", school_dns)
        teachers = _people(conn, slapd.base, "ENS", school_dns)
        assert 0.9 * gen.pupils <= len(pupils) <= gen.pupils
        assert guardians and teachers
        logins: list[str] = []
        for entries, profile_class in (
            (pupils, "ENTEleve"),
            (guardians, "ENTAuxPersRelEleve"),
            (teachers, "ENTAuxEnseignant"),
        ):
            for e in entries:
                a = e["attributes"]
                object_classes = _lower(a["objectClass"])
                assert {
                    "inetorgperson",
                    "entperson",
                    "entsyncaccount",
                    profile_class.lower(),
                } <= object_classes, e["dn"]
                assert a["ENTPersonJointure"] and all(
                    j.startswith(prefix) for j in a["ENTPersonJointure"]
                ), e["dn"]
                assert len(a["ENTPersonLogin"]) == 1
                logins.append(a["ENTPersonLogin"][0])
                assert a["entSyncStatus"] == ["ACTIVE"]
        assert len(logins) == len(set(logins)), "logins must be unique"
        assert all(e["attributes"]["ENTEleveClasses"] for e in pupils)
        assert all(e["attributes"]["ENTAuxPersRelEleveEleve"] for e in guardians)

        pupil_dns = {e["dn"].lower() for e in pupils}
        for sdn in school_dns:
            conn.search(sdn, "(objectClass=ENTClasse)", attributes=["cn", "member"])
            classes = [e for e in conn.response if e.get("type") == "searchResEntry"]
            assert classes, f"no class under {sdn}"
            assert any(_lower(c["attributes"]["member"]) & pupil_dns for c in classes)

        # 2. same inputs again: nothing to write, nothing written
        before = _snapshot(conn, slapd.base)
        second = airflow_runner.dag_test(dag_id, workdir, landing)
        assert second["status"] == "success"
        assert second["applied"] == 0 and second["changes"] == 0
        assert _snapshot(conn, slapd.base) == before

        shutil.rmtree(landing / academy)
        generate_academy(
            landing,
            academy,
            schools=2,
            pupils_per_school=65,
            seed=4242,
            export_date=dt.date(2026, 10, 2),
        )
        # 3. the next night's exports, in a dry run limited to one school: planned for that
        #    school only, reported, not written
        one = gen.schools[0]
        dry = airflow_runner.dag_test(
            dag_id, workdir, landing, conf={"dry_run": True, "schools": [one.lower()]}
        )
        assert dry["status"] == "dry_run" and dry["dry_run"] is True
        # (the other school may appear as "collateral": its groups lose people disabled here)
        assert {u for u, v in dry["schools"].items() if v["status"] != "collateral"} == {one}
        # a different seed: different people, so tonight's plan also disables last night's
        # accounts and the disable guard holds it (counted apart, still nothing written)
        assert dry["changes"] + dry["held_changes"] > 0 and dry["applied"] == 0
        assert _snapshot(conn, slapd.base) == before
    finally:
        conn.unbind()


@pytest.mark.airflow
@pytest.mark.ldap
def test_dag_run_with_no_school_succeeds(airflow_runner: AirflowRunner, tmp_path: Path) -> None:
    """An empty landing zone: read_validate maps over nothing, the run still reports."""
    landing = tmp_path / "landing"
    landing.mkdir()
    summary = airflow_runner.dag_test("ent_sync__ac_strasbourg", tmp_path / "work", landing)
    assert summary["status"] == "success"
    assert summary["schools"] == {} and summary["changes"] == 0 and summary["applied"] == 0
