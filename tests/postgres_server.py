"""A real PostgreSQL server for the store tests, started once per test session from Debian's binaries.

Why a real server: multi-replica deployments point every worker at one PostgreSQL database, and the
behaviour that matters there (ON CONFLICT under concurrent writers, schema creation racing at startup,
what a killed client leaves behind) only shows against the real thing. .ci/run installs the `postgresql`
package when it is missing, so CI always runs these tests; a developer without it gets a skip.

PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` system user (or
`nobody`) and every server command goes through `runuser`. The server listens on 127.0.0.1 only, on a
free port, with its unix socket in its own temp dir, and is stopped (`pg_ctl stop -m fast`) at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

__all__ = ["PostgresServer", "postgres_server", "postgres_url"]

USER = "axiom"
START_TIMEOUT_S = 60
_TRUTHY = {"1", "true", "yes", "on"}


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL binaries here, or the server would not start."""


def find_bindir() -> Path:
    """The newest Debian PostgreSQL bin dir (/usr/lib/postgresql/<major>/bin) that has initdb and pg_ctl."""
    found = [
        Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb") if Path(p).with_name("pg_ctl").exists()
    ]
    if not found:
        on_path = shutil.which("initdb"), shutil.which("pg_ctl")
        if all(on_path):
            return Path(str(on_path[0])).resolve().parent
        raise PostgresUnavailableError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "run `make test` (it installs Debian's postgresql package) or "
            "`apt-get install -y --no-install-recommends postgresql`"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One running cluster; ``url`` is its test database, ``new_database()`` gives a fresh, empty one."""

    bindir: Path
    root: Path  # temp dir owned by the server's user: data/, sock/, server.log
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    run_as: str | None = None  # a non-root user when we are root
    url: str = ""
    _admin: Engine | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url_for(self, database: str) -> str:
        return URL.create(
            "postgresql+psycopg", username=USER, password=self.password, host="127.0.0.1", port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        # cwd: the server's user may not be allowed into ours (initdb/pg_ctl complain otherwise)
        proc = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30, check=False
        )
        if check and proc.returncode != 0:
            detail = f"{proc.stderr.strip()}{self._log_tail()}"
            raise PostgresUnavailableError(f"{args[0]} failed ({proc.returncode}): {detail}")
        return proc

    def _log_tail(self) -> str:
        try:
            return "\nserver.log:\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(pwfile, self.run_as)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-instructions")
        pwfile.unlink()
        (self.root / "sock").mkdir()
        if self.run_as:
            shutil.chown(self.root / "sock", self.run_as)

    def start(self) -> None:
        """Start on a free port; a port taken between picking and binding gets another try."""
        for _attempt in range(3):
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root / 'sock'} "
                       "-c max_connections=200 -c shared_buffers=32MB")
            proc = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                             "-w", "-t", str(START_TIMEOUT_S), "start", check=False)
            if proc.returncode == 0:
                break
        else:
            raise PostgresUnavailableError(f"pg_ctl start failed: {proc.stderr.strip()}{self._log_tail()}")
        self._admin = create_engine(self.url_for("postgres"), isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # pg_ctl -w already waited; this proves TCP + password work too
            try:
                with self._admin.connect() as conn:
                    conn.execute(text("SELECT 1"))
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    detail = f"{exc}{self._log_tail()}"
                    raise PostgresUnavailableError(f"server does not accept connections: {detail}") from exc
                time.sleep(0.1)
        self.url = self.new_database("axiom_test")

    def new_database(self, name: str | None = None) -> str:
        """Create an empty database (each test gets its own, so none sees another's rows); its URL."""
        assert self._admin is not None, "server not started"
        name = name or f"t_{secrets.token_hex(6)}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url_for(name)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)


def _server_user() -> str | None:
    """None when we may run the server ourselves; else a system user to run it as (root is refused)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailableError("running as root and there is no `postgres` or `nobody` user to run PostgreSQL as")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in _TRUTHY


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session. In CI a missing or broken server fails; locally it skips."""
    try:
        bindir = find_bindir()
        run_as = _server_user()
    except PostgresUnavailableError as exc:
        if _in_ci():
            pytest.fail(f"CI needs PostgreSQL: {exc}", pytrace=False)
        pytest.skip(str(exc))
    # Not pytest's tmp_path: that lives under a 0700 root-owned dir the server's user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="axiom-pg-"))
    if run_as:
        shutil.chown(root, run_as)
    server = PostgresServer(bindir=bindir, root=root, run_as=run_as)
    try:
        server.init()
        server.start()
    except (PostgresUnavailableError, subprocess.TimeoutExpired) as exc:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL would not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of the session's test database (shared: tests that need an empty one use new_database)."""
    return postgres_server.url
