"""Peak memory of the streaming pupils reader on a large generated BEE_ELEVES file.

    python bench/read_memory.py [--mb 200]

Generates a bare ISO-8859-15 ElevesSansAdresses file of about --mb MB, then in fresh child
processes: (1) imports the reader and stops (the reference: interpreter + pandas + pyarrow +
lxml; pandas loads pyarrow when it is installed, most of it shared library pages), (2) reads
the whole file into canonical tables. Prints file size, peak RSS of each, the RSS the reading
added and its ratio to the file size, the tables' own size, and throughput. Figures are
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from etl.read.siecle import read_siecle_eleves
from etl.discover.xmlsafe import XmlSource
mode, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
n = 0
tables = 0
if mode == "read":
    res = read_siecle_eleves(XmlSource(Path(path)), "0671234C")
    n = len(res.tables["persons"])
seconds = time.perf_counter() - t
if mode == "read":
    tables = sum(int(df.memory_usage(deep=True, index=False).sum())
                 for df in res.tables.frames.values())
print(json.dumps({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": seconds, "pupils": n, "tables_bytes": tables}))
"""


def child(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], check=True,
                         capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200.0)
    ap.add_argument("--keep", help="write the file here instead of a temp folder")
    a = ap.parse_args()
    from etl.devtools.generate import generate_pupils_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(a.keep or tmp) / "ElevesSansAdresses.xml"
        pupils = int(a.mb * 1024 * 1024 / 1430)
        t = time.perf_counter()
        generate_pupils_file(path, pupils, seed=1, uai="0671234C")
        gen_s = time.perf_counter() - t
        size_mb = path.stat().st_size / 2**20
        ref = child("import", path)
        read = child("read", path)
    added = (read["rss_kb"] - ref["rss_kb"]) / 1024
    rows = [
        ("file size (MB)", f"{size_mb:.1f}"),
        ("pupils", f"{int(read['pupils'])}"),
        ("generation (s)", f"{gen_s:.1f}"),
        ("reference peak RSS: imports only (MB)", f"{ref['rss_kb'] / 1024:.1f}"),
        ("reader peak RSS (MB)", f"{read['rss_kb'] / 1024:.1f}"),
        ("RSS added by reading (MB)", f"{added:.1f}"),
        ("added RSS / file size", f"{added / size_mb:.3f}"),
        ("tables as pandas counts them (MB)", f"{read['tables_bytes'] / 2**20:.1f}"),
        ("read throughput (MB/s)", f"{size_mb / read['seconds']:.1f}"),
        ("read throughput (pupils/s)", f"{read['pupils'] / read['seconds']:.0f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print("\n".join(f"{k:<{w}}  {v:>10}" for k, v in rows))


if __name__ == "__main__":
    main()
