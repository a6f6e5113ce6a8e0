"""Persistence for CDS Hooks feedback and alert-fatigue suppression (SQLAlchemy; SQLite by default)."""

from .feedback import FeedbackError, parse_feedback
from .model import Feedback, IssuedCard
from .store import Store

__all__ = ["Feedback", "FeedbackError", "IssuedCard", "Store", "parse_feedback"]
