"""The review app's settings resolved against the service's: where browsers reach it, and whether it is on."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..cds.settings import Settings
from .settings import ReviewSettings

COOKIE = "axiom_review"
_HOOK_INSTANCE = re.compile(r"[A-Za-z0-9\-]{1,64}")


@dataclass(frozen=True)
class ReviewConfig:
    settings: ReviewSettings
    public_base: str | None  # AXIOM_REVIEW_PUBLIC_BASE_URL, else AXIOM_PUBLIC_BASE_URL

    @property
    def enabled(self) -> bool:
        """A client registration, an issuer to trust and a URL to send browsers back to."""
        return self.settings.configured and self.public_base is not None

    @property
    def launch_url(self) -> str:
        return f"{self.public_base}/review/launch"

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_base}/review/callback"

    @property
    def secure_cookie(self) -> bool:
        return (self.public_base or "").startswith("https://")


def review_config(review: ReviewSettings, settings: Settings) -> ReviewConfig:
    """ValueError for a combination browsers would refuse (the service stops at start, not at a launch)."""
    base = review.public_base_url or settings.public_base_url
    if review.cookie_samesite == "none" and not (base or "").startswith("https://"):
        raise ValueError("AXIOM_REVIEW_COOKIE_SAMESITE=none needs an https public base URL: browsers drop "
                         "SameSite=None cookies that are not Secure")
    return ReviewConfig(review, base)


def launch_url(app_state: Any) -> str | None:
    """The card's link to the app (`app.state` of the service), when the app is set up."""
    config = getattr(app_state, "review", None)
    return config.launch_url if isinstance(config, ReviewConfig) and config.enabled else None


def read_app_context(text: str | None) -> tuple[str | None, str | None]:
    """(trial, hookInstance) from the appContext the EHR passed back (report/card.py writes it); (None, None)
    when it is not ours."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    trial, hook = data.get("trial"), data.get("hookInstance")
    return (trial if isinstance(trial, str) and len(trial) <= 64 else None,
            hook if isinstance(hook, str) and _HOOK_INSTANCE.fullmatch(hook) else None)
