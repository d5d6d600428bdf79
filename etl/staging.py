"""The staging area: where a run's tasks hand each other files.

Tables staged by ``read_validate``, the plan and the held plans written by ``reconcile``, read
by ``apply`` and the approval, and copies of the reports. It is a URL (``ENTSYNC_STAGING_URL``,
default ``file://<workdir>/staging``) reached through an object with the pathlib API:
universal_pathlib's ``UPath`` (any fsspec URL: ``file://``, ``s3://``, ``memory://``...), or
the path object the caller put in ``Settings.staging_path`` (the DAGs put an Airflow
``ObjectStoragePath`` there, which carries the credentials of an Airflow connection).

Tasks pass each other *references*: keys relative to the staging root (``<run_id>/plan.json``),
never local paths, so a task may run on another machine than the one that wrote the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

LOCAL_PROTOCOLS = ("", "file", "local")


def root(settings: Any) -> Any:
    """The staging root as a path object."""
    if settings.staging_path is not None:
        return settings.staging_path
    from upath import UPath

    return UPath(settings.staging_url)


def path(settings: Any, ref: str) -> Any:
    """The path object of a reference (relative key; an absolute local path or a full URL,
    as older runs recorded them, is taken as is)."""
    if "://" in ref or ref.startswith("/"):
        from upath import UPath

        return UPath(ref)
    return root(settings) / ref


def _ensure_parent(p: Any) -> None:
    if getattr(p, "protocol", "") in LOCAL_PROTOCOLS:
        p.parent.mkdir(parents=True, exist_ok=True)


def write_bytes(settings: Any, ref: str, data: bytes) -> str:
    """Write a staged file; returns its reference."""
    p = path(settings, ref)
    _ensure_parent(p)
    p.write_bytes(data)
    return ref


def write_chunks(settings: Any, ref: str, chunks: Iterable[bytes]) -> str:
    """Write a staged file from a stream of byte chunks (never the whole file in memory);
    returns the sha256 of exactly the bytes written."""
    p = path(settings, ref)
    _ensure_parent(p)
    h = hashlib.sha256()
    with p.open("wb") as f:
        for chunk in chunks:
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def read_bytes(settings: Any, ref: str) -> bytes:
    data: bytes = path(settings, ref).read_bytes()
    return data


def exists(settings: Any, ref: str) -> bool:
    return bool(path(settings, ref).exists())


def remove_tree(settings: Any, ref: str) -> bool:
    """Delete a staged file, or a folder and everything in it; False when there was none."""
    p = path(settings, ref)
    if not p.exists():
        return False
    if getattr(p, "protocol", "") in LOCAL_PROTOCOLS:
        import shutil
        from pathlib import Path

        local = Path(str(p.path if hasattr(p, "path") else p))
        if local.is_dir() and not local.is_symlink():
            shutil.rmtree(local)
        else:
            local.unlink()
    else:
        p.fs.rm(p.path, recursive=True)
    return True


def children(settings: Any, ref: str) -> list[str]:
    """The names in a staged folder (none when it does not exist)."""
    p = path(settings, ref)
    if not p.exists():
        return []
    return sorted(c.name for c in p.iterdir())


def copy_in(settings: Any, local: Any, ref: str) -> str:
    """Copy a local file (a report) into the staging area."""
    from pathlib import Path

    return write_bytes(settings, ref, Path(local).read_bytes())
