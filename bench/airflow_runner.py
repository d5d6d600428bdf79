"""One academy's DagRuns from one long-lived Airflow process, as a running Airflow runs them.

    python -m bench.airflow_runner <dag_id>        (driven by bench.run)

`airflow dags test` starts a process per DagRun, and in it Airflow builds its in-process
Execution API (Cadwyn generating the versioned FastAPI routers: ~4 s of CPU on this machine
kind, ~6-9 s with three academies starting at once on two cores) when the DagRun's first task
starts, so inside the DagRun's window. A deployed Airflow's API server builds it once, when it
starts, not per DagRun.

This runner pays Airflow's start once: it imports Airflow, parses the DAG file and builds
the Execution API (its first request, as on a fresh API server), then reports ``{"ready":
true, "start_s": ...}``. For each line read on stdin, ``{"landing": "<dir>"}``, it forks a
fresh process that runs one DagRun exactly as `airflow dags test <dag_id>` does (``DAG.test``:
the same in-process supervisor and task runner), with ``ENTSYNC_LANDING`` set to that folder,
and reports ``{"state": ..., "s": ..., "cpu_s": ..., "rss_mib": ...}`` (the child's wall
time, CPU and peak RSS). A fresh process per DagRun, as a fresh task process: nothing the
tasks import or cache (pandas, GX, the sync's own modules) carries from one night to the
next, so each night pays them as the CLI's process does. An empty line or EOF ends it.

The protocol goes through the process's original stdout; everything Airflow and the tasks
print goes to stderr (the night's log).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO


def _say(out: TextIO, doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc) + "\n")
    out.flush()


def _warm_up(api: Any) -> None:
    """The Execution API's first request (Cadwyn builds its versioned routers then), on an
    event loop that is closed again: the process forks with one thread."""
    import asyncio

    import httpx

    async def health() -> None:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as c:
            (await c.get("/health")).raise_for_status()

    asyncio.run(health())


def _dag_run(dag: Any, landing: str) -> int:
    """In the forked child: one DagRun; the exit code says how it ended."""
    from airflow.sdk import timezone

    os.environ["ENTSYNC_LANDING"] = landing
    try:
        dr = dag.test(logical_date=timezone.utcnow())
        ok = dr is not None and str(dr.state) == "success"
    except BaseException:  # noqa: BLE001 - the log has the traceback; the bench fails the night
        import traceback

        traceback.print_exc()
        ok = False
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dag_id = args[0]
    # the protocol keeps the original stdout; fd 1 (Airflow's console logging, task output)
    # goes to stderr from here on
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    t0 = time.perf_counter()

    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from airflow.utils.cli import get_bagged_dag

    dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)
    _warm_up(in_process_api_server())  # lru-cached: the DagRuns' supervisor gets this one
    for _ in range(100):  # the request's worker thread ends with its event loop
        if threading.active_count() == 1:
            break
        time.sleep(0.05)
    else:
        names = [t.name for t in threading.enumerate()]
        raise SystemExit(f"threads {names} still running: refusing to fork")
    _say(out, {"ready": True, "start_s": round(time.perf_counter() - t0, 3),
               "pandas": "pandas" in sys.modules})

    for line in sys.stdin:
        if not line.strip():
            break
        cmd = json.loads(line)
        sys.stderr.flush()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the DagRun's process
            code = 1
            try:
                code = _dag_run(dag, str(cmd["landing"]))
            finally:
                sys.stderr.flush()
                os._exit(code)
        _pid, status, usage = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        _say(out, {"state": "success" if code == 0 else f"failed (exit {code})",
                   "s": round(time.perf_counter() - t0, 3),
                   "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                   "rss_mib": round(usage.ru_maxrss / 1024, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
