"""How many requests the service has in flight to one FHIR server, and who goes first when all are busy.

aiohttp's own per-host limit queues waiters in arrival order and counts the wait against the request's
timeout, so under load a hook's Patient read could wait behind other hooks' searches and fail as "the
server did not answer in time" when the server was never asked. Here the wait is the service's own:
waiters are served by priority (the Patient read first: a hook without its Patient fails whole, a
search that fails only leaves criteria unknown), then in arrival order; the request timeout starts
when the request is sent; and a wait that outlasts the hook's deadline says what really happened.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

PATIENT = 0  # the read a hook cannot do without
SEARCH = 1  # searches, their pages, medication reads


class SlotWaitTimeout(Exception):  # noqa: N818 -- caught inside the client, told as a FhirServerError
    """Every slot stayed busy until the deadline."""


class Slots:
    """At most `limit` requests at once; the others wait, by priority and then arrival."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    @asynccontextmanager
    async def hold(self, priority: int, timeout_s: float | None) -> AsyncIterator[None]:
        """One slot for the body of the block; SlotWaitTimeout when none frees up within `timeout_s`."""
        await self._acquire(priority, timeout_s)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int, timeout_s: float | None) -> None:
        if self.busy < self.limit and not self.waiting:
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            # not asyncio.wait_for: on Python 3.11 it returns a result that arrives together with a cancel
            # and loses the cancel (the hook's deadline would then wait for the whole request)
            async with asyncio.timeout(timeout_s):
                await fut
        except (TimeoutError, asyncio.CancelledError) as exc:
            if fut.done() and not fut.cancelled():
                self._release()  # handed a slot just as the wait ended: give it on
            else:
                fut.cancel()  # left in the heap, skipped by _release
            if isinstance(exc, TimeoutError):
                raise SlotWaitTimeout from None
            raise

    def _release(self) -> None:
        while self._waiters:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot passes to the waiter: `busy` is unchanged
                return
        self.busy -= 1
