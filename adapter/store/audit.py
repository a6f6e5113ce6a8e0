"""The audit trail: one row per evaluation, who asked, about whom, and what the service answered.

Unlike the logs (which hold a hash), the audit row holds the patient id: it is the record a privacy
officer or the study team reviews, kept in the service's database and exported with `axiom-cds audit`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, Connection, Engine, Integer, String, Table, Text, insert, select

from .db import UTCDateTime, metadata

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("evaluated_at", UTCDateTime, nullable=False, index=True),
    Column("issuer", String(512)),  # the JWT's iss; null when authentication is off
    Column("hook_instance", String(64), nullable=False),
    Column("fhir_server", String(1024)),
    Column("patient_id", String(64), nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("cohort", String(32)),
    Column("statuses", Text, nullable=False),  # JSON {criterion id: status}
    Column("trial_version", String(255), nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("card_shown", Boolean, nullable=False),
    Column("duration_ms", Integer, nullable=False),
)


@dataclass(frozen=True)
class AuditRow:
    evaluated_at: datetime
    issuer: str | None
    hook_instance: str
    fhir_server: str | None
    patient_id: str
    verdict: str
    cohort: str | None
    statuses: dict[str, str]
    trial_version: str
    as_of: str
    card_shown: bool
    duration_ms: int


def write_audit(conn: Connection, rows: list[AuditRow]) -> None:
    """Append audit rows inside the caller's transaction."""
    conn.execute(insert(audit), [{**vars(r), "statuses": json.dumps(r.statuses, sort_keys=True)} for r in rows])


def read_audit(engine: Engine, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    stmt = select(audit).order_by(audit.c.id)
    if since is not None:
        stmt = stmt.where(audit.c.evaluated_at >= since)
    with engine.connect() as conn:
        for row in conn.execute(stmt).mappings():
            out = {str(k): v for k, v in row.items()}
            out["statuses"] = json.loads(out["statuses"])
            out["evaluated_at"] = out["evaluated_at"].isoformat()
            yield out
