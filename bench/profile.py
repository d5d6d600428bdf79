"""Where the sync's time goes: py-spy on the initial load, the no-change rerun and the 2 %
change night.

    python -m bench.profile [--scale 0.02] [--academy ac-nancy-metz] [--nights N,N] [--keep DIR]

Generates the region at --scale (three nights: the same content with a new export date, then
``make bench``'s 2 % of changes on a third date, ``bench.mutate``), starts a fresh slapd, and
runs `entsync sync` for one academy under `py-spy record --threads --idle` for each night of
``--nights`` (default all three; a night needs the ones before it, which run unprofiled when
left out). Prints, per night: wall time, the pipeline's CPU, slapd's CPU, the main thread's
wall time per stage (a CPU-bound stage's own thread counted as the stage), the apply
threads' busy/idle split, and the top functions by own CPU.
Writes the raw stacks (flamegraph.pl input) and bench/results/profile-<night>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.mutate import mutate_landing
from bench.run import BIN, NIGHTS, RESULTS, clean_env, timed
from etl.devtools.generate import generate_region
from etl.devtools.slapd import start_slapd, stop_slapd

#: stage of a main-thread sample: first of these functions found from the stack's root
STAGES = (
    ("discover_files", "discover"),
    ("read_document", "read (lxml readers)"),
    ("normalize_tables", "normalize"),
    ("run_suites", "validate (GX + rules)"),
    ("validate_school", "validate (GX + rules)"),
    ("write_validation_report", "validation report"),
    ("build_desired", "desired + identity"),
    ("read_night", "desired + identity"),
    ("match_records", "desired + identity"),
    ("write_identities", "desired + identity"),
    ("_plan_against_state", "plan (against the state DB, hash first)"),
    ("_write_plan", "plan file"),
    ("apply_plan", "apply (main thread)"),
    ("finish_run", "finish"),
    ("read_validate_schools", "read_validate other (staging, DB)"),
    ("_read_validate_schools", "read_validate other (staging, DB)"),
    ("reconcile", "reconcile other (plan.json, DB)"),
    ("_reconcile", "reconcile other (plan.json, DB)"),
)
#: leaf functions that block in C (locks, sockets, queues): the thread is waiting, not working
IDLE = re.compile(r"^(wait|_wait_for_tstate_lock|select|poll|recv_into|recv|receiving|"
                  r"acquire|sleep|get|_worker|result)$")


def slapd_cpu(folder: Path) -> float:
    """CPU seconds (user + system) slapd has used so far."""
    pid = int((folder / "run" / "slapd.pid").read_text().strip())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _frames(stack: str) -> list[str]:
    """Bare function names (`DirectoryWriter.apply_one (etl/apply.py:1)` -> `apply_one`)."""
    return [f.split(" (")[0].split(".")[-1] for f in stack.split(";")]


def analyse(raw: Path, rate: int) -> dict[str, Any]:
    """Stage wall time of the main thread, apply threads busy/idle, top own-CPU functions."""
    stages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    for line in raw.read_text("utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0]
        names = _frames(";".join(frames[1:]))
        if not names:
            continue
        leaf = frames[-1]
        idle = bool(IDLE.match(names[-1]))
        # a CPU-bound stage runs in a thread of its own (``etl.runtime.cpu.cpu_bound``: its
        # stack starts at ``_cpu_bound``'s ``body``; py-spy's names for such short-lived
        # threads are stale) while the main thread waits for it: the stage's samples count,
        # the main thread's wait does not count twice
        stage_thread = "body" in names and "_cpu_bound" not in names[:names.index("body")]
        if stage_thread or (("MainThread" in thread or ":" not in thread)
                            and not (idle and "_cpu_bound" in names)):
            stage = "startup (imports, CLI)"
            for fn, label in STAGES:
                if fn in names:
                    stage = label
                    break
            stages[stage] += n
        elif "apply_one" in names or "ldap" in thread:
            workers["idle (waiting for slapd)" if idle else "busy (ldap3 client CPU)"] += n
        if not idle:
            own[leaf] += n
    sec = 1.0 / rate
    return {
        "main_thread_s": {k: round(v * sec, 2) for k, v in stages.most_common()},
        "apply_threads_s": {k: round(v * sec, 2) for k, v in workers.items()},
        "top_own_cpu_s": {k: round(v * sec, 2) for k, v in own.most_common(25)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--academy", default="ac-nancy-metz")
    p.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    p.add_argument("--keep", help="work in this folder and keep it")
    p.add_argument("--nights", default="initial,noop,delta",
                   help="the nights profiled, of initial, noop, delta")
    a = p.parse_args(argv)
    profiled = {n.strip() for n in a.nights.split(",") if n.strip()}
    if not profiled or profiled - {"initial", "noop", "delta"}:
        raise SystemExit(f"--nights: of initial, noop, delta, not {a.nights!r}")
    root = Path(a.keep or tempfile.mkdtemp(prefix="entsync-profile-")).resolve()
    if a.keep and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    pyspy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not found: pip install -r requirements.txt -c constraints.txt")
    slapd_dir = root / "slapd"
    server = start_slapd(slapd_dir)
    out: dict[str, Any] = {"scale": a.scale, "academy": a.academy}
    try:
        last = max(("initial", "noop", "delta").index(n) for n in profiled)
        for night in ("initial", "noop", "delta")[:last + 1]:
            landing = root / f"landing-{night}"
            generate_region(landing, a.scale, a.seed, export_date=NIGHTS[night])
            if night == "delta":
                mutate_landing(landing, share=0.02, seed=a.seed)
            env = clean_env(ENTSYNC_WORKDIR=str(root / "work"), ENTSYNC_LANDING=str(landing),
                            **server.env())
            raw = root / f"pyspy-{night}.txt"
            cpu0 = slapd_cpu(slapd_dir)
            sync = [str(BIN / "entsync"), "sync", "--academy", a.academy]
            if night not in profiled:
                t = timed(sync, env, root / f"sync-{night}.log")
                if t.rc != 0:
                    raise SystemExit(f"sync failed: {t.log}")
                print(f"\n== {night} (not profiled): wall {t.seconds:.1f} s")
                continue
            t = timed([pyspy, "record", "--threads", "--idle", "--nonblocking", "-r",
                       str(a.rate), "--format", "raw", "-o", str(raw), "--", *sync],
                      env, root / f"sync-{night}.log")
            if t.rc != 0:
                raise SystemExit(f"profiled sync failed: {t.log}")
            report = {"wall_s": round(t.seconds, 2), "pipeline_cpu_s": round(t.cpu_s, 2),
                      "slapd_cpu_s": round(slapd_cpu(slapd_dir) - cpu0, 2),
                      **analyse(raw, a.rate)}
            out[night] = report
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(raw, RESULTS / f"pyspy-{night}.txt")
            print(f"\n== {night}: wall {report['wall_s']} s, pipeline CPU "
                  f"{report['pipeline_cpu_s']} s (incl. py-spy), slapd CPU "
                  f"{report['slapd_cpu_s']} s")
            for key in ("main_thread_s", "apply_threads_s", "top_own_cpu_s"):
                print(f"-- {key}")
                for name, s in list(report[key].items())[:15]:
                    print(f"   {s:8.2f}  {name}")
    finally:
        stop_slapd(slapd_dir)
    (RESULTS / "profile.json").write_text(json.dumps(out, indent=2), "utf-8")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
