"""A circuit breaker per FHIR server, shared by every hook that calls it.

Without one, a dead or hung EHR server makes every hook wait out its whole deadline (and the retries
add load to a server that is already failing). After `failures` consecutive failed exchanges
(timeouts, connection errors, 5xx) the breaker opens: calls fail at once for a cool-down. Then one
trial request (the probe) goes through while other callers wait for its outcome: success closes the
breaker, failure opens it for a cool-down twice as long, up to `cooldown_s`. The first cool-down
is short (`first_cooldown_s`) so a brief outage (a restart) costs seconds, not the maximum. Answers
that show the server is alive (2xx, 401, 403, 404 ...) reset the count. A request cut short by the
hook's own deadline says nothing certain about the server and is not counted.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable

from ..errors import FhirServerError
from .urls import shown

log = logging.getLogger("axiom_cds.fhir")


class Outcome(enum.Enum):
    OK = "ok"  # the server answered as a live server does
    FAILED = "failed"  # timeout, connection error, 5xx
    NEUTRAL = "neutral"  # says nothing about the server's health (429, cancelled by the deadline)


class BreakerOpenError(FhirServerError):
    """The server is not called during the cool-down."""

    default_issue = "transient"


class CircuitBreaker:
    """Closed → open after N consecutive failures → one probe after the cool-down → closed or open again."""

    def __init__(self, base_url: str, failures: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic, first_cooldown_s: float = 2.0) -> None:
        self.base_url = shown(base_url)  # its messages reach every caller of the server: no secrets
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.first_cooldown_s = min(first_cooldown_s, cooldown_s)
        self._current_cooldown = self.first_cooldown_s
        self._clock = clock
        self._failures = 0
        self._last_reason = ""
        self._open_until: float | None = None  # None: closed
        self._probe: asyncio.Future[None] | None = None

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        return "half-open" if self._probe is not None or self._clock() >= self._open_until else "open"

    @property
    def idle(self) -> bool:
        """Closed with no failures counted: nothing would be lost by forgetting it."""
        return self._open_until is None and self._failures == 0 and self._probe is None

    async def admit(self) -> bool:
        """Wait until a call may go out; True when it is the half-open probe. Raises BreakerOpenError."""
        while True:
            if self._open_until is None or self.threshold <= 0:
                return False
            if self._probe is not None:  # another caller is probing: its outcome decides for us
                await asyncio.shield(self._probe)
                continue
            remaining = self._open_until - self._clock()
            if remaining > 0:
                raise BreakerOpenError(self._open_message(remaining))
            self._probe = asyncio.get_running_loop().create_future()
            return True

    def record(self, outcome: Outcome, probe: bool, reason: str = "") -> None:
        """The outcome of one exchange admitted by `admit` (always called, even on cancellation)."""
        if outcome is Outcome.OK:
            if self._open_until is not None:
                log.info("FHIR server circuit closed", extra={"fhir_server": self.base_url})
            self._failures = 0
            self._open_until = None
            self._current_cooldown = self.first_cooldown_s
        elif outcome is Outcome.FAILED:
            self._failures += 1
            self._last_reason = reason
            if self.threshold > 0 and (probe or (self._open_until is None and self._failures >= self.threshold)):
                # a failed probe: the outage is not brief, back off further
                self._current_cooldown = min(self._current_cooldown * 2, self.cooldown_s) if probe \
                    else self.first_cooldown_s
                self._open_until = self._clock() + self._current_cooldown
                log.warning("FHIR server circuit opened", extra={
                    "fhir_server": self.base_url, "failures": self._failures, "last_failure": reason,
                    "cooldown_s": self._current_cooldown})
        if probe and self._probe is not None:
            probe_done, self._probe = self._probe, None
            if not probe_done.done():
                probe_done.set_result(None)  # NEUTRAL leaves it ready for the next caller to probe

    def _open_message(self, remaining: float) -> str:
        seconds = f"{math.ceil(remaining * 10) / 10:g}"
        last = f", last: {self._last_reason}" if self._last_reason else ""
        return (f"the FHIR server at {self.base_url} is failing ({self._failures} failures in a row{last}); "
                f"not called for {seconds} s")
