"""convhook against what a user would build instead, on the same receiver in the same run.

1. Delivery. One receiver process (uvicorn, dispatch.py's bare app that also notes when each
   ``webhook-id`` arrived) takes the POSTs of every target in turn:

   - ``convhook dispatcher`` drains an outbox of N events from a SQLite file
     (``--synchronous FULL``: every attempt recorded durably);
   - a Celery worker (Redis broker: Debian's ``redis-server``, started here on a loopback port
     with persistence off, ``--save "" --appendonly no``, which only flatters Celery) runs a task
     that signs with ``standardwebhooks`` and POSTs with httpx, ``acks_late`` and retries with
     backoff (bench/_peers_celery.py), with the prefork pool (one process per core) and the
     threads pool (as many threads as the dispatcher's requests in flight).

   Each target starts on a stored backlog of N events: the outbox filled in one transaction
   while the dispatcher runs, or N tasks published while the worker's consumer is cancelled
   (Celery's remote control; it is added back to start). Neither publisher competes for the
   cores during the run. events/s: N over the time from that start to the last arrival.
   CPU per event: the dispatcher with its SQLite writer process, or the worker with its pool
   processes, until the work is done (every attempt recorded, every task acknowledged); the
   broker's CPU is shown apart. p99: then a paced run (``--rate`` events/s for
   ``--latency-seconds``), each event timed from the moment it is stored (its own outbox
   commit, or its task published) to its arrival. Targets run in interleaved rounds; each
   keeps its fastest drain and its lowest p99.

2. Receiving. ``convhook listen --quiet`` on a SQLite file against an idiomatic FastAPI route
   (bench/_peers_fastapi.py: verify with ``standardwebhooks``, validate with pydantic, commit
   each event to SQLite with WAL and ``synchronous=FULL``, convhook's default), each one uvicorn
   process, driven by the same pre-signed requests and load generator as bench/receiver.py
   (wrk if installed, else aiohttp), the same connections, interleaved rounds, best round kept.
   p99 is wrk's (not measured with the aiohttp fallback).

Targets: convhook at least 10x the Celery worker's events/s and 5x the FastAPI receiver's.

    make bench-peers
    .venv/bin/python bench/peers.py [--events 3000] [--convhook-events 10000] [--rate 200]
                                    [--seconds 5] [--rounds 2] [--connections 64]
                                    [--only delivery|receiving]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _support import cpu_seconds, free_port
from convhook.ids import new_id
from convhook.samples import sample_event
from convhook.signing import Secret
from dispatch import (
    dispatcher_args,
    drain,
    fill,
    open_db,
    process,
    receiver,
    setup_endpoint,
    wait_ready,
)
from receiver import LUA, PATH, count_rows, make_requests, run_aiohttp, server

BENCH = Path(__file__).resolve().parent

# dispatch.py's bare receiver, plus one dict write per request: when each webhook-id arrived
# (wall clock, comparable with the producer's), read back with GET /arrivals.
RECORDING_APP = """
import json, time

BODY = b"Webhook received successfully"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"29")]
arrivals = {}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        if scope["path"] == "/reset":
            arrivals.clear()
        body = json.dumps(arrivals if scope["path"] == "/arrivals" else len(arrivals)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    for name, value in scope["headers"]:
        if name == b"webhook-id":
            arrivals[value.decode()] = time.time()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
"""


@dataclass(frozen=True)
class Delivery:
    """One delivery target's figures."""

    target: str
    events: int
    seconds: float
    cpu: float
    broker_cpu: float | None
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def cpu_us(self, cpu: float | None) -> float | None:
        return None if cpu is None else cpu / self.events * 1e6


@dataclass(frozen=True)
class Receiving:
    """One receiving target's best round."""

    target: str
    requests: int
    accepted: int
    stored: int
    seconds: float
    cpu: float
    p99_ms: float | None

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds


class Arrivals:
    """The recording receiver's view: what arrived, and when."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._get("/reset")

    def wait(self, count: int, timeout: float = 600) -> dict[str, float]:
        """Arrival times once ``count`` distinct events have arrived."""
        deadline = time.monotonic() + timeout
        while (seen := self._get("/count")) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {count} events arrived after {timeout} s")
            time.sleep(0.02)
        arrivals: dict[str, float] = self._get("/arrivals")
        return arrivals


def event_bodies(count: int) -> list[str]:
    """``count`` conversation events, each with its own eventId (as dispatch.fill makes them)."""
    template = sample_event("conversation.userJoined").to_json().decode()
    old_id = json.loads(template)["eventId"]
    return [template.replace(old_id, new_id("evt")) for _ in range(count)]


def paced(store: Callable[[], str], rate: float, seconds: float) -> dict[str, float]:
    """Call ``store`` ``rate`` times a second; the time each returned event id was stored."""
    stored: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event_id = store()
        stored[event_id] = time.time()
    return stored


def p99_ms(stored: dict[str, float], arrivals: dict[str, float]) -> float:
    """The 99th percentile of storing-to-arrival times, in ms."""
    waits = sorted(arrivals[k] - t for k, t in stored.items())
    return waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000


def convhook_delivery(tmp: Path, hook: str, rec: Arrivals, opts: argparse.Namespace) -> Delivery:
    """``convhook dispatcher`` draining an outbox of ``--convhook-events``, then paced."""
    events = opts.convhook_events
    db = tmp / "outbox.db"
    conn = open_db(db)
    ws = setup_endpoint(conn, hook, opts.concurrency)
    with process(dispatcher_args(db, "--synchronous", "FULL"), tmp) as proc:
        wait_ready(proc)
        rec.reset()
        fill(conn, ws, events)  # one transaction: the dispatcher sees the backlog at its commit
        cpu = cpu_seconds(proc.pid)
        start = time.time()
        last = max(rec.wait(events).values())
        drain(conn, 300)  # every attempt recorded: the dispatcher's work is done
        cpu = cpu_seconds(proc.pid) - cpu

        def store() -> str:
            return str(json.loads(fill(conn, ws, 1)[0])["eventId"])

        rec.reset()
        stored = paced(store, opts.rate, opts.latency_s)
        p99 = p99_ms(stored, rec.wait(len(stored)))
    conn.close()
    return Delivery("convhook dispatcher", events, last - start, cpu, None, p99)


def replies(answers: object) -> None:
    """Fail unless the worker answered a remote-control command."""
    if not answers:
        raise RuntimeError("the Celery worker did not answer a control command")


def broker_idle(redis: Any) -> bool:
    """No task queued or delivered-but-unacknowledged (kombu's Redis keys)."""
    return bool(redis.llen("celery") == 0 and redis.hlen("unacked") == 0)


def celery_delivery(
    tmp: Path, hook: str, rec: Arrivals, opts: argparse.Namespace, pool: str, broker_pid: int
) -> Delivery:
    """A Celery worker with ``pool`` draining ``--events`` published tasks, then paced."""
    from redis import Redis

    from _peers_celery import app, deliver

    events = opts.events
    concurrency = (os.cpu_count() or 1) if pool == "prefork" else opts.concurrency
    secret = str(Secret.generate())
    redis = Redis.from_url(os.environ["PEERS_BROKER_URL"])
    worker = [sys.executable, "-m", "celery", "-A", "_peers_celery", "worker"]
    worker += ["--pool", pool, "--concurrency", str(concurrency), "--loglevel", "warning"]
    # Gossip and mingle only slow a lone worker's start: off, as tuning guides advise.
    worker += ["--without-gossip", "--without-mingle"]
    with process(worker, tmp) as proc:
        # The first tasks wait for the worker to start and open its connections.
        rec.reset()
        for body in event_bodies(concurrency * 2):
            deliver.delay(hook, body, secret)
        try:
            rec.wait(concurrency * 2, timeout=60)
        except TimeoutError as exc:
            log = (tmp / f"{proc.pid}.err").read_text()[-2000:]
            raise RuntimeError(f"the Celery worker delivered nothing; its log:\n{log}") from exc
        while not broker_idle(redis):
            time.sleep(0.02)
        bodies = event_bodies(events)
        rec.reset()
        # The whole backlog is published while the worker does not consume (Celery's remote
        # control), so the publisher does not compete with the worker for the cores.
        replies(app.control.cancel_consumer("celery", reply=True, timeout=10))
        for body in bodies:
            deliver.delay(hook, body, secret)
        cpu, broker = cpu_seconds(proc.pid), cpu_seconds(broker_pid)
        start = time.time()
        replies(app.control.add_consumer("celery", reply=True, timeout=10))
        last = max(rec.wait(events).values())
        while not broker_idle(redis):  # acknowledged: the worker's work is done
            time.sleep(0.02)
        cpu, broker = cpu_seconds(proc.pid) - cpu, cpu_seconds(broker_pid) - broker

        pending = iter(event_bodies(int(opts.rate * opts.latency_s)))

        def store() -> str:
            body = next(pending)
            deliver.delay(hook, body, secret)
            return str(json.loads(body)["eventId"])

        rec.reset()
        stored = paced(store, opts.rate, opts.latency_s)
        p99 = p99_ms(stored, rec.wait(len(stored)))
    redis.close()
    label = f"Celery worker, {pool} pool x{concurrency}"
    return Delivery(label, events, last - start, cpu, broker, p99)


def delivery(tmp: Path, opts: argparse.Namespace) -> list[Delivery]:
    args, port = receiver(tmp)
    (tmp / "bare_receiver.py").write_text(RECORDING_APP)  # same server settings, noting arrivals
    hook = f"http://127.0.0.1:{port}/webhook"
    rec = Arrivals(port)
    redis_port = free_port()
    redis = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp)]
    redis += ["--save", "", "--appendonly", "no"]
    os.environ["PEERS_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    # The worker imports its task module from bench/, whatever its working directory.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p
    )
    best: dict[str, Delivery] = {}
    with process(args, tmp, port), process(redis, tmp, redis_port) as broker:
        # Rounds interleave the targets so a noisy neighbour hurts all of them alike; each
        # target keeps its fastest drain and its lowest p99 (the paced runs are apart).
        for round_no in range(opts.rounds):
            run = tmp / f"round{round_no}"
            run.mkdir()
            say(f"delivery round {round_no + 1} of {opts.rounds}")
            results = [convhook_delivery(run, hook, rec, opts)]
            for pool in ("prefork", "threads"):
                results.append(celery_delivery(run, hook, rec, opts, pool, broker.pid))
            for r in results:
                say(f"  {r.target}: {r.rate:,.0f} events/s, p99 {r.p99_ms:.1f} ms")
                kept = best.get(r.target, r)
                fastest = r if r.rate > kept.rate else kept
                best[r.target] = replace(fastest, p99_ms=min(r.p99_ms, kept.p99_ms))
    return list(best.values())


def run_wrk_p99(
    port: int, seconds: float, connections: int, req_file: Path, template: Path, tmp: Path
) -> tuple[int, int, float, float]:
    """receiver.py's wrk run (same script, one thread), with its latency distribution."""
    script = tmp / "signed.lua"
    script.write_text(LUA)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}{PATH}"]
    cmd += ["--", str(req_file), "1", str(template)]
    text = subprocess_text(cmd)
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output:\n{text}")
    requests = int(match[1])
    elapsed = float(match[2]) / (1000 if match[3] == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    accepted = requests - (int(bad[1]) if bad else 0) - errors
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99[2]]
    return requests, accepted, elapsed, float(p99[1]) * scale


def subprocess_text(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr}{done.stdout}")
    return done.stdout


def receiving(tmp: Path, opts: argparse.Namespace, use_wrk: bool) -> list[Receiving]:
    secret = Secret.generate()
    os.environ["PEERS_SECRET"] = str(secret)
    python = sys.executable
    uvicorn = [python, "-m", "uvicorn", "--app-dir", str(BENCH), "_peers_fastapi:app"]
    uvicorn += ["--log-level", "warning", "--no-access-log"]
    listen = [python, "-m", "convhook", "listen", "--secret", str(secret), "--quiet"]
    targets = {"convhook listen --quiet": listen, "FastAPI + standardwebhooks + sqlite3": uvicorn}
    best: dict[str, Receiving] = {}
    for round_no in range(opts.rounds):
        req_file, template = make_requests(tmp, secret, opts.requests)
        for label, args in targets.items():
            port = free_port()
            db = tmp / f"inbox_{round_no}_{port}.db"
            # listen takes its database as an option, the FastAPI app from its environment.
            os.environ["PEERS_DB"] = str(db)
            full = [*args, "--port", str(port)]
            if label.startswith("convhook"):
                full += ["--db", str(db)]
            with server(full, port, tmp) as proc:
                before = cpu_seconds(proc.pid)
                if use_wrk:
                    run = run_wrk_p99(port, opts.seconds, opts.connections, req_file, template, tmp)
                    requests, accepted, elapsed, p99 = run
                else:
                    requests, accepted, elapsed = run_aiohttp(
                        port, opts.seconds, opts.connections, req_file, template, tmp
                    )
                    p99 = None
                used = cpu_seconds(proc.pid) - before
            stored = count_rows(str(db)) if label.startswith("convhook") else count_events(db)
            result = Receiving(label, requests, accepted, stored, elapsed, used, p99)
            say(f"  round {round_no + 1}: {label}: {result.rate:,.0f} events/s")
            if label not in best or result.rate > best[label].rate:
                best[label] = result
    return list(best.values())


def count_events(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0])


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.1f}x" if theirs else "-"


def report_delivery(results: list[Delivery], opts: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    ours, peers = results[0], results[1:]
    table = Table(
        title=f"delivery into one bare receiver (best of {opts.rounds}, {os.cpu_count()} CPUs; "
        f"p99 from storing to arrival at {opts.rate:g} events/s; convhook x: its events/s "
        "over the peer's, the peer's CPU per event over its)"
    )
    for column in ("target", "events", "events/s", "CPU µs/event", "broker CPU µs/event"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for column in ("p99 ms", "convhook x events/s", "convhook x CPU"):
        table.add_column(column, justify="right")
    for r in results:
        broker = r.cpu_us(r.broker_cpu)
        table.add_row(
            r.target,
            str(r.events),
            f"{r.rate:,.0f}",
            f"{r.cpu_us(r.cpu):,.0f}",
            "-" if broker is None else f"{broker:,.0f}",
            f"{r.p99_ms:.1f}",
            "-" if r is ours else ratio(ours.rate, r.rate),
            "-" if r is ours else ratio(r.cpu / r.events, ours.cpu / ours.events),
        )
    Console(width=max(150, Console().width)).print(table)
    fastest = max(peers, key=lambda r: r.rate)
    times = ours.rate / fastest.rate
    verdict = "met" if times >= 10 else "NOT met"
    print(
        f"delivery: convhook {times:.1f}x the faster Celery worker ({fastest.target}); "
        f"target >= 10x: {verdict}"
    )


def report_receiving(results: list[Receiving], opts: argparse.Namespace, generator: str) -> None:
    from rich.console import Console
    from rich.table import Table

    ours, peer = results
    table = Table(
        title=f"receiving, SQLite synchronous=FULL ({generator}, {opts.connections} connections, "
        f"best of {opts.rounds} x {opts.seconds:g} s, {os.cpu_count()} CPUs)"
    )
    for column in ("target", "requests", "accepted", "stored", "events/s", "CPU µs/event"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for column in ("p99 ms", "convhook x events/s", "convhook x CPU"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.target,
            str(r.requests),
            str(r.accepted),
            str(r.stored),
            f"{r.rate:,.0f}",
            f"{r.cpu / r.requests * 1e6:,.0f}",
            "-" if r.p99_ms is None else f"{r.p99_ms:.1f}",
            "-" if r is ours else ratio(ours.rate, r.rate),
            "-" if r is ours else ratio(r.cpu / r.requests, ours.cpu / ours.requests),
        )
    Console(width=max(150, Console().width)).print(table)
    times = ours.rate / peer.rate
    verdict = "met" if times >= 5 else "NOT met"
    print(f"receiving: convhook {times:.1f}x the FastAPI receiver; target >= 5x: {verdict}")
    for r in results:
        if r.stored < r.accepted:
            print(f"WARNING: {r.target}: {r.accepted} accepted but only {r.stored} stored")
        if r.requests > opts.requests:
            print(f"WARNING: {r.target} ran out of unique events; raise --requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per Celery run")
    parser.add_argument("--convhook-events", type=int, default=10_000, help="events to drain")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="dispatcher in-flight, Celery threads"
    )
    parser.add_argument("--rate", type=float, default=200, help="paced events/s for p99")
    parser.add_argument("--latency-seconds", dest="latency_s", type=float, default=5)
    parser.add_argument("--seconds", type=float, default=5, help="per receiving run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per target, interleaved")
    parser.add_argument("--connections", type=int, default=64, help="receiving load")
    parser.add_argument("--requests", type=int, default=100_000, help="pre-signed events")
    parser.add_argument("--aiohttp", action="store_true", help="use aiohttp even if wrk exists")
    parser.add_argument("--only", choices=("delivery", "receiving"))
    opts = parser.parse_args()
    if opts.only != "receiving" and shutil.which("redis-server") is None:
        parser.error("redis-server is not installed (make bench-peers installs it)")
    use_wrk = shutil.which("wrk") is not None and not opts.aiohttp
    with tempfile.TemporaryDirectory(prefix="convhook-peers-") as name:
        tmp = Path(name)
        if opts.only != "receiving":
            (tmp / "delivery").mkdir()
            report_delivery(delivery(tmp / "delivery", opts), opts)
        if opts.only != "delivery":
            (tmp / "receiving").mkdir()
            say(f"receiving: {opts.rounds} round(s) of {opts.seconds:g} s per target")
            results = receiving(tmp / "receiving", opts, use_wrk)
            report_receiving(results, opts, "wrk" if use_wrk else "aiohttp")


if __name__ == "__main__":
    main()
