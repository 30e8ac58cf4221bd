"""Every ```python block of README.md and docs/*.md runs: the blocks of one file, in order, in
one namespace (a later block uses what an earlier one defined), in a subprocess.

Placeholders get real values (``whsec_...`` a generated secret). ``uvicorn.run(app)`` does not
block: it serves ``app`` on a free loopback port, posts one signed event of every catalogue
type to each receiver it finds in it, waits until their handlers ran without an error, checks
``/healthz`` and ``/readyz`` where the app answers them, and stops; Flask's ``app.run()``
serves the app and posts the events to each convhook view. So a block that names something
it never defined, or a handler that raises, fails the test."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

SECRET = "whsec_" + "ZG9jcy1leGFtcGxlcy1zZWNyZXQtMzItYnl0ZXMhISE="
TOKEN = "tok_docs_examples_0123456789abcdef"
# What a reader replaces before running a block, and what the test puts there instead.
PLACEHOLDERS = {
    '"whsec_..."': json.dumps(SECRET),
    '"<the token the sender sends>"': json.dumps(TOKEN),
}


@dataclass(frozen=True)
class Block:
    """One python block: the file, the line its code starts on, and the code."""

    file: str
    line: int
    code: str


def blocks(path: Path) -> list[Block]:
    """The python blocks of one Markdown file, placeholders filled in."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        for placeholder, value in PLACEHOLDERS.items():
            code = code.replace(placeholder, value)
        line = text.count("\n", 0, match.start(1)) + 1
        found.append(Block(str(path.relative_to(REPO)), line, code))
    return found


WITH_BLOCKS = [path for path in DOCS if blocks(path)]


def test_the_docs_have_python_blocks() -> None:
    """README.md and docs/receiver.md hold python blocks, so the test below runs on them."""
    names = {path.name for path in WITH_BLOCKS}
    assert {"README.md", "receiver.md"} <= names


@pytest.mark.parametrize("path", WITH_BLOCKS, ids=lambda p: p.name)
def test_python_blocks_run(path: Path, tmp_path: Path) -> None:
    """Each python block of the file runs after the ones before it, its servers answer
    signed events of every type, and every handler it registers succeeds."""
    source = tmp_path / "blocks.json"
    source.write_text(json.dumps([asdict(b) for b in blocks(path)]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import main; main()", str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    served = [line for line in done.stdout.splitlines() if line.startswith("served ")]
    assert served, done.stdout  # every file with blocks serves something today


# -- in the subprocess ----------------------------------------------------------------------


def main() -> None:
    """Run the blocks listed in the JSON file ``sys.argv[1]`` in one namespace."""
    import uvicorn

    from convhook.receiver.frameworks import ThreadedReceiver

    uvicorn.run = _serve_briefly
    try:
        import flask
    except ImportError:
        pass
    else:
        flask.Flask.run = _serve_wsgi_briefly  # type: ignore[method-assign]
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        for block in json.loads(Path(sys.argv[1]).read_text()):
            where = f"{block['file']}:{block['line']}"
            exec(compile(block["code"], where, "exec"), namespace)
    finally:
        for value in list(namespace.values()):
            if isinstance(value, ThreadedReceiver):
                value.stop()


def _serve_briefly(app: Any, **_options: Any) -> None:
    asyncio.run(_exercise(app))


def _signed(event_type: str) -> tuple[str, bytes, dict[str, str]]:
    """A sample event of ``event_type``: its id, body and headers (signature and token)."""
    from convhook.samples import sample_event
    from convhook.signing import Secret, sign

    event = sample_event(event_type)
    body = event.to_json()
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {TOKEN}",
        **sign([Secret.parse(SECRET)], event.event_id, body),
    }
    return event.event_id, body, headers


def _serve_wsgi_briefly(app: Any, *_args: Any, **_options: Any) -> None:
    """Flask's ``app.run()``: serve ``app`` from a thread on a free port, POST a signed event
    of every type to each convhook view in it, and stop."""
    import threading
    import urllib.request
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from convhook.events import EVENT_CLASSES

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    rules = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if getattr(app.view_functions.get(rule.endpoint), "__name__", "") == "convhook_webhook"
    ]
    assert rules, f"app.run() was called on {app!r}, with no convhook view in it"
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for rule in rules:
            for event_type in EVENT_CLASSES:
                _, body, headers = _signed(event_type)
                url = f"http://127.0.0.1:{server.server_port}{rule}"
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200, f"POST {rule}: {response.status}"
            print(f"served {rule}: {len(EVENT_CLASSES)} events stored")
    finally:
        server.shutdown()
        server.server_close()


def _receivers(app: Any) -> list[tuple[str, Any]]:
    """(URL path, ReceiverApp) for ``app`` itself or each route or mount of it that is one."""
    from convhook.receiver import ReceiverApp

    if isinstance(app, ReceiverApp):
        return [(app.path or "/webhook", app)]
    found = []
    for route in getattr(app, "routes", []):
        inner = getattr(route, "endpoint", None) or getattr(route, "app", None)
        if not isinstance(inner, ReceiverApp):
            continue
        path: str = route.path
        if type(route).__name__ == "Mount":
            path += inner.path or "/"
        found.append((path, inner))
    return found


async def _exercise(app: Any) -> None:
    import aiohttp
    import uvicorn

    from convhook.events import EVENT_CLASSES
    from convhook.receiver import HandlerStatus
    from tests.support.servers import free_port

    targets = _receivers(app)
    assert targets, f"uvicorn.run() was given {app!r}, with no receiver in it"
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for path, target in targets:
                sent = []
                for event_type in EVENT_CLASSES:
                    event_id, body, headers = _signed(event_type)
                    async with http.post(
                        base + path, data=body, headers=headers, allow_redirects=False
                    ) as r:
                        answer = await r.text()
                        assert r.status == 200, f"POST {path}: {r.status} {answer}"
                    sent.append(event_id)
                inbox = target.receiver.inbox
                deadline = time.monotonic() + 20
                for event_id in sent:
                    while True:
                        entry = await inbox.get(event_id)
                        assert entry is not None, event_id
                        assert entry.last_error is None, f"a handler failed: {entry.last_error}"
                        if entry.status is HandlerStatus.DONE:
                            break
                        assert time.monotonic() < deadline, f"{event_id} still {entry.status}"
                        await asyncio.sleep(0.05)
                print(f"served {path}: {len(sent)} events handled")
            for check in ("/healthz", "/readyz"):
                async with http.get(base + check) as r:
                    # An app that does not answer a check says 404; one that does, 200.
                    assert r.status in (200, 404), f"GET {check}: {r.status} {await r.text()}"
    finally:
        server.should_exit = True
        await task
