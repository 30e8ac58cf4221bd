"""Throwaway PostgreSQL servers for tests and benchmarks.

Each :class:`TemporaryPostgres` owns a private cluster in a fresh temporary
directory, listening on 127.0.0.1 on a free port, and deletes everything on
:meth:`TemporaryPostgres.stop`. It needs the server binaries under
``/usr/lib/postgresql/<version>/bin``; ``scripts/ensure-postgres`` installs
them (and the unprivileged user used when running as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["TemporaryPostgres"]

_PG_LIB_ROOT = Path("/usr/lib/postgresql")
# "postgres" comes with the Debian package; the fallback is what
# scripts/ensure-postgres creates when that user is absent.
_SERVER_USERS = ("postgres", "convhook-pg")
_SUPERUSER = "postgres"
_START_TIMEOUT_S = 60
# pg_ctl waits up to _START_TIMEOUT_S itself; this only guards against a
# wedged pg_ctl so a broken server cannot hang the whole test run.
_COMMAND_TIMEOUT_S = _START_TIMEOUT_S + 30
_LOG_TAIL_LINES = 40
# sun_path is 108 bytes on Linux; the server adds "/.s.PGSQL.<port>" and a
# ".lock" suffix to the socket directory.
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535.lock")
# A free port picked by binding to 0 can be taken by someone else before the
# server binds it, e.g. by a parallel test worker; retry with a new port.
_PORT_ATTEMPTS = 3
_PORT_IN_USE = re.compile(r"could not bind|Address already in use", re.IGNORECASE)


class TemporaryPostgres:
    """A private PostgreSQL server living in a temporary directory.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    Connect with :attr:`dsn` as the superuser ``postgres`` (trust auth, no
    password). By default the server trades durability for speed (``fsync``,
    ``synchronous_commit`` and ``full_page_writes`` off), which is fine for
    data that dies with the test; pass ``durable=True`` when measuring
    performance so commits cost what they would in production.

    ``settings`` adds or overrides ``postgresql.conf`` parameters; values are
    written quoted, which PostgreSQL accepts for every parameter type.
    """

    def __init__(
        self,
        *,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Configure the server; nothing happens until :meth:`start`."""
        self.durable = durable
        self._extra_settings: dict[str, str] = dict(settings or {})
        self._bin_dir: Path | None = None
        self._run_as: str | None = None
        self._base_dir: Path | None = None
        self._port: int | None = None
        self._finalizer: weakref.finalize[..., TemporaryPostgres] | None = None

    # -- public API -----------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port the server listens on (127.0.0.1); fixed across restarts."""
        if self._port is None:
            raise RuntimeError("TemporaryPostgres is not started")
        return self._port

    @property
    def dsn(self) -> str:
        """Connection URI for the default ``postgres`` database."""
        return self.dsn_for("postgres")

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (removed by :meth:`stop`)."""
        return self._require_base_dir() / "data"

    @property
    def log_path(self) -> Path:
        """The server log file, handy when a test needs to see what happened."""
        return self._require_base_dir() / "server.log"

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._base_dir is not None

    def dsn_for(self, dbname: str) -> str:
        """Connection URI for database ``dbname`` on this server."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def start(self) -> TemporaryPostgres:
        """Create a fresh cluster and start the server; return ``self``.

        Raises ``RuntimeError`` (with the tail of the server log when the
        server itself failed) and leaves nothing behind if the start fails.
        """
        if self._base_dir is not None:
            raise RuntimeError("TemporaryPostgres is already started")
        self._bin_dir = _find_bin_dir()
        self._run_as = _server_user() if os.geteuid() == 0 else None
        base_dir = Path(tempfile.mkdtemp(prefix="convhook-pg-"))
        try:
            if len(str(base_dir)) > _MAX_SOCKET_DIR_LEN:
                raise RuntimeError(
                    f"temporary directory {base_dir} is too long for a unix socket"
                    " path; point TMPDIR at a shorter directory"
                )
            if self._run_as is not None:
                pw = pwd.getpwnam(self._run_as)
                os.chown(base_dir, pw.pw_uid, pw.pw_gid)
            self._base_dir = base_dir
            self._initdb()
            self._start_on_free_port()
        except BaseException:
            self._base_dir = None
            self._port = None
            # The start error is the one worth reporting, not a cleanup one.
            with contextlib.suppress(Exception):
                _destroy(self._stop_argv(base_dir), base_dir)
            raise
        # Servers outlive the Python process unless stopped; this catches
        # tests that forget stop() or die on an exception mid-fixture.
        self._finalizer = weakref.finalize(self, _destroy, self._stop_argv(base_dir), base_dir)
        return self

    def restart(self) -> None:
        """Restart the server (fast shutdown) on the same port.

        Existing connections are cut, so tests can exercise client
        reconnection against the same :attr:`dsn`.
        """
        base_dir = self._require_base_dir()
        self._pg_ctl(
            "restart",
            "-m",
            "fast",
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            # Without -l the restarted server would log to pg_ctl's stdout,
            # i.e. our pipe, and keep it open forever.
            "-l",
            str(base_dir / "server.log"),
            what="restart",
        )

    def halt(self) -> None:
        """Stop the server at once (as a crash would), keeping its data: :meth:`restart`
        brings it back on the same port."""
        self._pg_ctl("stop", "-m", "immediate", "-w", what="halt")

    def stop(self) -> None:
        """Stop the server immediately and delete its directory; idempotent."""
        finalizer, self._finalizer = self._finalizer, None
        self._base_dir = None
        self._port = None
        if finalizer is not None:
            finalizer()

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return a connection URI for it."""
        # CREATE DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def __enter__(self) -> TemporaryPostgres:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and delete its directory."""
        self.stop()

    def __repr__(self) -> str:
        """Show where the server listens, or that it is not running."""
        if self._port is None:
            return "<TemporaryPostgres (stopped)>"
        return f"<TemporaryPostgres port={self._port} dir={self._base_dir}>"

    # -- internals ------------------------------------------------------

    def _require_base_dir(self) -> Path:
        if self._base_dir is None:
            raise RuntimeError("TemporaryPostgres is not started")
        return self._base_dir

    def _argv(self, program: str, *args: str) -> list[str]:
        assert self._bin_dir is not None
        argv = [str(self._bin_dir / program), *args]
        if self._run_as is None:
            return argv
        # initdb and postgres refuse to run as root.
        return [_runuser(), "-u", self._run_as, "--", *argv]

    def _pg_ctl_argv(self, data_dir: Path, *args: str) -> list[str]:
        return self._argv("pg_ctl", "-D", str(data_dir), *args)

    def _stop_argv(self, base_dir: Path) -> list[str]:
        return self._pg_ctl_argv(base_dir / "data", "stop", "-m", "immediate")

    def _run(self, argv: Sequence[str], what: str) -> None:
        base_dir = self._require_base_dir()
        try:
            result = subprocess.run(
                argv,
                # The server user may not be able to enter the caller's cwd
                # (e.g. a checkout under /root); pg_ctl then fails oddly.
                cwd=base_dir,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"PostgreSQL {what} timed out after {_COMMAND_TIMEOUT_S}s" + self._log_tail()
            ) from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(
                f"PostgreSQL {what} failed (exit {result.returncode}): "
                f"{' '.join(argv)}\n{output}" + self._log_tail()
            )

    def _pg_ctl(self, *args: str, what: str) -> None:
        self._run(self._pg_ctl_argv(self.data_dir, *args), what)

    def _initdb(self) -> None:
        argv = self._argv(
            "initdb",
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            _SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            # Pin the locale so the cluster does not depend on the caller's
            # LANG (an ungenerated locale makes initdb fail); C.UTF-8 is
            # built into Debian's glibc and sorts by code point.
            "--locale=C.UTF-8",
        )
        try:
            self._run(argv, "initdb")
        except RuntimeError as exc:
            if self._run_as is None:
                raise
            raise RuntimeError(
                f"{exc}\n(initdb runs as user {self._run_as!r}: every parent of"
                f" {self._base_dir} must be searchable by it; set TMPDIR if not)"
            ) from exc

    def _start_on_free_port(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        pristine = conf.read_text(encoding="utf-8")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._port = _free_port()
            # Rewritten from the pristine file each attempt so a retry does
            # not stack settings; later lines win in postgresql.conf anyway.
            conf.write_text(pristine + self._settings_block(), encoding="utf-8")
            try:
                self._pg_ctl(
                    "start",
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-l",
                    str(self.log_path),
                    what="start",
                )
                return
            except RuntimeError as exc:
                if attempt == _PORT_ATTEMPTS or not _PORT_IN_USE.search(str(exc)):
                    raise

    def _settings_block(self) -> str:
        assert self._port is not None
        durability = "on" if self.durable else "off"
        settings: dict[str, str] = {
            "listen_addresses": "127.0.0.1",
            "port": str(self._port),
            # Keep the socket out of /var/run/postgresql, which may not
            # exist or may belong to a system cluster.
            "unix_socket_directories": str(self._require_base_dir()),
            "max_connections": "200",
            "shared_buffers": "128MB",
            # Test data is disposable; skipping flushes makes the suite
            # several times faster. Benchmarks pass durable=True.
            "fsync": durability,
            "synchronous_commit": durability,
            "full_page_writes": durability,
        }
        settings.update(self._extra_settings)
        lines = [f"{key} = {_quote_conf(value)}" for key, value in settings.items()]
        return "\n# Added by tests/support/postgres.py\n" + "\n".join(lines) + "\n"

    def _log_tail(self) -> str:
        if self._base_dir is None:
            return ""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = lines.splitlines()[-_LOG_TAIL_LINES:]
        if not tail:
            return ""
        return f"\n--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)


def _find_bin_dir() -> Path:
    """Return the newest ``/usr/lib/postgresql/<version>/bin`` with initdb."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    if _PG_LIB_ROOT.is_dir():
        for version_dir in _PG_LIB_ROOT.iterdir():
            bin_dir = version_dir / "bin"
            if not (bin_dir / "initdb").is_file():
                continue
            # Sort numerically so that 10 beats 9.6.
            parts = re.findall(r"\d+", version_dir.name)
            candidates.append((tuple(int(p) for p in parts), bin_dir))
    if not candidates:
        raise RuntimeError(
            f"no PostgreSQL server binaries found under {_PG_LIB_ROOT}/*/bin;"
            " run scripts/ensure-postgres (as root) to install them"
        )
    return max(candidates)[1]


def _server_user() -> str:
    """Pick the unprivileged user that runs the server when we are root."""
    for name in _SERVER_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError(
        "running as root but none of the users "
        f"{', '.join(_SERVER_USERS)} exists to run PostgreSQL;"
        " run scripts/ensure-postgres to create one"
    )


def _runuser() -> str:
    path = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.access(path, os.X_OK):
        raise RuntimeError("runuser (util-linux) is needed to run PostgreSQL as root")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_env() -> dict[str, str]:
    # PG* variables from the caller (PGDATA, PGPORT, PGHOST...) would steer
    # pg_ctl and the server away from the cluster we just made.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    # Server messages are parsed for "could not bind"; keep them untranslated.
    env["LC_ALL"] = "C.UTF-8"
    return env


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _destroy(stop_argv: Sequence[str], base_dir: Path) -> None:
    """Stop the server if it runs, then delete its directory.

    A module-level function so ``weakref.finalize`` holds no reference to the
    ``TemporaryPostgres`` instance (which would keep it alive forever).
    """
    pid_file = base_dir / "data" / "postmaster.pid"
    if pid_file.exists():
        # Immediate mode: nothing in the cluster is worth a clean shutdown.
        result = subprocess.run(
            [*stop_argv, "-w", "-t", str(_START_TIMEOUT_S)],
            cwd=base_dir,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
        # A stale pid file also makes pg_ctl fail; only a live postmaster
        # is worth keeping the directory around for.
        if result.returncode != 0 and _postmaster_alive(pid_file):
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(f"could not stop PostgreSQL in {base_dir} (left in place): {output}")
    shutil.rmtree(base_dir, ignore_errors=True)


def _postmaster_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text(encoding="utf-8").split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True
