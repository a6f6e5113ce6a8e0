"""One aiohttp session (connection pool) per FHIR server, shared by every hook that calls it.

A session per request would open new TCP (and TLS) connections on every hook; one per server keeps
them alive. Tokens differ per request, so they go in each request's headers, never in the session.
The pool also keeps one circuit breaker per FHIR base URL, so that what one hook learnt about a failing
server spares the next hooks the wait.
"""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from .breaker import CircuitBreaker
from .slots import Slots

MAX_BREAKERS = 1024  # fhirServer comes from the (authenticated) caller: bound what is remembered
MAX_SESSIONS = 64  # servers with a kept-alive pool; the least recently used beyond that is closed


DEFAULT_CONNECTIONS = 32


class SessionPool:
    """`limit_per_host`: requests in flight to one server at once (its Slots; aiohttp's own limit is
    off, so that a wait for a connection is never counted as the server's slowness)."""

    def __init__(self, limit_per_host: int = DEFAULT_CONNECTIONS, max_sessions: int = MAX_SESSIONS) -> None:
        self._limit = limit_per_host
        self._max_sessions = max_sessions
        self._sessions: dict[str, aiohttp.ClientSession] = {}  # least recently used first
        self._slots: dict[str, Slots] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, base_url: str) -> aiohttp.ClientSession:
        key = _host_key(base_url)
        session = self._sessions.pop(key, None)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
            session = aiohttp.ClientSession(connector=connector)
        self._sessions[key] = session
        while len(self._sessions) > self._max_sessions:  # many servers named: do not keep a pool for each
            oldest = next(iter(self._sessions))
            task = asyncio.ensure_future(self._sessions.pop(oldest).close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return session

    def slots(self, base_url: str) -> Slots:
        """The request slots of the server `get` gave the session of (one set per host, as the session)."""
        key = _host_key(base_url)
        found = self._slots.get(key)
        if found is None:
            if len(self._slots) >= MAX_BREAKERS:  # hosts come from callers: forget the idle ones (a busy one
                for idle in [k for k, v in self._slots.items() if not v.busy and not v.waiting]:  # stays: one
                    del self._slots[idle]  # limit per host, never two)
            found = self._slots[key] = Slots(self._limit)
        return found

    def session_count(self) -> int:
        return len(self._sessions)

    def breaker(self, base_url: str, failures: int, cooldown_s: float,
                first_cooldown_s: float = 2.0) -> CircuitBreaker:
        """The circuit breaker of one FHIR base URL, shared by every hook that calls it."""
        url = URL(base_url)
        key = f"{url.scheme}://{url.host}:{url.port}{url.path.rstrip('/')}"
        breaker = self._breakers.get(key)
        if breaker is None:
            if len(self._breakers) >= MAX_BREAKERS:  # forget servers with nothing to remember
                for idle in [k for k, b in self._breakers.items() if b.idle]:
                    del self._breakers[idle]
            breaker = self._breakers[key] = CircuitBreaker(base_url.rstrip("/"), failures, cooldown_s,
                                                           first_cooldown_s=first_cooldown_s)
        breaker.threshold, breaker.cooldown_s = failures, cooldown_s
        return breaker

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _host_key(base_url: str) -> str:
    url = URL(base_url)
    return f"{url.scheme}://{url.host}:{url.port}"
