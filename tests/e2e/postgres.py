"""A throwaway PostgreSQL server on loopback, from Debian's ``postgresql`` package.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user (``runuser -u
postgres --``) in a temporary folder that user owns; as anyone else, as that user. It listens on
127.0.0.1 only, on a free port, with its socket in its own folder, and trusts local connections (a
test server: nothing but this machine's loopback can reach it). :meth:`stop` shuts it down fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 60


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` folder, or None."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


@dataclass
class Postgres:
    """One running server; ``url`` is its SQLAlchemy asyncpg URL for the database ``prefect``."""

    folder: Path
    port: int
    bin: Path
    as_postgres: bool

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def _run(self, *argv: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    @classmethod
    def start(cls, port: int) -> Postgres:
        binaries = bin_dir()
        if binaries is None:
            raise RuntimeError(f"PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb)")
        folder = Path(tempfile.mkdtemp(prefix="discovery-pg-"))
        as_postgres = os.geteuid() == 0
        if as_postgres:
            shutil.chown(folder, user="postgres", group="postgres")
        server = cls(folder=folder, port=port, bin=binaries, as_postgres=as_postgres)
        steps = [
            ("initdb", "-D", str(folder / "data"), "-U", "postgres", "-A", "trust", "--no-sync"),
            (
                "pg_ctl",
                "-D",
                str(folder / "data"),
                "-l",
                str(folder / "server.log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off",
                "start",
            ),
            ("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect"),
        ]
        for step in steps:
            done = server._run(*step)
            if done.returncode != 0:
                server.stop()
                raise RuntimeError(f"{step[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return server

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
