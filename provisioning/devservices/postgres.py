"""A private PostgreSQL cluster for development and tests, from the installed server binaries.

`initdb` + `pg_ctl` create and run it under the data dir, listening on loopback only.
PostgreSQL refuses to run as root; when this process is root, the server commands run as the
`postgres` system user (runuser) on a data dir that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provisioning.devservices.process import (
    DevServiceError,
    read_pid,
    refuse_taken_port,
    wait_until,
)

START_TIMEOUT_S = 60.0
SERVICE_ROLE = "provisioning"
SERVICE_PASSWORD = "provisioning-dev"  # local development cluster only, loopback only
DATABASE = "provisioning"
OS_USER = "postgres"


@dataclass(frozen=True, slots=True)
class LocalPostgres:
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return (
            f"postgresql+psycopg://{SERVICE_ROLE}:{SERVICE_PASSWORD}"
            f"@127.0.0.1:{self.port}/{DATABASE}"
        )

    def running_pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            first_line = pid_file.read_text().splitlines()[0]
        except (FileNotFoundError, IndexError, PermissionError):
            return None
        tmp = self.root / ".pid"
        tmp.write_text(first_line)
        return read_pid(tmp)

    def start(self) -> bool:
        """Create (once) and start the cluster unless it runs; True when this call started it."""
        if self.running_pid() is not None:
            return False
        bin_dir = find_bin_dir()
        refuse_taken_port(self.port, "PostgreSQL", "PROVISIONING_DEV_POSTGRES_PORT")
        self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        self._run(
            [str(bin_dir / "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT_S)),
             "-D", str(self.data_dir), "-l", str(self.log_file),
             "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"],
            "starting PostgreSQL",
        )
        wait_until(self.answers, START_TIMEOUT_S, "PostgreSQL", self.log_file)
        self._create_service_database(bin_dir)
        return True

    def stop(self) -> None:
        if self.running_pid() is None:
            return
        self._run(
            [str(find_bin_dir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir)],
            "stopping PostgreSQL",
        )

    def answers(self) -> bool:
        """`SELECT 1` works over TCP as the service role (or as the superuser before it exists)."""
        result = self._psql("SELECT 1", database="postgres", check=False)
        return result.returncode == 0

    def service_answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user=SERVICE_ROLE,
                password=SERVICE_PASSWORD, dbname=DATABASE, connect_timeout=2,
            ) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False

    # --- internals -----------------------------------------------------------------------

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if _is_root():
            user = pwd.getpwnam(OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            _make_traversable(self.root)

    def _initdb(self, bin_dir: Path) -> None:
        self._run(
            [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", OS_USER,
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C.UTF-8"],
            "initdb",
        )

    def _create_service_database(self, bin_dir: Path) -> None:
        exists = self._psql(
            f"SELECT 1 FROM pg_roles WHERE rolname = '{SERVICE_ROLE}'", database="postgres"
        )
        if exists.stdout.strip() != "1":
            # CREATEROLE: the built-in resource participant creates a role per tenant database.
            self._psql(
                f"CREATE ROLE {SERVICE_ROLE} LOGIN CREATEROLE PASSWORD '{SERVICE_PASSWORD}'",
                database="postgres",
            )
        has_db = self._psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres"
        )
        if has_db.stdout.strip() != "1":
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {SERVICE_ROLE}", database="postgres")

    def _psql(self, sql: str, database: str, check: bool = True) -> subprocess.CompletedProcess:
        psql = find_bin_dir() / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        command = [str(psql), "-h", str(self.root), "-p", str(self.port), "-U", OS_USER,
                   "-d", database, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql]
        result = subprocess.run(_as_os_user(command), capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise DevServiceError(f"psql failed: {result.stderr.strip().splitlines()[-1:]}")
        return result

    def _run(self, command: list[str], doing: str) -> None:
        result = subprocess.run(
            _as_os_user(command), capture_output=True, text=True, check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise DevServiceError(f"{doing} failed: {' '.join(last)}; see {self.log_file}")


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian layout, then PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major_version)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise DevServiceError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql-15 or newer"
    )


def _major_version(pg_ctl: str) -> int:
    name = Path(pg_ctl).parent.parent.name
    return int(name) if name.isdigit() else 0


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_os_user(command: list[str]) -> list[str]:
    if not _is_root():
        return command
    try:
        pwd.getpwnam(OS_USER)
    except KeyError as exc:
        raise DevServiceError(
            f"running as root, PostgreSQL needs the '{OS_USER}' system user, which is missing"
        ) from exc
    return ["runuser", "-u", OS_USER, "--", *command]


def _make_traversable(path: Path) -> None:
    """The postgres user must be able to reach its data dir through the parents."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
