"""Where an academy's DagRun spends its time, task by task, against the CLI on the same work.

    python -m bench.airflow_overhead [--schools 3] [--pupils 200] [--seed 7] [--keep DIR]
                                     [--academy ac-reims]

Three nights as in `make bench` (initial load, the same content re-exported, a 2 % delta),
each once through `airflow dags test` (SQLite metadata DB, LOGGING_LEVEL=WARNING as in the
bench) on one fresh slapd and once through `entsync sync` on another. For each Airflow night:
the process's wall time, the DagRun's own duration (dag_run start_date -> end_date), every
task instance's duration and the gaps between them (from the metadata DB). One JSON document
on stdout (and DIR/result.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.mutate import mutate_landing
from bench.run import BIN, REPO, _check, clean_env, timed
from etl.config import load_academies
from etl.devtools.generate import generate_academy
from etl.devtools.slapd import start_slapd, stop_slapd

NIGHTS = {"initial": dt.date(2026, 10, 1), "noop": dt.date(2026, 10, 2),
          "delta": dt.date(2026, 10, 3)}


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value).timestamp()


def dag_run_timings(db: Path, dag_id: str) -> dict[str, Any]:
    """The last DagRun of `dag_id`: its duration and its task instances in start order."""
    with closing(sqlite3.connect(db)) as conn:
        run_id, start, end, state = conn.execute(
            "SELECT run_id, start_date, end_date, state FROM dag_run WHERE dag_id = ? "
            "ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        rows = conn.execute(
            "SELECT task_id, map_index, state, start_date, end_date, rendered_map_index "
            "FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).fetchall()
    t0, t1 = _ts(start), _ts(end)
    assert t0 is not None and t1 is not None
    tasks = []
    for task_id, map_index, ti_state, s, e, label in rows:
        ts, te = _ts(s), _ts(e)
        name = task_id + ("" if map_index < 0 else f"[{map_index}]")
        tasks.append({"task": name, "state": ti_state, "uai": (label or "").split(" ")[0],
                      "start": None if ts is None else round(ts - t0, 2),
                      "s": None if ts is None or te is None else round(te - ts, 2)})
    tasks.sort(key=lambda t: (t["start"] is None, t["start"] or 0.0))
    ran = [t for t in tasks if t["s"] is not None]
    busy = sum(t["s"] for t in ran)
    return {"state": state, "dag_run_s": round(t1 - t0, 2), "tasks_run": len(ran),
            "tasks_total": len(tasks), "task_s": round(busy, 2), "tasks": tasks}


#: the pipeline stage (run_metrics) each task runs
STAGES = {"read.discover": "discover", "read.read_validate": "read_validate",
          "plan.reconcile": "reconcile", "write.apply": "apply", "close.report": "report"}


def add_work(timings: dict[str, Any], state_db: Path) -> None:
    """Each task's own work (the stage's duration_s in the sync run's metrics) and what
    Airflow added around it (the task instance's duration minus that work)."""
    with closing(sqlite3.connect(state_db)) as conn:
        (run_id,) = conn.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        work = {(stage, uai or ""): value for stage, uai, value in conn.execute(
            "SELECT stage, uai, value FROM run_metrics WHERE run_id = ? AND name = 'duration_s'",
            (run_id,))}
    total = 0.0
    for t in timings["tasks"]:
        stage = STAGES.get(t["task"].split("[")[0])
        w = work.get((stage, t["uai"] if stage == "read_validate" else ""), 0.0)
        total += w
        if t["s"] is not None:
            t["work_s"], t["overhead_s"] = round(w, 2), round(t["s"] - w, 2)
    timings["work_s"] = round(total, 2)
    # what Airflow adds inside the DagRun (task start/end, XComs, scheduling loop, the first
    # task's in-process API start) and around it (process start, DAG parsing, exit)
    timings["in_run_overhead_s"] = round(timings["dag_run_s"] - total, 2)
    timings["outside_run_s"] = round(timings["wall_s"] - timings["dag_run_s"], 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--academy", default="ac-reims", choices=list(load_academies()))
    p.add_argument("--schools", type=int, default=3)
    p.add_argument("--pupils", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    p.add_argument("--no-cli", action="store_true", help="only the Airflow runs")
    p.add_argument("--dags", type=Path, default=REPO / "dags",
                   help="the DAGs folder (e.g. an older ent_sync.py to compare with)")
    a = p.parse_args()
    root = (a.keep or Path(tempfile.mkdtemp(prefix="af-overhead-"))).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    dag_id = load_academies()[a.academy].dag_id
    for night, date in NIGHTS.items():
        generate_academy(root / f"landing-{night}", a.academy, a.schools, a.pupils, a.seed,
                         export_date=date)
    mutate_landing(root / "landing-delta", share=0.02, seed=a.seed)
    logs = root / "logs"
    result: dict[str, Any] = {"academy": a.academy, "schools": a.schools, "pupils": a.pupils,
                              "airflow": {}, "cli": {}}
    servers = [root / "slapd-af", root / "slapd-cli"]
    try:
        af = start_slapd(servers[0])
        home, work = root / "airflow", root / "work-af"
        env = clean_env(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(a.dags.resolve()),
                        AIRFLOW__CORE__LOAD_EXAMPLES="False",
                        AIRFLOW__CORE__UNIT_TEST_MODE="False",
                        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
                        ENTSYNC_WORKDIR=str(work), PYTHONPATH=str(REPO), **af.env())
        home.mkdir()
        _check(timed([str(BIN / "airflow"), "db", "migrate"], env, logs / "airflow-db.log"),
               "airflow db migrate")
        for night in NIGHTS:
            env["ENTSYNC_LANDING"] = str(root / f"landing-{night}")
            t = timed([str(BIN / "airflow"), "dags", "test", dag_id], env,
                      logs / f"airflow-{night}.log")
            _check(t, f"airflow dags test {dag_id} ({night})")
            timings = dag_run_timings(home / "airflow.db", dag_id)
            timings["wall_s"] = round(t.seconds, 2)
            timings["cpu_s"] = round(t.cpu_s, 2)
            timings["load"] = round(os.getloadavg()[0], 2)
            add_work(timings, work / "state.db")
            result["airflow"][night] = timings
            print(f"airflow {night}: wall {t.seconds:.2f} s, dag run {timings['dag_run_s']} s, "
                  f"{timings['tasks_run']} tasks ran, {timings['task_s']} s in tasks",
                  file=sys.stderr, flush=True)
        if not a.no_cli:
            cli = start_slapd(servers[1])
            for night in NIGHTS:
                env = clean_env(ENTSYNC_WORKDIR=str(root / "work-cli"),
                                ENTSYNC_LANDING=str(root / f"landing-{night}"), **cli.env())
                start = time.perf_counter()
                t = timed([str(BIN / "entsync"), "sync", "--academy", a.academy, "--json"], env,
                          logs / f"cli-{night}.log", stdout=logs / f"cli-{night}.json")
                _check(t, f"entsync sync ({night})")
                result["cli"][night] = {"wall_s": round(time.perf_counter() - start, 2),
                                        "cpu_s": round(t.cpu_s, 2)}
    finally:
        for folder in servers:
            stop_slapd(folder)
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    for night in NIGHTS:
        af_n, cli_n = result["airflow"][night], result["cli"].get(night)
        if cli_n:
            af_n["vs_cli"] = round(af_n["wall_s"] / cli_n["wall_s"], 2)
    text = json.dumps(result, indent=1)
    if a.keep is not None:
        (root / "result.json").write_text(text, "utf-8")
    print(text)


if __name__ == "__main__":
    main()
