"""Does the sync's CPU work slow a directory server on the same machine? It depends on where
the kernel puts them.

Starts a throwaway slapd (``etl.devtools.slapd.start_slapd``: in the caller's session), then adds
the same number of small entries with ``ldapadd`` (``--clients`` at once, durable writes)
while ``--busy`` CPU-bound processes run (as the reading and planning of other academies do):

- in the caller's session (the sync under `make run`, the bench, or an Airflow started from
  the same shell as the embedded slapd), at niceness 10 (``ENTSYNC_NICE``), or in
  ``SCHED_IDLE``;
- in a session of their own: Linux's autogroup scheduling (on by default) gives each session
  a scheduling group, the groups compete for the CPU as equals whatever their tasks'
  niceness, and a task waking in another group waits behind a busy one.

Each figure is the add rate against the rate with nothing else running (same run, same
slapd). Seen on this machine kind (2 cores, 4 clients): two busy processes in another session
cut slapd's adds 4x to 10x, whatever their niceness or policy (0.13-0.24); in slapd's session,
at niceness 10, by 14-33 % (0.67-0.86); in ``SCHED_IDLE``, by 5-22 % (0.78-0.95).

    python -m bench.sched [--entries 4000] [--clients 4] [--busy 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from etl.devtools.slapd import LdapServer, start_slapd, stop_slapd

BUSY = {
    "nice 10": "import os; os.nice(10)\nwhile True: pass",
    "nice 19": "import os; os.nice(19)\nwhile True: pass",
    "SCHED_IDLE": ("import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
                   "while True: pass"),
}


def _ldif(path: Path, base: str, prefix: str, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"dn: cn={prefix}{i},ou=sched,{base}\nobjectClass: inetOrgPerson\n"
                    f"cn: {prefix}{i}\nsn: s{i}\n\n")


def _adds(server: LdapServer, ldifs: list[Path]) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen(["ldapadd", "-x", "-H", server.url, "-D", server.root_dn,
                               "-w", server.root_password, "-f", str(f)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for f in ldifs]
    for p in procs:
        _out, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"ldapadd failed: {err.decode(errors='replace')[-300:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=4000, help="adds per measure")
    p.add_argument("--clients", type=int, default=4, help="ldapadd processes at once")
    p.add_argument("--busy", type=int, default=2, help="CPU-bound processes")
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="entsync-sched-"))
    server = start_slapd(root / "slapd")
    rows: list[tuple[str, float]] = []
    try:
        subprocess.run(["ldapadd", "-x", "-H", server.url, "-D", server.root_dn, "-w",
                        server.root_password], input=f"dn: ou=sched,{server.base}\n"
                       "objectClass: organizationalUnit\nou: sched\n", text=True, check=True,
                       capture_output=True)
        cases = [("nothing else", None, False)] + [
            (f"{a.busy} busy, {where}, {policy}", policy, own)
            for own, where in ((False, "slapd's session"), (True, "own session"))
            for policy in BUSY]
        for n, (label, policy, own_session) in enumerate(cases):
            per = a.entries // a.clients
            ldifs = []
            for c in range(a.clients):
                f = root / f"case{n}-{c}.ldif"
                _ldif(f, server.base, f"c{n}x{c}y", per)
                ldifs.append(f)
            busy = [subprocess.Popen([sys.executable, "-c", BUSY[policy]],
                                     start_new_session=own_session)
                    for _ in range(a.busy)] if policy else []
            try:
                time.sleep(0.3 if busy else 0)
                rows.append((label, per * a.clients / _adds(server, ldifs)))
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
    finally:
        stop_slapd(root / "slapd")
        shutil.rmtree(root, ignore_errors=True)
    ref = rows[0][1]
    print(f"{'while ldapadd x' + str(a.clients) + ' writes':<44} {'adds/s':>8} {'ratio':>7}")
    for label, rate in rows:
        print(f"{label:<44} {rate:8.0f} {rate / ref:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
