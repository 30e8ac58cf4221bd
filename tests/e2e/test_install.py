"""``pip install convhook`` without extras is the receiver: the wheel installs into a clean
virtual environment that has only the base requirements (no FastAPI, psycopg or
prometheus-client), and the README's ten-line receiver runs there and takes a signed event
sent by that installation's ``convhook trigger``; the server commands say which extra to add."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.e2e.test_api_serve import KEY, serve_process
from tests.support.servers import REPO, eventually, free_port

pytestmark = pytest.mark.slow

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SERVER_ONLY = ("fastapi", "psycopg", "prometheus_client", "starlette")


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` need, transitively, with no extras selected."""
    needed: set[str] = set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = metadata.distribution(req.name).metadata["Name"].lower().replace("_", "-")
        if name in needed:
            continue
        needed.add(name)
        todo.extend(metadata.distribution(name).requires or [])
    return needed


def _link_dependencies(names: set[str], into: Path) -> None:
    """Symlink the installed files of distributions ``names`` (from this test's environment)
    into ``into``: the clean environment sees those and nothing else (no download)."""
    into.mkdir()
    for dist in metadata.distributions():
        if dist.metadata["Name"].lower().replace("_", "-") not in names:
            continue
        site = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            source = site / top
            if top in ("..", "bin", "__pycache__") or not source.exists():
                continue
            target = into / top
            if not target.exists():
                target.symlink_to(source)


@pytest.fixture(scope="module")
def receiver_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the built wheel and only its base requirements; its bin."""
    root = tmp_path_factory.mktemp("install")
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist")]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(REPO)],
        check=True,
        capture_output=True,
    )
    [wheel] = (root / "dist").glob("convhook-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
    )
    requires = metadata.Distribution.at(_dist_info(env_dir)).requires or []
    _link_dependencies(_closure(list(requires)), root / "deps")
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "base-requirements.pth").write_text(str(root / "deps") + "\n")
    return bin_dir


def _dist_info(env_dir: Path) -> Path:
    return next((env_dir / "lib").glob("python3*/site-packages/convhook-*.dist-info"))


def _run(bin_dir: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVHOOK_", "PYTHON"))}
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PATH": f"{bin_dir}:{env['PATH']}"},
        **kwargs,  # type: ignore[arg-type]
    )


def test_base_requirements_leave_the_server_out(receiver_env: Path) -> None:
    """The wheel's base requirements bring no server package; the extras name them."""
    dist = metadata.Distribution.at(_dist_info(receiver_env.parent))
    base = [r for r in dist.requires or [] if "extra ==" not in r]
    assert not [r for r in base if Requirement(r).name.replace("-", "_") in SERVER_ONLY]
    extras = set(dist.metadata.get_all("Provides-Extra") or [])
    assert {"server", "postgres"} <= extras
    probe = (
        "import importlib.util as u, json; print(json.dumps([u.find_spec(m) is None for m in %r]))"
    )
    done = _run(receiver_env, receiver_env / "python", "-c", probe % (SERVER_ONLY,))
    assert json.loads(done.stdout) == [True] * len(SERVER_ONLY), done.stderr


def test_the_readme_receiver_runs_without_extras(receiver_env: Path, tmp_path: Path) -> None:
    """The README's ten-line receiver, run by the clean environment, takes a signed event
    sent by its own ``convhook trigger`` and runs the handler."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Receive events in ten lines\n\n```python\n(.*?)```", readme, re.S)
    assert block is not None
    port = free_port()
    code = block[1].replace("whsec_...", SECRET).replace("port=8000", f"port={port}")
    (tmp_path / "receiver.py").write_text(code)
    log = (tmp_path / "receiver.out").open("w")
    proc = subprocess.Popen(
        [receiver_env / "python", "receiver.py"], cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        url = f"http://127.0.0.1:{port}/webhook"
        import asyncio

        def sent() -> bool:
            done = _run(
                receiver_env,
                receiver_env / "convhook",
                *("trigger", "conversation.userJoined", "--url", url, "--secret", SECRET),
            )
            return done.returncode == 0

        asyncio.run(eventually(sent, timeout=30, interval=0.3))
        asyncio.run(eventually(lambda: "picked up" in (tmp_path / "receiver.out").read_text(), 20))
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.mark.parametrize("command", ["serve", "dispatcher", "dev"])
def test_server_commands_name_the_extra(receiver_env: Path, command: str) -> None:
    """Without the server extra, the server commands exit 2 with the pip command to run."""
    done = _run(receiver_env, receiver_env / "convhook", command)
    assert done.returncode == 2, done.stderr
    assert "pip install 'convhook[server]'" in done.stderr


def test_postgres_needs_its_extra(receiver_env: Path) -> None:
    """A postgresql:// inbox without the driver is a clear error naming the extra."""
    done = _run(
        receiver_env,
        receiver_env / "convhook",
        *("inbox", "list", "--db", "postgresql://nobody@127.0.0.1:1/none"),
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'convhook[postgres]'" in done.stderr


def test_remote_commands_run_without_extras(receiver_env: Path, tmp_path: Path) -> None:
    """The commands that drive a server through its API load neither FastAPI nor psycopg,
    and list a real server's endpoints from the clean environment."""
    loaded = "sorted({m.split('.')[0] for m in sys.modules} & set(" + repr(SERVER_ONLY) + "))"
    probe = f"import sys, convhook.cli; print({loaded})"
    done = _run(receiver_env, receiver_env / "python", "-c", probe)
    assert done.stdout.strip() == "[]", done.stderr
    for group in ("endpoints", "events", "deliveries"):
        shown = _run(receiver_env, receiver_env / "convhook", group, "--help")
        assert shown.returncode == 0, shown.stderr
    port = free_port()
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "api.db")]
    with serve_process(args, tmp_path, port) as server:
        key = KEY.search(server.stderr)
        assert key, server.stderr
        url = f"http://127.0.0.1:{port}"
        listed = _run(
            receiver_env,
            receiver_env / "convhook",
            *("endpoints", "list", "--api-url", url, "--api-key", key[0], "--json"),
        )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"data": [], "nextCursor": None}
