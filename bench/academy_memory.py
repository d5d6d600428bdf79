"""Peak memory of one academy's sync, night by night (issue 6: bounded memory at scale).

    python -m bench.academy_memory [--scale 0.1] [--academy ac-nancy-metz] [--seed 7]
                                   [--keep DIR] [--workers 4] [--nights initial,delta]
                                   [--env ENTSYNC_X=V ...]

Generates the region landing (only the academy's folder is kept) for an initial night and a
2 % delta night (``bench.mutate``, on a copy with a later export date), or reuses it from
``--keep DIR``; starts a fresh slapd and a fresh state DB; runs ``entsync sync --academy X
--json`` as a subprocess per night and prints its wall time and peak RSS (wait4 rusage), the
peak RSS of a child that only imports what the sync imports (the baseline), and each stage's
``duration_s`` and ``peak_rss_mib`` from the run's ``run_metrics`` (read_validate: the
schools' durations summed, their peaks' maximum). Figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.run import BIN, clean_env, timed

NIGHTS = {"initial": dt.date(2026, 10, 1), "delta": dt.date(2026, 10, 3)}
STAGES = ("discover", "read_validate", "reconcile", "apply", "report")
#: what `entsync sync` imports before it reads anything: the baseline of its peak RSS
IMPORTS = ("import pandas, pyarrow, sqlalchemy, ldap3, lxml.etree; "
           "import etl.cli, etl.run, etl.apply.writer, etl.plan.desired, etl.plan.diff, "
           "etl.plan.scope, etl.plan.guards, etl.validate.rules, etl.read, etl.read.normalize, "
           "etl.match.identity, etl.match.matcher, etl.report.page, etl.validate.feedback")


def generate(root: Path, academy: str, scale: float, seed: int) -> dict[str, Any]:
    """The landing of each night under ``root/landing-<night>/<academy>`` (kept when done)."""
    from bench.mutate import mutate_landing
    from etl.devtools.generate import generate_region

    info: dict[str, Any] = {}
    for night, date in NIGHTS.items():
        land = root / f"landing-{night}"
        done = land / ".done"
        if done.exists():
            info[night] = json.loads(done.read_text("utf-8"))
            continue
        shutil.rmtree(land, ignore_errors=True)
        t = time.perf_counter()
        generate_region(land, scale, seed, export_date=date)
        for other in land.iterdir():
            if other.is_dir() and other.name != academy:
                shutil.rmtree(other)
        meta: dict[str, Any] = {"generate_s": round(time.perf_counter() - t, 1)}
        if night == "delta":
            counts = mutate_landing(land, share=0.02, seed=seed)
            meta["mutations"] = dict(counts)
        done.write_text(json.dumps(meta), "utf-8")
        info[night] = meta
    return info


def baseline_rss(env: dict[str, str], logs: Path) -> float:
    """Peak RSS (MiB) of a child that only imports the sync's modules."""
    t = timed([sys.executable, "-c", IMPORTS], env, logs / "imports.log")
    if t.rc != 0:
        raise SystemExit(f"imports child failed, see {t.log}")
    return t.rss_mib


def stage_metrics(state_db: Path, run_id: str) -> dict[str, dict[str, float]]:
    """Per stage: duration_s (summed over schools) and peak_rss_mib (max over schools), and
    the run's process-wide peak when recorded."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with sqlite3.connect(state_db) as db:
        rows = db.execute("select stage, name, value from run_metrics where run_id = ?",
                          (run_id,)).fetchall()
    for stage, name, value in rows:
        if name == "duration_s":
            out[stage]["duration_s"] = out[stage].get("duration_s", 0.0) + value
        elif name in ("peak_rss_mib", "process_peak_rss_mib"):
            out[stage][name] = max(out[stage].get(name, 0.0), value)
        elif name in ("changes", "planned", "applied", "persons"):
            out[stage][name] = out[stage].get(name, 0.0) + value
    return dict(out)


def entries_of(state_db: Path) -> int:
    with sqlite3.connect(state_db) as db:
        return int(db.execute("select count(*) from entries").fetchone()[0])


def main() -> None:
    from etl.devtools.slapd import start_slapd, stop_slapd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--academy", default="ac-nancy-metz")
    ap.add_argument("--keep", help="work here (the landing is reused from there)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--nights", default=",".join(NIGHTS))
    ap.add_argument("--env", action="append", default=[], metavar="ENTSYNC_X=V",
                    help="a setting for the syncs (e.g. ENTSYNC_PLAN_GROUP=0: each night "
                         "planned whole); repeatable")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    nights = [n for n in a.nights.split(",") if n]
    for n in nights:
        if n not in NIGHTS:
            raise SystemExit(f"unknown night {n} (one of {', '.join(NIGHTS)})")

    tmp = None if a.keep else tempfile.TemporaryDirectory(prefix="entsync-mem-")
    root = Path(a.keep or (tmp.name if tmp else ".")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    gen = generate(root / f"scale-{a.scale}-seed-{a.seed}", a.academy, a.scale, a.seed)
    land_root = root / f"scale-{a.scale}-seed-{a.seed}"
    work, slapd_dir = root / "work", root / "slapd"
    stop_slapd(slapd_dir)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(slapd_dir, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)
    server = start_slapd(slapd_dir)
    results: dict[str, Any] = {"scale": a.scale, "seed": a.seed, "academy": a.academy,
                               "generate": gen, "nights": {}}
    try:
        env = clean_env(ENTSYNC_WORKDIR=str(work), **server.env())
        for kv in a.env:
            k, _, v = kv.partition("=")
            if not k.startswith("ENTSYNC_") or not _:
                raise SystemExit(f"--env takes ENTSYNC_NAME=value, not {kv!r}")
            env[k] = v
        results["imports_rss_mib"] = round(baseline_rss(env, logs), 1)
        for night in nights:
            # a copy: a run may move a file aside (quarantine), the generated one stays
            landing = work / f"landing-{night}"
            shutil.copytree(land_root / f"landing-{night}", landing)
            env["ENTSYNC_LANDING"] = str(landing)
            out = logs / f"{night}.json"
            t = timed([str(BIN / "entsync"), "sync", "--academy", a.academy, "--json",
                       "--workers", str(a.workers)], env, logs / f"{night}.log", stdout=out)
            if t.rc != 0:
                tail = t.log.read_text("utf-8", errors="replace")[-3000:]
                raise SystemExit(f"sync {night} failed (rc {t.rc}):\n{tail}")
            summary = json.loads(out.read_text("utf-8"))
            results["nights"][night] = {
                "run_id": summary["run_id"], "status": summary["status"],
                "wall_s": round(t.seconds, 1), "peak_rss_mib": round(t.rss_mib, 1),
                "cpu_s": round(t.cpu_s, 1), "changes": summary["changes"],
                "entries": entries_of(work / "state.db"),
                "stages": stage_metrics(work / "state.db", summary["run_id"]),
            }
    finally:
        stop_slapd(slapd_dir)
    base = results["imports_rss_mib"]
    print(f"{a.academy} at scale {a.scale} (seed {a.seed}); imports-only baseline "
          f"{base:.0f} MiB")
    for night, r in results["nights"].items():
        per = (r["peak_rss_mib"] - base) * 1024 / max(r["entries"], 1)
        print(f"\n{night}: {r['status']}, {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB, {r['changes']} changes, "
              f"{r['entries']} entries in the state DB ({per:.1f} KiB/entry above baseline)")
        print(f"  {'stage':14} {'duration_s':>10} {'peak_rss_mib':>12} "
              f"{'process_peak':>12}")
        for stage in STAGES:
            m = r["stages"].get(stage, {})
            print(f"  {stage:14} {m.get('duration_s', 0.0):>10.1f} "
                  f"{m.get('peak_rss_mib', 0.0):>12.0f} "
                  f"{m.get('process_peak_rss_mib', 0.0):>12.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2), "utf-8")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
