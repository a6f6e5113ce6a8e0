"""Store: issued cards and their feedback, and the alert-fatigue question "was this card dismissed?".

Synchronous on purpose: the web layer calls it from a threadpool, and one Store may be shared by threads.
Logs carry counts only — never patient keys, reasons or the clinician's comment.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, exists, func, select

from .audit import AuditRow, audit, read_audit, write_audit
from .db import (
    FEEDBACK_KEY,
    create_schema,
    deployment_secrets,
    feedback,
    insert_ignore,
    issued_cards,
    jwt_ids,
    make_engine,
)
from .model import Feedback, IssuedCard, canonical_uuid, require_aware

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # uuids per IN (...) query: under every database's limit on bound parameters

# An EHR clock a little ahead of ours must not make a fresh dismissal look like "not yet happened".
CLOCK_SKEW = timedelta(minutes=5)
# Asked on every hook: built once (building the expression costs more than SQLite answering it).
# An override of a card with this verdict, inside the period, and no card with another verdict shown to
# this patient since that override: a verdict that changed and came back is news again.
_later = issued_cards.alias("later")
_SUPPRESSED = (
    select(feedback.c.id)
    .select_from(issued_cards.join(feedback, feedback.c.card_uuid == issued_cards.c.card_uuid))
    .where(
        issued_cards.c.patient_key == bindparam("patient_key"),
        issued_cards.c.verdict == bindparam("verdict"),
        feedback.c.outcome == "overridden",
        feedback.c.outcome_timestamp >= bindparam("since"),
        feedback.c.outcome_timestamp <= bindparam("until"),
        ~exists().where(
            _later.c.patient_key == bindparam("patient_key"),
            _later.c.verdict != bindparam("verdict"),
            _later.c.issued_at > feedback.c.outcome_timestamp,
        ),
    )
    .limit(1)
)


class Store:
    def __init__(self, url: str = "sqlite:///axiom-cds.db", *, card_days: int | None = None,
                 audit_days: int | None = None, comment_days: int | None = None) -> None:
        """How long things are kept (None: for ever): issued cards, audit rows, and the clinician's
        free-text feedback comment (which may hold PHI; 0: never stored). Older ones go at the next
        write, at most once an hour."""
        self._engine = make_engine(url)
        create_schema(self._engine)
        self._last_purge = datetime.min.replace(tzinfo=UTC)
        self._last_retention = datetime.min.replace(tzinfo=UTC)
        self._card_days = card_days
        self._audit_days = audit_days
        self._comment_days = comment_days

    def record_card(self, card: IssuedCard) -> None:
        """Remember a card we returned; recording the same card_uuid again changes nothing."""
        self.record_cards([card])

    def write_batch(self, items: list[IssuedCard | AuditRow]) -> None:
        """The background writer's batch: issued cards and audit rows, in one transaction."""
        cards = [i for i in items if isinstance(i, IssuedCard)]
        rows = [i for i in items if isinstance(i, AuditRow)]
        with self._engine.begin() as conn:
            if cards:
                self._insert_cards(conn, cards)
            if rows:
                write_audit(conn, rows)
            self._apply_retention(conn, datetime.now(UTC))

    def _apply_retention(self, conn: Connection, now: datetime) -> None:
        if now - self._last_retention < timedelta(hours=1):
            return
        self._last_retention = now
        if self._card_days is not None:
            conn.execute(delete(issued_cards).where(issued_cards.c.issued_at < now - timedelta(days=self._card_days)))
        if self._audit_days is not None:
            gone = conn.execute(delete(audit).where(audit.c.evaluated_at < now - timedelta(days=self._audit_days)))
            if gone.rowcount:
                log.info("audit rows past their retention deleted: %d", gone.rowcount)
        if self._comment_days:
            self._forget_comments(conn, now - timedelta(days=self._comment_days))

    def audit_rows(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """The audit trail, oldest first (for `axiom-cds audit export`)."""
        return read_audit(self._engine, since)

    def record_cards(self, cards: list[IssuedCard]) -> None:
        """Remember several cards in one transaction."""
        with self._engine.begin() as conn:
            self._insert_cards(conn, cards)

    @staticmethod
    def _insert_cards(conn: Connection, cards: list[IssuedCard]) -> None:
        rows = [{
            "card_uuid": canonical_uuid(card.card_uuid),
            "patient_key": card.patient_key,
            "verdict": card.verdict,
            "trial_version": card.trial_version,
            "issued_at": require_aware(card.issued_at, "issued_at"),
        } for card in cards]
        for row in rows:
            insert_ignore(conn, issued_cards, row, ["card_uuid"])

    def add_feedback(self, items: list[Feedback]) -> int:
        """Store feedback once per (card, outcome, outcome timestamp); return how many items were new.

        Whether the cards were issued is not checked here: the service refuses feedback about cards it
        never issued before storing (`record_feedback` in store/feedback.py).
        """
        if not items:
            return 0
        received_at = datetime.now(UTC)
        rows = [_feedback_row(item, received_at) for item in items]  # validate all before writing any
        if self._comment_days == 0:
            for row in rows:
                row["user_comment"] = None
        with self._engine.begin() as conn:
            new = sum(insert_ignore(conn, feedback, row, FEEDBACK_KEY) for row in rows)
            self._apply_retention(conn, received_at)
        log.info("feedback stored: %d new of %d", new, len(items))
        return new

    def issued(self, card_uuids: list[str]) -> set[str]:
        """Which of these card uuids (any case) this store recorded as issued, lower-cased."""
        wanted = sorted({canonical_uuid(u) for u in card_uuids})
        found: set[str] = set()
        with self._engine.connect() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start:start + _IN_CHUNK]
                found.update(conn.execute(select(issued_cards.c.card_uuid)
                                          .where(issued_cards.c.card_uuid.in_(chunk))).scalars())
        return found

    def suppressed(self, patient_key: str, verdict: str, now: datetime, days: int) -> bool:
        """True when a card with this verdict for this patient was overridden in the last ``days`` days.

        Only ``overridden`` feedback counts, and only on a card whose verdict equals ``verdict``: a
        changed verdict is news and is shown again — also when it changes back, i.e. when a card with
        another verdict was shown after the override. ``days <= 0`` turns suppression off.
        """
        require_aware(now, "now")
        if days <= 0:
            return False
        params = {"patient_key": patient_key, "verdict": verdict, "since": now - timedelta(days=days),
                  "until": now + CLOCK_SKEW}
        with self._engine.connect() as conn:
            return conn.execute(_SUPPRESSED, params).first() is not None

    def forget_comments(self, received_before: datetime) -> int:
        """Blank the free-text comments of feedback received before this time; how many were blanked."""
        with self._engine.begin() as conn:
            return self._forget_comments(conn, require_aware(received_before, "received_before"))

    @staticmethod
    def _forget_comments(conn: Connection, received_before: datetime) -> int:
        result = conn.execute(feedback.update()
                              .where(feedback.c.received_at < received_before, feedback.c.user_comment.is_not(None))
                              .values(user_comment=None))
        if result.rowcount:
            log.info("feedback comments past their retention blanked: %d", result.rowcount)
        return int(result.rowcount)

    def feedback_for(self, card_uuid: str) -> list[Feedback]:
        """Every stored feedback item for one card, oldest outcome first (for audits and reports)."""
        stmt = (
            select(feedback)
            .where(feedback.c.card_uuid == canonical_uuid(card_uuid))
            .order_by(feedback.c.outcome_timestamp, feedback.c.id)
        )
        with self._engine.connect() as conn:
            return [_feedback_item(row._mapping) for row in conn.execute(stmt)]

    def feedback_count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(feedback)).scalar_one())

    def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """True when this (issuer, jti) is new; False for a replay."""
        return self.remember_jtis([(issuer, jti, expires_at)])[0]

    def remember_jtis(self, items: list[tuple[str, str, datetime]]) -> list[bool]:
        """Several (issuer, jti, expires) in one transaction: one write lock for a burst of requests.

        An id whose replay window has passed may be used again; expired ids are purged at most once a
        minute, not in every transaction.
        """
        now = datetime.now(UTC)
        out: list[bool] = []
        with self._engine.begin() as conn:
            for issuer, jti, expires_at in items:
                key = (jwt_ids.c.issuer == issuer) & (jwt_ids.c.jti == jti[:255])
                expires = require_aware(expires_at, "expires_at")
                new = insert_ignore(conn, jwt_ids, {"issuer": issuer, "jti": jti[:255], "expires_at": expires},
                                    ["issuer", "jti"])
                if not new:
                    seen = conn.execute(select(jwt_ids.c.expires_at).where(key)).scalar_one_or_none()
                    if seen is not None and seen < now:  # outside the replay window: may be reused
                        conn.execute(jwt_ids.update().where(key).values(expires_at=expires))
                        new = True
                out.append(new)
            if now - self._last_purge > timedelta(minutes=1):
                conn.execute(delete(jwt_ids).where(jwt_ids.c.expires_at < now - timedelta(hours=1)))
                self._last_purge = now
        return out

    def deployment_secret(self, name: str) -> bytes:
        """A random 256-bit secret of this deployment, made the first time it is asked for and the same
        ever after, for every worker and replica on this database (the first writer's value wins)."""
        candidate = {"name": name, "value": secrets.token_hex(32), "created_at": datetime.now(UTC)}
        with self._engine.begin() as conn:
            if insert_ignore(conn, deployment_secrets, candidate, ["name"]):
                log.info("deployment secret created: %s", name)
            value = conn.execute(select(deployment_secrets.c.value)
                                 .where(deployment_secrets.c.name == name)).scalar_one()
        return bytes.fromhex(str(value))

    def ping(self) -> None:
        """Read one of the service's tables; raises (SQLAlchemyError) when the database cannot answer.
        A table rather than `SELECT 1`: a SQLite file replaced by something else still answers that."""
        with self._engine.connect() as conn:
            conn.execute(select(func.count()).select_from(deployment_secrets)).scalar()

    def close(self) -> None:
        self._engine.dispose()


def _feedback_row(item: Feedback, received_at: datetime) -> dict[str, Any]:
    if item.outcome not in ("accepted", "overridden"):
        raise ValueError('feedback outcome must be "accepted" or "overridden"')
    return {
        "card_uuid": canonical_uuid(item.card_uuid),
        "outcome": item.outcome,
        "outcome_timestamp": require_aware(item.outcome_timestamp, "outcome_timestamp"),
        "accepted_suggestions": json.dumps(list(item.accepted_suggestions)),
        "override_reason_system": item.override_reason_system,
        "override_reason_code": item.override_reason_code,
        "user_comment": item.user_comment,
        "received_at": received_at,
    }


def _feedback_item(row: Any) -> Feedback:
    return Feedback(
        card_uuid=row["card_uuid"],
        outcome=row["outcome"],
        outcome_timestamp=row["outcome_timestamp"],
        accepted_suggestions=tuple(json.loads(row["accepted_suggestions"])),
        override_reason_code=row["override_reason_code"],
        override_reason_system=row["override_reason_system"],
        user_comment=row["user_comment"],
    )
