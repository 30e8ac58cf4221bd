"""The delivery a Celery user would write instead of ``convhook dispatcher`` (bench/peers.py).

One task signs the event with ``standardwebhooks`` and POSTs it with a keep-alive
``httpx.Client``; a non-2xx answer or a network error raises, and Celery retries with
exponential backoff. ``acks_late`` keeps the task in the broker until it has run, so a worker
that dies mid-delivery does not lose it. No result backend: nothing reads the results.

The broker's URL comes from ``PEERS_BROKER_URL`` (a Redis the benchmark starts).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import httpx
from celery import Celery
from standardwebhooks import Webhook

app = Celery("peers", broker=os.environ["PEERS_BROKER_URL"])
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# Created before the prefork pool forks, but with no connection open yet: each child opens its
# own and keeps it alive between tasks.
http = httpx.Client(timeout=10)


@app.task(
    acks_late=True,
    autoretry_for=(httpx.HTTPError,),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
)
def deliver(url: str, event_json: str, secret: str) -> None:
    """Sign ``event_json`` and POST it to ``url``; raise (and so retry) unless 2xx."""
    msg_id = json.loads(event_json)["eventId"]
    now = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, now, event_json)
    response = http.post(
        url,
        content=event_json,
        headers={
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
    )
    response.raise_for_status()
