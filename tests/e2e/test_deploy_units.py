"""deploy/systemd: each unit passes ``systemd-analyze verify``, and its commands, run with the
example environment file (only addresses, ports and secrets replaced), start and answer their
health checks on a real PostgreSQL database, and stop on SIGTERM."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from convhook.signing import Secret
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import REPO, eventually, free_port, wait_for_port

pytestmark = pytest.mark.slow

UNITS = REPO / "deploy" / "systemd"
BIN = Path(sys.executable).parent


def _unit(name: str) -> configparser.ConfigParser:
    # systemd allows repeated keys (ExecStartPre): keep the last, strict off.
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNITS / name)
    return unit


def _environment(path: Path, **replace: str) -> dict[str, str]:
    """The variables of an EnvironmentFile, with ``replace`` overriding some."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    missing = set(replace) - set(found)
    assert not missing, f"{path.name} lacks {missing}"
    return {**found, **replace}


def _command(line: str) -> list[str]:
    args = shlex.split(line)
    assert args[0] == "/opt/convhook/bin/convhook", line
    return args[1:]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize(
    "name", ["convhook-api.service", "convhook-dispatcher.service", "convhook-listen.service"]
)
def test_units_pass_systemd_verification(name: str, tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit (paths pointed at this installation)."""
    text = (UNITS / name).read_text()
    text = text.replace("/opt/convhook/bin/convhook", str(BIN / "convhook"))
    text = text.replace("/etc/convhook/", f"{tmp_path}/")
    (tmp_path / name).write_text(text)
    for example in UNITS.glob("*.env.example"):
        shutil.copy(example, tmp_path / example.name.removesuffix(".example"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert name.removesuffix(".service") not in done.stderr, done.stderr


def _env(variables: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVHOOK_")}
    return {**base, **variables, "PATH": f"{BIN}:{base['PATH']}"}


def _convhook(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def _status(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status


async def _ok(url: str) -> bool:
    return await _status(url) == 200


async def test_the_units_commands_run_from_their_environment_file(
    pg_server: TemporaryPostgres, tmp_path: Path
) -> None:
    """The API unit migrates then serves (JSON logs, /readyz 200), the dispatcher unit
    answers /readyz on its metrics port, both on the example file's settings with only the
    database URL and ports replaced; SIGTERM stops each."""
    url = pg_server.create_database("units")
    api_port, metrics_port = free_port(), free_port()
    variables = _environment(
        UNITS / "convhook.env.example",
        CONVHOOK_DATABASE_URL=url,
        CONVHOOK_PORT=str(api_port),
        CONVHOOK_DISPATCH_METRICS_PORT=str(metrics_port),
    )
    api, dispatcher = _unit("convhook-api.service"), _unit("convhook-dispatcher.service")
    assert api["Service"]["EnvironmentFile"] == "/etc/convhook/convhook.env"
    pre = await asyncio.to_thread(
        _convhook, _command(api["Service"]["ExecStartPre"]), _env(variables)
    )
    assert pre.returncode == 0, pre.stderr
    procs: list[_Unit] = []
    metrics = f"http://127.0.0.1:{metrics_port}"
    try:
        procs.append(_start(api["Service"]["ExecStart"], variables, tmp_path, api_port))
        procs.append(_start(dispatcher["Service"]["ExecStart"], variables, tmp_path, metrics_port))
        for ready in (f"http://127.0.0.1:{api_port}/readyz", f"{metrics}/readyz"):
            # The metrics port answers before the dispatcher's loop has started: 503 first.
            await eventually(lambda u=ready: _ok(u), timeout=30)  # type: ignore[misc]
        token = {"authorization": f"Bearer {variables['CONVHOOK_METRICS_TOKEN']}"}
        assert await _status(f"{metrics}/metrics") == 401
        assert await _status(f"{metrics}/metrics", token) == 200
    finally:
        for proc in procs:
            assert await asyncio.to_thread(proc.stop) in (0, -signal.SIGTERM), proc.stderr
    logged = [line for line in procs[0].stderr.splitlines() if line.startswith("{")]
    assert logged
    assert all("action" in json.loads(line) for line in logged)


async def test_the_listen_unit_runs_from_its_environment_file(tmp_path: Path) -> None:
    """The receiver unit's command, on the example file with a real secret, a free port and
    an inbox in a temporary directory, takes a signed event and stores it in that inbox."""
    port = free_port()
    secret = str(Secret.generate())
    inbox = tmp_path / "inbox.db"
    variables = _environment(
        UNITS / "convhook-listen.env.example",
        CONVHOOK_LISTEN_PORT=str(port),
        CONVHOOK_SECRET=secret,
        CONVHOOK_INBOX_URL=str(inbox),
    )
    listen = _unit("convhook-listen.service")
    proc = _start(listen["Service"]["ExecStart"], variables, tmp_path, port)
    try:
        trigger = ["trigger", "conversation.userJoined", "--secret", secret]
        trigger += ["--url", f"http://127.0.0.1:{port}/webhook"]
        sent = await asyncio.to_thread(_convhook, trigger, _env({}))
        assert sent.returncode == 0, sent.stderr
    finally:
        assert await asyncio.to_thread(proc.stop) in (0, -signal.SIGTERM), proc.stderr
    assert inbox.exists()


class _Unit:
    """A unit's command as a subprocess with the unit's environment; output in files."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self._err_path = cwd / f"{args[0]}-{id(self)}.err"
        with self._err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "convhook", *args],
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    @property
    def stderr(self) -> str:
        return self._err_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def _start(line: str, variables: dict[str, str], cwd: Path, port: int) -> _Unit:
    unit = _Unit(_command(line), _env(variables), cwd)
    try:
        wait_for_port(port, proc=unit.proc)
    except (RuntimeError, TimeoutError) as exc:
        unit.stop()
        raise AssertionError(f"{exc}\n{unit.stderr}") from exc
    return unit
