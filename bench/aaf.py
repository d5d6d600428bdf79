"""The AAF night of `make bench`: the same region as its academies' AAF, read, in MB/s.

    python -m bench.aaf [--scale 0.01] [--seed 7] [--keep DIR]   (standalone, for a quick look)

The region the bench generated as SIECLE/STS exports is generated again, same seed, as one
AAF Complet per academy (``entsync generate --format aaf``). Then, on the same machine, one
after the other in this process:

- the SIECLE and STS-web readers over the night's school exports (every document of every
  school; MB are the XML bytes, uncompressed), and a bare ``lxml.etree.iterparse`` over the
  same bytes (each top-level record element parsed and freed, nothing else): the physical
  limit of a streaming reader on this machine;
- the AAF reader over the AAF parts: ``iter_aaf_records`` (requests into records), then
  ``aaf_school_tables`` (records into each school's canonical tables), and a bare iterparse
  of the same files;
- ``entsync check`` of each academy on the AAF landing (discovery, reading, validation), as
  the SIECLE night's parse reference is timed, when the pipeline reads AAF landings (until
  then the row says why not).

Rows go into the bench's one table (MB and MB/s in the reference column, the ratio to the
bare iterparse of the same bytes); the figures into the results JSON under ``aaf_*``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from lxml import etree

from etl.devtools.generate import generate_region
from etl.devtools.generate.aaf import AAF_TYPES, aaf_files
from etl.discover.xmlsafe import XmlSource

#: SIECLE zip -> (member, reader name in etl.read.siecle); the STS file is read by read_sts
SIECLE_DOCS = {
    "ExportXML_ElevesSansAdresses.zip": ("ElevesSansAdresses.xml", "read_siecle_eleves"),
    "ExportXML_ResponsablesAvecAdresses.zip": ("ResponsablesAvecAdresses.xml",
                                               "read_siecle_responsables"),
    "ExportXML_Nomenclature.zip": ("Nomenclature.xml", "read_siecle_nomenclatures"),
    "ExportXML_Structures.zip": ("Structures.xml", "read_siecle_structures"),
}
#: the record elements a bare iterparse frees as it goes (one per person, link, structure)
SIECLE_RECORDS = ("ELEVE", "STRUCTURES_ELEVE", "PERSONNE", "RESPONSABLE_ELEVE", "ADRESSE",
                  "MEF", "MATIERE", "DIVISION", "GROUPE", "INDIVIDU")
AAF_RECORDS = ("addRequest", "modifyRequest", "deleteRequest")

Row = tuple[str, float, float | None, int | None, str, float | None]


def siecle_documents(landing: Path) -> list[tuple[str, XmlSource, str, int]]:
    """Every school document of a SIECLE/STS landing: (UAI, source, reader, XML bytes)."""
    docs: list[tuple[str, XmlSource, str, int]] = []
    for folder in sorted(p for p in landing.glob("*/*") if p.is_dir()):
        for zname, (member, reader) in SIECLE_DOCS.items():
            with zipfile.ZipFile(folder / zname) as z:
                size = z.getinfo(member).file_size
            docs.append((folder.name, XmlSource(folder / zname, member), reader, size))
        for sts in sorted(folder.glob("sts_emp_*.xml")):
            docs.append((folder.name, XmlSource(sts), "read_sts", sts.stat().st_size))
    return docs


@contextmanager
def _open(src: XmlSource) -> Iterator[IO[bytes]]:
    if src.member is None:
        with src.path.open("rb") as f:
            yield f
    else:
        with zipfile.ZipFile(src.path) as z, z.open(src.member) as f:
            yield f


def bare_iterparse(sources: list[XmlSource], tags: tuple[str, ...]) -> tuple[float, int]:
    """Seconds to stream the sources with lxml alone (record elements freed); records seen."""
    n = 0
    start = time.perf_counter()
    for src in sources:
        with _open(src) as f:
            for _event, el in etree.iterparse(f, events=("end",), tag=tags, load_dtd=False,
                                              resolve_entities=False, no_network=True,
                                              huge_tree=True):
                n += 1
                el.clear(keep_tail=True)
                while el.getprevious() is not None:
                    del el.getparent()[0]
    return time.perf_counter() - start, n


def read_siecle(docs: list[tuple[str, XmlSource, str, int]]) -> tuple[float, int]:
    """Seconds the SIECLE and STS readers take over the documents; records they read."""
    from etl.read import siecle, sts

    readers: dict[str, Callable[..., Any]] = {
        name: getattr(siecle, name) for _m, name in SIECLE_DOCS.values()}
    readers["read_sts"] = sts.read_sts
    n = 0
    start = time.perf_counter()
    for uai, src, reader, _size in docs:
        n += readers[reader](src, uai).records
    return time.perf_counter() - start, n


def read_aaf(landing: Path, academies: list[str]) -> dict[str, Any]:
    """The AAF reader over each academy's parts: records, then school tables (seconds each);
    ``{"error": ...}`` when the reader is not there (the aafread branch not merged)."""
    try:
        from etl.read.aaf import aaf_school_tables, iter_aaf_records
    except ImportError as e:
        return {"error": f"etl.read.aaf not importable ({e})"}
    out: dict[str, Any] = {"records": 0, "records_s": 0.0, "tables_s": 0.0, "schools": 0}
    for academy in academies:
        folder = landing / academy
        by_type: dict[str, list[Any]] = {}
        start = time.perf_counter()
        for aaf_type in AAF_TYPES:
            by_type[aaf_type] = [rec for path in aaf_files(folder, "Complet", aaf_type)
                                 for rec in iter_aaf_records(XmlSource(path),
                                                             category=aaf_type)]
        out["records_s"] += time.perf_counter() - start
        out["records"] += sum(len(v) for v in by_type.values())
        start = time.perf_counter()
        try:
            schools = aaf_school_tables(
                academy, by_type["EtabEducNat"],
                [*by_type["Eleve"], *by_type["PersRelEleve"], *by_type["PersEducNat"]])
        except NotImplementedError as e:
            out["tables_error"] = f"aaf_school_tables not implemented ({e})"
            continue
        out["tables_s"] += time.perf_counter() - start
        out["schools"] += len(schools)
    return out


def check_aaf(bench: Any, landing: Path) -> dict[str, Any]:
    """`entsync check` of each academy on the AAF landing, as `Bench.check` times the SIECLE
    one; a night that read no AAF school says so instead of a time."""
    from bench.run import BIN, _each, clean_env, timed

    timings: dict[str, Any] = {}
    outputs: dict[str, Path] = {}

    def one(academy: str) -> None:
        env = clean_env(ENTSYNC_WORKDIR=str(bench.root / "work-check-aaf" / academy),
                        ENTSYNC_LANDING=str(landing))
        outputs[academy] = bench.logs / f"check-aaf-{academy}.json"
        timings[academy] = timed(
            [str(BIN / "entsync"), "check", "--academy", academy, "--json"], env,
            bench.logs / f"check-aaf-{academy}.log", stdout=outputs[academy])

    start = time.perf_counter()
    _each(one, bench.academies, bench.parallel)
    seconds = time.perf_counter() - start
    schools = 0
    for academy, t in timings.items():
        if t.rc != 0:
            return {"error": f"entsync check {academy} rc {t.rc} (log {t.log})"}
        try:
            schools += len(json.loads(outputs[academy].read_text("utf-8"))["schools"])
        except (ValueError, KeyError) as e:
            return {"error": f"entsync check {academy}: unreadable output ({e})"}
    if schools == 0:
        return {"error": "entsync check read no AAF school (AAF landings not read yet)"}
    return {"seconds": seconds, "schools": schools}


def _mb(n: int) -> float:
    return n / 2**20


def aaf_night(bench: Any, siecle_landing: Path, date: dt.date) -> tuple[dict[str, Any],
                                                                         list[Row]]:
    """Generate the bench's region as AAF, time the readers (module docstring); the results
    (``aaf_*`` keys) and the table rows. `bench`: the ``bench.run.Bench`` (root, scale, seed,
    academies, logs, parallel); `siecle_landing`: its SIECLE night of the same date."""
    r: dict[str, Any] = {}
    rows: list[Row] = []
    landing = bench.root / "landing-aaf"
    start = time.perf_counter()
    region = generate_region(landing, bench.scale, bench.seed, export_date=date, fmt="aaf")
    r["aaf_generate_s"] = round(time.perf_counter() - start, 2)
    r["aaf_files"] = region.files

    docs = siecle_documents(siecle_landing)
    siecle_bytes = sum(size for *_rest, size in docs)
    bare_s, bare_n = bare_iterparse([src for _u, src, _r, _s in docs], SIECLE_RECORDS)
    read_s, read_n = read_siecle(docs)
    r.update({"siecle_read_mb": round(_mb(siecle_bytes), 2),
              "siecle_read_s": round(read_s, 3),
              "siecle_read_mb_s": round(_mb(siecle_bytes) / read_s, 2),
              "siecle_iterparse_s": round(bare_s, 3),
              "siecle_iterparse_mb_s": round(_mb(siecle_bytes) / bare_s, 2)})
    mb = _mb(siecle_bytes)
    rows.append(("read SIECLE+STS (readers)", read_s, read_n / read_s, None,
                 f"{mb:.1f} MB, {mb / read_s:.1f} MB/s", read_s / bare_s))
    rows.append(("  bare iterparse, same XML", bare_s, bare_n / bare_s, None,
                 f"{mb:.1f} MB, {mb / bare_s:.1f} MB/s", None))

    parts = [p for a in bench.academies for p in aaf_files(landing / a, "Complet")]
    aaf_bytes = sum(p.stat().st_size for p in parts)
    mb = _mb(aaf_bytes)
    bare_s, bare_n = bare_iterparse([XmlSource(p) for p in parts], AAF_RECORDS)
    r.update({"aaf_read_mb": round(mb, 2), "aaf_iterparse_s": round(bare_s, 3),
              "aaf_iterparse_mb_s": round(mb / bare_s, 2)})
    got = read_aaf(landing, bench.academies)
    if "error" in got:
        r["aaf_reader"] = got["error"]
        rows.append(("read AAF: reader missing", 0.0, None, None, got["error"][:24], None))
    else:
        s = got["records_s"]
        r.update({"aaf_records": got["records"], "aaf_records_s": round(s, 3),
                  "aaf_records_mb_s": round(mb / s, 2)})
        rows.append(("read AAF (iter_aaf_records)", s, got["records"] / s, None,
                     f"{mb:.1f} MB, {mb / s:.1f} MB/s", s / bare_s))
        if "tables_error" in got:
            r["aaf_tables"] = got["tables_error"]
        else:
            s = got["records_s"] + got["tables_s"]
            r.update({"aaf_tables_s": round(got["tables_s"], 3), "aaf_schools": got["schools"],
                      "aaf_read_tables_mb_s": round(mb / s, 2)})
            rows.append(("  + aaf_school_tables", s, got["records"] / s, None,
                         f"{mb:.1f} MB, {mb / s:.1f} MB/s", s / bare_s))
    rows.append(("  bare iterparse, AAF files", bare_s, bare_n / bare_s, None,
                 f"{mb:.1f} MB, {mb / bare_s:.1f} MB/s", None))
    check = check_aaf(bench, landing)
    if "error" in check:
        r["aaf_check"] = check["error"]
    else:
        r["aaf_check_s"] = round(check["seconds"], 2)
        ref = bench.results.get("delta_parse_s")
        rows.append(("entsync check AAF (CLI)", check["seconds"], None, None,
                     f"SIECLE check {ref:.1f} s" if ref else "", check["seconds"] / ref
                     if ref else None))
    return r, rows


def main(argv: list[str] | None = None) -> int:
    """The AAF night alone, on a region generated here (a quick look at a small scale)."""
    from bench.run import NIGHTS, Bench

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    a = p.parse_args(argv)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="entsync-bench-aaf-"))
    root.mkdir(parents=True, exist_ok=True)
    bench = Bench(root.resolve(), a.scale, a.seed, workers=1)
    bench.logs.mkdir(parents=True, exist_ok=True)
    try:
        date = NIGHTS["initial"]
        generate_region(bench.landing("initial"), a.scale, a.seed, export_date=date)
        results, rows = aaf_night(bench, bench.landing("initial"), date)
        print(json.dumps(results, indent=2))
        for stage, wall, rate, _w, ref, ratio in rows:
            print(f"{stage:34} {wall:8.2f} {'' if rate is None else f'{rate:10.0f}':>10} "
                  f"{'':>8}  {ref:24} {'' if ratio is None else f'{ratio:7.3f}':>7}")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
