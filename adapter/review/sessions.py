"""Review sessions and attestations, in the service's database (AXIOM_DATABASE_URL).

Why the database and not memory: `axiom-cds serve --workers N` (and replicas) hand the launch, the
EHR's callback and the page to whichever worker accepts the connection; a session in one worker's
memory would be missing in the next one half the time.

Why the access token is safe there: the browser's cookie holds a random 256-bit secret and nothing
else. The row's key is a hash of it and the row's content — the EHR token, the patient id, the PKCE
verifier, the CSRF token — is encrypted (Fernet: AES-128-CBC + HMAC-SHA256) under a key derived from
it (HKDF), and so is the clinician's verified `fhirUser` (identity.py). Whoever reads the database, its
backups or its logs learns neither the token nor the patient without the cookie; the service keeps no
key that opens a row. Expired rows are deleted. The checklist rows name the clinician who saved them
(the audit trail asks who attested) and the patient only by the service's keyed hash.

Synchronous (SQLAlchemy), called from the threadpool like adapter/store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.schema import CreateIndex, CreateTable

from ..store.db import UTCDateTime, make_engine

metadata = MetaData()

review_sessions = Table(
    "review_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the cookie's secret, never the secret
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("data", Text, nullable=False),  # Fernet token of the Session as JSON
)

# The latest answer per patient, trial version and attestation; the patient as the service's keyed hash
# (adapter/cds/hook.py patient_key), never an id.
review_attestations = Table(
    "review_attestations",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("trial_version", String(255), primary_key=True),
    Column("attestation_id", String(64), primary_key=True),
    Column("confirmed", Boolean, nullable=False),
    Column("hook_instance", String(64)),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("fhir_user", String(2048)),  # who saved it: the verified id_token's fhirUser; NULL: not identified
)
ADDED_COLUMNS = {"review_attestations": ("fhir_user",)}  # added after the first release: ALTERed into old tables

_PG_LOCK = (0x61786F6D, 0x72657677)  # ("axom", "revw"): one creator of these tables at a time on PostgreSQL


@dataclass
class Session:
    """One browser's review: first the launch (state, verifier), then the signed-in review (token, patient)."""

    iss: str
    token_endpoint: str
    state: str | None
    verifier: str
    expires_at: str  # ISO instant
    oidc_issuer: str | None = None  # the smart-configuration's `issuer` and `jwks_uri` (identity.py)
    jwks_uri: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    access_token: str | None = None
    scope: list[str] = field(default_factory=list)
    patient: str | None = None
    app_context: str | None = None
    hook_instance: str | None = None
    fhir_user: str | None = None  # the clinician, from the verified id_token; None: the EHR did not say
    user_display: str | None = None  # the id_token's `name`, when it had one
    notice: str | None = None  # said once on the next page (after a POST)
    created: list[dict[str, Any]] = field(default_factory=list)  # ServiceRequests written: kind, id, code, status

    @property
    def signed_in(self) -> bool:
        return self.access_token is not None and self.patient is not None

    def expired(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.expires_at) <= now


@dataclass(frozen=True)
class Attestation:
    confirmed: bool
    recorded_at: datetime
    fhir_user: str | None  # None: saved in a session whose clinician the EHR did not identify


def _row_id(secret: str) -> str:
    return hashlib.sha256(b"axiom-review-session-id|" + secret.encode()).hexdigest()


def _cipher(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"axiom-review-session-key").derive(
        secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


class ReviewStore:
    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        _create_tables(self._engine)

    def create(self, session: Session) -> str:
        """Store a new session; the cookie's secret (the only way back to it)."""
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(delete(review_sessions).where(review_sessions.c.expires_at < now))
            conn.execute(insert(review_sessions).values(id=_row_id(secret), expires_at=_instant(session),
                                                        data=_seal(secret, session)))
        return secret

    def load(self, secret: str | None) -> Session | None:
        """The session of this cookie, or None (no cookie, unknown, expired or not decryptable)."""
        if not secret or len(secret) > 128:
            return None
        with self._engine.connect() as conn:
            data = conn.execute(select(review_sessions.c.data).where(
                review_sessions.c.id == _row_id(secret), review_sessions.c.expires_at > datetime.now(UTC))).scalar()
        if data is None:
            return None
        try:
            return Session(**json.loads(_cipher(secret).decrypt(data.encode())))
        except (InvalidToken, TypeError, ValueError):
            return None

    def save(self, secret: str, session: Session) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(review_sessions).where(review_sessions.c.id == _row_id(secret)).values(
                expires_at=_instant(session), data=_seal(secret, session)))

    def end(self, secret: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(review_sessions).where(review_sessions.c.id == _row_id(secret)))

    def attestations(self, patient_key: str, trial_version: str) -> dict[str, Attestation]:
        """attestation id → the answer last saved for this patient and trial version."""
        table = review_attestations
        with self._engine.connect() as conn:
            rows = conn.execute(select(table.c.attestation_id, table.c.confirmed, table.c.recorded_at,
                                       table.c.fhir_user).where(
                table.c.patient_key == patient_key, table.c.trial_version == trial_version)).all()
        return {r.attestation_id: Attestation(bool(r.confirmed), r.recorded_at, r.fhir_user) for r in rows}

    def record_attestations(self, patient_key: str, trial_version: str, answers: dict[str, bool],
                            hook_instance: str | None, fhir_user: str | None) -> None:
        """Replace the saved answers of these attestations (one transaction), with who saved them."""
        now = datetime.now(UTC)
        table = review_attestations
        with self._engine.begin() as conn:
            conn.execute(delete(table).where(table.c.patient_key == patient_key,
                                             table.c.trial_version == trial_version,
                                             table.c.attestation_id.in_(list(answers))))
            conn.execute(insert(table), [
                {"patient_key": patient_key, "trial_version": trial_version, "attestation_id": aid,
                 "confirmed": confirmed, "hook_instance": hook_instance, "recorded_at": now,
                 "fhir_user": fhir_user}
                for aid, confirmed in answers.items()])

    def close(self) -> None:
        self._engine.dispose()


def _instant(session: Session) -> datetime:
    return datetime.fromisoformat(session.expires_at)


def _seal(secret: str, session: Session) -> str:
    return _cipher(secret).encrypt(json.dumps(asdict(session)).encode()).decode()


def expiry(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def _create_tables(engine: Engine) -> None:
    """CREATE IF NOT EXISTS; workers starting together take turns on PostgreSQL (see store/db.py)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": _PG_LOCK[0], "key": _PG_LOCK[1]})
        for table in metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                conn.execute(CreateIndex(index, if_not_exists=True))
        for name, columns in ADDED_COLUMNS.items():  # a table created by an earlier version lacks them
            present = {c["name"] for c in inspect(conn).get_columns(name)}
            for column in (metadata.tables[name].c[c] for c in columns if c not in present):
                conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {column.name} "
                                  f"{column.type.compile(dialect=conn.dialect)}"))
