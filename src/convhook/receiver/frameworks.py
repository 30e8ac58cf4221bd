"""Helpers for Flask, Django and other frameworks that hand you the request body.

Signatures are computed over the exact bytes sent: always pass the RAW body
(``request.get_data()`` in Flask, ``request.body`` in Django), never JSON parsed and
re-serialised, which changes spacing and key order and breaks every signature.

Neither Flask nor Django is imported until a view is built. Sync frameworks call the
receiver through :class:`ThreadedReceiver`, which runs it (inbox and worker) on an event
loop in a background thread.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from convhook.receiver.receiver import Receiver

Response = tuple[int, dict[str, str], bytes]


async def handle_raw(
    receiver: Receiver, body: bytes, headers: Mapping[str, str], method: str = "POST"
) -> Response:
    """Answer one request from its raw body and headers: ``(status, headers, body)``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    reply = await receiver.handle(method, lowered, body)
    return reply.as_tuple()


class ThreadedReceiver:
    """Runs a receiver on its own event loop thread, for sync (WSGI) views.

    Use as a context manager, or call :meth:`start` at app start-up and :meth:`stop` at exit.
    """

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ThreadedReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the loop thread and the receiver; raise if the receiver cannot start."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="convhook-receiver", daemon=True
        )
        self._thread.start()
        self._call(self.receiver.start()).result()

    def stop(self) -> None:
        """Stop the receiver (finishing queued writes) and the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self.receiver.stop()).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = None

    def handle(self, body: bytes, headers: Mapping[str, str], method: str = "POST") -> Response:
        """Answer one request from a sync view (blocks until the event is stored)."""
        response: Response = self._call(handle_raw(self.receiver, body, headers, method)).result()
        return response

    def _call(self, coro: Any) -> Future[Any]:
        if self._loop is None:
            coro.close()
            raise RuntimeError("ThreadedReceiver is not started: call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)


def flask_view(threaded: ThreadedReceiver) -> Callable[[], Any]:
    """A Flask view function: ``app.add_url_rule("/webhook", view_func=..., methods=["POST"])``.

    Set ``app.config["MAX_CONTENT_LENGTH"]`` so Flask itself refuses oversized bodies before
    reading them.
    """

    def convhook_webhook() -> Any:
        flask = importlib.import_module("flask")
        request = flask.request
        body = request.get_data(cache=False, as_text=False, parse_form_data=False)
        status, headers, payload = threaded.handle(body, dict(request.headers), request.method)
        return flask.Response(payload, status=status, headers=headers)

    return convhook_webhook


def django_view(threaded: ThreadedReceiver) -> Callable[[Any], Any]:
    """A Django view (CSRF-exempt): ``path("webhook", django_view(threaded))``.

    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bounds what Django reads into ``request.body``.
    """

    def convhook_webhook(request: Any) -> Any:
        http = importlib.import_module("django.http")
        status, headers, payload = threaded.handle(
            request.body, dict(request.headers), request.method
        )
        response = http.HttpResponse(payload, status=status)
        for key, value in headers.items():
            response[key] = value
        return response

    # Webhooks come from another system, never with a CSRF token.
    convhook_webhook.csrf_exempt = True  # type: ignore[attr-defined]
    return convhook_webhook
