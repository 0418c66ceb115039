"""Process-state checks shared by the orphan-guard tests (Linux /proc)."""

from __future__ import annotations

import time
from pathlib import Path


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie is dead, only not yet collected)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def still_running(pids, limit_s: float = 30.0) -> list[int]:
    """Wait up to `limit_s` for every pid to be gone; return those still running."""
    end, alive = time.time() + limit_s, [p for p in pids if running(p)]
    while alive and time.time() < end:
        time.sleep(0.2)
        alive = [p for p in alive if running(p)]
    return alive
