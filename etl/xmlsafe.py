"""Opening untrusted export files safely.

Every XML byte the pipeline reads goes through here:
- no DTD: a document with a DOCTYPE is refused before lxml sees it (no entity expansion,
  no external entity, no network DTD), and lxml is told not to resolve or fetch anyway;
- zips are read member by member as streams, never extracted to disk; member names with
  ``..`` or absolute paths, too many members, a compression ratio or total size past the
  limits (zip bombs) are refused, and the uncompressed size is enforced while reading since
  a zip header can lie;
- the declared encoding (or BOM) is honoured by lxml.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lxml import etree

from etl.errors import FileRejected

MAX_MEMBERS = 64
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_RATIO = 200.0
PROLOG_SCAN = 64 * 1024


@dataclass(frozen=True)
class XmlSource:
    """One XML document: a bare file, or a member of a zip."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def short_name(self) -> str:
        return f"{self.path.name}!{self.member}" if self.member else self.path.name


class _LimitedReader(io.RawIOBase):
    """A read-only stream that fails once more than ``limit`` bytes came out."""

    def __init__(self, raw: IO[bytes], limit: int, name: str) -> None:
        self._raw, self._limit, self._name, self._n = raw, limit, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        self._n += len(data)
        if self._n > self._limit:
            raise FileRejected(self._name, f"uncompressed size exceeds {self._limit} bytes")
        b[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._n += len(data)
        if self._n > self._limit:
            raise FileRejected(self._name, f"uncompressed size exceeds {self._limit} bytes")
        return data


def check_member_name(zip_path: Path, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise FileRejected(str(zip_path), f"zip member with unsafe path {name!r}")


def list_zip_xml(zip_path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """XML members of a zip, and the other members with why they are ignored.

    Raises FileRejected for a zip that is unreadable, a bomb, or holds path tricks.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise FileRejected(str(zip_path), f"not a readable zip: {e}") from e
    if len(infos) > MAX_MEMBERS:
        raise FileRejected(str(zip_path), f"zip holds {len(infos)} members (max {MAX_MEMBERS})")
    xml: list[str] = []
    other: list[tuple[str, str]] = []
    for info in infos:
        check_member_name(zip_path, info.filename)
        if info.is_dir():
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            raise FileRejected(str(zip_path), f"member {info.filename!r} is too large")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
            raise FileRejected(
                str(zip_path), f"member {info.filename!r} compression ratio too high (zip bomb?)"
            )
        if info.filename.lower().endswith(".xml"):
            xml.append(info.filename)
        else:
            other.append((info.filename, "not an XML member"))
    return xml, other


@contextmanager
def open_source(src: XmlSource) -> Iterator[IO[bytes]]:
    """A binary stream of the XML bytes, size-limited, never extracted to disk."""
    if src.member is None:
        with open(src.path, "rb") as f:
            yield f
        return
    check_member_name(src.path, src.member)
    try:
        zf = zipfile.ZipFile(src.path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FileRejected(str(src.path), f"not a readable zip: {e}") from e
    with zf:
        info = zf.getinfo(src.member)
        limit = min(MAX_MEMBER_BYTES, max(info.compress_size, 1) * int(MAX_RATIO))
        with zf.open(info) as raw:
            yield io.BufferedReader(_LimitedReader(raw, limit, src.name), 1024 * 1024)


def sha256_of(src: XmlSource) -> str:
    h = hashlib.sha256()
    with open_source(src) as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def check_prolog(head: bytes, name: str) -> None:
    """Refuse DTDs and entity declarations: exports never carry one."""
    probe = head.lstrip(b"\xef\xbb\xbf")
    # UTF-16 exports do not exist; a NUL byte in the head is a sign of binary or UTF-16
    if b"\x00" in probe[:4096]:
        raise FileRejected(name, "not an XML text file (binary or UTF-16 content)")
    upper = probe.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise FileRejected(name, "document has a DOCTYPE/ENTITY declaration (refused by design)")
    if not probe.strip():
        raise FileRejected(name, "empty file")


class _PrologCheckingReader(io.RawIOBase):
    """Checks the first bytes for DTDs before handing the stream to lxml."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw, self._name, self._checked = raw, name, False
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._checked:
            head = self._raw.read(PROLOG_SCAN)
            check_prolog(head, self._name)
            self._checked = True
            self._buf = head
        if self._buf:
            if size < 0 or size >= len(self._buf):
                out, self._buf = self._buf, b""
                if size < 0:
                    out += self._raw.read()
                return out
            out, self._buf = self._buf[:size], self._buf[size:]
            return out
        return self._raw.read(size)


def iterparse(
    stream: IO[bytes], name: str, events: tuple[str, ...] = ("end",), tag: Any = None
) -> Any:
    """lxml iterparse with every network/entity/DTD feature off."""
    return etree.iterparse(
        _PrologCheckingReader(stream, name),
        events=events,
        tag=tag,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def xml_error(name: str, e: Exception, uai: str | None = None) -> FileRejected:
    line = getattr(e, "lineno", None) or getattr(getattr(e, "position", None), "__getitem__", None)
    if not isinstance(line, int):
        line = None
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return FileRejected(name, f"malformed or truncated XML: {msg}", uai=uai, line=line)
