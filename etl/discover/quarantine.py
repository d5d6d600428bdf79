"""The quarantine: every bad export file kept whole, byte for byte, with why it was refused.

``<workdir>/quarantine/<academy>/<run_id>/<folder>/<file name>`` and, beside it,
``<file name>.reason.json`` (file, school, member, line, rule, reason, run, sha256, size: no
personal data). ``<folder>`` is the school's UAI, ``sans-uai`` for a file naming no school,
``plusieurs-uai`` for a zip holding several schools' documents. SIECLE names are the same in
every school: the school's folder keeps them apart, and a second file of the same name with
other bytes in one folder gets its sha256's first 12 digits in its name. A zip is kept once
per run, however many of its members (and schools) are bad: each problem is added to its
reason file.

The copy is written beside its final name, fsynced, renamed into place and its folder
fsynced before anything is removed from the landing zone (so it works the same when the
quarantine is on another filesystem): a crash between the copy and the removal leaves the
original in place, read (and quarantined) again by the next run, or found kept by a retry of
the same run. A zip leaves the landing zone only once every XML document in it was
quarantined; while one of its members is still good (another school's, or another kind), it
stays where it is and only its copy is in quarantine. A dry run (``entsync sync --dry-run``,
``entsync check``) copies, moves and removes nothing.

Old run folders are deleted by the daily ``ent_lifecycle`` (``entsync lifecycle``) after
``ENTSYNC_QUARANTINE_KEEP_DAYS`` days (``purge_quarantine``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any

from etl.runtime.fslock import exclusive

log = logging.getLogger(__name__)

NO_SCHOOL = "sans-uai"
SEVERAL_SCHOOLS = "plusieurs-uai"
REASON_SUFFIX = ".reason.json"
_RUN_STAMP = re.compile(r"-(\d{8}T\d{6})-")


def run_folder(settings: Any, academy: str, run_id: str) -> Path:
    return Path(settings.quarantine_dir) / academy / run_id


def _folder_of(doc: dict[str, Any]) -> str:
    """The school a file is kept under: its documents' one UAI."""
    members: dict[str, str | None] = (doc.get("extra") or {}).get("member_uais") or {}
    schools = {u for u in members.values() if u} or ({doc["uai"]} if doc.get("uai") else set())
    if len(schools) > 1:
        return SEVERAL_SCHOOLS
    return next(iter(schools)) if schools else NO_SCHOOL


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _copy_in(fd_file: Any, folder: Path, name: str) -> tuple[Path, str, int]:
    """Copy an open file into ``folder`` as ``name`` (or ``<stem>-<sha12><suffix>`` when a
    file of that name with other bytes is there): hashed while copied, fsynced, renamed into
    place. Returns (where, sha256, size)."""
    tmp = folder / f".{name}.{secrets.token_hex(4)}.part"
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in iter(lambda: fd_file.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = h.hexdigest()
        dest = folder / name
        if dest.exists() and _sha_of(dest) != sha:
            p = Path(name)
            dest = folder / f"{p.stem}-{sha[:12]}{p.suffix}"
        if dest.exists():  # the same bytes already kept (a retry, another bad member)
            tmp.unlink()
        else:
            os.replace(tmp, dest)
        _fsync_dir(folder)
        return dest, sha, size
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def keep(settings: Any, academy: str, run_id: str, doc: dict[str, Any], reason: str, *,
         rule: str, line: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Keep a bad document's file in the quarantine (``doc``: a discovered document's dict)
    and, once its copy is safe and every document of the file was quarantined, remove it
    from the landing zone. Returns the summary's entry: file, school, reason, ``moved_to``
    (the copy; in a dry run, the file where it stays), its reason file, whether the
    original left the landing zone."""
    src = Path(doc["path"])
    member = doc.get("member")
    short = f"{src.name}!{member}" if member else src.name
    entry: dict[str, Any] = {"file": short, "uai": doc.get("uai"), "kind": doc.get("kind"),
                             "reason": reason, "rule": rule, "line": line,
                             "source": str(src), "moved_to": str(src), "reason_file": None,
                             "removed_from_landing": False}
    if dry_run:
        entry["dry_run"] = True
        return entry
    folder = run_folder(settings, academy, run_id) / _folder_of(doc)
    problem = {"member": member, "school": doc.get("uai"), "kind": doc.get("kind"),
               "rule": rule, "line": line, "reason": reason,
               "document_sha256": doc.get("sha256")}
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(folder.parent / ".lock"):
        folder.mkdir(parents=True, exist_ok=True)
        found = _find_kept(folder, src)
        try:
            f = open(src, "rb", opener=_nofollow)  # closed below
        except OSError as e:
            if found is None:
                entry["moved_to"] = None
                entry["reason"] = f"{reason} (the file could not be kept: {e.strerror})"
                log.error("quarantine of %s: the file could not be kept (%s)", short,
                          e.strerror)
                return entry
            f = None  # already kept by an earlier attempt of this run, then removed
        if f is not None:
            with f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    entry["moved_to"] = None
                    entry["reason"] = f"{reason} (not a regular file: not kept)"
                    return entry
                dest, sha, size = _copy_in(f, folder, src.name)
        else:
            assert found is not None
            dest = found
            sha, size = _sha_of(dest) or "", dest.stat().st_size
        rfile = dest.with_name(dest.name + REASON_SUFFIX)
        info: dict[str, Any] = (json.loads(rfile.read_text("utf-8")) if rfile.exists()
                                else {"file": dest.name, "source": str(src), "sha256": sha,
                                      "size": size, "academy": academy, "run_id": run_id,
                                      "problems": [], "removed_from_landing": False})
        if problem not in info["problems"]:
            info["problems"].append(problem)
        info["schools"] = sorted({str(p["school"]) for p in info["problems"] if p["school"]})
        info.setdefault("quarantined_at", dt.datetime.now(dt.UTC).isoformat(
            timespec="seconds"))
        members = (doc.get("extra") or {}).get("members")
        wanted = set(members) if member is not None and members else {member}
        done = {p["member"] for p in info["problems"]}
        if f is not None and wanted <= done and not info["removed_from_landing"]:
            # every document of the file is quarantined: it may leave the landing zone, once
            # its copy (and why) is on disk, and only if it is still the file copied
            _write_atomic(rfile, json.dumps(info, indent=2, ensure_ascii=False).encode())
            _fsync_dir(folder)
            info["removed_from_landing"] = _remove_original(src, sha)
        _write_atomic(rfile, json.dumps(info, indent=2, ensure_ascii=False).encode())
        _fsync_dir(folder)
    entry.update(moved_to=str(dest), reason_file=str(rfile), sha256=sha,
                 removed_from_landing=bool(info["removed_from_landing"]))
    return entry


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))


def _find_kept(folder: Path, src: Path) -> Path | None:
    """A copy of ``src`` this run already kept in ``folder`` (its reason file names it)."""
    for rfile in sorted(folder.glob(f"*{REASON_SUFFIX}")):
        try:
            info = json.loads(rfile.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        kept = rfile.with_name(rfile.name[: -len(REASON_SUFFIX)])
        if info.get("source") == str(src) and kept.is_file():
            return kept
    return None


def _remove_original(src: Path, sha: str) -> bool:
    """Unlink the landing file if it still holds the bytes that were kept."""
    if _sha_of(src) != sha:
        log.warning("quarantine: %s changed after its copy was made: left in the landing "
                    "zone", src.name)
        return False
    src.unlink()
    _fsync_dir(src.parent)
    return True


def kept_earlier(settings: Any, academy: str, run_id: str,
                 doc: dict[str, Any]) -> dict[str, Any] | None:
    """This run's quarantine entry for a document whose file an earlier attempt of the run
    (an Airflow retry) already kept and removed from the landing zone; None if there is none."""
    folder = run_folder(settings, academy, run_id) / _folder_of(doc)
    if not folder.is_dir():
        return None
    kept = _find_kept(folder, Path(doc["path"]))
    if kept is None:
        return None
    rfile = kept.with_name(kept.name + REASON_SUFFIX)
    info = json.loads(rfile.read_text("utf-8"))
    for p in info.get("problems", []):
        if p.get("member") == doc.get("member"):
            src = Path(doc["path"])
            return {"file": f"{src.name}!{p['member']}" if p.get("member") else src.name,
                    "uai": doc.get("uai"), "kind": doc.get("kind"), "reason": p["reason"],
                    "rule": p.get("rule"), "line": p.get("line"), "source": str(src),
                    "moved_to": str(kept), "reason_file": str(rfile),
                    "sha256": info.get("sha256"),
                    "removed_from_landing": bool(info.get("removed_from_landing"))}
    return None


def _run_time(s: Any, run_id: str, folder: Path) -> tuple[dt.datetime, str | None]:
    """When a quarantined run ended (else started; a run the state DB does not know: the
    time in its id, else the folder's), and its status."""
    from etl.store.models import Run

    run = s.get(Run, run_id)
    if run is not None:
        return run.ended_at or run.started_at, run.status
    m = _RUN_STAMP.search(run_id)
    if m:
        return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S"), None
    return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.UTC).replace(tzinfo=None), None


def purge_quarantine(settings: Any, academy: str, now: dt.datetime | None = None,
                     dry_run: bool = False) -> dict[str, Any]:
    """Delete the academy's quarantine folders of runs that ended more than
    ``settings.quarantine_keep_days`` days ago (a run still running keeps its own)."""
    from etl.store.db import session_factory
    from etl.store.models import utcnow

    now = now or utcnow()
    cutoff = now - dt.timedelta(days=settings.quarantine_keep_days)
    root = Path(settings.quarantine_dir) / academy
    old: list[Path] = []
    if root.is_dir():
        with session_factory(settings.state_url)() as s:
            for folder in sorted(p for p in root.iterdir()
                                 if p.is_dir() and not p.is_symlink()):
                when, status = _run_time(s, folder.name, folder)
                if status != "running" and when < cutoff:
                    old.append(folder)
    files = sum(1 for f in old for p in f.rglob("*")
                if p.is_file() and not p.name.startswith(".")
                and not p.name.endswith(REASON_SUFFIX))
    if not dry_run:
        for folder in old:
            shutil.rmtree(folder)
    if old:
        log.info("quarantine %s: %d run folders (%d files) older than %s %s", academy,
                 len(old), files, f"{cutoff:%Y-%m-%d}",
                 "to purge (dry run)" if dry_run else "purged")
    return {"runs": len(old), "files": files, "dry_run": dry_run,
            "keep_days": settings.quarantine_keep_days}
