"""The GAR export of the whole generated region, after the sync's nights: time and peak RSS.

    python -m bench.gar [--scale 0.005] [--seed 7] [--keep DIR]

``export_region`` is what ``bench.run`` calls after the delta night: ``entsync gar export``
per academy (a process each, one after the other: each one's peak RSS is its own), against
the directory and state DB the CLI nights left, nothing sent. Standalone, ``main`` generates
a region, syncs it (one night) and exports it. The export streams (people a page at a time,
structures a school at a time): its peak RSS should not grow with the region, unlike the
sync's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from etl.devtools.slapd import LdapServer

XSD = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "gar" / "GAR-ENT.xsd"


def gar_env(server: LdapServer, workdir: Path) -> dict[str, str]:
    """The environment of an export of the bench's data (XSD: ENTSYNC_GAR_XSD, else the
    samples' copy)."""
    from bench.run import clean_env

    env = clean_env(ENTSYNC_WORKDIR=str(workdir), ENTSYNC_GAR_ENT_ID="BENCH", **server.env())
    if "ENTSYNC_GAR_XSD" not in env and XSD.is_file():
        env["ENTSYNC_GAR_XSD"] = str(XSD)
    return env


def export_region(server: LdapServer, work: Path, academies: list[str], out: Path,
                  logs: Path) -> dict[str, Any]:
    """Export each academy (``work/<academy>``: its state DB, as ``bench.run`` keeps them);
    wall time, peak RSS, files and elements per academy."""
    from bench.run import BIN, _check, timed

    res: dict[str, Any] = {"s": 0.0, "rss_mib": 0.0, "elements": 0, "per_academy": {}}
    for academy in academies:
        stdout = logs / f"gar-{academy}.json"
        t = timed([str(BIN / "entsync"), "gar", "export", "--academy", academy, "--out",
                   str(out / academy), "--no-send", "--json"],
                  gar_env(server, work / academy), logs / f"gar-{academy}.log", stdout=stdout)
        _check(t, f"entsync gar export {academy}")
        summary = json.loads(stdout.read_text("utf-8"))
        elements = sum(summary["counts"].values())
        res["s"] += t.seconds
        res["rss_mib"] = max(res["rss_mib"], t.rss_mib)
        res["elements"] += elements
        res["per_academy"][academy] = {"s": round(t.seconds, 2), "rss_mib": round(t.rss_mib, 1),
                                       "files": len(summary["files"]), "elements": elements,
                                       "counts": summary["counts"]}
    res["s"] = round(res["s"], 2)
    res["rss_mib"] = round(res["rss_mib"], 1)
    return res


def main(argv: list[str] | None = None) -> int:
    from bench.run import Bench

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    a = p.parse_args(argv)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="entsync-bench-gar-"))
    bench = Bench(root, a.scale, a.seed, workers=4, parallel=False)
    try:
        bench.generate()
        server = bench.slapd("a")
        night = bench.sync(server, root / "work-a", "initial", bench.academies, "cli")
        gar = export_region(server, root / "work-a", bench.academies, root / "gar", bench.logs)
        print(json.dumps({"scale": a.scale, "schools": bench.results["schools"],
                          "sync_s": round(night.seconds, 2),
                          "sync_rss_mib": round(night.rss_mib, 1), "gar": gar}, indent=1))
    finally:
        bench.stop_all()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
