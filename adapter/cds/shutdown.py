"""How `axiom-cds serve` stops: on SIGTERM or SIGINT, hooks in flight finish, nothing new starts, exit 0.

uvicorn does most of it: on the signal it closes its listening socket, closes idle connections, lets
the requests in flight finish for up to `timeout_graceful_shutdown` (AXIOM_SHUTDOWN_GRACE_S, then it
cancels them), and runs the app's lifespan shutdown, which closes the FHIR sessions and the database
after the last request (app.py). What this module adds:

- readiness: `/readyz` answers 503 from the first signal on (`Stopping.begun`); with
  AXIOM_SHUTDOWN_DRAIN_S the service keeps accepting and answering that long before uvicorn is told,
  so a load balancer that learns readiness by polling stops sending before connections are refused;
- `--workers N`: uvicorn's supervisor keeps its own copy of the listening socket until every worker
  has exited, so connections made meanwhile are queued by the kernel, never answered, and reset at the
  end; `Supervisor` closes that copy when the shutdown starts, so they are refused as with one worker;
- exit status 0: after a graceful stop uvicorn re-raises the signal under the handler the process had
  before it started, and the default SIGTERM handler kills the process (status 143); `serve` installs
  one that exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

__all__ = ["Stopping", "Supervisor", "serve_until_stopped"]

log = logging.getLogger("axiom_cds")

HANDLED = (signal.SIGINT, signal.SIGTERM)
SignalHandler = Callable[[int, FrameType | None], object]


class Stopping:
    """The shutdown of one app as its handlers see it: `begun` from the first SIGTERM/SIGINT on."""

    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.begun = False
        self._passed_on = False  # uvicorn has been told (it stops accepting)
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self) -> None:
        """Put this in front of the signal handlers of the uvicorn server running the app (called in the
        app's startup). Only a server in the process's main thread has them: the tests' threaded servers
        and TestClient have none, and are left alone."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in HANDLED:
            handler = signal.getsignal(sig)
            if callable(handler) and isinstance(getattr(handler, "__self__", None), uvicorn.Server):
                signal.signal(sig, functools.partial(self._on_signal, handler))  # wraps its handle_exit

    def _on_signal(self, server_exit: SignalHandler, sig: int, frame: FrameType | None) -> None:
        """Runs as a signal handler: only sets flags and schedules; logging waits for the loop."""
        assert self._loop is not None
        first = not self.begun
        self.begun = True
        if not first or self.drain_s <= 0:
            self._pass_on(server_exit, sig, frame)  # a second signal ends the drain (two SIGINTs: uvicorn forces)
        if first:
            self._loop.call_soon_threadsafe(self._begin, server_exit, sig)

    def _begin(self, server_exit: SignalHandler, sig: int) -> None:
        log.info("shutdown begun: /readyz answers 503", extra={"signal": signal.Signals(sig).name,
                                                               "drain_s": self.drain_s})
        if self.drain_s > 0:
            assert self._loop is not None
            self._loop.call_later(self.drain_s, self._drained, server_exit, sig)

    def _drained(self, server_exit: SignalHandler, sig: int) -> None:
        if not self._passed_on:
            log.info("drain over: no new connections", extra={"drain_s": self.drain_s})
            self._pass_on(server_exit, sig, None)

    def _pass_on(self, server_exit: SignalHandler, sig: int, frame: FrameType | None) -> None:
        self._passed_on = True
        server_exit(sig, frame)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of `--workers N` (it sends each worker SIGTERM), closing its own copy of the
    listening socket first: the workers close theirs when they stop accepting, and only then does the
    kernel refuse new connections instead of queueing them for no one."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def _exit_quietly(sig: int, frame: FrameType | None) -> None:
    """The process's handler outside uvicorn's: uvicorn re-raises the signal under it once the graceful
    stop is done, and a signal before uvicorn's own handlers are in place stops the start."""
    raise SystemExit(0)


def serve_until_stopped(config: uvicorn.Config) -> None:
    """Serve until SIGTERM or SIGINT, stop gracefully, return (exit 0). One worker runs in this
    process; several under `Supervisor`. Exit 3 (uvicorn's) when the only worker cannot start."""
    for sig in HANDLED:
        signal.signal(sig, _exit_quietly)
    if config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
