"""Soak: producer, dispatcher and receiver under steady load for N minutes, with faults.

Real processes on one machine, all on 127.0.0.1:

- ``convhook serve --no-dispatch`` (the API) and a separate ``convhook dispatcher`` on one
  producer database, so the dispatcher can be killed and restarted on its own;
- ``convhook listen --quiet`` storing into an inbox database, behind a fault-injecting proxy
  that this script runs (see ``_soak_faults.py``): a share of first attempts is answered 5xx
  (before the receiver, or after it stored the event) or held past the dispatcher's timeout;
- every ``--fault-interval`` seconds the dispatcher is SIGKILLed and restarted 2 s later; with
  ``--db postgres`` (a throwaway durable server) PostgreSQL is restarted half-way between.

Conversations are driven through their lifecycle via the API at ``--rate`` events/s (see
``_soak_load.py``). When the load stops, faults stop and the deliveries drain (up to
``--drain`` seconds); then the reconciliation: every event the API acknowledged (2xx) must be
in the receiver's inbox (read through the library's inbox API) and no delivery may be left
pending or in flight. The table also shows duplicates, faults by kind, and RSS and open files
of each process (with its descendants, e.g. the SQLite writer process) at start and end. The
exit status is 1 when an event is lost or a delivery stuck.

    .venv/bin/python bench/soak.py [--minutes 5] [--rate 30] [--db sqlite|postgres]
                                   [--error-share 0.05] [--timeout-share 0.02]
                                   [--fault-interval 60] [--drain 420]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from _soak_faults import LOST_REPLY, REJECT, TIMEOUT, FaultProxy
from _soak_load import Api, Load, drive, wait_drained
from _soak_procs import Child, Usage, usage
from _support import free_port

KILL = "dispatcher SIGKILL + restart"
PG_RESTART = "PostgreSQL restart"
# The dispatcher's request timeout in the soak: short, so timeouts are cheap to inject.
REQUEST_TIMEOUT = 2.0


class Restartable(Protocol):
    def restart(self) -> None: ...


def cli(*args: str) -> str:
    """Run a ``convhook`` command to completion; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"convhook {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@contextlib.contextmanager
def databases(kind: str, tmp: Path) -> Iterator[tuple[str, str, Restartable | None]]:
    """The producer and inbox databases (schemas current), and the server to restart."""
    if kind == "sqlite":
        yield str(tmp / "producer.db"), str(tmp / "inbox.db"), None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.postgres import TemporaryPostgres

    with TemporaryPostgres(durable=True) as server:
        producer, inbox = server.create_database("producer"), server.create_database("inbox")
        cli("db", "upgrade", "--db", producer, "--component", "producer")
        cli("db", "upgrade", "--db", inbox, "--component", "inbox")
        yield producer, inbox, server


async def inject(
    stop: asyncio.Event,
    interval: float,
    dispatcher: Child,
    pg: Restartable | None,
    faults: Counter[str],
) -> None:
    """Kill and restart the dispatcher every ``interval`` s and restart PostgreSQL half-way
    between, until ``stop`` is set."""
    start = time.monotonic()
    for n in range(1, 1_000_000):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), start + n * interval / 2 - time.monotonic())
            return
        if n % 2 == 0:
            await asyncio.to_thread(dispatcher.crash)
            faults[KILL] += 1
            await asyncio.sleep(2)
            await asyncio.to_thread(dispatcher.start)
        elif pg is not None:
            await asyncio.to_thread(pg.restart)
            faults[PG_RESTART] += 1


async def stored(inbox_db: str) -> list[tuple[str, str, str]]:
    """(conversation id, event type, handler status) of every event in the inbox."""
    from convhook.store.inbox.store import open_inbox

    found = []
    async with open_inbox(inbox_db) as inbox:
        for entry in await inbox.recent(None, 1_000_000_000):
            payload = json.loads(entry.body).get("payload") or {}
            found.append((str(payload.get("id")), entry.event_type, entry.status.value))
    return found


@dataclass
class Outcome:
    """Everything the tables show."""

    load: Load
    drain_s: float
    left: dict[str, int]
    inbox: list[tuple[str, str, str]]
    proxy: FaultProxy
    faults: Counter[str]
    usage: dict[str, tuple[Usage, Usage]]
    children: list[Child]
    receiver_duplicates: int


async def soak(args: argparse.Namespace, tmp: Path, producer: str, inbox: str, pg: Any) -> Outcome:
    """Set up, load with faults, drain, and collect what the reconciliation needs."""
    key = json.loads(cli("workspaces", "create", "soak", "--db", producer, "--json"))["apiKey"]
    api_port, listen_port, proxy_port = free_port(), free_port(), free_port()
    serve = Child("serve", ["serve", "--port", str(api_port), "--db", producer], tmp, api_port)
    serve.args += ["--no-dispatch", "--allow-private-targets", "--max-active", "1000000"]
    dispatcher = Child("dispatcher", ["dispatcher", "--db", producer], tmp)
    dispatcher.args += ["--allow-private-targets", "--timeout", str(REQUEST_TIMEOUT)]
    dispatcher.args += ["--lease", "10", "--poll-interval", "0.2", "--log-level", "warning"]
    listen = Child("listen", ["listen", "--port", str(listen_port), "--db", inbox], tmp)
    listen.port = listen_port
    children = [serve, dispatcher, listen]
    proxy = FaultProxy(
        f"http://127.0.0.1:{listen_port}/webhook",
        error_share=args.error_share,
        timeout_share=args.timeout_share,
        hold=REQUEST_TIMEOUT + 1,
    )
    api: Api | None = None
    try:
        await asyncio.to_thread(serve.start)
        api = Api(api_port, key)
        customers = await api.customers(20)
        hook = f"http://127.0.0.1:{proxy_port}/webhook"
        endpoint = await api.created("/endpoints", {"url": hook, "maxInFlight": 50})
        listen.args += ["--secret", endpoint["secret"], "--quiet"]
        await asyncio.to_thread(listen.start)
        await proxy.start(proxy_port)
        await asyncio.to_thread(dispatcher.start)
        first = {c.name: usage(c.pid) for c in children}
        faults: Counter[str] = Counter()
        stop = asyncio.Event()
        injector = asyncio.create_task(inject(stop, args.fault_interval, dispatcher, pg, faults))
        print(
            f"soak: {args.rate:g} events/s for {args.minutes:g} min on {args.db}", file=sys.stderr
        )
        load = await drive(api, args.rate, args.minutes * 60, customers)
        stop.set()
        await injector
        proxy.enabled = False
        print(f"load done ({len(load.acknowledged)} events); draining", file=sys.stderr)
        drain_s = await wait_drained(api, endpoint["id"], args.drain)
        last = {c.name: usage(c.pid) for c in children}
        left = {s: await api.deliveries(endpoint["id"], s) for s in ("pending", "delivering")}
        left["failed"] = await api.deliveries(endpoint["id"], "failed")
    finally:
        if api is not None:
            await api.close()
        for child in (dispatcher, listen, serve):
            await asyncio.to_thread(child.stop)
        await proxy.close()
    return Outcome(
        load=load,
        drain_s=drain_s,
        left=left,
        inbox=await stored(inbox),
        proxy=proxy,
        faults=faults,
        usage={name: (first[name], last[name]) for name in first},
        children=children,
        receiver_duplicates=listen.log.read_text(errors="replace").count("duplicate delivery"),
    )


def report(args: argparse.Namespace, out: Outcome, console: Console) -> int:
    """Print the tables; the exit status (1 when an event is lost or a delivery stuck)."""
    delivered = {(conv, kind) for conv, kind, _ in out.inbox}
    acked = out.load.acknowledged
    lost = acked - delivered
    stuck = out.left["pending"] + out.left["delivering"]
    not_done = sum(1 for *_, status in out.inbox if status != "done")
    refused = sum(out.load.refused.values())
    injected = sum(out.proxy.faults.values())
    table = Table(title=f"soak on {args.db}: {args.rate:g} events/s for {args.minutes:g} min")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    bad = "[bold red]{}[/]"
    rows: list[tuple[str, str, str]] = [
        ("duration", f"{out.load.seconds:.0f} s", f"then {out.drain_s:.0f} s of drain"),
        (
            "events acknowledged (API 2xx)",
            f"{len(acked)}",
            f"{out.load.conversations} conversations, {len(acked) / out.load.seconds:.1f} events/s",
        ),
        ("delivered (in the receiver's inbox)", f"{len(acked & delivered)}", ""),
        ("lost", (bad if lost else "{}").format(len(lost)), "acknowledged, not in the inbox"),
        (
            "stuck",
            (bad if stuck else "{}").format(stuck),
            f"pending {out.left['pending']}, in flight {out.left['delivering']} after the drain",
        ),
        ("failed deliveries", f"{out.left['failed']}", "retries exhausted"),
        ("inbox entries not done", f"{not_done}", ""),
        (
            "delivered, not acknowledged",
            f"{len(delivered - acked)}",
            "the API call failed after its commit",
        ),
        (
            "duplicates seen by the receiver",
            f"{out.proxy.duplicates}",
            f"at the proxy; the receiver logged {out.receiver_duplicates}",
        ),
        (
            "API calls not answered 2xx",
            f"{refused}",
            ", ".join(f"{k} x{v}" for k, v in out.load.refused.most_common(6)),
        ),
        (
            "requests to the receiver",
            f"{out.proxy.requests}",
            f"{injected} faulted, {out.proxy.unreachable} found it unreachable",
        ),
    ]
    for kind in (REJECT, LOST_REPLY, TIMEOUT, KILL, PG_RESTART):
        if kind == PG_RESTART and args.db != "postgres":
            continue
        count = out.proxy.faults[kind] + out.faults[kind]
        rows.append((f"fault: {kind}", f"{count}", ""))
    orphans = sum(c.orphans for c in out.children)
    rows.append(("descendants left by a SIGKILL", (bad if orphans else "{}").format(orphans), ""))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    procs = Table(title="processes (with their descendants): start -> end")
    for column in ("process", "RSS MiB", "open files", "processes", "note"):
        procs.add_column(column, justify="left" if column in ("process", "note") else "right")
    for child in out.children:
        start, end = out.usage[child.name]
        note = f"started {child.starts} times" if child.starts > 1 else ""
        procs.add_row(
            f"convhook {child.name}",
            f"{start.rss_mib:.0f} -> {end.rss_mib:.0f}",
            f"{start.open_files} -> {end.open_files}",
            f"{start.processes} -> {end.processes}",
            note,
        )
    console.print(procs)
    for key, example in out.load.examples.items():
        console.print(f"first answer for {key}: {example}", markup=False, highlight=False)
    for conv, kind in sorted(lost)[:10]:
        console.print(f"lost: {kind} of {conv}", style="red")
    return 1 if lost or stuck else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=5, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=30, help="events/s through the API")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--error-share", type=float, default=0.05, help="first attempts answered 5xx"
    )
    parser.add_argument(
        "--timeout-share", type=float, default=0.02, help="first attempts held past the timeout"
    )
    parser.add_argument(
        "--fault-interval", type=float, default=60, help="seconds between dispatcher kills"
    )
    parser.add_argument(
        "--drain", type=float, default=420, help="longest wait for deliveries after the load"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="convhook-soak-") as name,
        databases(args.db, Path(name)) as (producer, inbox, pg),
    ):
        outcome = asyncio.run(soak(args, Path(name), producer, inbox, pg))
        code = report(args, outcome, Console(width=110))
    sys.exit(code)


if __name__ == "__main__":
    main()
