"""`make bench`: the sync at region scale against the directory server's own tools.

    python -m bench.run [--scale 0.1] [--seed 7] [--keep DIR] [--sequential]
                        [--first-load-only | --until-delta]

In one run, on fresh slapds configured as in production (schemas/slapd.conf.in: durable
writes, no dbnosync):

1. initial load: `entsync sync` per academy (a subprocess each, the three at once as the
   three academy DAGs run each night; `--sequential`: one after the other) into an empty
   directory A; the result is dumped to LDIF and loaded with `ldapadd -c` into a second
   fresh slapd B;
2. no-change rerun: the same exports with a new export date (new files, same content);
   LDAP writes counted from the journal and checked on A's contextCSN;
3. 2 % delta night: the exports edited by bench.mutate; the very changes the pipeline
   journaled are replayed as LDIF with `ldapmodify -c` on B (which holds the pre-delta state);
4. the same three nights through the three academy DAGs on a third fresh slapd C, against
   the CLI nights above: one long-lived Airflow process per academy (bench.airflow_runner:
   started, DAG parsed and in-process Execution API built once, as a running Airflow's API
   server does when it starts), each night a DagRun per academy at once, run as `airflow
   dags test` runs it (DAG.test). A night's Airflow time is its DagRuns' window (first start
   to last end in Airflow's metadata DB, what the UI shows); the table also gives the time
   in the Airflow processes per night, and the processes' one-off start (`airflow dags
   test` pays that start, and the Execution API's build inside the DagRun, at every run);
5. the AAF night (bench/aaf.py): the same region as its academies' AAF; the SIECLE/STS and
   AAF readers' speed in MB/s beside a bare lxml iterparse of the same bytes;
6. la rentrée (bench/rentree.py): the next school year's first export, inside the roll-over
   window on A (against `ldapmodify -c` of its journaled changes on B plus `entsync check`)
   and outside it on C (every school held, then approved); the first load's first write.

Prints one table and writes bench/results/latest.json (and <utc stamp>.json). Only ratios
within one run mean something (see shared/docs/performance.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.aaf import Row, aaf_night
from bench.ldif import filter_dump, journal_count, journal_rows, write_changes
from bench.mutate import mutate_landing
from bench.rentree import rentree_for, rentree_nights
from etl.config import load_academies
from etl.devtools.generate import generate_region
from etl.devtools.slapd import LdapServer, find_program, start_slapd, stop_slapd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "bench" / "results"
NIGHTS = {"initial": dt.date(2026, 10, 1), "noop": dt.date(2026, 10, 2),
          "delta": dt.date(2026, 10, 3)}


@dataclass
class Timed:
    seconds: float
    rss_mib: float
    cpu_s: float
    rc: int
    log: Path


@dataclass
class Night:
    """One stage over all academies (CLI) or one academy (Airflow)."""

    seconds: float = 0.0
    records: int = 0  # desired entries of the schools read
    writes: int = 0  # journal rows (LDAP operations applied)
    changes: int = 0
    rss_mib: float = 0.0  # the largest process's peak
    rss_sum_mib: float = 0.0  # the processes' peaks added (academies run at once)
    cpu_s: float = 0.0
    process_s: float = 0.0  # Airflow: the night's time in the Airflow processes
    run_ids: list[str] = field(default_factory=list)
    per_academy: dict[str, dict[str, Any]] = field(default_factory=dict)


def timed(cmd: list[str], env: dict[str, str], log: Path, stdout: Path | None = None) -> Timed:
    """Run a command; wall time and the child's own peak RSS and CPU (wait4 rusage)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path = stdout or log
    with log.open("ab") as err, out_path.open("ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timed(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime,
                 proc.returncode, log)


def _each(fn: Any, items: list[str], parallel: bool) -> None:
    """fn(item) for each item: in threads at once, or one after the other."""
    if not parallel:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(len(items) or 1) as pool:
        for fut in [pool.submit(fn, item) for item in items]:
            fut.result()


def dag_run_window(home: Path, dag_id: str) -> tuple[dt.datetime, dt.datetime]:
    """The last DagRun's start and end (Airflow's metadata DB): what the ops team sees in the
    UI, without the Airflow process's start."""
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute("SELECT start_date, end_date FROM dag_run WHERE dag_id = ? "
                         "ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
    if not row or not row[0] or not row[1]:
        raise SystemExit(f"no finished run of {dag_id} in {home / 'airflow.db'}")
    start, end = (dt.datetime.fromisoformat(str(x).replace(" ", "T")) for x in row)
    return start, end


def _check(t: Timed, what: str) -> None:
    if t.rc != 0:
        tail = t.log.read_text("utf-8", errors="replace")[-4000:]
        raise SystemExit(f"{what} failed (rc {t.rc}), log {t.log}:\n{tail}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "ENTSYNC_", "_AIRFLOW"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}{os.pathsep}/usr/sbin:/sbin"
    env.update(extra)
    return env


def ldap_tool(name: str) -> str:
    path = find_program(name)
    if path is None:
        raise SystemExit(f"{name} not found: apt-get install ldap-utils")
    return path


def ldap_args(server: LdapServer) -> list[str]:
    return ["-x", "-H", server.url, "-D", server.bind_dn, "-y", str(server.password_file)]


def context_csn(server: LdapServer) -> str:
    out = subprocess.run(
        [ldap_tool("ldapsearch"), *ldap_args(server), "-LLL", "-o", "ldif-wrap=no", "-s",
         "base", "-b", server.base, "(objectClass=*)", "contextCSN"],
        capture_output=True, text=True, check=True)
    return " ".join(sorted(line for line in out.stdout.splitlines()
                           if line.startswith("contextCSN")))


def entry_dns(server: LdapServer) -> set[str]:
    """Lower-case DNs of every entry under the base (a fresh slapd's own base entries)."""
    out = subprocess.run(
        [ldap_tool("ldapsearch"), *ldap_args(server), "-LLL", "-o", "ldif-wrap=no",
         "-b", server.base, "(objectClass=*)", "1.1"],
        capture_output=True, text=True, check=True)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as sink:
        dns: set[str] = set()
        filter_dump(out.stdout.splitlines(keepends=True), sink, set(), seen=dns)
    return dns


def dump_entries(server: LdapServer, out: Path, skip: set[str]) -> tuple[int, int]:
    """The synced entries as LDIF: user attributes, without the entries in `skip` (those a
    fresh slapd already has: base, top ous, service accounts)."""
    proc = subprocess.Popen(
        [ldap_tool("ldapsearch"), *ldap_args(server), "-LLL", "-o", "ldif-wrap=no",
         "-E", "pr=1000/noprompt", "-b", server.base, "(objectClass=*)", "*"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    with out.open("w", encoding="utf-8") as f:
        counts = filter_dump(proc.stdout, f, skip)
    if proc.wait() != 0:
        raise SystemExit("ldapsearch dump failed")
    return counts


def ldap_errors(log: Path) -> int:
    """Operations `ldapadd -c` / `ldapmodify -c` reported as failed."""
    text = log.read_text("utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if line.startswith(("ldap_add:", "ldap_modify:",
                                                                   "ldap_delete:")))


class Bench:
    def __init__(self, root: Path, scale: float, seed: int, workers: int,
                 parallel: bool = True, first_load_only: bool = False,
                 until_delta: bool = False) -> None:
        self.parallel = parallel
        self.first_load_only = first_load_only
        self.until_delta = until_delta
        self.root = root
        self.scale = scale
        self.seed = seed
        self.academies = list(load_academies())
        self.workers = workers
        self.logs = root / "logs"
        self.servers: list[Path] = []
        self.results: dict[str, Any] = {"scale": scale, "seed": seed}

    # -- infrastructure ---------------------------------------------------------------------
    def slapd(self, name: str) -> LdapServer:
        folder = self.root / f"slapd-{name}"
        self.servers.append(folder)
        return start_slapd(folder)

    def stop_all(self) -> None:
        for folder in self.servers:
            stop_slapd(folder)

    def landing(self, night: str) -> Path:
        return self.root / f"landing-{night}"

    def generate(self) -> None:
        for night, date in NIGHTS.items():
            if self.first_load_only and night != "initial":
                continue
            start = time.perf_counter()
            summary = generate_region(self.landing(night), self.scale, self.seed,
                                      export_date=date,
                                      rentree=None if self.first_load_only or self.until_delta
                                      else rentree_for(self, night))
            self.results.setdefault("generate_s", round(time.perf_counter() - start, 2))
            self.results.setdefault("schools", summary.schools)
            self.results.setdefault("pupils", summary.pupils)
        if self.first_load_only:
            return
        start = time.perf_counter()
        counts = mutate_landing(self.landing("delta"), share=0.02, seed=self.seed)
        people = counts.pop("people")
        touched = sum(counts.values())
        self.results["mutations"] = {**counts, "people": people,
                                     "share": round(touched / max(people, 1), 4)}
        self.results["mutate_s"] = round(time.perf_counter() - start, 2)

    # -- the pipeline ---------------------------------------------------------------------------
    def sync(self, server: LdapServer, workdir: Path, night: str, academies: list[str],
             tag: str, parallel: bool | None = None, extra: list[str] | None = None,
             ok: tuple[int, ...] = (0,)) -> Night:
        """`entsync sync` of each academy, a process each: at once (as the three academy DAGs
        run each night) unless the bench runs ``--sequential``; `extra`: more arguments
        (``--today``), `ok`: the exit codes expected (3: held). Each academy keeps its own
        state DB (``workdir/<academy>``): state is per academy, and three processes writing
        one SQLite file would measure SQLite's lock, not the sync (PostgreSQL is the
        production state DB)."""
        parallel = self.parallel if parallel is None else parallel
        result = Night()
        timings: dict[str, Timed] = {}

        def one(academy: str) -> None:
            env = clean_env(ENTSYNC_WORKDIR=str(workdir / academy),
                            ENTSYNC_LANDING=str(self.landing(night)), **server.env())
            timings[academy] = timed(
                [str(BIN / "entsync"), "sync", "--academy", academy, "--json", "--workers",
                 str(self.workers), *(extra or [])], env,
                self.logs / f"{tag}-{night}-{academy}.log",
                stdout=self.logs / f"{tag}-{night}-{academy}.json")

        start = time.perf_counter()
        _each(one, academies, parallel)
        result.seconds = time.perf_counter() - start
        for academy in academies:
            t = timings[academy]
            if t.rc not in ok:
                _check(t, f"entsync sync {academy} ({night})")
            summary = json.loads((self.logs / f"{tag}-{night}-{academy}.json")
                                 .read_text("utf-8"))
            run_id = summary["run_id"]
            records = sum(s.get("created", 0) + s.get("updated", 0) + s.get("unchanged", 0)
                          for s in summary["schools"].values())
            writes = journal_count(workdir / academy / "state.db", run_id)
            result.records += records
            result.writes += writes
            result.changes += int(summary["changes"])
            result.rss_mib = max(result.rss_mib, t.rss_mib)
            result.rss_sum_mib += t.rss_mib
            result.cpu_s += t.cpu_s
            result.run_ids.append(run_id)
            result.per_academy[academy] = {"s": round(t.seconds, 2), "records": records,
                                           "writes": writes, "rss_mib": round(t.rss_mib, 1),
                                           "cpu_s": round(t.cpu_s, 2), "run_id": run_id,
                                           "status": summary["status"]}
        return result

    def check(self, academies: list[str], night: str = "delta",
              extra: list[str] | None = None) -> float:
        """The reference for parsing a night's exports (the delta's by default): `entsync
        check` (read, normalize, validate; no planning, no directory), run like the syncs (at
        once or one by one)."""
        timings: dict[str, Timed] = {}

        def one(academy: str) -> None:
            env = clean_env(ENTSYNC_WORKDIR=str(self.root / f"work-check-{night}" / academy),
                            ENTSYNC_LANDING=str(self.landing(night)))
            timings[academy] = timed(
                [str(BIN / "entsync"), "check", "--academy", academy, "--json",
                 *(extra or [])], env, self.logs / f"check-{night}-{academy}.log",
                stdout=Path(os.devnull))

        start = time.perf_counter()
        _each(one, academies, self.parallel)
        for academy, t in timings.items():
            _check(t, f"entsync check {academy}")
        return time.perf_counter() - start

    def airflow(self, server: LdapServer, workdir: Path, home: Path) -> dict[str, Night]:
        """The three nights through the academy DAGs: one long-lived Airflow process per
        academy (``bench.airflow_runner``: Airflow started, the DAG parsed and the in-process
        Execution API built once, as a running Airflow's API server builds it when it starts),
        each night one DagRun per academy (``DAG.test``, what `airflow dags test` runs), the
        three at once unless ``--sequential``. A night's time is its DagRuns' window (first
        start to last end in Airflow's metadata, what the UI shows); ``process_s`` the time
        the runners took for it, from the command sent to the DagRun's end reported. The
        runners' one-off start goes to ``self.results["airflow_start_s"]``."""
        academies = self.academies
        migrated: Path | None = None
        runners: dict[str, subprocess.Popen[str]] = {}
        logs: dict[str, Any] = {}
        try:
            for academy in academies:
                h = home / academy
                h.mkdir(parents=True, exist_ok=True)
                env = clean_env(AIRFLOW_HOME=str(h),
                                AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
                                AIRFLOW__CORE__LOAD_EXAMPLES="False",
                                AIRFLOW__CORE__UNIT_TEST_MODE="False",
                                AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
                                ENTSYNC_WORKDIR=str(workdir / academy), **server.env())
                env["PYTHONPATH"] = str(REPO)
                if migrated is None:
                    _check(timed([str(BIN / "airflow"), "db", "migrate"], env,
                                 self.logs / "airflow-db.log"), "airflow db migrate")
                    migrated = h / "airflow.db"
                else:  # the same empty metadata DB: a copy instead of migrating again
                    shutil.copyfile(migrated, h / "airflow.db")
                logs[academy] = (self.logs / f"airflow-{academy}.log").open("a")
                runners[academy] = subprocess.Popen(
                    [sys.executable, "-m", "bench.airflow_runner",
                     load_academies()[academy].dag_id], env=env, cwd=REPO, text=True,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[academy])
            starts = {a: self._runner_says(runners[a], a, "start") for a in academies}
            self.results["airflow_start_s"] = round(max(v["start_s"] for v in starts.values()),
                                                    2)
            nights: dict[str, Night] = {}
            for night in NIGHTS:
                nights[night] = self._airflow_night(runners, workdir, home, night)
            for p in runners.values():
                assert p.stdin is not None
                p.stdin.close()
                p.wait(timeout=60)
            return nights
        finally:
            for p in runners.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for f in logs.values():
                f.close()

    def _runner_says(self, p: subprocess.Popen[str], academy: str, what: str) -> dict[str, Any]:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            tail = (self.logs / f"airflow-{academy}.log").read_text(
                "utf-8", errors="replace")[-4000:]
            raise SystemExit(f"Airflow runner of {academy} ended during {what}:\n{tail}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def _airflow_night(self, runners: dict[str, subprocess.Popen[str]], workdir: Path,
                       home: Path, night: str) -> Night:
        academies = self.academies
        before = {a: set((workdir / a).glob("reports/*/summary.json")) for a in academies}
        done: dict[str, dict[str, Any]] = {}

        def one(academy: str) -> None:
            p = runners[academy]
            assert p.stdin is not None
            t0 = time.perf_counter()
            p.stdin.write(json.dumps({"landing": str(self.landing(night))}) + "\n")
            p.stdin.flush()
            done[academy] = self._runner_says(p, academy, night)
            done[academy]["wall_s"] = time.perf_counter() - t0

        start = time.perf_counter()
        _each(one, academies, self.parallel)
        n = Night(process_s=time.perf_counter() - start)
        windows: list[tuple[dt.datetime, dt.datetime]] = []
        for academy in academies:
            res = done[academy]
            dag_id = load_academies()[academy].dag_id
            if res["state"] != "success":
                raise SystemExit(f"Airflow {night} {dag_id}: DagRun {res['state']} (log: "
                                 f"{self.logs / f'airflow-{academy}.log'})")
            new = sorted(set((workdir / academy).glob("reports/*/summary.json"))
                         - before[academy])
            if len(new) != 1:
                raise SystemExit(f"airflow {night} {academy}: expected one run summary, "
                                 f"got {new}")
            summary = json.loads(new[0].read_text("utf-8"))
            if summary["status"] != "success":
                raise SystemExit(f"airflow {night}: run {summary['run_id']} "
                                 f"{summary['status']}")
            windows.append(dag_run_window(home / academy, dag_id))
            n.rss_mib = max(n.rss_mib, res["rss_mib"])
            n.cpu_s += res["cpu_s"]
            n.changes += int(summary["changes"])
            n.run_ids.append(summary["run_id"])
            n.writes += journal_count(workdir / academy / "state.db", summary["run_id"])
            n.records += sum(s.get("created", 0) + s.get("updated", 0)
                             + s.get("unchanged", 0) for s in summary["schools"].values())
            n.per_academy[academy] = {
                "dag_run_s": round((windows[-1][1] - windows[-1][0]).total_seconds(), 2),
                "process_s": round(res["wall_s"], 2), "run_id": summary["run_id"]}
        if self.parallel:
            n.seconds = (max(e for _s, e in windows)
                         - min(s for s, _e in windows)).total_seconds()
        else:
            n.seconds = sum((e - s).total_seconds() for s, e in windows)
        return n

    # -- the whole bench --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r = self.results
        print(f"bench: scale {self.scale}, working in {self.root}", flush=True)
        self.generate()
        print(f"bench: generated {r['schools']} schools, {r['pupils']} pupils per night in "
              f"{r['generate_s']} s; delta mutations {r.get('mutations')}", flush=True)
        a, b = self.slapd("a"), self.slapd("b")
        work_a = self.root / "work-a"

        initial = self.sync(a, work_a, "initial", self.academies, "cli")
        print(f"bench: initial load {initial.seconds:.1f} s, {initial.writes} writes",
              flush=True)
        ldif = self.root / "initial.ldif"
        entries, accounts = dump_entries(a, ldif, entry_dns(b))
        t = timed([ldap_tool("ldapadd"), "-c", *ldap_args(b), "-f", str(ldif)],
                  clean_env(), self.logs / "ldapadd.log", stdout=Path(os.devnull))
        ldapadd_s, ldapadd_errors = t.seconds, ldap_errors(t.log)
        print(f"bench: ldapadd of {entries} entries {ldapadd_s:.1f} s", flush=True)
        if self.first_load_only:
            return self.first_load(initial, work_a, entries, accounts, ldapadd_s,
                                   ldapadd_errors)

        csn = context_csn(a)
        noop = self.sync(a, work_a, "noop", self.academies, "cli")
        csn_changed = context_csn(a) != csn
        print(f"bench: no-change rerun {noop.seconds:.1f} s, {noop.writes} writes", flush=True)

        check_s = self.check(self.academies)
        delta = self.sync(a, work_a, "delta", self.academies, "cli")
        changes = self.root / "delta.ldif"
        with changes.open("w", encoding="utf-8") as f:
            n_changes = sum(
                write_changes(f, journal_rows(work_a / academy / "state.db",
                                              [delta.per_academy[academy]["run_id"]]))
                for academy in self.academies)
        t = timed([ldap_tool("ldapmodify"), "-c", *ldap_args(b), "-f", str(changes)],
                  clean_env(), self.logs / "ldapmodify.log", stdout=Path(os.devnull))
        ldapmodify_s, ldapmodify_errors = t.seconds, ldap_errors(t.log)
        print(f"bench: delta {delta.seconds:.1f} s, {delta.writes} writes; ldapmodify "
              f"{ldapmodify_s:.1f} s", flush=True)
        if self.until_delta:
            return self.first_nights(initial, noop, delta, work_a, entries, accounts,
                                     ldapadd_s, check_s, ldapmodify_s, n_changes)
        from bench.audit import time_audits  # the weekly audit, on the delta night's state

        r["audit"] = time_audits(a, work_a, self.academies, self.logs)
        print(f"bench: audit {r['audit']['audit_s']:.1f} s of {r['audit']['entries']} entries;"
              f" ldapsearch {r['audit']['ldapsearch_s']:.1f} s", flush=True)

        from bench.gar import export_region  # the GAR export of the region after the nights

        r["gar"] = export_region(a, work_a, self.academies, self.root / "gar", self.logs)
        print(f"bench: GAR export {r['gar']['s']:.1f} s, {r['gar']['elements']} elements, "
              f"peak RSS {r['gar']['rss_mib']} MiB (delta sync {delta.rss_mib:.1f} MiB)",
              flush=True)

        # the same three nights through the academy DAGs, on a third slapd
        c = self.slapd("c")
        af = self.airflow(c, self.root / "work-c", self.root / "airflow")
        cli_same = {"initial": initial.seconds, "noop": noop.seconds, "delta": delta.seconds}
        af_total = sum(n.seconds for n in af.values())
        af_process = sum(n.process_s for n in af.values())
        cli_total = sum(cli_same.values())

        r.update({
            "accounts": accounts,
            "entries": entries,
            "initial_s": round(initial.seconds, 2),
            "initial_records_per_s": round(initial.writes / initial.seconds, 1),
            "initial_writes": initial.writes,
            "ldapadd_s": round(ldapadd_s, 2),
            "ldapadd_errors": ldapadd_errors,
            "ldapadd_records_per_s": round(entries / ldapadd_s, 1),
            "initial_vs_ldapadd": round(initial.seconds / ldapadd_s, 3),
            "noop_s": round(noop.seconds, 2),
            "noop_records": noop.records,
            "noop_writes": noop.writes,
            "noop_changes_planned": noop.changes,
            "noop_context_csn_changed": csn_changed,
            "noop_vs_initial": round(noop.seconds / initial.seconds, 4),
            "delta_s": round(delta.seconds, 2),
            "delta_writes": delta.writes,
            "delta_parse_s": round(check_s, 2),
            "ldapmodify_s": round(ldapmodify_s, 2),
            "ldapmodify_changes": n_changes,
            "ldapmodify_errors": ldapmodify_errors,
            "delta_vs_ldapmodify": round(delta.seconds / ldapmodify_s, 3),
            "delta_vs_ldapmodify_plus_parse": round(
                delta.seconds / (ldapmodify_s + check_s), 3),
            "academies_at_once": self.parallel,
            "shared_logins": self.shared_logins(work_a),
            "peak_rss_mib": round(max(initial.rss_mib, noop.rss_mib, delta.rss_mib), 1),
            "peak_rss_sum_mib": round(max(initial.rss_sum_mib, noop.rss_sum_mib,
                                          delta.rss_sum_mib), 1),
            "cpu_s": {"initial": round(initial.cpu_s, 2), "noop": round(noop.cpu_s, 2),
                      "delta": round(delta.cpu_s, 2)},
            "per_academy": {"initial": initial.per_academy, "noop": noop.per_academy,
                            "delta": delta.per_academy},
            "airflow_per_academy": {k: v.per_academy for k, v in af.items()},
            "airflow_s": {k: round(v.seconds, 2) for k, v in af.items()},
            "airflow_process_s": {k: round(v.process_s, 2) for k, v in af.items()},
            "airflow_writes": {k: v.writes for k, v in af.items()},
            "cli_same_academy_s": cli_same,
            "airflow_vs_cli": round(af_total / cli_total, 3),
            "airflow_process_vs_cli": round(af_process / cli_total, 3),
            "airflow_process_with_start_vs_cli": round(
                (af_process + r["airflow_start_s"]) / cli_total, 3),
        })
        aaf, aaf_rows = aaf_night(self, self.landing("initial"), NIGHTS["initial"])  # bench/aaf.py
        r.update(aaf)
        rentree, rentree_rows = rentree_nights(self, a, b, work_a, c, self.root / "work-c",
                                               initial)  # bench/rentree.py
        r.update(rentree)
        self.table(initial, noop, delta, check_s, af, cli_same, aaf_rows + rentree_rows)
        return r

    def first_load_figures(self, initial: Night, work_a: Path, entries: int, accounts: int,
                           ldapadd_s: float) -> tuple[dict[str, float | None], str]:
        """The first load's figures into the results (its time against ``ldapadd``'s, the
        first writes): the first writes per academy and the largest academy."""
        from bench.rentree import first_writes, largest

        big = largest(self)
        fw = first_writes(work_a, initial)
        self.results.update({
            "accounts": accounts, "entries": entries,
            "initial_s": round(initial.seconds, 2), "initial_writes": initial.writes,
            "ldapadd_s": round(ldapadd_s, 2),
            "initial_vs_ldapadd": round(initial.seconds / ldapadd_s, 3),
            "first_write_s_per_academy": fw, "first_write_academy": big,
            "first_write_s": fw.get(big), "academies_at_once": self.parallel,
        })
        return fw, big

    def first_load(self, initial: Night, work_a: Path, entries: int, accounts: int,
                   ldapadd_s: float, ldapadd_errors: int) -> dict[str, Any]:
        """``--first-load-only``: the first load's figures and a short table."""
        r = self.results
        fw, big = self.first_load_figures(initial, work_a, entries, accounts, ldapadd_s)
        r.update({"ldapadd_errors": ldapadd_errors, "peak_rss_mib": round(initial.rss_mib, 1),
                  "shared_logins": self.shared_logins(work_a),
                  "per_academy": {"initial": initial.per_academy}})
        print(f"\n{'figure':44} {'value':>12}")
        print(f"{'initial load / ldapadd':44} {r['initial_vs_ldapadd']:>11.3f}x"
              f"  ({initial.seconds:.1f} / {ldapadd_s:.1f} s, {initial.writes} writes for "
              f"{entries} entries)")
        for academy, s in sorted(fw.items()):
            mark = " (largest)" if academy == big else ""
            print(f"{'first write, ' + academy + mark:44} {s if s is not None else 0:>10.1f} s")
        print(f"{'peak RSS per academy process':44} {initial.rss_mib:>8.0f} MiB")
        print(f"{'logins of two academies (state DB each)':44} "
              f"{r['shared_logins']:>12}")
        return r

    def first_nights(self, initial: Night, noop: Night, delta: Night, work_a: Path,
                     entries: int, accounts: int, ldapadd_s: float, check_s: float,
                     ldapmodify_s: float, n_changes: int) -> dict[str, Any]:
        """``--until-delta``: the first load, the no-change night and the 2 % night against
        their references, and a short table (the same keys as the whole bench's)."""
        r = self.results
        fw, big = self.first_load_figures(initial, work_a, entries, accounts, ldapadd_s)
        r.update({
            "noop_s": round(noop.seconds, 2), "noop_writes": noop.writes,
            "noop_vs_initial": round(noop.seconds / initial.seconds, 4),
            "delta_s": round(delta.seconds, 2), "delta_writes": delta.writes,
            "delta_parse_s": round(check_s, 2), "ldapmodify_s": round(ldapmodify_s, 2),
            "ldapmodify_changes": n_changes,
            "delta_vs_ldapmodify_plus_parse": round(delta.seconds / (ldapmodify_s + check_s),
                                                    3),
            "peak_rss_mib": round(max(initial.rss_mib, noop.rss_mib, delta.rss_mib), 1),
            "cpu_s": {"initial": round(initial.cpu_s, 2), "noop": round(noop.cpu_s, 2),
                      "delta": round(delta.cpu_s, 2)},
            "per_academy": {"initial": initial.per_academy, "noop": noop.per_academy,
                            "delta": delta.per_academy},
        })
        print(f"\n{'figure':44} {'value':>12}")
        print(f"{'initial load / ldapadd':44} {r['initial_vs_ldapadd']:>11.3f}x"
              f"  ({initial.seconds:.1f} / {ldapadd_s:.1f} s, {initial.writes} writes)")
        print(f"{'first write, ' + str(big) + ' (largest)':44} {fw.get(big) or 0:>10.1f} s")
        print(f"{'no-change night / initial load':44} {r['noop_vs_initial']:>11.2%}"
              f"  ({noop.seconds:.1f} s, {noop.writes} writes)")
        print(f"{'2 % night / (ldapmodify + check)':44} "
              f"{r['delta_vs_ldapmodify_plus_parse']:>11.3f}x  ({delta.seconds:.1f} / "
              f"({ldapmodify_s:.1f} + {check_s:.1f}) s, {delta.writes} writes)")
        print(f"{'peak RSS per academy process':44} {r['peak_rss_mib']:>8.0f} MiB")
        print(f"{'CPU of the syncs, 2 % night':44} {delta.cpu_s:>10.1f} s")
        return r

    def shared_logins(self, workdir: Path) -> int:
        from bench.ldif import shared_logins

        return shared_logins(workdir / a / "state.db" for a in self.academies)

    def table(self, initial: Night, noop: Night, delta: Night, check_s: float,
              af: dict[str, Night], cli_same: dict[str, float],
              extra: list[Row] | None = None) -> None:
        r = self.results
        mode = ", 3 at once" if self.parallel else ""
        dags = "3 DAGs at once" if self.parallel else "3 DAGs"
        rows: list[tuple[str, float, float | None, int | None, str, float | None]] = [
            (f"initial load (CLI{mode})", initial.seconds, initial.writes / initial.seconds,
             initial.writes, f"ldapadd {r['ldapadd_s']:.1f} s", r["initial_vs_ldapadd"]),
            ("ldapadd same entries", r["ldapadd_s"], r["ldapadd_records_per_s"], r["entries"],
             "", None),
            (f"no-change rerun (CLI{mode})", noop.seconds, noop.records / noop.seconds, noop.writes,
             f"initial {initial.seconds:.1f} s", r["noop_vs_initial"]),
            (f"2 % delta (CLI{mode})", delta.seconds, delta.records / delta.seconds, delta.writes,
             f"ldapmodify {r['ldapmodify_s']:.1f} s", r["delta_vs_ldapmodify"]),
            ("  same vs ldapmodify+parse", delta.seconds, None, None,
             f"{r['ldapmodify_s']:.1f}+{check_s:.1f} s", r["delta_vs_ldapmodify_plus_parse"]),
            ("ldapmodify same changes", r["ldapmodify_s"], r["ldapmodify_changes"]
             / r["ldapmodify_s"], r["ldapmodify_changes"], "", None),
        ]
        for night, label in (("initial", "initial"), ("noop", "no-change"), ("delta", "delta")):
            n = af[night]
            rows.append((f"Airflow {label} ({dags})", n.seconds,
                         n.records / n.seconds if n.seconds else None, n.writes,
                         f"CLI {cli_same[night]:.1f} s", n.seconds / cli_same[night]))
            rows.append(("  Airflow process, per DagRun", n.process_s, None, None,
                         f"CLI {cli_same[night]:.1f} s", n.process_s / cli_same[night]))
        rows.extend(extra or [])
        head = (f"{'stage':34} {'wall s':>8} {'records/s':>10} {'writes':>8}  "
                f"{'reference':24} {'ratio':>7}")
        print()
        print(f"scale {self.scale}: {r['schools']} schools, {r['accounts']} accounts, "
              f"{r['entries']} entries; peak RSS {r['peak_rss_mib']} MiB per process "
              f"({r['peak_rss_sum_mib']} MiB for the academies at once); Airflow DagRuns vs "
              f"CLI (3 nights) {r['airflow_vs_cli']} ({r['airflow_process_vs_cli']} in the "
              f"Airflow processes; {r['airflow_process_with_start_vs_cli']} adding their "
              f"one-off start, {r['airflow_start_s']} s); logins held by accounts of two "
              f"academies' state DBs: {r['shared_logins']}")
        print(head)
        print("-" * len(head))
        for stage, wall, rate, writes, ref, ratio in rows:
            print(f"{stage:34} {wall:8.1f} {'' if rate is None else f'{rate:10.0f}':>10} "
                  f"{'' if writes is None else writes:>8}  {ref:24} "
                  f"{'' if ratio is None else f'{ratio:7.3f}':>7}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=4, help="entsync sync --workers")
    p.add_argument("--sequential", action="store_true",
                   help="sync the academies one after the other (default: at once, as the "
                   "three academy DAGs run each night)")
    p.add_argument("--first-load-only", action="store_true",
                   help="only the initial load against ldapadd, its first writes and memory "
                   "(a quick look at 1.0; the whole bench is `make bench`)")
    p.add_argument("--until-delta", action="store_true",
                   help="only the initial load, the no-change night and the 2 % night against "
                   "their references (the nights a change to the sync moves first)")
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    p.add_argument("--out", help="the results (default bench/results/latest.json; "
                   "first-load.json with --first-load-only, first-nights.json with "
                   "--until-delta)")
    a = p.parse_args(argv)
    if a.first_load_only and a.until_delta:
        raise SystemExit("--first-load-only or --until-delta, not both")
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="entsync-bench-"))
    if a.keep and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    bench = Bench(root.resolve(), a.scale, a.seed, a.workers,
                  parallel=not a.sequential, first_load_only=a.first_load_only,
                  until_delta=a.until_delta)
    started = time.perf_counter()
    try:
        results = bench.run()
    finally:
        bench.stop_all()
    results["bench_s"] = round(time.perf_counter() - started, 1)
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out = Path(a.out or RESULTS / ("first-load.json" if a.first_load_only
                                   else "first-nights.json" if a.until_delta
                                   else "latest.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    out.write_text(text, "utf-8")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (out.parent / f"scale{a.scale}-{stamp}.json").write_text(text, "utf-8")
    print(f"\nresults: {out} (bench {results['bench_s']} s)")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
