"""The first second of a sync or a check: what would make the night fail late, checked first.

A wrong LDAP password used to surface after reading, validating and planning every school
(minutes at region scale); an unmounted landing share gave a green night of 0 schools. Before
anything is read, ``preflight`` checks, in this order, and raises the pipeline's own errors
(one line each, the CLI's documented exit codes):

- the landing root is a folder and holds the academy's folder (``ConfigError``, exit 2: an
  unmounted share or a wrong ``ENTSYNC_LANDING``; an academy folder that is there but empty is
  a night with nothing to do, not an error);
- the workdir (staging, reports, quarantine) exists or can be made, and is writable
  (``ConfigError``);
- the state DB opens and, for SQLite, its file (or the folder that will hold it) is writable
  (``ConfigError`` for an unusable URL or an unwritable file; ``StateDBError``, exit 1, for a
  server that does not answer: the retry may find it up);
- for a sync that writes, a bind to the directory with the run's credentials
  (``DirectoryError``: refused credentials or TLS, exit 1 and not retried; a server that cannot be
  reached is ``DirectoryUnavailable``, exit 1, transient).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from etl.config import Settings, get_academy
from etl.errors import ConfigError, DirectoryUnavailable


def preflight(settings: Settings, academy_code: str, *, state: bool = True,
              ldap: bool = True) -> None:
    """Check what a run of ``academy_code`` needs before it reads anything (module doc).
    ``ldap``: bind to the directory too (a sync that writes); ``state``: open the state DB."""
    get_academy(academy_code)
    check_landing(settings.landing, academy_code)
    check_writable_dir(settings.workdir, "workdir (ENTSYNC_WORKDIR)")
    if state:
        check_state_db(settings.state_url)
    if ldap:
        check_bind(settings)


def check_landing(landing: Path, academy_code: str) -> None:
    if not landing.is_dir():
        raise ConfigError(f"landing folder {landing} does not exist or is not a folder "
                          "(ENTSYNC_LANDING; an unmounted share?)")
    if not (landing / academy_code).is_dir():
        raise ConfigError(f"landing folder {landing} holds no folder {academy_code}/ for this "
                          "academy (ENTSYNC_LANDING; exports land in <landing>/<academy>/)")


def check_writable_dir(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".entsync-preflight-"):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {folder} is not writable: {e.strerror or e}") from None


def check_state_db(url: str) -> None:
    """The state DB opens (and is migrated, as any first use does); a SQLite file must be
    writable by this process."""
    from etl.store.db import _sqlite_file, get_engine, safe_url

    path = _sqlite_file(url)
    if path is not None:
        where = f"state DB {safe_url(url)}"
        if path.exists():
            if not os.access(path, os.R_OK | os.W_OK):
                raise ConfigError(f"{where}: the file is not writable by this user "
                                  "(ENTSYNC_STATE_URL)")
        else:
            check_writable_dir(path.parent, f"{where}: its folder")
    get_engine(url)


def check_bind(settings: Settings) -> None:
    from ldap3.core.exceptions import LDAPException

    from etl.apply.stage import ldap_target_from_settings
    from etl.apply.writer import connect

    target = ldap_target_from_settings(settings)
    try:
        conn = connect(target)
    except LDAPException as e:
        raise DirectoryUnavailable(f"directory {target.url} cannot be reached: "
                                   f"{type(e).__name__}: {e}") from None
    with contextlib.suppress(LDAPException, OSError):
        conn.unbind()
