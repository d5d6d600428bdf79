"""Opening the state database and bringing its schema up to date with Alembic.

Migrations run once, under a lock, however many processes open a fresh database together
(three academies' first night): a PostgreSQL advisory lock, a file lock beside a SQLite
file. What goes wrong opening the database is a ``StateDBError`` (a ``ConfigError`` for a
URL SQLAlchemy cannot use), one line for the CLI.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from etl.errors import ConfigError, EntsyncError, StateDBError
from etl.runtime.fslock import exclusive

MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_dispose_hooks: list[Callable[[str | None], None]] = []
#: PostgreSQL advisory lock key the migrations run under ("entsync" in ASCII)
MIGRATION_LOCK_KEY = 0x656E7473796E63
#: how long a SQLite connection waits for another's write lock, in milliseconds
SQLITE_BUSY_TIMEOUT_MS = 30000


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    # first: switching a fresh file to WAL waits for another process's lock too
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _json_scalar(obj: Any) -> Any:
    """What msgspec cannot encode itself: numpy's scalars (``json.dumps`` took
    ``numpy.float64``, a float subclass), as Python numbers."""
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_JSON_ENCODER = msgspec.json.Encoder(enc_hook=_json_scalar)
_JSON_DECODER = msgspec.json.Decoder()


def json_dumps_utf8(value: Any) -> str:
    """The JSON columns' text: msgspec's (compact, UTF-8), faster than ``json.dumps`` for
    the attributes journaled and stored for every entry written. Readers parse it as any
    JSON."""
    return _JSON_ENCODER.encode(value).decode("utf-8")


def json_loads(text: str | bytes) -> Any:
    """msgspec's parser (about twice ``json.loads``), ``json.loads`` for what only it reads
    (``NaN``, written by an older ``json.dumps``)."""
    try:
        return _JSON_DECODER.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def _server_is_utf8(engine: Engine) -> bool:
    if engine.dialect.name != "postgresql":
        return True  # SQLite keeps text as UTF-8
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SHOW server_encoding").scalar()).upper() in (
            "UTF8", "UTF-8")


def get_engine(url: str, migrate: bool = True) -> Engine:
    """One engine per URL per process; the schema is migrated to head on first use (once,
    under a lock: ``_migrate``). Raises ``StateDBError`` or ``ConfigError``, never a raw
    driver error."""
    engine = _engines.get(url)
    if engine is not None:
        return engine
    with _engines_lock:
        if url in _engines:
            return _engines[url]
        try:
            engine = _open(url)
            if migrate:
                _migrate(engine, url)
        except EntsyncError:
            raise
        except Exception as e:
            raise state_db_error(url, e) from e
        _engines[url] = engine
        return engine


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None: in memory, or not SQLite)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" \
            or u.database.startswith("file:"):
        return None
    return Path(u.database)


def _open(url: str) -> Engine:
    db_file = _sqlite_file(url)
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, pool_pre_ping=True,
                           json_serializer=json_dumps_utf8, json_deserializer=json_loads)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif not _server_is_utf8(engine):
        # every non-ASCII character escaped (json.dumps): a name in any script fits any
        # server encoding
        engine.dispose()
        engine = create_engine(url, future=True, pool_pre_ping=True,
                               json_serializer=json.dumps, json_deserializer=json_loads)
    return engine


def _migrate(engine: Engine, url: str) -> None:
    """Bring the schema to head, once: a schema already at head takes no lock; otherwise the
    upgrade runs under a PostgreSQL advisory lock (in its transaction) or a file lock beside
    the SQLite file, and each process that waited finds the schema at head."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config(url)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    db_file = _sqlite_file(url)
    guard = (exclusive(db_file.with_name(db_file.name + ".migrate.lock"))
             if db_file is not None else contextlib.nullcontext())
    with guard, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: its scheme at most
        return url.split("://", 1)[0] + "://..." if "://" in url else "(not a URL)"


def describe(e: BaseException) -> str:
    """One line on a state DB failure, without the SQL or its parameters (which may quote a
    record): the driver's first line for a connection-level error, the error's type
    otherwise."""
    import sqlalchemy.exc as sx

    orig = getattr(e, "orig", None) if isinstance(e, sx.DBAPIError) else None
    # a plain DatabaseError ("file is not a database") says what is wrong with the file; its
    # subclasses (integrity, data) may quote a row
    plain = type(e) is sx.DatabaseError
    if (plain or isinstance(e, (sx.OperationalError, sx.InterfaceError))) and orig is not None:
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    elif orig is not None:
        text = type(orig).__name__
    elif isinstance(e, OSError):
        text = f"{e.strerror or type(e).__name__}: {e.filename}" if e.filename else str(e)
    elif isinstance(e, sx.SQLAlchemyError):
        text = (str(e).strip().splitlines() or [type(e).__name__])[0].split(" [SQL:")[0]
    else:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text[:300]


def state_db_error(url: str | None, e: BaseException) -> EntsyncError:
    """The pipeline's error for a failure opening, migrating or using the state DB."""
    import sqlalchemy.exc as sx
    from alembic.util import CommandError

    from etl.errors import is_transient

    where = f"state DB {safe_url(url)}" if url else "state DB"
    if isinstance(e, (sx.ArgumentError, sx.NoSuchModuleError)):
        return ConfigError(f"{where}: not a URL SQLAlchemy can use ({describe(e)}); e.g. "
                           "postgresql+psycopg2://user@host:5432/entsync or "
                           "sqlite:////var/lib/entsync/state.db")
    if isinstance(e, ImportError):  # postgresql:// picks a driver this install does not have
        return ConfigError(f"{where}: its database driver is not installed ({describe(e)}); "
                           "name the installed one, e.g. postgresql+psycopg2://user@host:5432/"
                           "entsync")
    if isinstance(e, CommandError):
        return StateDBError(f"{where}: its schema cannot be migrated: {describe(e)} (a newer "
                            "entsync migrated it?)")
    return StateDBError(f"{where}: {describe(e)}", transient=is_transient(e))


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def on_dispose(hook: Callable[[str | None], None]) -> None:
    """Call ``hook(None)`` when ``dispose_all`` closes every engine (heartbeat threads stop)."""
    _dispose_hooks.append(hook)


def dispose_all() -> None:
    for hook in _dispose_hooks:
        hook(None)
    for e in _engines.values():
        e.dispose()
    _engines.clear()
