"""Opening untrusted export files safely.

Every XML byte the pipeline reads goes through here:
- no DTD: a document with a DOCTYPE is refused before lxml sees it (no entity expansion,
  no external entity, no network DTD), and lxml is told not to resolve or fetch anyway; the
  one exception is the AAF's ``<!DOCTYPE ficAlimMENESR SYSTEM "ficAlimMENESR.dtd">`` exactly
  (no internal subset, root ``ficAlimMENESR``), which real AAF files always carry and which
  declares nothing when nothing resolves it;
- zips are read member by member as streams, never extracted to disk; member names with
  ``..`` or absolute paths, too many members, a compression ratio or total size past the
  limits (zip bombs) are refused, and the uncompressed size is enforced while reading since
  a zip header can lie;
- the declared encoding (or BOM) is honoured by lxml.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lxml import etree

from etl.errors import FileChanged, FileRejected

MAX_MEMBERS = 64
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_RATIO = 200.0
MAX_TOTAL_BYTES = 8 * 1024**3
PROLOG_SCAN = 64 * 1024


@dataclass(frozen=True)
class XmlSource:
    """One XML document: a bare file, or a member of a zip.

    ``expect_sha256`` / ``expect_size``: what discovery recorded (the document's sha256, the
    file's size); when set, ``open_source`` refuses a file that is not that one any more
    (``FileChanged``): the reading stage may run minutes after discovery, on another worker."""

    path: Path
    member: str | None = None
    expect_sha256: str | None = field(default=None, compare=False)
    expect_size: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def short_name(self) -> str:
        return f"{self.path.name}!{self.member}" if self.member else self.path.name


class _LimitedReader(io.RawIOBase):
    """A read-only stream that fails once more than ``limit`` bytes came out.

    Errors of the zip layer (bad CRC, truncated deflate stream, a header that lied about the
    size) become FileRejected so callers only ever see the pipeline's own exception.
    """

    def __init__(self, raw: IO[bytes], limit: int, name: str) -> None:
        self._raw, self._limit, self._name, self._n = raw, limit, name, 0

    def readable(self) -> bool:
        return True

    def _read(self, size: int) -> bytes:
        try:
            data = self._raw.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as e:
            raise FileRejected(self._name, f"corrupt zip member: {e}") from e
        self._n += len(data)
        if self._n > self._limit:
            raise FileRejected(self._name, f"uncompressed size exceeds {self._limit} bytes")
        return data

    def readinto(self, b: Any) -> int:
        data = self._read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._read(size)


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
    total = 0
    for info in infos:
        check_member_name(zip_path, info.filename)
        if info.is_dir():
            continue
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise FileRejected(str(zip_path), f"zip expands past {MAX_TOTAL_BYTES} bytes")
        if info.file_size > MAX_MEMBER_BYTES:
            raise FileRejected(str(zip_path), f"member {info.filename!r} is too large")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
            raise FileRejected(
                str(zip_path), f"member {info.filename!r} compression ratio too high (zip bomb?)"
            )
        if info.flag_bits & 0x1:
            other.append((info.filename, "encrypted member"))
        elif info.filename.lower().endswith(".xml"):
            xml.append(info.filename)
        else:
            other.append((info.filename, "not an XML member"))
    return xml, other


class _HashingReader(io.RawIOBase):
    """Hands the bytes read through, hashing them: the check that a document is still the
    one discovery recorded costs no second read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self.sha = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self.sha.update(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drained_digest(self) -> str | None:
        """The sha256 of every byte of the stream (the unread rest read now); None when the
        rest cannot be read (then it is not what discovery read in full)."""
        try:
            for chunk in iter(lambda: self._raw.read(1024 * 1024), b""):
                self.sha.update(chunk)
        except (FileRejected, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
            return None
        return self.sha.hexdigest()


def _open_checked(src: XmlSource) -> IO[bytes]:
    """The file as discovery saw it, or FileChanged: opened without following a symbolic
    link, without blocking on a FIFO, a regular file of the size recorded."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(src.path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileChanged(src.name, "the file is gone since discovery") from None
    except OSError as e:
        if os.path.islink(src.path):
            raise FileChanged(src.name, "replaced by a symbolic link since discovery") from e
        raise FileChanged(src.name, f"cannot be opened again: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileChanged(src.name, "no longer a regular file since discovery")
        if src.expect_size is not None and st.st_size != src.expect_size:
            raise FileChanged(src.name, f"size changed since discovery ({src.expect_size} "
                                        f"bytes, now {st.st_size})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _checked_source(src: XmlSource) -> Iterator[IO[bytes]]:
    """``open_source`` of a document whose sha256 discovery recorded: hashed as it is read;
    FileChanged when its bytes are not those (a reading error on bytes that changed is the
    change, not a bad file)."""
    f = _open_checked(src)
    with f:
        inner = open_source(XmlSource(src.path, src.member), _file=f)
        with inner as raw:
            h = _HashingReader(raw)
            try:
                yield io.BufferedReader(h, 1024 * 1024)
            except FileRejected as e:
                if h.drained_digest() != src.expect_sha256:
                    raise FileChanged(src.name, "its content changed since discovery "
                                                "(another sha256)") from e
                raise
            if h.drained_digest() != src.expect_sha256:
                raise FileChanged(src.name, "its content changed since discovery "
                                            "(another sha256)")


@contextmanager
def open_source(src: XmlSource, _file: IO[bytes] | None = None) -> Iterator[IO[bytes]]:
    """A binary stream of the XML bytes, size-limited, never extracted to disk (checked
    against discovery's record when ``src`` carries one: ``_checked_source``)."""
    if src.expect_sha256 is not None and _file is None:
        with _checked_source(src) as checked:
            yield checked
        return
    if _file is not None and src.member is None:
        yield _file
        return
    if src.member is None:
        with open(src.path, "rb") as f:
            yield f
        return
    check_member_name(src.path, src.member)
    try:
        zf = zipfile.ZipFile(_file if _file is not None else src.path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FileRejected(str(src.path), f"not a readable zip: {e}") from e
    with zf:
        try:
            info = zf.getinfo(src.member)
        except KeyError as e:
            raise FileRejected(src.name, "zip member not found") from e
        limit = min(MAX_MEMBER_BYTES, max(info.compress_size, 1) * int(MAX_RATIO))
        try:
            raw = zf.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as e:
            raise FileRejected(src.name, f"cannot open zip member: {e}") from e
        with raw:
            yield io.BufferedReader(_LimitedReader(raw, limit, src.name), 1024 * 1024)


#: the end of the exports' header (SIECLE/BEE and STS-web: export date and time stamps)
_HEADER_END = b"</PARAMETRES>"


def digests(src: XmlSource, head: int = 1 << 20) -> tuple[str, str]:
    """(sha256 of the document, sha256 of its bytes past its header) in one streaming pass.

    The header ends at ``</PARAMETRES>`` in the first MiB (SIECLE/BEE and STS-web: export date
    and time stamps); without one the content digest covers the whole document. The same
    records exported on another day have the same content digest."""
    whole, content = hashlib.sha256(), hashlib.sha256()
    with open_source(src) as f:
        first = f.read(head)
        whole.update(first)
        cut = first.find(_HEADER_END)
        content.update(first[cut + len(_HEADER_END):] if cut >= 0 else first)
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            whole.update(chunk)
            content.update(chunk)
    return whole.hexdigest(), content.hexdigest()


#: the one DOCTYPE accepted: the AAF's, exactly as real AAF files carry it (root name,
#: SYSTEM id of the AAF DTD, no internal subset). It is never resolved: lxml runs with
#: ``load_dtd``, ``resolve_entities`` and the network off, so it declares nothing
_AAF_DOCTYPE = re.compile(
    rb"<!DOCTYPE[ \t\r\n]+ficAlimMENESR[ \t\r\n]+SYSTEM[ \t\r\n]+"
    rb"(?:\"ficAlimMENESR\.dtd\"|'ficAlimMENESR\.dtd')[ \t\r\n]*>")
#: what may come between that DOCTYPE and the root element: blanks, comments, PIs
_MISC = re.compile(rb"(?:[ \t\r\n]+|<!--(?:(?!-->).)*-->|<\?(?:(?!\?>).)*\?>)*", re.DOTALL)
_DTD_REFUSED = "document has a DOCTYPE/ENTITY declaration (refused by design)"


def allowed_doctype(probe: bytes) -> tuple[int, int] | None:
    """Where the head holds the AAF DOCTYPE (``_AAF_DOCTYPE``), followed by the root element
    ``ficAlimMENESR``; None when it holds no such declaration. Any other DOCTYPE, an
    internal subset, a PUBLIC id, another DTD or another root is not this form."""
    m = _AAF_DOCTYPE.search(probe)
    if m is None or _MISC.fullmatch(probe, 0, m.start()) is None:
        return None  # none, or not in the prolog
    after = _MISC.match(probe, m.end())
    rest = probe[after.end() if after else m.end():]
    if re.match(rb"<ficAlimMENESR[ \t\r\n/>]", rest) is None:
        return None
    return m.start(), m.end()


def check_prolog(head: bytes, name: str) -> tuple[int, int] | None:
    """Refuse DTDs and entity declarations: exports never carry one, except the AAF's
    standard ``<!DOCTYPE ficAlimMENESR SYSTEM "ficAlimMENESR.dtd">`` (``allowed_doctype``),
    whose span in ``head`` is returned (None when there is none)."""
    bom = len(head) - len(head.lstrip(b"\xef\xbb\xbf"))
    probe = head[bom:]
    # UTF-16 exports do not exist; a NUL byte in the head is a sign of binary or UTF-16
    if b"\x00" in probe[:4096]:
        raise FileRejected(name, "not an XML text file (binary or UTF-16 content)")
    span = allowed_doctype(probe)
    # the accepted DOCTYPE blanked out (same length: positions, hence lines, are kept)
    rest = probe if span is None else (probe[:span[0]] + b" " * (span[1] - span[0])
                                       + probe[span[1]:])
    upper = rest.upper()
    at = [i for m in (b"<!DOCTYPE", b"<!ENTITY") if (i := upper.find(m)) >= 0]
    if at:
        raise FileRejected(name, _DTD_REFUSED, line=probe.count(b"\n", 0, min(at)) + 1)
    if not probe.strip():
        raise FileRejected(name, "empty file")
    return None if span is None else (span[0] + bom, span[1] + bom)


#: markers of a DTD; the head is checked case-insensitively, the rest of the stream for the
#: spellings libxml2 could act on
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"<!doctype", b"<!entity")
_OVERLAP = max(len(m) for m in _DTD_MARKERS) - 1


class _PrologCheckingReader(io.RawIOBase):
    """Checks the first bytes for DTDs before handing the stream to lxml, then keeps watching.

    A DOCTYPE may follow a prolog longer than ``PROLOG_SCAN`` (comments, whitespace), so every
    later chunk is scanned too (with an overlap so a marker split across reads is seen).
    lxml re-raises the FileRejected raised here unchanged (tests/test_xmlsafe.py proves it).
    """

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw, self._name, self._checked = raw, name, False
        self._buf = b""
        self._tail = b""
        self._lines = 0  # newlines handed on so far (the line of a DTD found later)

    def readable(self) -> bool:
        return True

    def _scan(self, data: bytes) -> None:
        window = self._tail + data
        at = [i for m in _DTD_MARKERS if (i := window.find(m)) >= 0]
        if at:
            # lines before this window, then those of the window up to the marker
            line = self._lines - self._tail.count(b"\n") + window.count(b"\n", 0, min(at)) + 1
            raise FileRejected(self._name, _DTD_REFUSED, line=line)
        self._lines += data.count(b"\n")
        self._tail = window[-_OVERLAP:]

    def read(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        if not self._checked:
            head = self._raw.read(PROLOG_SCAN)
            span = check_prolog(head, self._name)
            self._checked = True
            self._buf = head
            self._lines = head.count(b"\n")
            # the accepted DOCTYPE is no marker for what follows: blanked in the tail only
            seen = head if span is None else head[:span[0]] + b" " + head[span[1]:]
            self._tail = seen[-_OVERLAP:]
        if self._buf:
            if size < 0 or size >= len(self._buf):
                out, self._buf = self._buf, b""
                if size < 0:
                    rest = self._raw.read()
                    self._scan(rest)
                    out += rest
                return out
            out, self._buf = self._buf[:size], self._buf[size:]
            return out
        data = self._raw.read(size)
        self._scan(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


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
    """A FileRejected for an lxml parse error, with the line lxml reported when it gave one."""
    line = getattr(e, "lineno", None)
    if not isinstance(line, int) or line <= 0:
        pos = getattr(e, "position", None)
        line = pos[0] if isinstance(pos, tuple) and pos and isinstance(pos[0], int) else None
    if line is not None and line <= 0:
        line = None
    msg = getattr(e, "msg", None)
    if not isinstance(msg, str) or not msg:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return FileRejected(name, f"malformed or truncated XML: {msg}", uai=uai, line=line)
