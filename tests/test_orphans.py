"""An engine's processes do not outlive the process that started them, even under SIGKILL
(crosspath.backends.orphans; Linux /proc)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crosspath.backends import orphans
from proc_helpers import running as _running, still_running

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the guard reads /proc (Linux)")

PARENT = """
import subprocess, sys, time
from crosspath.backends.orphans import start_engine
engine = start_engine(lambda: subprocess.Popen(["sleep", "300"]))   # stands in for vllm.LLM's processes
print(engine.pid, flush=True)
time.sleep(300)
"""


def test_a_killed_parent_takes_its_engine_processes_along():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert _running(child) and child in orphans.descendants(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)  # no exit code of the parent runs
        parent.wait()
        assert not still_running([child]), "the engine's process outlived its killed parent"
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def test_only_the_recorded_process_is_reaped_and_only_once_the_parent_is_gone():
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        start = orphans.descendants()[sleeper.pid]
        assert orphans.reap({sleeper.pid: start + 1}) == [] and _running(sleeper.pid)  # a reused pid: left alone
        assert orphans.start_engine(lambda: 7) == 7  # nothing started, nothing guarded
        assert orphans.reap({sleeper.pid: start}) == [sleeper.pid]
        sleeper.wait(timeout=30)
        assert sleeper.returncode == -signal.SIGKILL
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
