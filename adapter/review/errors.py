"""What can go wrong in the review app, said to the clinician: an HTTP status, a title, a sentence.

Every failure ends on an HTML page built from a ReviewError (routes.py); the words are ours, never an
exception's text or a stack trace, and never a token.
"""

from __future__ import annotations

RELAUNCH = "Open the review again from the AXIOM card in the EHR."


class ReviewError(Exception):
    """A failure the clinician is told about: `status` for the response, `title` and `detail` for the page."""

    def __init__(self, status: int, title: str, detail: str, *, relaunch: bool = True) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.relaunch = relaunch  # say "open the review again from the card"
