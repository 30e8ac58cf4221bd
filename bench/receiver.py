"""Receiver throughput: ``convhook listen`` (verify + validate + durable store) vs a bare app.

Both servers run as subprocesses (uvicorn, same settings) and are driven by the same load
generator with the same requests: every request is a realistic signed event with its own
eventId and webhook-id, so the receiver's de-duplication never skips a write. The bare app
reads the body and answers 200, nothing else. With ``wrk`` installed it is the generator
(requests pre-signed in Python, replayed by a Lua script); otherwise an aiohttp client runs
in a separate process.

Each target runs ``--rounds`` times, interleaved, and keeps its best run, so a noisy
neighbour on the machine hurts all targets alike. The table also shows the server's CPU time
per request (all its threads, and its SQLite writer process: ``listen`` stores through a
child process unless ``--no-writer-process``, shown as a row of its own).

The load is closed (each connection sends its next request when the last is answered), so a
target's rate is at most connections / latency. A receiver that answers only after an fsync
has a longer latency than the bare app and needs more connections in flight to reach its
capacity; ``--connections`` therefore takes a list, and every level is compared with the bare
app at the same level.

Run: ``.venv/bin/python bench/receiver.py [--seconds 5] [--rounds 2] [--connections 64,256] [--db postgres]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _support import (
    BARE_APP,
    cpu_seconds,
    free_port,
    migrated_database,
    postgres_server,
    wait_for_port,
)
from convhook.samples import sample_event
from convhook.signing import Secret, sign

PATH = "/webhook"
PLACEHOLDER = "evt_PLACEHOLDER_ID"


LUA = r"""
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  local template = io.open(args[3]):read("*a")
  local at = string.find(template, "evt_PLACEHOLDER_ID", 1, true)
  prefix = string.sub(template, 1, at - 1)
  suffix = string.sub(template, at + string.len("evt_PLACEHOLDER_ID"))
  reqs = {}
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == tid then
      local eid, ts, sig = string.match(line, "^(%S+) (%S+) (.+)$")
      reqs[#reqs + 1] = {eid, ts, sig}
    end
    n = n + 1
  end
  idx = 0
end

function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  local r = reqs[idx]
  local headers = {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = r[1],
    ["webhook-timestamp"] = r[2],
    ["webhook-signature"] = r[3],
  }
  return wrk.format("POST", "/webhook", headers, prefix .. r[1] .. suffix)
end
"""


@dataclass(frozen=True)
class Result:
    """One target's run."""

    target: str
    requests: int
    accepted: int
    seconds: float
    stored: int | None
    cpu_seconds: float

    @property
    def cpu_per_request_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else 0.0

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def server(args: list[str], port: int, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def make_requests(tmp: Path, secret: Secret, count: int) -> tuple[Path, Path]:
    """Write the body template and ``count`` lines of ``eventId timestamp signature``."""
    event = sample_event("conversation.analysisCompleted", overrides={"eventId": PLACEHOLDER})
    template = event.to_json()
    prefix, _, suffix = template.partition(PLACEHOLDER.encode())
    ts = int(time.time())
    run = os.urandom(4).hex()
    lines = []
    for i in range(count):
        eid = f"evt_{run}{i:010d}"
        body = prefix + eid.encode() + suffix
        sig = sign([secret], eid, body, timestamp=ts)["webhook-signature"]
        lines.append(f"{eid} {ts} {sig}\n")
    req_file = tmp / "requests.txt"
    req_file.write_text("".join(lines))
    template_file = tmp / "template.json"
    template_file.write_bytes(template)
    return req_file, template_file


def run_wrk(
    port: int, seconds: float, connections: int, req_file: Path, template: Path, tmp: Path
) -> tuple[int, int, float]:
    script = tmp / "signed.lua"
    script.write_text(LUA)
    threads = 1
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(req_file),
        str(threads),
        str(template),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}{done.stdout}")
    text = done.stdout
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
    if match is None:
        raise RuntimeError(f"cannot read wrk output:\n{text}")
    requests = int(match[1])
    elapsed = float(match[2]) / (1000 if match[3] == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    accepted = requests - (int(bad[1]) if bad else 0) - errors
    return requests, accepted, elapsed


def run_aiohttp(
    port: int, seconds: float, connections: int, req_file: Path, template: Path, tmp: Path
) -> tuple[int, int, float]:
    """The fallback generator: an aiohttp client in a separate process."""
    code = CLIENT.format(
        url=f"http://127.0.0.1:{port}{PATH}",
        seconds=seconds,
        connections=connections,
        req_file=str(req_file),
        template=str(template),
        placeholder=PLACEHOLDER,
    )
    text = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(text)
    return data["requests"], data["accepted"], data["seconds"]


CLIENT = """
import asyncio, json, time, aiohttp
async def main():
    template = open({template!r}, "rb").read()
    pre, _, suf = template.partition({placeholder!r}.encode())
    lines = [l.split(" ", 2) for l in open({req_file!r}).read().splitlines()]
    it = iter(lines)
    counts = {{"requests": 0, "accepted": 0}}
    stop = time.perf_counter() + {seconds}
    async def worker(session):
        while time.perf_counter() < stop:
            eid, ts, sig = next(it)
            headers = {{"content-type": "application/json", "webhook-id": eid,
                        "webhook-timestamp": ts, "webhook-signature": sig}}
            async with session.post({url!r}, data=pre + eid.encode() + suf, headers=headers) as r:
                await r.read()
                counts["requests"] += 1
                counts["accepted"] += r.status == 200
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit={connections})) as s:
        await asyncio.gather(*(worker(s) for _ in range({connections})))
    counts["seconds"] = time.perf_counter() - start
    print(json.dumps(counts))
asyncio.run(main())
"""


def count_rows(db: str) -> int:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as pg:
            found = pg.execute("SELECT count(*) FROM convhook_inbox").fetchone()
            return int(found[0]) if found else 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT count(*) FROM convhook_inbox").fetchone()
        return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per target, interleaved")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[64, 256],
        help="comma-separated levels of concurrent connections, each run against every target",
    )
    parser.add_argument("--requests", type=int, default=150_000, help="pre-signed events")
    parser.add_argument("--aiohttp", action="store_true", help="use aiohttp even if wrk exists")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the inbox's engine (postgres: a throwaway durable server started for the run)",
    )
    opts = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not opts.aiohttp
    load = run_wrk if use_wrk else run_aiohttp
    secret = Secret.generate()
    python = sys.executable
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="convhook-bench-")))
        pg = stack.enter_context(postgres_server()) if opts.db == "postgres" else None
        (tmp / "bare_app.py").write_text(BARE_APP)
        uvicorn_opts = ["--log-level", "warning", "--no-access-log", "--lifespan", "on"]
        listen = [python, "-m", "convhook", "listen", "--secret", str(secret)]
        targets: list[tuple[str, list[str], bool]] = [
            (
                "bare ASGI app (200 only)",
                [python, "-m", "uvicorn", "--app-dir", str(tmp), "bare_app:app", *uvicorn_opts],
                False,
            ),
            (
                "convhook listen --quiet",
                [*listen, "--quiet"],
                True,
            ),
            (
                "convhook listen --quiet --no-writer-process",
                [*listen, "--quiet", "--no-writer-process"],
                True,
            ),
            (
                "convhook listen (printing)",
                listen,
                True,
            ),
        ]
        if pg is not None:
            # The writer setting is SQLite's: PostgreSQL's writer is always a thread.
            targets = [t for t in targets if "--no-writer-process" not in t[0]]
        best: dict[tuple[int, str], Result] = {}
        # Rounds interleave the targets so a noisy neighbour hurts all of them alike; each
        # target keeps its best round. Every receiver run gets a fresh database.
        for connections in opts.connections:
            for round_no in range(opts.rounds):
                # Signed afresh each round: a long run would outlast the 300 s tolerance.
                req_file, template = make_requests(tmp, secret, opts.requests)
                for label, args, has_db in targets:
                    port = free_port()
                    full = [*args, "--port", str(port)]
                    db = None
                    if has_db:
                        name = f"inbox_{connections}_{round_no}_{port}"
                        db = (
                            migrated_database(pg, name, "inbox")
                            if pg is not None
                            else str(tmp / f"{name}.db")
                        )
                        full += ["--db", db]
                    with server(full, port, tmp) as proc:
                        before = cpu_seconds(proc.pid)
                        requests, accepted, elapsed = load(
                            port, opts.seconds, connections, req_file, template, tmp
                        )
                        used = cpu_seconds(proc.pid) - before
                    stored = count_rows(db) if db is not None else None
                    result = Result(label, requests, accepted, elapsed, stored, used)
                    key = (connections, label)
                    if key not in best or result.rate > best[key].rate:
                        best[key] = result
    levels = [[best[(c, label)] for label, _, _ in targets] for c in opts.connections]
    report(levels, opts.connections, "wrk" if use_wrk else "aiohttp", opts)


def report(
    levels: list[list[Result]], connections: list[int], generator: str, opts: argparse.Namespace
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"receiver throughput ({generator}, {opts.db}, best of {opts.rounds} x {opts.seconds:g} s, "
        f"{os.cpu_count()} CPUs; ratio: against the bare app at the same connections)"
    )
    columns = ("connections", "target", "requests", "accepted", "stored", "seconds")
    for column in (*columns, "events/s", "ratio", "server CPU µs/req"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for level, results in zip(connections, levels, strict=True):
        base = results[0].rate
        for r in results:
            table.add_row(
                str(level),
                r.target,
                str(r.requests),
                str(r.accepted),
                "-" if r.stored is None else str(r.stored),
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
                f"{r.rate / base:.0%}" if base else "-",
                f"{r.cpu_per_request_us:.0f}",
            )
        table.add_section()
    Console(width=max(140, Console().width)).print(table)
    for results in levels:
        for r in results[1:]:
            if r.stored is not None and r.stored < r.accepted:
                print(f"WARNING: {r.target}: {r.accepted} accepted but only {r.stored} stored")
            if r.requests > opts.requests:
                print(f"WARNING: {r.target} ran out of unique events; raise --requests")


if __name__ == "__main__":
    main()
