"""The GAR export DAG runs because the sync changed the directory: a real `airflow standalone`
(``etl.devtools.airflow_dev``, its own home, a slapd of the test's own) runs ac-reims's sync
DAG, whose ``publish`` task emits the directory's asset event; the scheduler then starts
``gar_export__ac_reims`` on its own (an ``asset_triggered`` run: the test never triggers it),
which exports, checks against the GAR-ENT schema and delivers to a folder."""

from __future__ import annotations

import json
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from lxml import etree

from etl.config import get_academy
from etl.devtools.airflow_dev import DevAirflowConfig, RunningAirflow, running
from etl.devtools.generate import generate_academy
from etl.devtools.slapd import stop_slapd
from tests.paths import SAMPLES

pytestmark = [pytest.mark.airflow, pytest.mark.ldap]

ACADEMY = "ac-reims"
SYNC, GAR = get_academy(ACADEMY).dag_id, get_academy(ACADEMY).gar_dag_id
XSD = SAMPLES / "gar" / "GAR-ENT.xsd"
TIMEOUT_S = 240  # a sync run then an export on a loaded 2-core machine


@pytest.fixture
def af(tmp_path: Path) -> Iterator[tuple[RunningAirflow, Path]]:
    if not XSD.is_file():
        pytest.skip("../shared/samples/gar is not present")
    inbox = tmp_path / "gar-inbox"
    env = (("ENTSYNC_GAR_ENT_ID", "ENTTEST"), ("ENTSYNC_GAR_XSD", str(XSD)),
           ("ENTSYNC_GAR_TARGET", str(inbox)))
    cfg = replace(DevAirflowConfig.local(demo=tmp_path / "demo", home=tmp_path / "airflow",
                                         academies=(ACADEMY,)), extra_env=env)
    generate_academy(cfg.landing, ACADEMY, 2, 40, seed=11)
    try:
        with (tmp_path / "standalone.log").open("ab") as out, running(cfg, output=out) as a:
            yield a, inbox
    finally:
        stop_slapd(cfg.slapd_dir)


def _api(af: RunningAirflow, method: str, path: str, body: Any = None) -> Any:
    url = f"{af.cfg.url}/api/v2{path}"
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, method=method, data=None if body is None else
                                 json.dumps(body).encode(), headers={
                                     "Authorization": f"Bearer {af.token}",
                                     "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read().decode("utf-8"))


def _runs(af: RunningAirflow, dag_id: str) -> list[dict[str, Any]]:
    return list(_api(af, "GET", f"/dags/{dag_id}/dagRuns?limit=50")["dag_runs"])


def _wait(what: str, probe: Any, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"{what}: not after {timeout:.0f}s")


def test_the_export_runs_on_the_directory_asset(af: tuple[RunningAirflow, Path]) -> None:
    a, inbox = af
    for dag_id in (SYNC, GAR):
        _api(a, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
    run = _api(a, "POST", f"/dags/{SYNC}/dagRuns", {"logical_date": None})
    sync_id = quote(str(run["dag_run_id"]), safe="")
    state = _wait("the sync's run to end", lambda: (
        s if (s := _api(a, "GET", f"/dags/{SYNC}/dagRuns/{sync_id}")["state"])
        in ("success", "failed") else None))
    assert state == "success"

    def exported() -> dict[str, Any] | None:
        done = [r for r in _runs(a, GAR) if r["run_type"] == "asset_triggered"
                and r["state"] in ("success", "failed")]
        return done[0] if done else None

    gar_run = _wait("an asset-triggered GAR export", exported)
    assert gar_run["state"] == "success", gar_run
    # the scheduler started it from the sync's event; nobody triggered it by hand (the
    # nightly fallback may have run too, as "scheduled", when the DAG was unpaused)
    assert {r["run_type"] for r in _runs(a, GAR)} <= {"asset_triggered", "scheduled"}
    events = _api(a, "GET", f"/assets/events?source_dag_id={SYNC}")["asset_events"]
    assert len(events) == 1

    # delivered: each archive with its md5; every file inside valid against the schema
    archives = sorted(inbox.glob("ENTTEST_GAR-ENT_Complet_*_2D.tar.gz"))
    assert archives
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    for archive in archives:
        assert archive.with_name(archive.name.replace(".tar.gz", ".md5")).is_file()
        _check_archive(archive, schema)


def _check_archive(archive: Path, schema: etree.XMLSchema) -> None:
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert {n.rsplit("_", 2)[1] for n in names} == {
            "Etab", "Eleve", "Enseignant", "Groupe", "RespAff"}
        for m in tar.getmembers():
            tree = etree.parse(tar.extractfile(m))  # type: ignore[arg-type]
            assert schema.validate(tree), (m.name, schema.error_log)
            if "_Eleve_" in m.name:
                assert len(tree.getroot()) > 0
