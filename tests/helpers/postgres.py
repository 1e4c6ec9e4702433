"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` server binaries (`make test` installs
the package with apt), `initdb` into a temporary folder and `pg_ctl start` on a free 127.0.0.1 port, one
cluster per pytest process (xdist worker), started on the first test that asks for it; a new schema (or
database) per test.

PostgreSQL refuses to run as root: when the tests run as root (CI, containers) the server runs as Debian's
`postgres` user through `runuser`, in a folder it owns. Durability is off (fsync, synchronous_commit,
full_page_writes): the cluster is thrown away, and the tests measure behaviour, not disks.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

BINDIR = Path(os.environ.get("DIAMOND_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
STORES_DB = "stores"  # the database whose schemas are the tests' stores
FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def available() -> str | None:
    """None when the cluster can start here, else why not (the PostgreSQL tests then fail saying so)."""
    if not (BINDIR / "pg_ctl").exists():
        return f"{BINDIR / 'pg_ctl'} is missing: `make test` installs Debian's postgresql (apt-get)"
    return None


def _as_server_user(argv: list[str]) -> list[str]:
    """The command, run as the `postgres` user when we are root (the server refuses root)."""
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresCluster:
    """A running cluster: `new_schema()` and `new_database()` make an empty store and return its SQLAlchemy
    URL."""

    root: Path
    port: int
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "test") -> str:
        """A new, empty database on the cluster (its URL); thrown away with the cluster. About a second each
        (PostgreSQL 15 copies template1): for tests that need a database of their own (MLflow's)."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def new_schema(self) -> str:
        """The URL of a new, empty schema in the cluster's `stores` database, first on the URL's search path:
        to Diamond (and Alembic, and the inspector) a store of its own, made in milliseconds."""
        name = f"store_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE SCHEMA "{name}"', database=STORES_DB)
        return f"{self.url(STORES_DB)}?options=-csearch_path%3D{name}"

    def _admin(self, statement: str, database: str = "postgres") -> None:
        eng = sa.create_engine(self.url(database), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with eng.connect() as con:
            con.exec_driver_sql(statement)


@contextmanager
def cluster(port: int, durable: bool = False) -> Iterator[PostgresCluster]:
    """initdb and start a cluster on 127.0.0.1:`port`; stopped and deleted afterwards. `durable` keeps
    PostgreSQL's default fsync and commit settings (bench/bench_batch.py measures with them)."""
    why = available()
    if why:
        raise RuntimeError(why)
    root = Path(tempfile.mkdtemp(prefix="diamond-pg-"))
    root.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(root, SUPERUSER, SUPERUSER)
    data = root / "data"

    def run(program: str, *args: str) -> None:
        argv = _as_server_user([str(BINDIR / program), *args])
        subprocess.run(argv, cwd=root, check=True, capture_output=True, text=True, timeout=120)

    try:
        run("initdb", "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1" + ("" if durable else f" {FAST}")
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        why = f"PostgreSQL did not start: {exc.stderr}\n{log.read_text() if log.exists() else ''}"
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(why) from exc
    made = PostgresCluster(root, port)
    try:
        made._admin(f"CREATE DATABASE {STORES_DB}")
        yield made
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
