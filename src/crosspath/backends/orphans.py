"""No engine outlives the process that started it, even when that process is killed with SIGKILL.

An inference engine (vLLM's engine core, its workers) runs in processes of its own. A trainer or a
`crosspath run` that ends normally shuts them down (`close_engines`, at exit); one that is killed
hard (SIGKILL, the out-of-memory killer, a lost node) runs no exit code, and the engine's processes
stay, holding their memory (GPU memory on a GPU) until someone finds them.

`start_engine(make)` calls `make()` and notes which processes appeared under this one meanwhile;
`guard(processes)` then starts a small watchdog in a session of its own (so a Ctrl-C to the
terminal does not stop it first) that checks once a second whether its parent is still alive and,
once it is not, sends SIGKILL to those processes and exits. A process is only killed when its
start time is still the one recorded, so a PID the system reused for something else is left alone.
Linux only (it reads /proc); elsewhere these functions do nothing.

    python -m crosspath.backends.orphans PARENT_PID PID:START ...     # the watchdog itself
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
PROC = Path("/proc")
CHECK_S = 1.0  # the watchdog's polling interval
_WATCHDOGS: list[subprocess.Popen] = []  # kept, so no Popen is collected (and warned about) while it runs


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, None when it is gone or unreadable."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid ... starttime (field 22)
    return int(fields[1]), int(fields[19])


def descendants(pid: int | None = None) -> dict[int, int]:
    """{pid: start time} of every process below `pid` (default: this one), from /proc ({} elsewhere)."""
    pid = os.getpid() if pid is None else pid
    if not PROC.is_dir():
        return {}
    info = {int(p.name): _stat(int(p.name)) for p in PROC.iterdir() if p.name.isdigit()}
    children: dict[int, list[int]] = {}
    for child, st in info.items():
        if st is not None:
            children.setdefault(st[0], []).append(child)
    out, todo = {}, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if info.get(p) is not None:
            out[p] = info[p][1]
            todo += children.get(p, [])
    return out


def guard(processes: dict[int, int]) -> subprocess.Popen | None:
    """Start the watchdog that kills `processes` ({pid: start time}) once this process is gone."""
    if not processes or not PROC.is_dir():
        return None
    args = [f"{pid}:{start}" for pid, start in sorted(processes.items())]
    proc = subprocess.Popen([sys.executable, "-m", "crosspath.backends.orphans", str(os.getpid()), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    _WATCHDOGS.append(proc)
    return proc


def start_engine(make: Callable[[], T]) -> T:
    """`make()` (e.g. `lambda: vllm.LLM(**opts)`), with the processes it started guarded."""
    before = descendants()
    engine = make()
    after = descendants()
    guard({pid: start for pid, start in after.items() if before.get(pid) != start})
    return engine


def reap(processes: dict[int, int]) -> list[int]:
    """SIGKILL each process still running with its recorded start time; returns the pids killed."""
    killed = []
    for pid, start in processes.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


def watch(parent: int, processes: dict[int, int], check_s: float = CHECK_S) -> None:
    """Wait until `parent` is gone (this process is re-parented), then reap `processes`."""
    while os.getppid() == parent:
        time.sleep(check_s)
    reap(processes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parent, pairs = int(argv[0]), [a.split(":") for a in argv[1:]]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(parent, {int(pid): int(start) for pid, start in pairs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
