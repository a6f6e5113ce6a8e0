"""Persistence for CDS Hooks feedback and alert-fatigue suppression (SQLAlchemy; SQLite by default)."""

from .audit import AuditRow
from .feedback import FeedbackError, parse_feedback
from .model import Feedback, IssuedCard
from .store import Store

__all__ = ["AuditRow", "Feedback", "FeedbackError", "IssuedCard", "Store", "parse_feedback"]
