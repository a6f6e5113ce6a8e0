"""Schema, engine and insert-or-ignore for the feedback store (SQLite file or any SQLAlchemy URL).

SQLite is the default so one machine needs no database server: WAL lets readers run beside the one
writer, and a busy timeout makes several worker processes queue for the write lock instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import QueuePool
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import TypeDecorator

BUSY_TIMEOUT_MS = 30_000


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out — SQLite has no timezone type, so it stores naive UTC text.

    SQLAlchemy writes SQLite datetimes in one fixed-width format, so comparisons in SQL stay correct.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a driver without native datetimes
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

issued_cards = Table(
    "issued_cards",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("patient_key", String(255), nullable=False, index=True),
    Column("verdict", String(32), nullable=False),
    Column("trial_version", String(255), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
)

FEEDBACK_KEY = ("card_uuid", "outcome", "outcome_timestamp")

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # No foreign key: issued cards are purged after their retention before the feedback that names them;
    # feedback for a card never issued (or no longer kept) is refused before it gets here (store/feedback.py).
    Column("card_uuid", String(36), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("outcome_timestamp", UTCDateTime, nullable=False),
    Column("accepted_suggestions", Text, nullable=False),  # JSON list of suggestion uuids
    Column("override_reason_system", Text),
    Column("override_reason_code", Text),
    Column("user_comment", Text),  # clinician free text: may hold PHI
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint(*FEEDBACK_KEY, name="uq_feedback_once"),
)


# JWT ids seen, so a replayed token is refused by every worker and replica sharing the database.
jwt_ids = Table(
    "jwt_ids",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)


# Secrets of this deployment, generated once and shared by every worker and replica on the database
# (the patient key's HMAC secret, unless AXIOM_PATIENT_KEY_SECRET configures one).
deployment_secrets = Table(
    "deployment_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        # WAL + NORMAL: a commit survives the process being killed; no fsync on every commit
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent, so usually already done), retrying while another process holds it.

    Switching needs an exclusive lock and SQLite answers "database is locked" at once instead of using the
    busy timeout, so workers opening a fresh file together would otherwise fail at startup.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")  # an in-memory database stays "memory"
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):
        # One connection, lent to one thread at a time: each new connection would be a new empty database.
        engine = create_engine(
            parsed, poolclass=QueuePool, pool_size=1, max_overflow=0, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# PostgreSQL advisory locks are (namespace, key) int4 pairs: ours, then 0 for the schema or a table's crc32.
_LOCK_NAMESPACE = 0x61786F6D  # "axom"


def _pg_lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - (1 << 31)  # into int4's signed range


def create_schema(engine: Engine) -> None:
    """Create missing tables and indexes; workers starting together must not collide.

    IF NOT EXISTS is enough on SQLite (DDL takes the one write lock). PostgreSQL checks for the table
    before it locks the catalog, so two replicas creating it at once fail with a duplicate-key error on
    pg_type: a transaction-scoped advisory lock makes them take turns.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": _LOCK_NAMESPACE})
        for table in metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                conn.execute(CreateIndex(index, if_not_exists=True))


def insert_ignore(conn: Connection, table: Table, row: dict[str, Any], key: Sequence[str]) -> bool:
    """Insert ``row`` unless a row with the same ``key`` exists; True when it was inserted.

    The database decides (ON CONFLICT DO NOTHING on the unique key), so two writers racing with the
    same row store it once without either failing.
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt: Any = sqlite_insert(table).values(row).on_conflict_do_nothing(index_elements=list(key))
    elif dialect == "postgresql":
        _pg_serialise_writes(conn, table)
        stmt = pg_insert(table).values(row).on_conflict_do_nothing(index_elements=list(key))
    else:
        try:
            with conn.begin_nested():
                conn.execute(insert(table).values(row))
        except IntegrityError:
            return False
        return True
    # preserve_rowcount: SQLAlchemy reads an INSERT's rowcount before closing the cursor only when asked,
    # and psycopg answers -1 afterwards (pysqlite happens to keep it).
    return bool(conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount == 1)


def _pg_serialise_writes(conn: Connection, table: Table) -> None:
    """Let one transaction at a time insert-or-ignore into ``table`` on PostgreSQL, as SQLite does anyway.

    Row locks alone deadlock: two replicas given the same feedback batch in different orders each hold
    one row's key while waiting for the other's, and PostgreSQL aborts one transaction — a lost write
    for a client that does not resend. A transaction-scoped advisory lock per table, taken once per
    transaction before its first insert, queues them instead. Writes are a few short inserts each.
    """
    tx = conn.get_transaction()
    held: dict[str, Any] = conn.info.setdefault("axiom_advisory_locks", {})
    if tx is not None and held.get(table.name) is tx:
        return
    lock = text("SELECT pg_advisory_xact_lock(:ns, :key)")
    conn.execute(lock, {"ns": _LOCK_NAMESPACE, "key": _pg_lock_key(table.name)})
    held[table.name] = tx
