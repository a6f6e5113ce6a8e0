"""`axiom-cds serve` as a real process for the tests that need its process-level behaviour (TLS, signals,
socket limits): one clean environment, one start-and-wait, one stop."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.helpers import stop
from tests.service_server import AS_OF

ROOT = Path(__file__).resolve().parents[1]
START_BOUND_S = 60.0  # a cold start imports the engine and loads the unit registry


def serve_environment(port: int, **settings: str) -> dict[str, str]:
    """This process's environment without any AXIOM_* it may carry, then the port, the evaluation date, INFO
    logs and `settings`: each test states every setting it depends on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXIOM_")}
    env.update({"AXIOM_PORT": str(port), "AXIOM_AS_OF": AS_OF.isoformat(), "AXIOM_LOG_LEVEL": "INFO", **settings})
    return env


@contextlib.contextmanager
def serve_process(args: list[str], env: dict[str, str], log_path: Path, ready: Callable[[], bool]
                  ) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m adapter.cli serve ARGS` with its output in `log_path`; yields once `ready()` is true, stops
    it afterwards. A process that exits or never gets ready fails the test with the end of its log."""
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "adapter.cli", "serve", *args], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_BOUND_S
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"axiom-cds serve stopped:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"axiom-cds serve did not start:\n{log_tail(log_path)}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            stop(process)


def log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


def log_records(log_path: Path) -> list[dict[str, Any]]:
    """The JSON log lines (the start-up banner of `serve` on stderr is not JSON)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out
