"""La rentrée in `make bench`: the first export of the next school year, after the first load.

    python -m bench.rentree [--scale 0.01] [--seed 7] [--keep DIR]   (standalone, a quick look)
    python -m bench.rentree --on DIR [--academies ac-reims,...] [--check-delta]

``--on DIR`` goes on from a kept bench folder (``python -m bench.run --keep DIR``) whose run
was stopped after its 2 % night, when A and B hold the same entries: night (a) below for the
academies given (all by default), the first load's first writes, and with ``--check-delta``
the 2 % night's parse reference (``entsync check`` of its exports). At scale 1.0 a whole
``make bench`` runs past a session on a slow disk; this measures la rentrée on the directory
that run built, without its Airflow nights and night (b).

The bench's region is generated with its next school year beside tonight's
(``entsync generate --rentree-out``: etl/devtools/generate/rentree.py), twice: dated inside
the roll-over window (3 September, ``landing-rentree``) and, the same content, outside it
(5 October, ``landing-rentree-late``). After the bench's nights, on directories in the same
state (A and the Airflow nights' C hold the region after the 2 % night; B, the reference,
holds the same entries loaded by ``ldapadd`` and changed by ``ldapmodify``):

- (a) inside the window, on A: ``entsync sync --today <export date>`` per academy (at once,
  as the nights run): ``no_disable``, relaxed update guard; every school must be written,
  none held. Reference: ``ldapmodify -c`` on B of exactly the changes the night journaled
  (bench/ldif.py), plus ``entsync check`` of the same exports (read and validate);
- (b) outside it, on C: the guards must hold every school (``awaiting_approval``, exit 3);
  then ``entsync approve RUN_ID`` per academy applies the held plans: timed too.

``first_write_s``: per academy, from the run's start (``runs.started_at``) to its first
journaled write (``journal.applied_at``) in the state DB, for the first load (the figure the
streaming plan/apply work aims at) and for night (a); the key is the largest academy's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.aaf import Row
from bench.ldif import journal_count, journal_rows, write_changes
from etl.devtools.generate import Rentree, default_rentree_date
from etl.devtools.slapd import LdapServer

#: the bench's school year is 2026 (bench.run.NIGHTS): its rentrée in and out of the
#: default roll-over window (academies.toml rollover_window 08-20..09-30)
IN_WINDOW = default_rentree_date(2026)
OUTSIDE = dt.date(2027, 10, 5)
#: bench.run's generated night -> the rentrée export set generated with it (same seed)
RENTREE_OF = {"initial": ("rentree", IN_WINDOW), "noop": ("rentree-late", OUTSIDE)}


def rentree_for(bench: Any, night: str) -> Rentree | None:
    """What ``Bench.generate`` passes ``generate_region`` for `night`: the rentrée set
    generated beside it (none for the other nights)."""
    if night not in RENTREE_OF:
        return None
    name, date = RENTREE_OF[night]
    return Rentree(bench.landing(name), date)


def _utc(raw: Any) -> dt.datetime:
    return raw if isinstance(raw, dt.datetime) else dt.datetime.fromisoformat(str(raw))


def first_write_s(state_db: Path, run_id: str) -> float | None:
    """Seconds from the run's start to its first journaled write (None: it wrote nothing)."""
    with sqlite3.connect(state_db) as db:
        start = db.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        first = db.execute("SELECT min(applied_at) FROM journal WHERE run_id = ?",
                           (run_id,)).fetchone()
    if not start or not first or first[0] is None:
        return None
    return round((_utc(first[0]) - _utc(start[0])).total_seconds(), 2)


def first_writes(work: Path, night: Any) -> dict[str, float | None]:
    """``first_write_s`` of each academy of a bench ``Night`` (its state DB per academy)."""
    return {academy: first_write_s(work / academy / "state.db", info["run_id"])
            for academy, info in night.per_academy.items()}


def largest(bench: Any) -> str:
    """The academy with the most schools in the generated region."""
    root: Path = bench.landing("initial")
    counts: dict[str, int] = {a: sum(1 for p in (root / a).iterdir() if p.is_dir())
                              for a in bench.academies}
    return max(counts, key=lambda a: counts[a])


def approve_all(bench: Any, server: LdapServer, work: Path,
                night: Any) -> tuple[float, dict[str, Any]]:
    """``entsync approve RUN_ID`` of each academy's held run (at once, as the nights run);
    seconds and, per academy, the schools approved and the writes the run then journaled."""
    from bench.run import BIN, _check, _each, clean_env, timed

    timings: dict[str, Any] = {}

    def one(academy: str) -> None:
        env = clean_env(ENTSYNC_WORKDIR=str(work / academy), **server.env())
        timings[academy] = timed(
            [str(BIN / "entsync"), "approve", night.per_academy[academy]["run_id"], "--json",
             "--by", "bench"], env, bench.logs / f"approve-rentree-{academy}.log",
            stdout=bench.logs / f"approve-rentree-{academy}.json")

    start = time.perf_counter()
    _each(one, list(night.per_academy), bench.parallel)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {}
    for academy, t in timings.items():
        _check(t, f"entsync approve {academy}")
        doc = json.loads((bench.logs / f"approve-rentree-{academy}.json").read_text("utf-8"))
        run_id = night.per_academy[academy]["run_id"]
        out[academy] = {
            "approved": sum(1 for v in doc["schools"].values()
                            if v.get("decision") == "approved"),
            "failed": sum(int(v.get("failed") or 0) for v in doc["schools"].values()),
            "writes": journal_count(work / academy / "state.db", run_id)}
    return seconds, out


def held_schools(bench: Any, night: Any, tag: str) -> tuple[int, int]:
    """(schools held for approval, schools read) of a night, from its runs' summaries."""
    held = read = 0
    for academy in night.per_academy:
        doc = json.loads((bench.logs / f"{tag}-{academy}.json").read_text("utf-8"))
        for school in doc["schools"].values():
            read += 1
            held += school.get("status") == "awaiting_approval"
    return held, read


def inside_night(bench: Any, a: LdapServer, b: LdapServer, work_a: Path,
                 academies: list[str]) -> tuple[dict[str, Any], list[Row]]:
    """Night (a) of the module docstring for `academies` (all of the bench's in
    ``rentree_nights``): la rentrée inside the roll-over window on `a`, ``ldapmodify -c`` of
    its journaled changes on `b` (in the same state as `a` before it), ``entsync check`` of
    the same exports. The results (``rentree_*``) and the table rows."""
    from bench.run import clean_env, ldap_args, ldap_errors, ldap_tool, timed

    inside_name, inside_day = RENTREE_OF["initial"]
    check_s = bench.check(academies, night=inside_name,
                          extra=["--today", inside_day.isoformat()])
    inside = bench.sync(a, work_a, inside_name, academies, "cli",
                        extra=["--today", inside_day.isoformat()])
    statuses = {k: v["status"] for k, v in inside.per_academy.items()}
    if set(statuses.values()) != {"success"}:
        raise SystemExit(f"rentrée in the roll-over window: runs {statuses} (every school "
                         "should be written, none held)")
    changes = bench.root / "rentree.ldif"
    with changes.open("w", encoding="utf-8") as f:
        n_changes = sum(
            write_changes(f, journal_rows(work_a / academy / "state.db",
                                          [inside.per_academy[academy]["run_id"]]))
            for academy in academies)
    t = timed([ldap_tool("ldapmodify"), "-c", *ldap_args(b), "-f", str(changes)],
              clean_env(), bench.logs / "ldapmodify-rentree.log", stdout=Path(os.devnull))
    ldapmodify_s, ldapmodify_errors = t.seconds, ldap_errors(t.log)
    print(f"bench: rentrée (window) {inside.seconds:.1f} s, {inside.writes} writes; "
          f"ldapmodify {ldapmodify_s:.1f} s + check {check_s:.1f} s", flush=True)
    r: dict[str, Any] = {
        "rentree_academies": academies,
        "rentree_s": round(inside.seconds, 2),
        "rentree_records": inside.records,
        "rentree_writes": inside.writes,
        "rentree_parse_s": round(check_s, 2),
        "rentree_ldapmodify_s": round(ldapmodify_s, 2),
        "rentree_ldapmodify_changes": n_changes,
        "rentree_ldapmodify_errors": ldapmodify_errors,
        "rentree_vs_ldapmodify": round(inside.seconds / ldapmodify_s, 3),
        "rentree_vs_ldapmodify_plus_parse": round(inside.seconds / (ldapmodify_s + check_s), 3),
        "rentree_first_write_s": first_writes(work_a, inside),
        "rentree_rss_mib": round(inside.rss_mib, 1),
        "rentree_per_academy": inside.per_academy,
    }
    mode = ", 3 at once" if bench.parallel and len(academies) > 1 else ""
    rows: list[Row] = [
        (f"rentrée, in window (CLI{mode})", inside.seconds, inside.records / inside.seconds,
         inside.writes, f"{ldapmodify_s:.1f}+{check_s:.1f} s",
         r["rentree_vs_ldapmodify_plus_parse"]),
        ("ldapmodify same changes", ldapmodify_s, n_changes / ldapmodify_s, n_changes, "",
         None),
    ]
    return r, rows


def rentree_nights(bench: Any, a: LdapServer, b: LdapServer, work_a: Path, c: LdapServer,
                   work_c: Path, initial: Any) -> tuple[dict[str, Any], list[Row]]:
    """The two rentrée nights (module docstring) and the first write of the first load: the
    results (``rentree_*``, ``first_write_s*``) and the table rows. `a`/`work_a` and
    `c`/`work_c`: directories and state in the state before the rentrée; `b`: the reference
    directory in that state too; `initial`: the first load's ``Night``."""
    r: dict[str, Any] = {}
    big = largest(bench)
    fw = first_writes(work_a, initial)
    r["first_write_s_per_academy"] = fw
    r["first_write_academy"] = big
    r["first_write_s"] = fw.get(big)

    got, rows = inside_night(bench, a, b, work_a, bench.academies)
    r.update(got)
    inside_s = got["rentree_s"]

    late_name, late_day = RENTREE_OF["noop"]
    late = bench.sync(c, work_c, late_name, bench.academies, "late",
                      extra=["--today", late_day.isoformat()], ok=(0, 3))
    held, read = held_schools(bench, late, f"late-{late_name}")
    if held != read or read == 0:
        raise SystemExit(f"rentrée outside the roll-over window: {held} of {read} schools "
                         "held (the guards should hold every school)")
    if late.writes:
        raise SystemExit(f"rentrée outside the window wrote {late.writes} entries before "
                         "approval")
    approve_s, approved = approve_all(bench, c, work_c, late)
    if sum(v["approved"] for v in approved.values()) != held or any(
            v["failed"] for v in approved.values()):
        raise SystemExit(f"approving the held rentrée: {approved}")
    approved_writes = sum(v["writes"] for v in approved.values())
    if approved_writes == 0:
        raise SystemExit("approving the held rentrée wrote nothing")
    print(f"bench: rentrée (outside) {late.seconds:.1f} s, {held}/{read} schools held; "
          f"approve {approve_s:.1f} s, {approved_writes} writes", flush=True)

    r.update({
        "rentree_late_s": round(late.seconds, 2),
        "rentree_late_held_schools": held,
        "rentree_late_schools": read,
        "rentree_late_approve_s": round(approve_s, 2),
        "rentree_late_approved": approved,
        "rentree_late_writes": approved_writes,
    })
    rows += [
        ("rentrée, outside window: held", late.seconds, None, late.writes,
         f"{held}/{read} schools held", None),
        ("  approve all held schools", approve_s, approved_writes / approve_s,
         approved_writes, f"window {inside_s:.1f} s", approve_s / inside_s),
    ]
    if r["first_write_s"] is not None:
        rows.append((f"first write, first load ({big[3:]})", r["first_write_s"], None, None,
                     f"initial {initial.per_academy[big]['s']:.1f} s", None))
    return r, rows


def on_kept(root: Path, academies: list[str] | None, check_delta: bool, workers: int,
            parallel: bool) -> dict[str, Any]:
    """``--on DIR`` (module docstring): the results, printed with their rows."""
    from bench.run import Bench

    bench = Bench(root.resolve(), 0.0, 0, workers=workers, parallel=parallel)
    chosen = academies or bench.academies
    unknown = sorted(set(chosen) - set(bench.academies))
    if unknown:
        raise SystemExit(f"--academies: not an academy of academies.toml: {unknown}")
    for sub in ("slapd-a", "slapd-b", "work-a", "landing-rentree"):
        if not (bench.root / sub).is_dir():
            raise SystemExit(f"--on {root}: no {sub}/ (not a kept bench folder)")
    r: dict[str, Any] = {"on": str(bench.root)}
    fw: dict[str, float | None] = {}
    for academy in bench.academies:
        summary = bench.logs / f"cli-initial-{academy}.json"
        if summary.is_file():
            run_id = json.loads(summary.read_text("utf-8"))["run_id"]
            fw[academy] = first_write_s(bench.root / "work-a" / academy / "state.db", run_id)
    r["first_write_s_per_academy"] = fw
    rows: list[Row] = []
    if check_delta:
        s = bench.check(bench.academies, night="delta")
        r["delta_parse_s"] = round(s, 2)
        rows.append(("check of the 2 % night's exports", s, None, None, "", None))
    a, b = bench.slapd("a"), bench.slapd("b")
    try:
        got, more = inside_night(bench, a, b, bench.root / "work-a", chosen)
    finally:
        bench.stop_all()
    r.update(got)
    rows += more
    print(json.dumps({k: v for k, v in r.items() if k != "rentree_per_academy"}, indent=2))
    _print_rows(rows)
    (bench.root / "rentree-on.json").write_text(json.dumps(r, indent=2), "utf-8")
    return r


def _print_rows(rows: list[Row]) -> None:
    for stage, wall, rate, writes, ref, ratio in rows:
        print(f"{stage:34} {wall:8.2f} {'' if rate is None else f'{rate:10.0f}':>10} "
              f"{'' if writes is None else writes:>8}  {ref:24} "
              f"{'' if ratio is None else f'{ratio:7.3f}':>7}")


def main(argv: list[str] | None = None) -> int:
    """The rentrée nights alone at a small scale: a first load on A and C, B loaded from A by
    ldapadd, then ``rentree_nights``."""
    from bench.run import (
        NIGHTS,
        Bench,
        clean_env,
        dump_entries,
        entry_dns,
        ldap_args,
        ldap_tool,
        timed,
    )
    from etl.devtools.generate import generate_region

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=None,
                   help="entsync sync --workers (2; with --on 4, as bench.run)")
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    p.add_argument("--on", help="go on from this kept bench folder (module docstring)")
    p.add_argument("--academies", help="with --on: these academies (comma-separated)")
    p.add_argument("--check-delta", action="store_true",
                   help="with --on: also time entsync check of the 2 %% night's exports")
    p.add_argument("--sequential", action="store_true",
                   help="with --on: the academies one after the other")
    a = p.parse_args(argv)
    if a.on:
        on_kept(Path(a.on), a.academies.split(",") if a.academies else None, a.check_delta,
                a.workers or 4, not a.sequential)
        return 0
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="entsync-bench-rentree-"))
    if a.keep and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    bench = Bench(root.resolve(), a.scale, a.seed, workers=a.workers or 2)
    bench.logs.mkdir(parents=True, exist_ok=True)
    try:
        for night in ("initial", "noop"):
            generate_region(bench.landing(night), a.scale, a.seed, export_date=NIGHTS[night],
                            rentree=rentree_for(bench, night))
        sa, sb, sc = bench.slapd("a"), bench.slapd("b"), bench.slapd("c")
        initial = bench.sync(sa, root / "work-a", "initial", bench.academies, "cli")
        bench.sync(sc, root / "work-c", "initial", bench.academies, "c")
        ldif = root / "initial.ldif"
        dump_entries(sa, ldif, entry_dns(sb))
        t = timed([ldap_tool("ldapadd"), "-c", *ldap_args(sb), "-f", str(ldif)], clean_env(),
                  bench.logs / "ldapadd.log", stdout=Path(os.devnull))
        if t.rc != 0:
            raise SystemExit(f"ldapadd failed (rc {t.rc}), log {t.log}")
        results, rows = rentree_nights(bench, sa, sb, root / "work-a", sc, root / "work-c",
                                       initial)
        print(json.dumps({k: v for k, v in results.items() if k != "rentree_per_academy"},
                         indent=2))
        _print_rows(rows)
    finally:
        bench.stop_all()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
