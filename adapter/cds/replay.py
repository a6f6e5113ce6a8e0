"""JWT replay protection without a database write per request on the hot path.

Each token's `jti` must be new (within an hour) across every worker and replica, so it is recorded in
the shared database. One transaction per request made 64 concurrent callers queue for SQLite's write
lock (p99 near a second under load). Instead, requests that arrive while a write is in flight wait for
the next one: each process runs at most one jti transaction at a time, for everything pending.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from ..store import Store


class ReplayGuard:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[str, str, datetime, asyncio.Future[bool]]] = []
        self._flushing = False

    async def is_new(self, issuer: str, jti: str, expires: datetime) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((issuer, jti, expires, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await run_in_threadpool(self._store.remember_jtis, [(i, j, e) for i, j, e, _ in batch])
                except Exception as exc:  # the database is down: every waiting request fails closed
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (*_, future), new in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(new)
        finally:
            self._flushing = False
