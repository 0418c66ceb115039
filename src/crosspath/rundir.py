"""Run directories: what `run`/`eval`, `train` and `distill train` share before they write.

    claim = claim_run_dir(out, to_dict(cfg), markers=("results.jsonl",), resume=..., overwrite=...)
    ...   load the model, the task, check every prompt: the whole new configuration
    claim.clear()       # only now does --overwrite delete the old run's outputs
    ...   write
    claim.release()     # (also when the claim is garbage collected, or the process ends)

`claim_run_dir`, before anything is loaded:

- `--out` must be a folder that can be created and written: a path under a file, or a folder
  without write permission, is a `RunDirError` naming it;
- a lock file `<out>/.lock` holds the owner's pid under an exclusive `flock`: a second process on
  the same folder gets "in use by pid N". The kernel drops the flock when its process dies, so the
  lock file of a killed run is simply taken over. Claims of one process are re-entrant;
- a folder that already holds a run (one of `markers` is a non-empty file or folder) needs
  `--resume` or `--overwrite`; `--resume` with options that differ from the saved config.yaml is
  refused with the options named ("temperature 0.6 -> 0.1"); `--overwrite` deletes nothing until
  `clear()`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Iterable

from .errors import CrosspathError


def default_run_dir(kind: str, task: str, model: str) -> Path:
    """The run directory when --out is not given: runs/<kind>-<task>-<model name>, unsafe characters -> "_".

    >>> default_run_dir("train-grpo", "rg:chain_sum", "models/SmolLM2-135M")
    PosixPath('runs/train-grpo-rg_chain_sum-SmolLM2-135M')
    """
    clean = lambda s: "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)  # noqa: E731
    return Path("runs") / f"{kind}-{clean(task)}-{clean(Path(model).name)}"

LOCK_NAME = ".lock"


class RunDirError(CrosspathError, ValueError):
    """--out cannot be used: under a file, not writable, in use, or resumed with other options."""


class RunExistsError(RunDirError, FileExistsError):
    """--out already holds a run and neither --resume nor --overwrite was given."""


# --- lock ---------------------------------------------------------------------------------------------

_HELD: dict[str, list] = {}  # lock path -> [fd, number of claims] held by this process
_GUARD = threading.RLock()  # re-entrant: a collected RunLock may release from inside a claim


def _acquire(path: str, folder: Path) -> int:
    try:
        import fcntl
    except ImportError:  # no flock on this platform: the folder is not protected
        fcntl = None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise RunDirError(f"cannot write to --out {folder}: {e.strerror} ({path})") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RunDirError(f"{folder} is in use by pid {pid} (lock file {path}): wait for that process to "
                              "finish or stop it, or choose another --out") from None
        except OSError:  # a filesystem without locks: go on unprotected
            break
        try:  # the previous owner may have removed the file between our open and flock
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class RunLock:
    """An exclusive claim on a folder for this process (re-entrant within the process)."""

    def __init__(self, folder: str | Path):
        self.path = str(Path(folder).resolve() / LOCK_NAME)
        with _GUARD:
            held = _HELD.get(self.path)
            if held is not None:
                held[1] += 1
            else:
                _HELD[self.path] = [_acquire(self.path, Path(folder)), 1]
        self._held = True

    def release(self) -> None:
        with _GUARD:
            if not getattr(self, "_held", False):
                return
            self._held = False
            held = _HELD[self.path]
            held[1] -= 1
            if held[1]:
                return
            del _HELD[self.path]
            try:
                if os.stat(self.path).st_ino == os.fstat(held[0]).st_ino:
                    os.unlink(self.path)
            except OSError:
                pass
            os.close(held[0])

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the OS closes the file and drops the flock
            pass


# --- the claim ------------------------------------------------------------------------------------------


def check_writable(folder: Path, out: Path | None = None) -> None:
    """Create `folder` (and its parents) or raise RunDirError saying why it cannot hold the output;
    messages name `out` (default: the folder itself; a file's --out names the file)."""
    out = out or folder
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                what = "is a file, not a folder" if parent == out else f"is under {parent}, which is a file"
                raise RunDirError(f"--out {out} {what}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create --out {out}: {e.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {out} is not writable (permission denied on {folder})")


def _holds(path: Path) -> bool:
    return (path.is_file() and path.stat().st_size > 0) or (path.is_dir() and any(path.iterdir()))


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """The options whose values differ, as 'name old -> new' (keys missing on one side: 'unset').

    >>> config_diff({"paths": 4, "out": "a"}, {"paths": 2, "out": "b", "top_k": 1}, ignore={"out"})
    ['paths 4 -> 2', 'top_k unset -> 1']
    """
    skip = set(ignore)
    show = lambda d, k: repr(d[k]) if k in d else "unset"  # noqa: E731
    return [f"{k} {show(old, k)} -> {show(new, k)}" for k in sorted(set(old) | set(new))
            if k not in skip and old.get(k) != new.get(k)]


class Claim:
    """What `claim_run_dir` returns: the lock, and the outputs --overwrite deletes on `clear()`."""

    def __init__(self, out: Path, lock: RunLock | None, pending: list[Path]):
        self.out, self.lock, self.pending = out, lock, pending

    def clear(self) -> None:
        """Delete the old run's outputs (with --overwrite); call it once the new run is known to work."""
        import shutil

        for p in self.pending:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink()
        self.pending = []

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def claim_run_dir(out: str | Path, config: dict[str, Any], *, markers: Iterable[str], resume: bool = False,
                  overwrite: bool = False, ignore: Iterable[str] = (), clear: Iterable[str] | None = None,
                  main: bool = True, what: str = "run", renamed: dict[str, str] | None = None) -> Claim:
    """Check, create and lock `out` for a run whose options are `config` (see the module doc).

    markers: names whose presence means `out` holds a run; clear: names --overwrite deletes
    (None: everything but the lock); ignore: options that may change on --resume; main: False on
    the non-zero ranks of a distributed job (they only compare configurations); renamed: {old
    option name: new} (config.RENAMED) so a run saved under the old names resumes.
    """
    out = Path(out)
    lock = None
    if main:
        check_writable(out)
        lock = RunLock(out)
    try:
        holds = any(_holds(out / m) for m in markers)
        pending: list[Path] = []
        if holds and resume:
            saved = out / "config.yaml"
            if saved.exists():
                from .config import read_yaml

                before = {(renamed or {}).get(k, k): v for k, v in read_yaml(saved).items()}  # old option names
                diff = config_diff(before, config, ignore)
                if diff:
                    raise RunDirError(f"{out} holds a {what} made with other options: {'; '.join(diff)}. Resume "
                                      "with the same options, use another --out, or --overwrite to replace it")
        elif holds:
            if not overwrite:
                raise RunExistsError(f"{out} already holds a {what}: pass --resume to continue it or --overwrite "
                                     "to replace it")
            names = clear if clear is not None else [p.name for p in out.iterdir() if p.name != LOCK_NAME]
            pending = [out / n for n in names] if main else []
        return Claim(out, lock, pending)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
