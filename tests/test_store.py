"""Feedback store: parsing, idempotency under threads and processes, and alert-fatigue suppression."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapter.store import AuditRow, Feedback, FeedbackError, IssuedCard, Store, parse_feedback
from adapter.store.db import feedback, issued_cards
from tests.postgres_server import PostgresServer

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
CARD = "0b0e7b5e-7d4b-4c4f-9a37-2f1f9c1d7a10"
SANDBOX_BODY: dict[str, Any] = {
    "feedback": [
        {
            "card": CARD,
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-21T10:00:00Z",
            "overrideReason": {
                "reason": {
                    "code": "already-screened",
                    "system": "urn:axiom-cds:override-reason",
                    "display": "Already screened for AXIOM",
                },
                "userComment": "seen last week",
            },
        }
    ]
}


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file (the default) or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cds.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def card(patient: str = "pk-1", verdict: str = "needs-review", card_uuid: str | None = None) -> IssuedCard:
    return IssuedCard(card_uuid or str(uuid.uuid4()), patient, verdict, "2026-11", NOW - timedelta(days=40))


def overridden(card_uuid: str, at: datetime) -> Feedback:
    return Feedback(card_uuid, "overridden", at, override_reason_code="already-screened")


def feedback_items(n: int, prefix: int = 0) -> list[Feedback]:
    """n distinct items: distinct cards, so each is new exactly once."""
    return [
        Feedback(str(uuid.UUID(int=prefix * 1_000_000 + i)), "accepted", NOW, accepted_suggestions=("s1",))
        for i in range(n)
    ]


# --- storage ------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_returns_aware_utc(store: Store) -> None:
    [item] = parse_feedback(SANDBOX_BODY)
    accepted = Feedback(
        CARD, "accepted", datetime(2026, 11, 21, 12, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2))), ("a", "b")
    )
    assert store.add_feedback([item, accepted]) == 2
    got = store.feedback_for(CARD.upper())
    assert got == [  # oldest outcome first
        item,
        Feedback(CARD, "accepted", datetime(2026, 11, 21, 10, 30, 0, 123456, tzinfo=UTC), ("a", "b")),
    ]
    assert all(f.outcome_timestamp.utcoffset() == timedelta(0) for f in got)
    assert got[0].user_comment == "seen last week"
    assert got[0].override_reason_system == "urn:axiom-cds:override-reason"


def test_file_uses_wal_and_the_schema_is_real(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'cds.db'}")
    store.record_card(card())
    with sqlite3.connect(tmp_path / "cds.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        unique = [row[1] for row in conn.execute("PRAGMA index_list('feedback')") if row[2]]
        keys = [[col[2] for col in conn.execute(f"PRAGMA index_info('{ix}')")] for ix in unique]
        assert ["card_uuid", "outcome", "outcome_timestamp"] in keys
        assert {row[1] for row in conn.execute("PRAGMA table_info('issued_cards')")} == {
            "card_uuid", "patient_key", "verdict", "trial_version", "issued_at"}
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() > 0
    store.close()


def test_postgres_schema_is_real(postgres_server: PostgresServer) -> None:
    store = Store(postgres_server.new_database())
    store.record_card(card())
    with store._engine.connect() as conn:
        assert conn.dialect.name == "postgresql"
        unique = conn.execute(text(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_constraint c"
            " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
            " WHERE c.conname = 'uq_feedback_once' GROUP BY c.oid")).scalar_one()
        assert unique == ["card_uuid", "outcome", "outcome_timestamp"]
        types: dict[str, str] = dict(conn.execute(text(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'issued_cards'")).all())
        assert types["issued_at"] == "timestamp with time zone"  # instants compare as instants, not as text
        assert set(types) == {"card_uuid", "patient_key", "verdict", "trial_version", "issued_at"}
    store.close()


def test_reopening_an_existing_file_keeps_the_data(db_url: str) -> None:
    url = db_url
    first = Store(url)
    first.add_feedback(feedback_items(3))
    first.close()
    second = Store(url)
    assert second.feedback_count() == 3
    second.close()


def test_in_memory_url_is_one_database_across_threads() -> None:
    s = Store("sqlite://")
    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(lambda i: s.add_feedback(feedback_items(5, prefix=i)), range(4))) == 20
    assert s.feedback_count() == 20
    s.close()


def test_same_feedback_twice_is_stored_once(store: Store) -> None:
    items = parse_feedback(SANDBOX_BODY)
    assert store.add_feedback(items) == 1
    assert store.add_feedback(items) == 0
    assert store.feedback_count() == 1


def test_same_feedback_twice_in_one_request_is_stored_once(store: Store) -> None:
    body = {"feedback": SANDBOX_BODY["feedback"] * 2}
    assert store.add_feedback(parse_feedback(body)) == 1
    assert store.feedback_count() == 1


def test_the_same_instant_in_another_offset_or_case_is_the_same_feedback(store: Store) -> None:
    item = dict(SANDBOX_BODY["feedback"][0])
    again = {**item, "card": CARD.upper(), "outcomeTimestamp": "2026-11-21T11:00:00.000+01:00"}
    assert store.add_feedback(parse_feedback({"feedback": [item, again]})) == 1


def test_a_later_outcome_for_the_same_card_is_new(store: Store) -> None:
    store.add_feedback([overridden(CARD, NOW)])
    assert store.add_feedback([overridden(CARD, NOW + timedelta(seconds=1))]) == 1
    assert store.add_feedback([Feedback(CARD, "accepted", NOW)]) == 1
    assert store.feedback_count() == 3


def test_feedback_for_an_unknown_card_is_stored(store: Store) -> None:
    assert store.add_feedback([overridden(str(uuid.uuid4()), NOW)]) == 1
    assert store.feedback_count() == 1


def test_record_card_is_idempotent(store: Store) -> None:
    c = card(card_uuid=CARD)
    store.record_card(c)
    store.record_card(c)
    store.record_card(IssuedCard(CARD.upper(), "pk-1", "needs-review", "2026-11", NOW))
    store.add_feedback([overridden(CARD, NOW)])
    assert store.suppressed("pk-1", "needs-review", NOW, 30)


def test_naive_datetimes_and_non_uuid_cards_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.add_feedback([Feedback(CARD, "accepted", datetime(2026, 11, 21))])
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_card(IssuedCard(CARD, "pk", "needs-review", "v", datetime(2026, 11, 21)))
    with pytest.raises(ValueError, match="timezone-aware"):
        store.suppressed("pk", "needs-review", datetime(2026, 11, 21), 30)
    with pytest.raises(ValueError, match="UUID"):
        store.record_card(IssuedCard("card-1", "pk", "needs-review", "v", NOW))
    assert store.feedback_count() == 0


def test_a_bad_item_stores_nothing_from_its_batch(store: Store) -> None:
    with pytest.raises(ValueError):
        store.add_feedback([overridden(CARD, NOW), Feedback(CARD, "dismissed", NOW)])
    assert store.feedback_count() == 0


# --- the clinician's comment (may hold PHI) is kept only as long as configured ---------------------------


def commented(card_uuid: str, comment: str) -> Feedback:
    return Feedback(card_uuid, "overridden", NOW, override_reason_code="already-screened", user_comment=comment)


def test_with_no_comment_retention_the_comment_is_never_stored(db_url: str) -> None:
    store = Store(db_url, comment_days=0)
    assert store.add_feedback([commented(CARD, "pt says she moved to Ohio")]) == 1
    (kept,) = store.feedback_for(CARD)
    assert kept.user_comment is None and kept.override_reason_code == "already-screened"


def test_comments_past_their_retention_are_blanked_and_the_rest_kept(store: Store, db_url: str) -> None:
    old, recent = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    store.add_feedback([commented(old, "old comment")])
    with store._engine.begin() as conn:  # received 100 days ago
        conn.execute(feedback.update().values(received_at=datetime.now(UTC) - timedelta(days=100)))
    Store(db_url, comment_days=90).add_feedback([commented(recent, "recent comment")])  # the next write purges
    assert store.feedback_for(old)[0].user_comment is None
    assert store.feedback_for(old)[0].override_reason_code == "already-screened", "the reason code stays"
    assert store.feedback_for(recent)[0].user_comment == "recent comment"
    assert store.forget_comments(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert store.feedback_for(recent)[0].user_comment is None


def _audit_row(days_ago: int) -> AuditRow:
    return AuditRow(evaluated_at=datetime.now(UTC) - timedelta(days=days_ago), issuer=None, hook_instance="h",
                    fhir_server=None, patient_id="p-1", verdict="likely-eligible", cohort="asps", statuses={},
                    trial_version="v", as_of="2026-11-21", card_shown=True, duration_ms=5)


def test_issued_cards_and_audit_rows_past_their_retention_are_deleted(db_url: str) -> None:
    store = Store(db_url, card_days=61, audit_days=365)
    old_card = IssuedCard(str(uuid.uuid4()), "pk-1", "needs-review", "v", datetime.now(UTC) - timedelta(days=70))
    new_card = IssuedCard(str(uuid.uuid4()), "pk-1", "needs-review", "v", datetime.now(UTC) - timedelta(days=1))
    store.write_batch([old_card, new_card, _audit_row(400), _audit_row(2)])
    assert [row["evaluated_at"][:10] for row in store.audit_rows()] == [
        (datetime.now(UTC) - timedelta(days=2)).date().isoformat()]
    with store._engine.connect() as conn:
        kept = {r[0] for r in conn.execute(issued_cards.select().with_only_columns(issued_cards.c.card_uuid))}
    assert kept == {new_card.card_uuid}
    store.close()
    forever = Store(db_url)  # no retention configured: nothing is deleted
    forever.write_batch([_audit_row(4000)])
    assert len(list(forever.audit_rows())) == 2
    forever.close()


# --- concurrency --------------------------------------------------------------------------------------


def _batches(items: list[Feedback], size: int) -> list[list[Feedback]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def test_threads_sharing_one_store_lose_and_duplicate_nothing(store: Store) -> None:
    shared = feedback_items(60)
    # Every thread sends all shared items (in its own order and batching) plus 20 of its own.
    orders = [shared[t * 7 :] + shared[: t * 7] for t in range(8)]
    work = [
        _batches((order[::-1] if t % 2 else order) + feedback_items(20, prefix=t + 1), size=1 + t % 5)
        for t, order in enumerate(orders)
    ]
    with ThreadPoolExecutor(8) as pool:
        new = sum(pool.map(lambda batches: sum(store.add_feedback(b) for b in batches), work))
    assert new == 60 + 8 * 20
    assert store.feedback_count() == 60 + 8 * 20


def test_stores_opened_together_on_a_fresh_file_all_work(db_url: str) -> None:
    url = db_url  # nothing created yet: every Store creates the schema at once
    barrier = threading.Barrier(6)

    def open_and_write(i: int) -> int:
        barrier.wait(timeout=60)
        s = Store(url)  # every worker of a multi-process server does this at startup
        try:
            return s.add_feedback(feedback_items(10) + feedback_items(5, prefix=i + 1))
        finally:
            s.close()

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(open_and_write, range(6))) == 10 + 6 * 5


def test_threads_recording_the_same_cards_store_each_once(store: Store) -> None:
    cards = [card(patient=f"pk-{i}") for i in range(30)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: [store.record_card(c) for c in cards], range(6)))
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM issued_cards").scalar_one() == 30


PROCESSES = 3
SHARED_JTIS = 20


def _process_worker(url: str, worker: int, barrier: Any, results: Any) -> None:
    """One worker of a multi-process server: feedback, cards and token ids, some shared with the others."""
    barrier.wait(timeout=120)  # open the fresh database together: schema creation races too
    store = Store(url)
    shared = feedback_items(150)
    mine = feedback_items(50, prefix=worker + 1)
    order = shared + mine if worker == 0 else list(reversed(shared)) + mine
    cards = [card(patient=f"pk-{i}", card_uuid=str(uuid.UUID(int=10**9 + i))) for i in range(40)]
    expires = datetime.now(UTC) + timedelta(hours=1)
    barrier.wait(timeout=120)
    new = 0
    for batch in _batches(order, size=3 + worker):
        new += store.add_feedback(batch)
    store.record_cards(cards[worker::2] + cards)
    fresh_jtis = sum(store.remember_jti("https://ehr.example", f"jti-{i}", expires) for i in range(SHARED_JTIS))
    store.close()
    results.put((new, fresh_jtis))


def test_processes_sharing_one_database_lose_and_duplicate_nothing(db_url: str) -> None:
    url = db_url
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(url, w, barrier, results), daemon=True) for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)  # a hang guard, not a timing assertion
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    news, jtis = zip(*(results.get(timeout=10) for _ in procs), strict=True)
    assert sum(news) == 150 + PROCESSES * 50
    assert sum(jtis) == SHARED_JTIS  # each token id was new to exactly one worker: a replay is refused by all
    store = Store(url)
    assert store.feedback_count() == 150 + PROCESSES * 50
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM issued_cards").scalar_one() == 40
    store.close()


# --- JWT replay ids -----------------------------------------------------------------------------------

ISSUER = "https://ehr.example/auth"


def test_a_replayed_jti_is_refused_by_another_worker(db_url: str) -> None:
    first, second = Store(db_url), Store(db_url)  # two workers, each with its own engine and pool
    expires = datetime.now(UTC) + timedelta(minutes=5)
    try:
        assert first.remember_jti(ISSUER, "jti-1", expires) is True
        assert first.remember_jti(ISSUER, "jti-1", expires) is False
        assert second.remember_jti(ISSUER, "jti-1", expires) is False
        assert second.remember_jti("https://other.example", "jti-1", expires) is True  # ids are per issuer
        assert second.remember_jti(ISSUER, "jti-2", expires) is True
        assert first.remember_jti(ISSUER, "jti-2", expires) is False
    finally:
        first.close()
        second.close()


def test_an_expired_jti_may_be_used_again(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    assert store.remember_jti(ISSUER, "old", past) is True
    assert store.remember_jti(ISSUER, "old", datetime.now(UTC) + timedelta(minutes=5)) is True
    assert store.remember_jti(ISSUER, "old", datetime.now(UTC) + timedelta(minutes=5)) is False


def test_one_jti_raced_by_threads_of_two_workers_is_new_once(db_url: str) -> None:
    stores = [Store(db_url), Store(db_url)]
    expires = datetime.now(UTC) + timedelta(minutes=5)
    barrier = threading.Barrier(8)

    def race(i: int) -> list[bool]:
        barrier.wait(timeout=60)
        return [stores[i % 2].remember_jti(ISSUER, f"raced-{n}", expires) for n in range(10)]

    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(race, range(8)))
    finally:
        for s in stores:
            s.close()
    assert [sum(o[n] for o in outcomes) for n in range(10)] == [1] * 10


# --- suppression --------------------------------------------------------------------------------------


def test_overridden_within_the_period_suppresses(store: Store) -> None:
    c = card()
    store.record_card(c)
    store.add_feedback([overridden(c.card_uuid, NOW - timedelta(days=29))])
    assert store.suppressed("pk-1", "needs-review", NOW, 30)


def test_overridden_31_days_ago_does_not_suppress_a_30_day_period(store: Store) -> None:
    c = card()
    store.record_card(c)
    store.add_feedback([overridden(c.card_uuid, NOW - timedelta(days=31))])
    assert not store.suppressed("pk-1", "needs-review", NOW, 30)
    assert store.suppressed("pk-1", "needs-review", NOW, 31)


def test_accepted_does_not_suppress(store: Store) -> None:
    c = card()
    store.record_card(c)
    store.add_feedback([Feedback(c.card_uuid, "accepted", NOW - timedelta(hours=1), ("s1",))])
    assert not store.suppressed("pk-1", "needs-review", NOW, 30)


def test_a_changed_verdict_is_shown_again(store: Store) -> None:
    c = card(verdict="needs-review")
    store.record_card(c)
    store.add_feedback([overridden(c.card_uuid, NOW - timedelta(days=1))])
    assert not store.suppressed("pk-1", "likely-eligible", NOW, 30)
    assert not store.suppressed("pk-1", "not-eligible", NOW, 30)


def test_a_verdict_that_changed_and_came_back_is_shown_again(store: Store) -> None:
    earlier = card(verdict="needs-review")  # shown 40 days ago: before the override, lifts nothing
    dismissed = IssuedCard(str(uuid.uuid4()), "pk-1", "likely-eligible", "2026-11", NOW - timedelta(days=12))
    store.record_card(earlier)
    store.record_card(dismissed)
    store.add_feedback([overridden(dismissed.card_uuid, NOW - timedelta(days=10))])
    assert store.suppressed("pk-1", "likely-eligible", NOW, 30)
    # five days ago the platelets fell and a not-eligible card was shown; now they are back up
    store.record_card(IssuedCard(str(uuid.uuid4()), "pk-1", "not-eligible", "2026-11", NOW - timedelta(days=5)))
    assert not store.suppressed("pk-1", "likely-eligible", NOW, 30), "eligible again is news to the clinician"
    assert not store.suppressed("pk-2", "likely-eligible", NOW, 30)


def test_another_patient_is_not_suppressed(store: Store) -> None:
    c = card(patient="pk-1")
    store.record_card(c)
    store.add_feedback([overridden(c.card_uuid, NOW - timedelta(days=1))])
    assert not store.suppressed("pk-2", "needs-review", NOW, 30)


def test_no_feedback_or_an_unrecorded_card_does_not_suppress(store: Store) -> None:
    store.record_card(card())
    store.add_feedback([overridden(str(uuid.uuid4()), NOW - timedelta(days=1))])
    assert not store.suppressed("pk-1", "needs-review", NOW, 30)


def test_an_offset_now_and_zero_days(store: Store) -> None:
    c = card()
    store.record_card(c)
    store.add_feedback([overridden(c.card_uuid, NOW - timedelta(days=1))])
    assert store.suppressed("pk-1", "needs-review", NOW.astimezone(timezone(timedelta(hours=-5))), 30)
    assert not store.suppressed("pk-1", "needs-review", NOW, 0)


def test_an_override_dated_after_now_counts_only_within_clock_skew(store: Store) -> None:
    c = card()
    store.record_card(c)
    store.add_feedback([overridden(c.card_uuid, NOW + timedelta(minutes=2))])
    assert store.suppressed("pk-1", "needs-review", NOW, 30)
    assert not store.suppressed("pk-1", "needs-review", NOW - timedelta(hours=1), 30)


# --- parse_feedback -----------------------------------------------------------------------------------


def test_sandbox_body_parses() -> None:
    assert parse_feedback(SANDBOX_BODY) == [
        Feedback(
            card_uuid=CARD,
            outcome="overridden",
            outcome_timestamp=NOW,
            override_reason_code="already-screened",
            override_reason_system="urn:axiom-cds:override-reason",
            user_comment="seen last week",
        )
    ]


def test_sandbox_dismiss_and_take_suggestion_shapes_parse() -> None:
    # What the CDS Hooks sandbox posts: Date.toISOString() timestamps, a bare dismissal, a taken suggestion.
    body = {"feedback": [
        {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00.000Z"},
        {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:01.000Z",
         "overrideReason": {"reason": {"code": "already-screened"}}},
        {"card": CARD, "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00:02.5Z",
         "acceptedSuggestions": [{"id": "9d3c1d8e-0000-4000-8000-000000000001"}]},
    ]}
    bare, coded, accepted = parse_feedback(body)
    assert bare == Feedback(CARD, "overridden", NOW)
    assert (coded.override_reason_code, coded.override_reason_system, coded.user_comment) == (
        "already-screened", None, None)
    assert accepted.accepted_suggestions == ("9d3c1d8e-0000-4000-8000-000000000001",)
    assert accepted.outcome_timestamp == NOW + timedelta(seconds=2.5)


def test_comment_only_override_and_empty_containers_parse() -> None:
    item = {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T05:00:00-05:00",
            "acceptedSuggestions": [], "overrideReason": {"userComment": "not now"}}
    [got] = parse_feedback({"feedback": [item]})
    assert got == Feedback(CARD, "overridden", NOW, user_comment="not now")
    accepted = {"card": CARD, "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00Z", "overrideReason": {}}
    assert parse_feedback({"feedback": [accepted]}) == [Feedback(CARD, "accepted", NOW)]


def _item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"card": CARD, "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00:00Z"}
    item.update(changes)
    return {k: v for k, v in item.items() if v is not ...}


BAD_BODIES: list[tuple[Any, str]] = [
    ([], "body must be a JSON object"),
    ("feedback", "body must be a JSON object"),
    ({}, "feedback must be a non-empty list"),
    ({"feedback": []}, "feedback must be a non-empty list"),
    ({"feedback": {"card": CARD}}, "feedback must be a non-empty list"),
    ({"feedback": [_item(), "x"]}, r"feedback\[1\] must be an object"),
    ({"feedback": [_item(card=...)]}, r"feedback\[0\]\.card must be the card's uuid"),
    ({"feedback": [_item(card=42)]}, r"feedback\[0\]\.card must be"),
    ({"feedback": [_item(card="card-1")]}, r"feedback\[0\]\.card must be"),
    ({"feedback": [_item(card=CARD + "0")]}, r"feedback\[0\]\.card must be"),
    ({"feedback": [_item(outcome=...)]}, r"feedback\[0\]\.outcome must be \"accepted\" or \"overridden\""),
    ({"feedback": [_item(outcome="dismissed")]}, r"\.outcome must be"),
    ({"feedback": [_item(outcome="Accepted")]}, r"\.outcome must be"),
    ({"feedback": [_item(outcomeTimestamp=...)]}, r"\.outcomeTimestamp is required"),
    ({"feedback": [_item(outcomeTimestamp="2026-11-21T10:00:00")]}, r"\.outcomeTimestamp must be an ISO 8601"),
    ({"feedback": [_item(outcomeTimestamp="2026-11-21")]}, r"\.outcomeTimestamp must be an ISO 8601"),
    ({"feedback": [_item(outcomeTimestamp="yesterday")]}, r"\.outcomeTimestamp must be an ISO 8601"),
    ({"feedback": [_item(outcomeTimestamp=1_795_000_000)]}, r"\.outcomeTimestamp must be an ISO 8601"),
    ({"feedback": [_item(outcomeTimestamp="2026-13-21T10:00:00Z")]}, r"\.outcomeTimestamp is not a valid"),
    ({"feedback": [_item(acceptedSuggestions="s1")]}, r"\.acceptedSuggestions must be a list"),
    ({"feedback": [_item(acceptedSuggestions=["s1"])]}, r"\.acceptedSuggestions\[0\] must be an object with"),
    ({"feedback": [_item(acceptedSuggestions=[{"id": 1}])]}, r"\.acceptedSuggestions\[0\] must be"),
    ({"feedback": [_item(acceptedSuggestions=[{"id": "a"}, {}])]}, r"\.acceptedSuggestions\[1\] must be"),
    ({"feedback": [_item(outcome="overridden", acceptedSuggestions=[{"id": "a"}])]},
     r"\.acceptedSuggestions is only allowed with outcome \"accepted\""),
    ({"feedback": [_item(overrideReason={"userComment": "x"})]},
     r"\.overrideReason is only allowed with outcome \"overridden\""),
    ({"feedback": [_item(outcome="overridden", overrideReason="no")]}, r"\.overrideReason must be an object"),
    ({"feedback": [_item(outcome="overridden", overrideReason={"reason": "no"})]},
     r"\.overrideReason\.reason must be a Coding object"),
    ({"feedback": [_item(outcome="overridden", overrideReason={"reason": {"system": "urn:x"}})]},
     r"\.overrideReason\.reason must be a Coding with a non-empty string code"),
    ({"feedback": [_item(outcome="overridden", overrideReason={"reason": {"code": ""}})]},
     r"\.reason must be a Coding with"),
    ({"feedback": [_item(outcome="overridden", overrideReason={"reason": {"code": "x", "system": 3}})]},
     r"\.overrideReason\.reason\.system must be"),
    ({"feedback": [_item(outcome="overridden", overrideReason={"userComment": 3})]},
     r"\.overrideReason\.userComment must be a string"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_malformed_feedback_gives_a_specific_one_line_error(body: Any, message: str) -> None:
    with pytest.raises(FeedbackError, match=message) as caught:
        parse_feedback(body)
    text = str(caught.value)
    assert "\n" not in text
    assert isinstance(caught.value, ValueError)


def test_error_messages_never_echo_submitted_values() -> None:
    secret = "patient says HIV positive"
    bodies = [
        {"feedback": [_item(card=secret)]},
        {"feedback": [_item(outcome=secret)]},
        {"feedback": [_item(outcomeTimestamp=secret)]},
        {"feedback": [_item(outcome="overridden", overrideReason={"reason": {"code": "x", "system": 3},
                                                                   "userComment": secret})]},
        {"feedback": [_item(overrideReason={"userComment": secret})]},
    ]
    for body in bodies:
        with pytest.raises(FeedbackError) as caught:
            parse_feedback(body)
        assert secret not in str(caught.value)
