"""Opening the state database and bringing its schema up to date with Alembic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict[str, Engine] = {}


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
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
    """The JSON columns' text: msgspec's (compact, UTF-8), ~5x ``json.dumps`` on the
    attributes journaled and stored for every entry written (0.7 s of a 0.1-scale academy's
    apply stage was JSON encoding). Readers parse it as any JSON."""
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
    """One engine per URL per process; the schema is migrated to head on first use."""
    if url in _engines:
        return _engines[url]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, pool_pre_ping=True,
                           json_serializer=json_dumps_utf8, json_deserializer=json_loads)
    if not _server_is_utf8(engine):
        # every non-ASCII character escaped (json.dumps): a name in any script fits any
        # server encoding
        engine.dispose()
        engine = create_engine(url, future=True, pool_pre_ping=True,
                               json_serializer=json.dumps, json_deserializer=json_loads)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    _engines[url] = engine
    return engine


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def dispose_all() -> None:
    for e in _engines.values():
        e.dispose()
    _engines.clear()
