"""Persistence for CDS Hooks feedback and alert-fatigue suppression (SQLAlchemy; SQLite by default)."""

from .audit import AuditRow
from .feedback import FeedbackError, UnknownCardError, parse_feedback, record_feedback
from .model import Feedback, IssuedCard
from .store import Store

__all__ = ["AuditRow", "Feedback", "FeedbackError", "IssuedCard", "Store", "UnknownCardError", "parse_feedback",
           "record_feedback"]
