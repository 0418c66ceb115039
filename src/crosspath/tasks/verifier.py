"""Time-bounded, isolated workers for the checks that read model output.

    pool = WorkerPool("crosspath.tasks.grading:verify_request", warm="crosspath.tasks.grading:warm_verifier")
    pool.call({"gold": "$1/2$", "pred": "$0.5$"}, timeout=5.0)  # -> True, or TimedOut after 5 s

Why a worker process and not a call in this process:

- A check must be stoppable at a time limit, from any thread. math-verify bounds its own time with
  SIGALRM, which works only in the main thread (the server and thread pools grade off it), and
  reasoning-gym's scorers have no bound at all (sympy on `9**9**8` runs for minutes). Only a
  process can be stopped from outside.
- Model output must never run with this process's rights. Several reasoning-gym scorers `eval`
  the answer or hand it to `sympy.parse_expr`, and math-verify hands expressions to sympy too.
  Callers refuse answers of an unsafe shape first (rg_scoring.py); this is the second wall.

How. A worker is a plain `python -P -c` process (no fork of a threaded parent) started in an empty
read-only directory. It runs `warm` once (the slow imports), then answers one JSON line per request:

1. `handler(request)` runs in the worker on the request's trusted fields (e.g. it builds the
   reasoning-gym dataset) and returns a zero-argument `check` that reads the answer;
2. the worker forks a child, which calls `sandbox()` and then `check()`;
3. the worker waits `timeout` seconds for the child's JSON result and kills it after that.

The sandbox: no new processes (RLIMIT_NPROC 0), no file or socket opened (RLIMIT_NOFILE 4 with
fds 0-3 taken), no bytes written to any file (RLIMIT_FSIZE 0), CPU time and address space
bounded, no core dumps, stdin and the worker's pipes closed, cwd the empty directory, and when
running as root the unprivileged uid/gid 65534. A child is used once: a slow check costs no
restart (the imports stay warm in the worker), and nothing a child does can change what later
checks see. As the sandbox cannot read a module file, a check that imports a module lazily is
rerun once the worker has imported it (`check_sandboxed`; once per module and worker). The
caller waits for the worker itself as long as all runs and PREP_TIMEOUT may take.
"""

from __future__ import annotations

import atexit
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))  # worker processes of one pool alive at most
START_TIMEOUT = 120.0  # seconds for a worker's `warm` (imports), not part of any check's budget
PREP_TIMEOUT = 60.0  # seconds for the trusted part of a request (building a dataset), in the worker
MEMORY_LIMIT = 2 << 30  # bytes of address space a check may add to what the worker already maps
NOBODY = 65534  # uid/gid a check runs as when the worker runs as root
IMPORT_RETRIES = 3  # reruns of a check after loading modules it imported lazily (check_sandboxed)


class TimedOut(Exception):
    """A check ran past its time limit; its process was killed."""


# --- worker side --------------------------------------------------------------------------------


def sandbox(seconds: float, workdir: str) -> None:
    """Take away what a check does not need. Irreversible: call it only in a disposable child,
    after closing every file descriptor above 3 (none can be opened afterwards)."""
    os.chdir(workdir)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails instead of killing
    limits = {resource.RLIMIT_FSIZE: (0, 0), resource.RLIMIT_NPROC: (0, 0), resource.RLIMIT_CORE: (0, 0),
              resource.RLIMIT_CPU: (math.ceil(seconds) + 1, math.ceil(seconds) + 2),
              resource.RLIMIT_NOFILE: (4, 4)}  # fds 0-3 are open: no file or socket can be opened
    if os.path.exists("/proc/self/statm"):
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        limits[resource.RLIMIT_AS] = (mapped + MEMORY_LIMIT,) * 2
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    for which, limit in limits.items():
        resource.setrlimit(which, limit)


class _ImportLog:
    """A meta path finder that records every import the check attempts (the sandbox cannot read
    a module file) and lets the real finders go on."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        self.names.append(name)


def _child(check: Callable[[], Any], seconds: float, workdir: str, out: int) -> None:
    """In the forked child: keep only stdin (/dev/null), stdout/stderr and the result pipe as fd 3,
    sandbox, check, write the result and the imports it attempted, exit."""
    code, imports = 0, _ImportLog()
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.dup2(out, 3)
        out = 3
        os.closerange(4, os.sysconf("SC_OPEN_MAX"))
        sandbox(seconds, workdir)
        sys.meta_path.insert(0, imports)
        result = check()
        data = json.dumps({"result": result, "imports": imports.names}).encode()
    except BaseException as e:  # noqa: BLE001  (whatever happened, the child only reports it)
        data, code = json.dumps({"error": type(e).__name__, "imports": imports.names}).encode(), 1
    try:
        while data:
            data = data[os.write(out, data):]
    finally:
        os._exit(code)


def run_sandboxed(check: Callable[[], Any], seconds: float, workdir: str) -> dict[str, Any]:
    """{"result": ..., "imports": [...]} from `check()` run in a sandboxed child ("result" None
    when it failed or died), or {"timeout": True} when it ran past `seconds` or its CPU limit."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(check, seconds, workdir, w)
    os.close(w)
    data, deadline, late = b"", time.monotonic() + seconds, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            late = True
            break
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    if late:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGKILL, signal.SIGXCPU)
    if late or (killed and not data):
        return {"timeout": True}
    try:
        reply = json.loads(data)
        return {"result": reply.get("result"), "imports": [str(n) for n in reply.get("imports", [])]}
    except (ValueError, AttributeError, TypeError):
        return {"result": None, "imports": []}


def check_sandboxed(check: Callable[[], Any], seconds: float, workdir: str, failed: set[str]) -> dict[str, Any]:
    """`run_sandboxed`, again after importing here what the check tried to import lazily.

    The sandbox cannot read module files, so a library's lazy import (sympy's `simplify` imports
    sympy.physics on first use) fails there. Such modules, when their top-level package is
    already loaded, are imported in the worker and the check reruns in a fresh child, at most
    IMPORT_RETRIES times; each module is learned once per worker. `failed` keeps names that could
    not be imported here either (optional dependencies), which do not cause a rerun.
    """
    for _ in range(IMPORT_RETRIES + 1):
        out = run_sandboxed(check, seconds, workdir)
        missing = [n for n in dict.fromkeys(out.pop("imports", ()))
                   if n not in sys.modules and n not in failed and n.partition(".")[0] in sys.modules]
        if not missing:
            break
        for name in missing:
            try:
                importlib.import_module(name)
            except Exception:
                failed.add(name)
    return out


def _load(spec: str) -> Callable:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def serve() -> None:
    """Worker main: `python -P -c '...serve()' HANDLER WORKDIR [WARM]` (see the module docstring)."""
    handler_spec, workdir, *warm = sys.argv[1:]
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the protocol
    for spec in warm:
        _load(spec)()
    handler = _load(handler_spec)
    failed: set[str] = set()
    if run_sandboxed(lambda: True, START_TIMEOUT, workdir).get("result") is not True:
        reply.write("sandbox failed\n")  # never check an answer without the sandbox
        reply.flush()
        return
    reply.write("ready\n")
    reply.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            out = check_sandboxed(handler(req["request"]), float(req["timeout"]), workdir, failed)
        except Exception:  # a request the trusted part cannot prepare: no verdict
            out = {"result": None}
        reply.write(json.dumps(out) + "\n")
        reply.flush()


# --- caller side --------------------------------------------------------------------------------


class _Worker:
    """One worker process and its line protocol."""

    def __init__(self, handler: str, warm: str | None, workdir: str) -> None:
        path = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        argv = [sys.executable, "-P", "-c", "from crosspath.tasks.verifier import serve; serve()", handler, workdir]
        self.proc = subprocess.Popen(argv + ([warm] if warm else []), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=workdir, bufsize=0)
        status = self._read_line(START_TIMEOUT)
        if status != "ready":
            self.kill()
            raise RuntimeError(f"the {handler} worker did not start ({status or 'no answer'}); try: "
                               f"{sys.executable} -c 'from crosspath.tasks.verifier import serve'")

    def ask(self, request: dict, timeout: float) -> dict | None:
        """The worker's reply, or None when it died or did not answer in time."""
        data = memoryview((json.dumps({"request": request, "timeout": timeout}) + "\n").encode())
        try:
            while data:
                data = data[os.write(self.proc.stdin.fileno(), data):]
        except OSError:  # the worker died
            return None
        line = self._read_line(timeout * (IMPORT_RETRIES + 1) + PREP_TIMEOUT)
        return None if line is None else json.loads(line)

    def _read_line(self, timeout: float) -> str | None:
        fd, buf, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
        return buf.decode().strip()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class WorkerPool:
    """Up to MAX_WORKERS workers for one handler, shared by all threads (a thread waits for one).

    `handler` and `warm` are "module:function" names the worker imports; see the module docstring.
    """

    def __init__(self, handler: str, warm: str | None = None) -> None:
        self.handler, self.warm = handler, warm
        self.idle: list[_Worker] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_WORKERS)
        self.workdir: str | None = None
        atexit.register(self.close)

    def call(self, request: dict, timeout: float) -> Any:
        """`check()`'s result for `request` (None if it failed); TimedOut past `timeout` seconds.

        The wait for a free worker, or for a new one to start, is not part of `timeout`.
        """
        with self.slots:
            for _ in range(2):  # a second try only when the worker had died before this call
                with self.lock:
                    worker = self.idle.pop() if self.idle else None
                worker = worker or _Worker(self.handler, self.warm, self._workdir())
                reply = worker.ask(request, timeout)
                if reply is not None:
                    with self.lock:
                        self.idle.append(worker)
                    if reply.get("timeout"):
                        raise TimedOut(f"check ran past {timeout} s")
                    return reply.get("result")
                died = worker.proc.poll() is not None
                worker.kill()
                if not died:  # stuck in its trusted part: counted like a slow check
                    raise TimedOut(f"the {self.handler} worker gave no answer")
            return None

    def _workdir(self) -> str:
        with self.lock:
            if self.workdir is None:
                self.workdir = tempfile.mkdtemp(prefix="crosspath-check-")
                os.chmod(self.workdir, 0o500)  # empty, and not writable even by its owner
            return self.workdir

    def close(self) -> None:
        with self.lock:
            workers, self.idle = self.idle, []
            workdir, self.workdir = self.workdir, None
        for w in workers:
            w.kill()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
