"""`entsync audit` timed on the region's directory against `ldapsearch` of the same entries.

`time_audits` (``bench/run.py`` calls it after the delta night, on the directory and state DBs
that night left): per academy, `entsync audit --academy A --json` (its paged read of the
academy's part and the comparison with the state DB), then `ldapsearch` of the very same
entries: one paged subtree search per school of the academy and one of its accounts (the
filter `etl.audit.read` uses), the output discarded but its entries counted. A search per
school is a process per school for `ldapsearch`: the reference pays those starts, counted in
``ldapsearch_processes``.

Standalone, at a tiny scale (proof that the function runs; not a measurement):

    python -m bench.audit [--schools 2] [--pupils 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import BIN, _check, clean_env, ldap_args, ldap_tool, timed
from etl.config import get_academy
from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd


def _ldapsearch(server: LdapServer, base: str, flt: str, scope: str, attrs: list[str],
                sink: Any) -> None:
    subprocess.run([ldap_tool("ldapsearch"), *ldap_args(server), "-LLL", "-o", "ldif-wrap=no",
                    "-E", "pr=1000/noprompt", "-s", scope, "-b", base, flt, *attrs],
                   stdout=sink, stderr=subprocess.DEVNULL, check=True)


def ldapsearch_part(server: LdapServer, academy_code: str, out: Path) -> tuple[float, int, int]:
    """The academy's part read with `ldapsearch`, as the audit reads it: (seconds, entries,
    processes)."""
    from etl.audit.read import people_filter, schools_filter
    from etl.plan.desired import people_dn, school_dn

    academy = get_academy(academy_code)
    base = server.base
    start = time.perf_counter()
    with out.open("w", encoding="utf-8") as f:
        _ldapsearch(server, f"ou=structures,{base}", schools_filter(academy), "one",
                    ["ENTStructureUAI"], f)
    uais = [line.split(":", 1)[1].strip() for line in out.read_text("utf-8").splitlines()
            if line.startswith("ENTStructureUAI:")]
    with out.open("w", encoding="utf-8") as f:
        for uai in uais:
            _ldapsearch(server, school_dn(uai, base), "(objectClass=*)", "sub", ["*"], f)
        _ldapsearch(server, people_dn(base), people_filter(
            academy, [school_dn(u, base) for u in uais]), "one", ["*"], f)
    seconds = time.perf_counter() - start
    with out.open(encoding="utf-8") as f:
        entries = sum(1 for line in f if line.startswith("dn:"))
    return seconds, entries, len(uais) + 2


def time_audits(server: LdapServer, workdir: Path, academies: list[str],
                logs: Path) -> dict[str, Any]:
    """Per academy (one after the other: each measured alone), `entsync audit` against
    `ldapsearch` of the same entries; the state DB of each is ``workdir/<academy>``'s, as
    ``Bench.sync`` leaves it. An audit finding differences (exit 4) is still timed."""
    out: dict[str, Any] = {}
    raw_a: list[float] = []
    raw_l: list[float] = []
    for academy in academies:
        env = clean_env(ENTSYNC_WORKDIR=str(workdir / academy), **server.env())
        json_out = logs / f"audit-{academy}.json"
        t = timed([str(BIN / "entsync"), "audit", "--academy", academy, "--json"], env,
                  logs / f"audit-{academy}.log", stdout=json_out)
        if t.rc != 4:
            _check(t, f"entsync audit {academy}")
        summary = json.loads(json_out.read_text("utf-8"))
        ls_s, ls_entries, processes = ldapsearch_part(server, academy,
                                                      logs / f"audit-{academy}.ldif")
        raw_a.append(t.seconds)
        raw_l.append(ls_s)
        out[academy] = {
            "audit_s": round(t.seconds, 2), "entries_read": summary["entries_read"],
            "differences": summary["differences"], "rss_mib": round(t.rss_mib, 1),
            "ldapsearch_s": round(ls_s, 2), "ldapsearch_entries": ls_entries,
            "ldapsearch_processes": processes,
            "audit_vs_ldapsearch": round(t.seconds / ls_s, 3) if ls_s else None}
    total_a, total_l = sum(raw_a), sum(raw_l)
    return {"per_academy": out, "audit_s": round(total_a, 2),
            "ldapsearch_s": round(total_l, 2),
            "entries": sum(v["entries_read"] for v in out.values()),
            "audit_vs_ldapsearch": round(total_a / total_l, 3) if total_l else None}


def main(argv: list[str] | None = None) -> int:
    from etl.devtools.generate import generate_academy

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--academy", default="ac-reims")
    p.add_argument("--schools", type=int, default=2)
    p.add_argument("--pupils", type=int, default=50)
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="entsync-bench-audit-"))
    server = start_slapd(root / "slapd")
    try:
        generate_academy(root / "landing", a.academy, a.schools, a.pupils, 1)
        work = root / "work"
        env = clean_env(ENTSYNC_WORKDIR=str(work / a.academy),
                        ENTSYNC_LANDING=str(root / "landing"), **server.env())
        t = timed([str(BIN / "entsync"), "sync", "--academy", a.academy], env,
                  root / "logs" / "sync.log", stdout=Path(os.devnull))
        _check(t, "entsync sync")
        print(json.dumps(time_audits(server, work, [a.academy], root / "logs"), indent=2))
    finally:
        stop_slapd(root / "slapd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
