"""The soak test's long-running processes: start, crash, restart, stop; RSS and open files.

A process here is one ``convhook`` command together with its descendants (the SQLite writer
process runs in a session of its own, so it is found through ``/proc``, not its group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _support import wait_for_port


def descendants(pid: int) -> list[int]:
    """``pid``'s live children, grandchildren... (Linux ``/proc``), in no set order."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                found.append(int(child))
                found += descendants(int(child))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@dataclass(frozen=True)
class Usage:
    """Resident memory and open file descriptors of a process and its descendants."""

    rss_mib: float
    open_files: int
    processes: int


def usage(pid: int) -> Usage:
    """VmRSS and the entries of ``/proc/<pid>/fd``, summed over ``pid`` and its descendants."""
    rss_kib, files, count = 0, 0, 0
    for each in (pid, *descendants(pid)):
        try:
            status = Path(f"/proc/{each}/status").read_text()
            fds = len(os.listdir(f"/proc/{each}/fd"))
        except OSError:  # it exited between the listing and the read
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss_kib += int(line.split()[1])
        files += fds
        count += 1
    return Usage(rss_kib / 1024, files, count)


@dataclass
class Child:
    """One ``python -m convhook ...`` command run in ``cwd``, its stderr appended to
    ``<cwd>/<name>.err`` across restarts."""

    name: str
    args: list[str]
    cwd: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    orphans: int = 0
    """Descendants still alive 5 s after their parent was killed (they were then killed)."""
    _err: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running: call start() first")
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.cwd / f"{self.name}.err"

    def start(self) -> None:
        """Start the command and wait until its port accepts connections (or 1.5 s, for a
        process without one, long enough to import and open its database)."""
        if self._err is None:
            self._err = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convhook", *self.args],
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            start_new_session=True,
        )
        self.starts += 1
        try:
            if self.port is not None:
                wait_for_port(self.port, self.proc, timeout=60)
            else:
                time.sleep(1.5)
                if self.proc.poll() is not None:
                    raise RuntimeError(f"exited with {self.proc.returncode}")
        except (RuntimeError, TimeoutError) as exc:
            # The temporary directory holding the log goes with the failure: show its end.
            tail = self.log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"convhook {self.name}: {exc}\n" + "\n".join(tail)) from exc

    def crash(self) -> None:
        """SIGKILL the main process alone, as the kernel's OOM killer would, then check that
        its descendants notice and exit by themselves."""
        proc = self.proc
        assert proc is not None, "crash() before start()"
        left = descendants(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while (left := [p for p in left if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.orphans += len(left)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s); its descendants are then killed if left."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            left = descendants(proc.pid)
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid in left:
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self._err is not None:
            self._err.close()
            self._err = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
