"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster made with
initdb in a temp dir, password authentication over TCP on a free loopback port, stopped with its
own pg_ctl. PostgreSQL refuses to run as root, so under root it runs as the `postgres` system user
the package creates (through runuser)."""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

USER = "mlflow"


def server_binaries() -> Optional[Path]:
    """The directory holding initdb, pg_ctl and postgres, or None. Debian keeps them in
    /usr/lib/postgresql/<major>/bin, off PATH."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def why_unavailable() -> Optional[str]:
    """None when a server can be started here, else the reason (for pytest.skip)."""
    if server_binaries() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
                "package (.ci/run installs it when apt is available)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as (it refuses root)"
        if shutil.which("runuser") is None:
            return "running as root without `runuser` to run PostgreSQL as the `postgres` user"
    try:
        import psycopg  # noqa: F401  (the PostgreSQL driver of the `postgres` extra)
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = server_binaries()
        self.password = secrets.token_hex(16)
        # a short path: the server's unix socket lives here too (sun_path is limited to 107 bytes)
        self.dir = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
        self.data = self.dir / "data"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.dir.chmod(0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{tail}")
        return result

    def start(self) -> "PostgresServer":
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        for attempt in range(3):  # another process may take the free port before the server binds it
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "-o", options, "start")
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def stop(self) -> None:
        """Stops this server (its own pg_ctl, by data directory) and removes its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def uri(self, database: str) -> str:
        """The SQLAlchemy URI, naming its driver (psycopg 3) as the cluster files do."""
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URI."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)
