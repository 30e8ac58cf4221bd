"""The array literals batches bind on PostgreSQL read back as the values they were made of,
whatever the texts hold, and a dispatcher's recorded attempts keep their error and answer
exactly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from convhook.dispatcher import Dispatcher
from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import log as delivery_log
from convhook.store.engine.arrays import number_array, text_array
from convhook.store.engine.database import Database
from tests.support.delivery import Receiver, Reply, add_endpoint, add_workspace, record_event
from tests.support.servers import serve_app

TEXTS = [
    "",
    "plain",
    'a "quoted" word',
    'back\\slash \\\\ and \\"',
    "{braces}, commas, and spaces ",
    "NULL",
    "null",
    "line\nbreak\ttab\r",
    "é ü 中文 😀 \u2028",
    "'single'",
    None,
]
NUMBERS = [0, -1, 2**63 - 1, -(2**63), None, 7]
FLOATS = [0.0, 1.5, -2.25, 1e-05, 123456.789, 1e300, None]


def test_literals_read_back_as_their_values(pg_url: str) -> None:
    """Texts with quotes, backslashes, braces, commas, the word NULL, control characters and
    characters outside ASCII; None as NULL; 64-bit integers and floats."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        texts, numbers, floats = conn.execute(
            "SELECT CAST(%s AS TEXT[]), CAST(%s AS BIGINT[]), CAST(%s AS DOUBLE PRECISION[])",
            (text_array(TEXTS), number_array(NUMBERS), number_array(FLOATS)),
        ).fetchone()
    assert (texts, numbers, floats) == (TEXTS, NUMBERS, FLOATS)
    assert text_array([]) == number_array([]) == "{}"


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    async with open_database(pg_url, "producer", auto_upgrade=True) as database:
        yield database


async def _answered(db: Database, reply: Reply) -> list[tuple[int | None, str]]:
    """One delivery attempt against an endpoint answering ``reply``: the attempt log's
    status and answer."""
    async with serve_app(Receiver().then(reply)) as base:
        ws = await db.write(add_workspace)
        now = int(time.time() * 1000)
        await db.write(lambda c: add_endpoint(c, ws, base + "/hook", str(Secret.generate()), now))
        await db.write(lambda c: record_event(c, ws, "conv_1", 1, "conversation.userJoined", now))
        dispatcher = Dispatcher(db, allow_private=True)
        await dispatcher.open()
        try:
            (result,) = await asyncio.wait_for(dispatcher.run_once(), 10)
        finally:
            await dispatcher.close()
    attempts = await db.read(delivery_log.attempts_of, result.delivery_id)
    return [(a.status_code, a.response_body) for a in attempts]


async def test_recorded_attempts_keep_their_answer_exactly(db: Database) -> None:
    """An endpoint answering 500 with a body full of array syntax: the attempt log holds the
    body as sent."""
    body = 'fail: {"a", "b"} \\ NULL, \\"x\\" é'
    assert await _answered(db, Reply(status=500, body=body.encode())) == [(500, body)]


async def test_an_answer_holding_a_nul_byte_is_recorded(db: Database) -> None:
    """PostgreSQL's text refuses NUL: an answer holding one is kept with the byte written as
    \\x00, and the attempt is recorded at once (it used to fail every retry of the record)."""
    reply = Reply(status=500, body=b"bad\x00byte \xff")
    assert await _answered(db, reply) == [(500, "bad\\x00byte \ufffd")]
