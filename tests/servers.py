"""Real PostgreSQL and Redis servers for the tests, from the Debian packages.

Fixtures (session scope; import them into a test module):

- `postgres_server`: a fresh cluster (initdb) in a temporary folder, listening on a free loopback
  port, trust auth; yields a `PostgresServer` with `.url(dbname)` and `.create_database(name)`
  (which returns a DATABASE_URL for a new, empty database).
- `redis_server`: redis-server on a free loopback port, no persistence; yields its REDIS_URL.

Both are stopped at the end of the session. PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` user through `runuser`. A missing server binary skips the test
with the Debian package to install, except in CI (the `CI` variable set), where it fails.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing(what, package):
    message = f"{what} is not installed: apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the tests that need it)")
    pytest.skip(message)


def _wait_for_port(port, process, log, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{Path(log).read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} in {seconds} s:\n{Path(log).read_text()[-2000:]}")


def _stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # PostgreSQL: fast shutdown; Redis: clean exit
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"

    def url(self, dbname="postgres"):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    bindir = _postgres_bin()
    if bindir is None:
        _missing("PostgreSQL", "postgresql")
    root = Path(tempfile.mkdtemp(prefix="attune-pg-"))
    data, sockets, log = root / "data", root / "run", root / "postgres.log"
    sockets.mkdir()
    as_postgres = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    port = _free_port()
    with open(log, "w") as out:
        if os.geteuid() == 0:
            shutil.chown(log, "postgres")
        process = subprocess.Popen(
            [*as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        server = PostgresServer(port=port)
        deadline = time.monotonic() + 30
        while True:  # listening is not yet accepting: wait for the first real connection
            try:
                import psycopg

                psycopg.connect(server.url(), connect_timeout=2).close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("Redis", "redis-server")
    root = Path(tempfile.mkdtemp(prefix="attune-redis-"))
    port = _free_port()
    log = root / "redis.log"
    with open(log, "w") as out:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(root), "--protected-mode", "yes"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
