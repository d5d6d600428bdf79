"""Does the directory server survive RFC 5805 transactions? (why they are off by default)

    python -m bench.txn_stress [--rounds 15] [--entries 400] [--size 50] [--workers 1]
                               [--stale]

Each round starts a fresh slapd (the project's config), writes --entries OUs in transactions
of --size operations through etl.apply.writer's DirectoryWriter (--stale: one entry already there,
so a commit fails and its batch is replayed), checks the server still runs, and stops it.
Prints the rounds whose slapd died (the kernel log says how: `dmesg | grep slapd`).

Seen on Debian 12's slapd 2.5.13 on 2026-11-28 (the project's config; 400 entries, 50 per
transaction): with the whole batch written at once on one connection, 8 and 3 rounds of 15
died; one request in flight per transaction, 1 of 15 on four connections; one transaction at
a time on one connection (what etl.apply.writer does), 1 of 15 with --stale, then 0 of 25 and 0 of 8
without; with the syncprov overlay removed from the config, 0 of 20, and 1 of 25 with --stale
(a general protection fault in libc). Segfaults and protection faults inside slapd or libc,
so not the client's doing: transactions stay off by default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import ldap3

from etl.apply.writer import DirectoryWriter, LdapTarget
from etl.devtools.slapd import is_running, start_slapd, stop_slapd
from etl.plan.diff import Change


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--entries", type=int, default=400)
    p.add_argument("--size", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--stale", action="store_true")
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="entsync-txn-"))
    dead = []
    for n in range(a.rounds):
        folder = root / f"s{n}"
        srv = start_slapd(folder)
        if a.stale:
            c = ldap3.Connection(ldap3.Server(srv.url), srv.root_dn, srv.root_password,
                                 auto_bind=True)
            c.add(f"ou=t00004,ou=people,{srv.base}", ["organizationalUnit"], {"ou": "t00004"})
            c.unbind()
        changes = [Change(op="add", dn=f"ou=t{i:05d},ou=people,{srv.base}", kind="ou",
                          uai=None, category="create",
                          attrs={"objectClass": ["organizationalUnit"], "ou": [f"t{i:05d}"]})
                   for i in range(a.entries)]
        writer = DirectoryWriter(LdapTarget(url=srv.url, bind_dn=srv.bind_dn,
                                            password=srv.password, base=srv.base,
                                            transactions="on", txn_size=a.size),
                                 workers=a.workers, max_retries=0)
        res = writer.apply(changes)
        alive = is_running(folder)
        if not alive:
            dead.append(n)
        print(f"round {n}: {res.applied} applied, {res.failed} failed, {res.transactions} "
              f"transactions, {res.txn_fallbacks} replayed, slapd {'running' if alive else 'DEAD'}",
              flush=True)
        stop_slapd(folder)
    print(f"slapd died in {len(dead)} of {a.rounds} rounds: {dead}")
    return 1 if dead else 0


if __name__ == "__main__":
    sys.exit(main())
