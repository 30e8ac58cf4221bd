"""Run one benchmark against two revisions in the same run, alternating, and compare.

A refactor's effect on a shared, noisy machine is only visible as a ratio measured in one run:
this checks out each revision into a temporary git worktree, then runs the same benchmark
script (the working tree's) against each revision's code in turn, round after round, and
prints every figure it extracted with the median of each side and B / A.

    .venv/bin/python bench/compare.py HEAD~3 . -- bench/api.py --conversations 5000
    .venv/bin/python bench/compare.py main . --rounds 5 -- bench/dispatch.py
    .venv/bin/python bench/compare.py v0.1 HEAD --metric 'p99=p99 ([\\d.]+) ms' -- bench/api.py

``.`` stands for the working tree as it is, uncommitted changes included. The script of the
working tree runs for both sides, so both are measured with the same instrument; it imports
``convhook`` (and starts ``python -m convhook``) from the side's ``src/`` through PYTHONPATH.
Figures are taken from the output with the script's default patterns or with ``--metric
NAME=REGEX`` (one group: a number, thousands separators allowed); a pattern that matches
several times (one row per connection level, say) gives one figure per match.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
_CELL = r"[^│]*│"
DEFAULT_METRICS: dict[str, dict[str, str]] = {
    "api.py": {
        "convhook transitions/s": r"│ convhook serve" + _CELL * 3 + r"\s*([\d,]+)",
        "ratio to FastAPI %": r"ratio: (\d+)% of plain FastAPI",
        "convhook CPU µs/req": r"│ convhook serve" + _CELL * 6 + r"\s*([\d,]+)",
    },
    "dispatch.py": {
        "dispatcher events/s": r"convhook dispatcher\s+([\d,]+) events/s",
        "ratio to aiohttp %": r"(\d+)% of baseline",
        "dispatcher CPU µs/event": r"convhook dispatcher .*CPU (\d+) us/event",
        "latency p99 ms": r"API call -> receipt\s+p50 [\d.]+ ms, p99 ([\d.]+) ms",
    },
    "receiver.py": {
        "listen --quiet events/s": r"│ convhook listen --quiet\s+│" + _CELL * 4 + r"\s*([\d,]+)",
        "listen --quiet ratio %": r"│ convhook listen --quiet\s+│" + _CELL * 5 + r"\s*(\d+)%",
        "listen --quiet CPU µs/req": r"│ convhook listen --quiet\s+│" + _CELL * 6 + r"\s*(\d+)",
    },
}


def main() -> int:
    if "--" not in sys.argv:
        print("usage: compare.py REV_A REV_B [options] -- BENCH_SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev_a", help="a git revision, or . for the working tree")
    parser.add_argument("rev_b", help="a git revision, or . for the working tree")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side, alternating")
    parser.add_argument(
        "--metric", action="append", default=[], help="NAME=REGEX with one number group"
    )
    opts = parser.parse_args(sys.argv[1:split])
    command = sys.argv[split + 1 :]
    if not command:
        parser.error("name the benchmark script after --")
    metrics = _metrics(opts.metric, command[0])
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="convhook-compare-") as tmp:
        trees = {rev: _tree(rev, Path(tmp)) for rev in dict.fromkeys((opts.rev_a, opts.rev_b))}
        try:
            results: dict[str, dict[str, list[float]]] = {opts.rev_a: {}, opts.rev_b: {}}
            for round_no in range(1, opts.rounds + 1):
                for rev in (opts.rev_a, opts.rev_b):
                    console.print(f"[bold]round {round_no}[/]: {rev}")
                    output = _run(trees[rev], command)
                    for name, values in _extract(metrics, output).items():
                        results[rev].setdefault(name, []).extend(values)
        finally:
            for rev, tree in trees.items():
                if rev != ".":
                    subprocess.run(
                        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                        check=False,
                        capture_output=True,
                    )
    _report(opts.rev_a, opts.rev_b, results, command)
    return 0


def _metrics(given: list[str], script: str) -> dict[str, re.Pattern[str]]:
    chosen = DEFAULT_METRICS.get(Path(script).name, {}) if not given else {}
    for item in given:
        name, sep, pattern = item.partition("=")
        if not sep:
            raise SystemExit(f"--metric takes NAME=REGEX, got {item!r}")
        chosen[name] = pattern
    if not chosen:
        raise SystemExit(f"no default figures for {script}: pass --metric NAME=REGEX")
    return {name: re.compile(pattern) for name, pattern in chosen.items()}


def _tree(rev: str, tmp: Path) -> Path:
    """The source tree of ``rev``: the working tree for ``.``, else a detached worktree."""
    if rev == ".":
        return REPO
    path = tmp / re.sub(r"[^A-Za-z0-9_.-]", "_", rev)
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(path), rev],
        check=True,
    )
    return path


def _run(tree: Path, command: list[str]) -> str:
    script = REPO / command[0]
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "COLUMNS": "220"}
    done = subprocess.run(
        [sys.executable, str(script), *command[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"{command[0]} failed against {tree} (exit {done.returncode})")
    return done.stdout + done.stderr


def _extract(metrics: dict[str, re.Pattern[str]], output: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for name, pattern in metrics.items():
        matches = [float(m.replace(",", "")) for m in pattern.findall(output)]
        for index, value in enumerate(matches):
            key = name if len(matches) == 1 else f"{name} #{index + 1}"
            found.setdefault(key, []).append(value)
    return found


def _report(
    rev_a: str, rev_b: str, results: dict[str, dict[str, list[float]]], command: list[str]
) -> None:
    table = Table(title=f"{' '.join(command)}: {rev_b} against {rev_a}, same run")
    for column in ("figure", f"A = {rev_a}", f"B = {rev_b}", "median A", "median B", "B / A"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name in dict.fromkeys([*results[rev_a], *results[rev_b]]):
        a, b = results[rev_a].get(name, []), results[rev_b].get(name, [])
        med_a = statistics.median(a) if a else None
        med_b = statistics.median(b) if b else None
        ratio = f"{med_b / med_a:.3f}" if med_a and med_b is not None else "-"
        table.add_row(
            name,
            " ".join(f"{v:g}" for v in a),
            " ".join(f"{v:g}" for v in b),
            "-" if med_a is None else f"{med_a:g}",
            "-" if med_b is None else f"{med_b:g}",
            ratio,
        )
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
