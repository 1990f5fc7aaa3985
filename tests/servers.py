"""Real servers started by the tests: a PostgreSQL server of its own in a temporary folder.

``postgres_server`` is a session fixture (every suite shares one server); it skips only when the
PostgreSQL binaries are not installed (Debian: ``apt-get install postgresql``), and says so. Import the
fixture into a test module with ``from servers import postgres_server  # noqa: F401``.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> str | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and os.path.exists(os.path.join(os.path.dirname(os.path.realpath(found)), "pg_ctl")):
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()])
    for path in reversed(candidates):
        if os.path.exists(os.path.join(os.path.dirname(path), "pg_ctl")):
            return os.path.dirname(path)
    return None


def unprivileged_user() -> str:
    """PostgreSQL refuses to run as root: the ``postgres`` user, else a system user made for the tests."""
    for name in ("postgres", "xvad-test"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "xvad-test"],
                   check=True, capture_output=True)
    return "xvad-test"


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1:``port`` with trust authentication for user ``xvad``."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="xvad-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = unprivileged_user()
            shutil.chown(self.root, user)
            self.prefix = ["runuser", "-u", user, "--"]
        self._names = itertools.count()
        self.running = False

    def _run(self, *args: str) -> None:
        r = subprocess.run(self.prefix + list(args), capture_output=True, text=True, timeout=120)
        if r.returncode:
            log = os.path.join(self.root, "server.log")
            tail = open(log).read()[-2000:] if os.path.exists(log) else ""
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}\n{tail}")

    def start(self) -> None:
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "xvad", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        # fsync off: the tests kill clients, never this server, and it makes each commit cheap
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", options,
                  "-l", os.path.join(self.root, "server.log"), "-w", "-t", "60", "start")
        self.running = True

    def stop(self) -> None:
        try:
            if self.running:
                self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://xvad@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=xvad dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin; "
                    "Debian: apt-get install postgresql)")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
