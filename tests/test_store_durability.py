"""A worker SIGKILLed mid-write loses no committed row, on SQLite (WAL) and on PostgreSQL.

Each writer is a real process doing what a service worker does: record an issued card, store feedback
(some of it also sent by the other writers), write an audit row through the background writer's batch
call — one commit each — and only after a commit returns, append what it committed to a report file
(O_APPEND writes reach the kernel at once, so they survive the kill). The parent kills the writers
without warning at changing points, then a new Store must hold every reported row exactly once and
still take writes: for SQLite that means the next opener recovers from the WAL the dead one left.

Loops are bounded in count and time; nothing asserts on timing.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapter.store import AuditRow, Feedback, IssuedCard, Store
from adapter.store.db import feedback, issued_cards
from tests.postgres_server import PostgresServer

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
WRITER_MAX_ITERATIONS = 20_000  # never reached: the parent kills first; a bound all the same
WRITER_MAX_SECONDS = 120.0
WAIT_SECONDS = 90.0  # hang guard for a writer that stops reporting
KILL_AFTER = (20, 70, 140)  # reports written before the kill, varied so the kill lands in different places


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cds.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


# --- the writer (runs in a child process) --------------------------------------------------------------


def _audit(hook_instance: str) -> AuditRow:
    return AuditRow(
        evaluated_at=datetime.now(UTC), issuer="https://ehr.example/auth", hook_instance=hook_instance,
        fhir_server="http://fhir.example/r4", patient_id="p-1", verdict="needs-review", cohort=None,
        statuses={"I1": "met"}, trial_version="2026-11", as_of="2026-11-21", card_shown=True, duration_ms=3,
    )


def _writer(url: str, worker: int, round_: int, report: str) -> None:
    """Write until killed; report each row only after the call that committed it has returned."""
    store = Store(url)
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def committed(kind: str, key: str) -> None:
        os.write(fd, f"{kind} {key}\n".encode())

    deadline = time.monotonic() + WRITER_MAX_SECONDS
    for i in range(WRITER_MAX_ITERATIONS):
        if time.monotonic() > deadline:
            break
        card_uuid = str(uuid.UUID(int=(worker + 1) << 64 | round_ << 32 | i))
        shared = str(uuid.UUID(int=round_ << 32 | i))  # every writer of the round sends this one: stored once
        store.record_card(IssuedCard(card_uuid, f"pk-{worker}", "needs-review", "2026-11", NOW))
        committed("card", card_uuid)
        store.add_feedback([Feedback(card_uuid, "overridden", NOW), Feedback(shared, "accepted", NOW)])
        committed("feedback", card_uuid)
        committed("feedback", shared)
        hook_instance = f"{worker}-{round_}-{i}"
        store.write_batch([_audit(hook_instance)])
        committed("audit", hook_instance)
    os.close(fd)
    store.close()


# --- the parent ----------------------------------------------------------------------------------------


def _reports(path: Path) -> list[tuple[str, str]]:
    """Complete lines only: a line cut by the kill was never reported."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [tuple(line.split(" ", 1)) for line in text.split("\n")[:-1]]  # type: ignore[misc]


@dataclass
class Writer:
    process: Any
    report: Path
    kill_after: int


@dataclass
class Ledger:
    """What the writers said they committed, and how many were killed (each may leave one unreported row)."""

    reported: dict[str, set[str]] = field(default_factory=lambda: {"card": set(), "feedback": set(), "audit": set()})
    kills: int = 0


def _start(ctx: Any, url: str, worker: int, round_: int, tmp_path: Path, kill_after: int) -> Writer:
    report = tmp_path / f"writer-{worker}-round-{round_}.log"
    proc = ctx.Process(target=_writer, args=(url, worker, round_, str(report)), daemon=True)
    proc.start()
    return Writer(proc, report, kill_after)


def _wait_for_reports(writer: Writer, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while writer.process.is_alive() and time.monotonic() < deadline:
        if len(_reports(writer.report)) >= count:
            return
        time.sleep(0.005)


def _kill_when_reported(writer: Writer, ledger: Ledger) -> None:
    """SIGKILL the writer once it has reported ``kill_after`` commits, then take note of what it reported."""
    _wait_for_reports(writer, writer.kill_after)
    if writer.process.is_alive():
        os.kill(writer.process.pid, signal.SIGKILL)
    writer.process.join(timeout=30)
    assert writer.process.exitcode == -signal.SIGKILL, (
        f"the writer was not killed mid-run (exit code {writer.process.exitcode}): see its output above")
    ledger.kills += 1
    for kind, key in _reports(writer.report):
        ledger.reported[kind].add(key)


def _check(url: str, ledger: Ledger) -> None:
    """Every reported row is there once; rows nobody reported are at most the killed writers' last ones."""
    store = Store(url)
    try:
        with store._engine.connect() as conn:
            cards = list(conn.execute(select(issued_cards.c.card_uuid)).scalars())
            keys = [tuple(r) for r in conn.execute(
                select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.outcome_timestamp))]
        audits = [row["hook_instance"] for row in store.audit_rows()]
        stored = {"card": cards, "feedback": [str(k[0]) for k in keys], "audit": audits}
        assert len(keys) == len(set(keys)), "duplicate feedback"
        for kind, rows in stored.items():
            twice = [key for key, n in Counter(rows).items() if n > 1]
            assert not twice, f"{kind} stored more than once: {twice[:5]}"
            lost = ledger.reported[kind] - set(rows)
            assert not lost, f"{len(lost)} committed {kind} rows lost, e.g. {sorted(lost)[:5]}"
            # a writer killed between its commit and its report leaves one row it never reported
            per_iteration = 2 if kind == "feedback" else 1
            assert len(set(rows) - ledger.reported[kind]) <= per_iteration * ledger.kills
        assert ledger.reported["card"] and ledger.reported["audit"], "the writers reported nothing"
    finally:
        store.close()


def _check_usable(url: str, tmp_path: Path) -> None:
    """The database takes and returns new writes after the crash (for SQLite: the WAL was recovered)."""
    store = Store(url)
    try:
        fresh = str(uuid.uuid4())
        assert store.add_feedback([Feedback(fresh, "overridden", NOW)]) == 1
        assert [f.card_uuid for f in store.feedback_for(fresh)] == [fresh]
        assert store.remember_jti("https://ehr.example/auth", fresh, datetime.now(UTC).replace(year=2100)) is True
    finally:
        store.close()
    if url.startswith("sqlite"):
        with sqlite3.connect(tmp_path / "cds.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_writer_killed_mid_run_loses_no_committed_row(db_url: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ledger = Ledger()
    for round_, kill_after in enumerate(KILL_AFTER):  # killed, restarted on the same database, killed again
        _kill_when_reported(_start(ctx, db_url, 0, round_, tmp_path, kill_after), ledger)
        _check(db_url, ledger)
    _check_usable(db_url, tmp_path)


def test_concurrent_writers_killed_one_by_one_lose_no_committed_row(db_url: str, tmp_path: Path) -> None:
    """Three workers on one database; each is killed while the others are still writing, twice over."""
    ctx = multiprocessing.get_context("spawn")
    ledger = Ledger()
    for round_ in range(2):
        writers = [_start(ctx, db_url, w, round_, tmp_path, kill_after) for w, kill_after in enumerate(KILL_AFTER)]
        try:
            for writer in writers:  # all writing before the first kill
                _wait_for_reports(writer, 1)
            for writer in writers:  # in order of kill_after: the later ones keep writing meanwhile
                _kill_when_reported(writer, ledger)
        finally:
            for writer in writers:
                if writer.process.is_alive():
                    writer.process.kill()
                    writer.process.join(timeout=30)
        _check(db_url, ledger)
    _check_usable(db_url, tmp_path)
