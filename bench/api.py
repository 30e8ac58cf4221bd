"""Lifecycle transitions per second through the producer API, against plain FastAPI.

Starts ``convhook serve`` on a temporary SQLite database (synchronous=FULL: every commit is
durable) and, as the baseline, a FastAPI app with the same routes and request models that
answers without touching storage. The same aiohttp load generator, in its own process, drives
join -> leave -> end -> analysis on many conversations over many connections against each,
and the table shows both rates and their ratio (target: at least 50%).

    .venv/bin/python bench/api.py [--conversations 1500] [--connections 64] [--db postgres]
                                  [--processes 1,2]

With ``--db postgres`` the API runs on a throwaway PostgreSQL server started for the run
(durable: fsync and synchronous_commit on, as in production) instead of SQLite. With
``--processes 1,2`` it measures scale-out too: that many ``convhook serve`` processes on the
same database, the load generator's connections spread evenly over them, each count against
the first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from _support import (
    cpu_seconds,
    free_port,
    migrated_database,
    postgres_server,
    serve_command,
    wait_for_port,
)

ACTIONS = ("join", "leave", "end", "analysis")
KEY = re.compile(r"chk_[A-Za-z0-9_-]+")


# -- the baseline: same routes and body models, no storage ------------------------------


def baseline_app() -> Any:
    """FastAPI answering the transition routes with a canned conversation of realistic size."""
    from fastapi import Body, FastAPI, Header
    from fastapi.responses import Response

    from convhook.api.transitions import AnalysisIn, EndIn, JoinIn, LeaveIn
    from convhook.samples import sample_event

    app = FastAPI()
    canned = json.dumps(sample_event("conversation.completed").to_wire()["payload"])

    def answer(key: str | None) -> Response:
        if not key:
            return Response('{"error": "missing key"}', 401, media_type="application/json")
        return Response(canned, media_type="application/json")

    # Annotations are given as objects (not strings) because these models are local names.
    for action, model in (
        ("join", JoinIn),
        ("leave", LeaveIn),
        ("end", EndIn),
        ("analysis", AnalysisIn),
    ):

        async def endpoint(
            conversation_id: str, x_api_key: Any = None, body: Any = None
        ) -> Response:
            return answer(x_api_key)

        endpoint.__annotations__ = {
            "conversation_id": str,
            "x_api_key": Annotated[str | None, Header(alias="x-api-key")],
            "body": Annotated[model | None, Body()],
            "return": Response,
        }
        app.post(f"/api/v2/conversations/{{conversation_id}}/{action}")(endpoint)
    return app


def run_baseline(port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load generator -------------------------------------------------------------------

BODIES: dict[str, Any] = {
    "join": None,
    "leave": None,
    "end": {"recordingUrl": "https://recordings.example.com/r.mp3"},
    "analysis": {"summary": "The user confirmed the appointment.", "postCallCategory1": "ok"},
}


async def load(
    bases: list[str], key: str, conversation_ids: list[str], connections: int
) -> dict[str, Any]:
    """Walk every conversation through the four transitions; return counts and latencies.
    Connections are spread evenly over ``bases`` (several API processes on one database)."""
    import aiohttp

    queue = list(reversed(conversation_ids))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"x-api-key": key, "content-type": "application/json"}

    async def worker(session: aiohttp.ClientSession, base: str) -> None:
        while queue:
            conv_id = queue.pop()
            for action in ACTIONS:
                body = BODIES[action]
                data = json.dumps(body).encode() if body is not None else None
                started = time.perf_counter()
                async with session.post(
                    f"{base}/api/v2/conversations/{conv_id}/{action}", data=data, headers=headers
                ) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, bases[n % len(bases)]) for n in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "perSecond": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "statuses": statuses,
    }


def run_load(bases: str, key: str, ids_file: str, connections: int) -> None:
    ids = json.loads(Path(ids_file).read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(load(bases.split(","), key, ids, connections))))


def measure(
    base: str, key: str, ids: list[str], connections: int, tmp: Path, *pids: int
) -> dict[str, Any]:
    """Run the load generator in its own process against ``base`` (comma-separated URLs,
    served by ``pids``); the result includes the servers' CPU time per request, which a busy
    machine does not skew."""
    cpu = sum(cpu_seconds(pid) for pid in pids)
    ids_file = tmp / f"ids-{len(ids)}-{time.monotonic_ns()}.json"
    ids_file.write_text(json.dumps(ids))
    done = subprocess.run(
        [sys.executable, __file__, "--load", base, key, str(ids_file), str(connections)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    used = sum(cpu_seconds(pid) for pid in pids) - cpu
    result["cpuMicros"] = used / result["requests"] * 1e6
    return result


# -- orchestration ------------------------------------------------------------------------


async def create_conversations(base: str, key: str, count: int) -> list[str]:
    import aiohttp

    ids: list[str] = []
    headers = {"x-api-key": key}
    async with aiohttp.ClientSession() as session:
        while len(ids) < count:
            batch = [{"agentId": "agent_bench"} for _ in range(min(500, count - len(ids)))]
            async with session.post(
                f"{base}/api/v2/conversations", json={"conversations": batch}, headers=headers
            ) as r:
                doc = await r.json()
                assert r.status == 201, doc
                ids.extend(c["id"] for c in doc["results"])
    return ids


def start(args: list[str], port: int, cwd: Path) -> subprocess.Popen[Any]:
    err = (cwd / f"server-{port}.err").open("wb")
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
    )
    err.close()
    wait_for_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway durable PostgreSQL server with the producer schema applied; its URL."""
    with postgres_server() as server:
        yield migrated_database(server, "bench", "producer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1500)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--processes",
        default="1",
        help="API process counts to measure on one database, e.g. 1,2 (scale-out)",
    )
    parser.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_port:
        run_baseline(args.baseline_port)
        return
    if args.load:
        base, key, ids_file, connections = args.load
        run_load(base, key, ids_file, int(connections))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    counts = [int(n) for n in args.processes.split(",")]
    runs: list[tuple[int, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convhook-bench-")))
        database = str(tmp / "bench.db")
        label = "SQLite, FULL"
        if args.db == "postgres":
            database = stack.enter_context(postgres_database())
            label = "PostgreSQL, durable"
        base_port = free_port()
        baseline = start(
            [sys.executable, __file__, "--baseline-port", str(base_port)], base_port, tmp
        )
        stack.callback(stop, baseline)
        plain_base = f"http://127.0.0.1:{base_port}"
        key = ""
        plain: dict[str, Any] = {}
        for count in counts:
            # Several processes on one database, as behind a load balancer; each run starts
            # them afresh, and the first process ever started creates the workspace.
            servers: list[subprocess.Popen[Any]] = []
            try:
                for _ in range(count):
                    port = free_port()
                    servers.append(start(serve_command(port, database), port, tmp))
                    if not key:
                        match = KEY.search((tmp / f"server-{port}.err").read_text())
                        assert match, "convhook serve printed no key"
                        key = match[0]
                bases = [f"http://127.0.0.1:{_port(proc)}" for proc in servers]
                pids = [proc.pid for proc in servers]
                ids = asyncio.run(create_conversations(bases[0], key, args.conversations))
                # Warm the servers up (imports, caches, connection pools) before measuring.
                warm = asyncio.run(create_conversations(bases[0], key, 100 * count))
                measure(",".join(bases), key, warm, args.connections, tmp, *pids)
                if not plain:
                    measure(plain_base, key, warm, args.connections, tmp, baseline.pid)
                runs.append(
                    (count, measure(",".join(bases), key, ids, args.connections, tmp, *pids))
                )
                if not plain:
                    plain = measure(plain_base, key, ids, args.connections, tmp, baseline.pid)
            finally:
                for proc in servers:
                    stop(proc)

    table = Table(title=f"lifecycle transitions over {args.connections} connections")
    for column in (
        "target",
        "requests",
        "seconds",
        "transitions/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/req",
        "statuses",
    ):
        table.add_column(column, justify="right")
    rows = [(f"convhook serve x{n} ({label})", r) for n, r in runs]
    for name, r in [*rows, ("FastAPI, no storage", plain)]:
        table.add_row(
            name,
            str(r["requests"]),
            f"{r['seconds']:.2f}",
            f"{r['perSecond']:.0f}",
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['cpuMicros']:.0f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())),
        )
    console.print(table)
    first_count, api = runs[0]
    ratio = api["perSecond"] / plain["perSecond"]
    verdict = "meets" if ratio >= 0.5 else "misses"
    console.print(f"ratio: {ratio:.0%} of plain FastAPI ({verdict} the 50% target)")
    cpu_ratio = plain["cpuMicros"] / api["cpuMicros"]
    console.print(f"CPU per request: plain FastAPI uses {cpu_ratio:.0%} of convhook's")
    for count, r in runs[1:]:
        console.print(
            f"{count} API processes: x{r['perSecond'] / api['perSecond']:.2f} of "
            f"{first_count} ({r['perSecond'] / plain['perSecond']:.0%} of plain FastAPI)"
        )


def _port(proc: subprocess.Popen[Any]) -> int:
    return int(proc.args[proc.args.index("--port") + 1])  # type: ignore[index,union-attr]


if __name__ == "__main__":
    main()
