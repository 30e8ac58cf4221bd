"""The Flask and Django views, served by real WSGI servers on loopback ports."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from convhook.events import AnyEvent
from convhook.receiver import Receiver
from convhook.receiver.frameworks import ThreadedReceiver, django_view, flask_view
from convhook.samples import sample_event
from convhook.signing import Secret, sign


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def secret() -> Secret:
    """The endpoint's signing secret."""
    return Secret.generate()


@pytest.fixture
def received() -> list[AnyEvent]:
    """Events the handler saw."""
    return []


@pytest.fixture
def threaded(
    tmp_path: Path, secret: Secret, received: list[AnyEvent]
) -> Iterator[ThreadedReceiver]:
    """A receiver on a SQLite inbox, running on its own loop thread."""
    receiver = Receiver(secrets=[secret], store=tmp_path / "inbox.db")
    seen = threading.Event()

    @receiver.on_any
    def record(event: AnyEvent) -> None:
        received.append(event)
        seen.set()

    with ThreadedReceiver(receiver) as running:
        running.seen = seen  # type: ignore[attr-defined]
        yield running


def serve_wsgi(app: Callable[..., Any]) -> tuple[WSGIServer, str]:
    """Serve a WSGI app on a free loopback port from a thread."""
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/webhook"


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST and return (status, body text) whatever the status."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def signed(secret: Secret) -> tuple[str, bytes, dict[str, str]]:
    event = sample_event("conversation.userJoined")
    body = event.to_json()
    headers = {"content-type": "application/json", **sign(secret, event.event_id, body)}
    return event.event_id, body, headers


def check_view(url: str, secret: Secret, threaded: ThreadedReceiver, seen: list[Any]) -> None:
    event_id, body, headers = signed(secret)
    assert post(url, body, headers) == (200, "Webhook received successfully")
    assert threaded.seen.wait(10)  # type: ignore[attr-defined]
    assert [e.event_id for e in seen] == [event_id]
    assert post(url, body, headers)[0] == 200
    assert post(url, body, {**headers, "webhook-signature": "v1,AAAA"})[0] == 401
    assert post(url, b'{"eventId": 1}', {"content-type": "application/json"})[0] == 401
    reparsed = json.dumps(json.loads(body), indent=2).encode()
    assert post(url, reparsed, headers)[0] == 401


def test_flask_view(secret: Secret, threaded: ThreadedReceiver, received: list[Any]) -> None:
    """A Flask app with flask_view stores signed events, answers the contract's 200, runs the
    handler once for a repeat, and refuses bad or re-serialised bodies with 401."""
    import flask

    app = flask.Flask("hooks")
    app.add_url_rule("/webhook", view_func=flask_view(threaded), methods=["POST"])
    server, url = serve_wsgi(app)
    try:
        check_view(url, secret, threaded, received)
    finally:
        server.shutdown()
        server.server_close()


def test_django_view(secret: Secret, threaded: ThreadedReceiver, received: list[Any]) -> None:
    """A Django project with django_view behaves the same, CSRF protection notwithstanding."""
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.urls import path

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=__name__,
            SECRET_KEY="test-only",
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            INSTALLED_APPS=[],
        )
        django.setup()
    global urlpatterns
    urlpatterns = [path("webhook", django_view(threaded))]
    server, url = serve_wsgi(get_wsgi_application())
    try:
        check_view(url, secret, threaded, received)
    finally:
        server.shutdown()
        server.server_close()


urlpatterns: list[Any] = []
