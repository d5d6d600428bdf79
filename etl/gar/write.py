"""Writing the GAR export: files split every N elements, named as the GAR receives them, then
one ``.tar.gz`` of them and its ``.md5``.

Names (as other ENTs' connectors send them):
``<ENT id>_GAR-ENT_Complet_<yyyyMMdd_HHmmss>_2D_<Kind>_<NNNN>.xml``, numbered from 0000;
``<ENT id>_GAR-ENT_Complet_<yyyyMMdd_HHmmss>_2D.tar.gz`` and ``....md5`` (the hex digest
alone). Elements are written one at a time, each serialized by lxml as it comes (the root's
``men`` namespace declared once, not on every element as ``etree.xmlfile`` would): a file
never exists whole in memory. The same records give the same bytes; the archive's members
carry the export's time, so it depends on nothing else either.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import tarfile
from pathlib import Path
from types import TracebackType
from typing import IO

from lxml import etree

from etl.gar.build import NS, ROOTS, VERSION

#: what lxml puts on an element serialized alone, already on the root
_DECL = f' xmlns:men="{NS}"'.encode()


def stamp_of(when: dt.datetime) -> str:
    """``yyyyMMdd_HHmmss``."""
    return when.strftime("%Y%m%d_%H%M%S")


def prefix_of(ent_id: str, stamp: str) -> str:
    """``<ENT id>_GAR-ENT_Complet_<stamp>_2D``: the archive's name, and its files' start."""
    return f"{ent_id}_GAR-ENT_Complet_{stamp}_2D"


def file_name(prefix: str, kind: str, index: int) -> str:
    return f"{prefix}_{kind}_{index:04d}.xml"


class KindWriter:
    """The files of one kind: a new file (and root element) every ``max_nodes`` elements;
    at least one file, empty root included (the GAR then knows there is nothing)."""

    def __init__(self, folder: Path, prefix: str, kind: str, max_nodes: int) -> None:
        self.folder, self.prefix, self.kind = folder, prefix, kind
        self.max_nodes = max(1, max_nodes)
        self.files: list[Path] = []
        self.count = 0  # elements in the current file
        self.total = 0
        self._fh: IO[bytes] | None = None

    def _open(self) -> None:
        path = self.folder / file_name(self.prefix, self.kind, len(self.files))
        self._fh = path.open("wb")
        self._fh.write(b"<?xml version='1.0' encoding='UTF-8'?>\n"
                       + f'<men:{ROOTS[self.kind]}{_DECL.decode()} Version="{VERSION}">\n'
                       .encode())
        self.files.append(path)
        self.count = 0

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.write(f"</men:{ROOTS[self.kind]}>\n".encode())
            self._fh.close()
            self._fh = None

    def write(self, element: etree._Element) -> None:
        if self._fh is None or self.count >= self.max_nodes:
            self._close()
            self._open()
        assert self._fh is not None
        self._fh.write(etree.tostring(element, encoding="UTF-8", pretty_print=True)
                       .replace(_DECL, b"", 1))
        self.count += 1
        self.total += 1

    def __enter__(self) -> KindWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.files and et is None:
            self._open()  # nothing of this kind: one file with an empty root
        self._close()


def write_archive(files: list[Path], folder: Path, prefix: str,
                  when: dt.datetime) -> tuple[Path, Path]:
    """``<prefix>.tar.gz`` of ``files`` (by name, flat, the export's time on every member)
    and ``<prefix>.md5`` holding its hex digest alone."""
    archive = folder / f"{prefix}.tar.gz"
    mtime = int(when.timestamp())
    part = archive.with_name(archive.name + ".part")
    with part.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(files, key=lambda p: p.name):
            info = tarfile.TarInfo(f.name)
            info.size = f.stat().st_size
            info.mtime, info.mode = mtime, 0o644
            with f.open("rb") as fh:
                tar.addfile(info, fh)
    os.replace(part, archive)
    md5 = folder / f"{prefix}.md5"
    md5.write_text(file_md5(archive), "ascii")
    return archive, md5


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["KindWriter", "file_md5", "file_name", "prefix_of", "stamp_of", "write_archive"]
