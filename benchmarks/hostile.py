"""Hostile and careless inputs: every probe of the hardening issue, replayed against the real CLI.

    python benchmarks/hostile.py [--only SUBSTRING] [--keep DIR]

Each probe runs `crosspath ...` in a subprocess (or, for grading, the library call) on the tiny
random model, with scripted model output served by a loopback OpenAI-compatible server that
answers every completion with a chosen text: the payload a hostile model would write. It prints one
table: probe, expected, observed, pass. Nothing leaves 127.0.0.1; every subprocess has a time limit.
The same behaviours are asserted by the fast test tier; this script shows them end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from openai_stub import StubServer  # noqa: E402

RG_GENERATORS = ("chain_sum", "basic_arithmetic", "countdown", "puzzle24", "string_insertion", "spiral_matrix",
                 "binary_matrix", "n_queens", "polynomial_multiplication")
MODEL = "tiny-random"


class Upstream(StubServer):
    """An OpenAI-compatible server whose every completion is `text` (a hostile model)."""

    def __init__(self, text: str):
        super().__init__(model=MODEL)
        self.text = text

    def answer(self, body: dict) -> dict:
        n = int(body.get("n", 1))
        return {"id": "x", "object": "text_completion", "model": MODEL,
                "choices": [{"index": j, "text": self.text, "finish_reason": "stop", "stop_reason": None,
                             "logprobs": None} for j in range(n)],
                "usage": {"prompt_tokens": 1, "completion_tokens": 8 * n, "total_tokens": 1 + 8 * n}}


def cli(*args: str, timeout: float = 300, env: dict | None = None) -> tuple[int, str, float]:
    """rc, stderr+stdout tail, seconds of `crosspath ARGS`."""
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "-m", "crosspath.cli", *args], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, cwd=ROOT)
        return p.returncode, (p.stderr + p.stdout)[-3000:], time.time() - t0
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout} s", time.time() - t0


def clean_error(rc: int, out: str, *needles: str, code: int = 2) -> tuple[str, bool]:
    """(what was seen, whether it is a clean error): exit `code`, no traceback, every needle in the output."""
    ok = rc == code and "Traceback" not in out and all(n.lower() in out.lower() for n in needles)
    last = [ln for ln in out.strip().splitlines() if ln.strip() and "%|" not in ln][-1:] or [""]
    return f"rc {rc}: {last[0][:110]}".replace("|", "/"), ok


# --- the probes ------------------------------------------------------------------------------------


def probe_rg_payload(tmp: Path) -> list[tuple[str, str, str, bool]]:
    rows = []
    for name in RG_GENERATORS:
        marker = tmp / f"pwned-{name}"
        payload = f"\\boxed{{__import__('os').system('touch {marker}')}}"
        with Upstream(payload) as up:
            rc, out, _ = cli("run", "--method", "independent", "--backend", "openai", "--base-url", up.url,
                             "--model", MODEL, "--task", f"rg:{name}", "--limit", "2", "--paths", "2",
                             "--out", str(tmp / f"rg-{name}"), "--overwrite")
        rows.append((f"rg:{name}: `\\boxed{{__import__('os').system(...)}}` through `run --backend openai`",
                     "run completes, graded wrong, no file created",
                     f"rc {rc}, file {'CREATED' if marker.exists() else 'absent'}", rc == 0 and not marker.exists()))
    return rows


def probe_power_tower(tmp: Path) -> list[tuple[str, str, str, bool]]:
    with Upstream("\\boxed{9**9**8}") as up:
        rc, out, secs = cli("run", "--method", "independent", "--backend", "openai", "--base-url", up.url,
                            "--model", MODEL, "--task", "rg:countdown", "--limit", "2", "--paths", "2",
                            "--out", str(tmp / "tower"), "--overwrite", timeout=120)
    ok = rc == 0
    if ok:
        s = json.loads((tmp / "tower" / "summary.json").read_text())
        ok = s.get("pass@1", s.get("pass_at_1", 1)) == 0
    return [("rg:countdown `\\boxed{9**9**8}`", "graded wrong within seconds, run completes",
             f"rc {rc} in {secs:.0f} s", ok)]


def probe_quadratic_boxed(tmp: Path) -> list[tuple[str, str, str, bool]]:
    from crosspath.tasks.grading import extract_answer

    text = "\\boxed{" * 60_000 + "7"
    t0 = time.time()
    ans = extract_answer(text)
    secs = time.time() - t0
    return [("extraction on 420k chars of unclosed `\\boxed{`", "linear time (< 2 s here)",
             f"{secs:.2f} s, answer {ans!r}"[:60], secs < 2)]


def probe_factorial() -> list[tuple[str, str, str, bool]]:
    from crosspath.tasks import grade
    from crosspath.tasks.problem import Problem

    _, ok = grade(Problem(id="f", question="?", answer="5", source="t"), "\\boxed{5!}")
    return [("`\\boxed{5!}` against gold 5", "wrong", "correct" if ok else "wrong", not ok)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def probe_run_inputs(tmp: Path) -> list[tuple[str, str, str, bool]]:
    rows = []
    base = ("run", "--method", "independent", "--model", MODEL, "--max-tokens", "4", "--paths", "1")
    huge = _jsonl(tmp / "huge.jsonl", [{"id": "big-1", "question": "x " * 2_500_000, "answer": "1"}])
    rc, out, secs = cli(*base, "--task", str(huge), "--out", str(tmp / "huge"), timeout=120)
    rows.append(("5 MB question", "exit 2 naming the question id and the limit", f"{clean_error(rc, out)[0]} ({secs:.0f} s)",
                 clean_error(rc, out, "big-1", "longer than")[1]))
    bad = tmp / "latin1.jsonl"
    bad.write_bytes(b'{"question": "ok", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    rc, out, _ = cli(*base, "--task", str(bad), "--out", str(tmp / "latin1"))
    rows.append(("non-UTF-8 task file", "exit 2 naming file and line 2", *clean_error(rc, out, "latin1.jsonl:2")))
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    rc, out, _ = cli(*base, "--task", str(empty), "--out", str(tmp / "empty"))
    rows.append(("empty task file", "exit 2, not a 0-question success", *clean_error(rc, out, "empty.jsonl")))
    notmodel = tmp / "not-a-model"
    notmodel.mkdir(exist_ok=True)
    (notmodel / "readme.txt").write_text("hello")
    rc, out, _ = cli(*base, "--task", "demo", "--limit", "1", "--model", str(notmodel), "--out", str(tmp / "nm"))
    rows.append(("--model is a folder that is not a model", "exit 2 naming the folder", *clean_error(rc, out, "not-a-model")))
    afile = tmp / "a-file"
    afile.write_text("x")
    rc, out, _ = cli(*base, "--task", "demo", "--limit", "1", "--out", str(afile / "run"))
    rows.append(("--out under a file", "exit 2", *clean_error(rc, out, "a-file")))
    for flag, value in (("--paths", "0"), ("--max-tokens", "0"), ("--temperature", "-1"), ("--top-p", "0"),
                        ("--top-p", "1.5"), ("--min-p", "2"), ("--rounds", "0")):
        rc, out, _ = cli(*base, "--task", "demo", "--limit", "1", flag, value, "--out", str(tmp / "range"))
        rows.append((f"run {flag} {value}", "exit 2 naming the option", *clean_error(rc, out, flag)))
    for flag, value in (("--warmup-ratio", "2"), ("--micro-batch-size", "0"), ("--lr", "-1")):
        rc, out, _ = cli("train", "--model", MODEL, "--task", "rg:chain_sum", "--steps", "1", flag, value,
                         "--out", str(tmp / "train-range"))
        rows.append((f"train {flag} {value}", "exit 2 naming the option", *clean_error(rc, out, flag)))
    ylist = tmp / "list.yaml"
    ylist.write_text("stop: abc\n")
    rc, out, _ = cli(*base, "--task", "demo", "--limit", "1", "--config", str(ylist), "--out", str(tmp / "ylist"))
    rows.append(("YAML: a string for a list option", "exit 2 naming the option", *clean_error(rc, out, "stop")))
    ysyn = tmp / "syntax.yaml"
    ysyn.write_text("paths: 2\nrounds: [1, 2\n")
    rc, out, _ = cli(*base, "--task", "demo", "--limit", "1", "--config", str(ysyn), "--out", str(tmp / "ysyn"))
    rows.append(("YAML syntax error", "exit 2 naming file, line and column", *clean_error(rc, out, "syntax.yaml:", "YAML syntax error")))
    return rows


def probe_upstream(tmp: Path) -> list[tuple[str, str, str, bool]]:
    rows = []
    base = ("run", "--method", "independent", "--backend", "openai", "--model", MODEL, "--task", "demo",
            "--limit", "1", "--paths", "1", "--max-tokens", "4")
    rc, out, _ = cli(*base, "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp / "down"), timeout=300)
    rows.append(("openai upstream down", "exit 2 naming the URL", *clean_error(rc, out, "127.0.0.1:9")))
    srv = StubServer(model=MODEL).start()
    srv.fail("garbage", times=1000)
    rc, out, _ = cli(*base, "--base-url", srv.url, "--out", str(tmp / "garbage"), timeout=300)
    srv.stop()
    rows.append(("openai upstream answers garbage", "exit 2 after retries", *clean_error(rc, out, "127.0.0.1")))
    return rows


def probe_run_dirs(tmp: Path) -> list[tuple[str, str, str, bool]]:
    rows = []
    out_dir = tmp / "keep"
    base = ("run", "--method", "independent", "--model", MODEL, "--task", "demo", "--limit", "1", "--paths", "1",
            "--max-tokens", "4", "--out", str(out_dir))
    rc0, _, _ = cli(*base)
    rc, out, _ = cli(*base, "--overwrite", "--model", str(tmp / "no-such-model"))
    survived = (out_dir / "results.jsonl").exists()
    obs, ok = clean_error(rc, out)
    rows.append(("--overwrite with a model that does not exist", "exit 2, old run kept", f"{obs}; old run "
                 f"{'kept' if survived else 'DELETED'}", rc0 == 0 and ok and survived))
    rc, out, _ = cli(*base, "--resume", "--paths", "2")
    rows.append(("--resume with another --paths", "exit 2 naming `paths`", *clean_error(rc, out, "paths")))
    slow = subprocess.Popen([sys.executable, "-m", "crosspath.cli", "run", "--method", "independent", "--model", MODEL,
                             "--task", "demo", "--limit", "12", "--paths", "4", "--max-tokens", "256", "--out",
                             str(tmp / "locked")], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        if (tmp / "locked" / "config.yaml").exists():
            break
        time.sleep(0.1)
    rc, out, _ = cli("run", "--method", "independent", "--model", MODEL, "--task", "demo", "--limit", "12",
                     "--paths", "4", "--max-tokens", "256", "--out", str(tmp / "locked"), "--resume")
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    rows.append(("two processes on one --out", "the second exits 2: in use by pid N", *clean_error(rc, out, "pid")))
    return rows


def probe_train_nan(tmp: Path) -> list[tuple[str, str, str, bool]]:
    out_dir = tmp / "nan"
    common = ("train", "--model", MODEL, "--task", "rg:chain_sum", "--group-size", "2", "--questions-per-step", "1",
              "--max-new-tokens", "8", "--eval-size", "2", "--eval-every", "0", "--save-every", "1", "--out", str(out_dir))
    rc, out, _ = cli(*common, "--steps", "3", "--lr", "1e30", timeout=600)
    import torch
    from safetensors.torch import load_file

    bad = [p.parent.name for p in out_dir.glob("checkpoints/*/adapter_model.safetensors")
           if not all(torch.isfinite(t).all() for t in load_file(p).values())]
    obs, ok = clean_error(rc, out, "step", "--resume", code=3)
    rc2, out2, _ = cli("train", "--out", str(out_dir), "--resume", "--steps", "3", "--lr", "1e-4", timeout=600)
    return [("train --lr 1e30", "exit 3 naming the step and the resume command; no non-finite checkpoint", f"{obs}; non-finite checkpoints: {bad or 'none'}",
             ok and not bad),
            ("resume with a sane --lr, as advised", "runs", f"rc {rc2}", rc2 == 0)]


def probe_report(tmp: Path) -> list[tuple[str, str, str, bool]]:
    run_dir = tmp / "keep"
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["pass_at_1"] = "not a number"
    row["id"] = "typed-wrong"
    (run_dir / "results.jsonl").write_text("\n".join(lines + [json.dumps(row)]) + "\n")
    rc, out, _ = cli("report", str(run_dir), "--out", str(tmp / "report.html"))
    html = (tmp / "report.html").read_text() if (tmp / "report.html").exists() else ""
    return [("report on a results line with a wrong-typed field", "warns with the line, renders the rest",
             f"rc {rc}: {(out.strip().splitlines() or [''])[-1][:80]}", rc == 0 and "results.jsonl:2" in out and bool(html)),
            ("report embeds no absolute path of the machine", "no path", "path found" if str(tmp) in html else "none",
             bool(html) and str(tmp) not in html)]


def probe_serve(tmp: Path) -> list[tuple[str, str, str, bool]]:
    import socket
    import threading

    import httpx

    rows = []
    rc, out, _ = cli("serve", "--model", MODEL, "--api-key", "", timeout=60)
    rows.append(("serve --api-key ''", "exit 2", *clean_error(rc, out, "api")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "crosspath.cli", "serve", "--model", MODEL, "--port", str(port),
                             "--api-key", "k", "--paths", "2", "--rounds", "1", "--round-tokens", "8",
                             "--answer-tokens", "4", "--max-prompt-tokens", "512"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
    try:
        for _ in range(600):
            try:
                httpx.get(url + "/v1/models", headers=auth, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        for route in ("/docs", "/openapi.json"):
            code = httpx.get(url + route, timeout=10).status_code
            rows.append((f"GET {route} without the key", "401", str(code), code == 401))
        docs = httpx.get(url + "/docs", headers=auth, timeout=10).text
        rows.append(("/docs loads nothing from the network", "no http(s) URL in the page",
                     "external URL" if "https://" in docs or "http://cdn" in docs else "none",
                     "https://" not in docs and "http://cdn" not in docs))
        results: dict[str, int] = {}

        def send(name: str, content: str) -> None:
            body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
            raw = json.dumps(body, ensure_ascii=True) if "\ud800" not in content else \
                json.dumps(body).replace("\\ud800", "\\ud800")
            r = httpx.post(url + "/v1/chat/completions", content=raw, headers={**auth, "Content-Type": "application/json"},
                           timeout=300)
            results[name] = r.status_code

        threads = [threading.Thread(target=send, args=(f"honest-{i}", "What is 2+3?")) for i in range(3)]
        def send_empty() -> None:
            r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "", "max_tokens": 8}, headers=auth,
                           timeout=300)
            results["empty"] = r.status_code

        threads += [threading.Thread(target=send_empty), threading.Thread(target=send, args=("surrogate", "\ud800"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        honest = [results.get(f"honest-{i}") for i in range(3)]
        rows.append(("empty completion prompt + lone surrogate sent with 3 honest chat requests",
                     "honest 200, bad ones 400/422", f"honest {honest}, empty {results.get('empty')}, surrogate "
                     f"{results.get('surrogate')}", honest == [200] * 3 and results.get("empty") in (400, 422)
                     and results.get("surrogate") in (400, 422)))
        t0 = time.time()
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x " * 2_500_000}, headers=auth,
                       timeout=120)
        rows.append(("5 MB prompt to serve", "400/413 naming the limit, before any work", f"{r.status_code} in {time.time() - t0:.1f} s: "
                     f"{r.text[:80]}".replace("|", "/"), r.status_code in (400, 413) and "max" in r.text.lower()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc2 = subprocess.Popen([sys.executable, "-m", "crosspath.cli", "serve", "--model", MODEL, "--host", "0.0.0.0",
                              "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={k: v for k, v in os.environ.items() if k != "CROSSPATH_API_KEY"})
    for _ in range(600):  # until it answers (the warning is printed before the model loads)
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            if proc2.poll() is not None:
                break
            time.sleep(0.2)
    proc2.send_signal(signal.SIGTERM)
    text = proc2.communicate(timeout=30)[0]
    rows.append(("serve on 0.0.0.0 without a key", "a warning", "warned" if "warning" in text.lower() else "silent",
                 "warning" in text.lower()))
    return rows


PROBES: dict[str, Callable[[Path], list]] = {
    "rg-payload": probe_rg_payload, "power-tower": probe_power_tower, "quadratic-boxed": probe_quadratic_boxed,
    "factorial": lambda tmp: probe_factorial(), "run-inputs": probe_run_inputs, "upstream": probe_upstream,
    "run-dirs": probe_run_dirs, "report": probe_report, "train-nan": probe_train_nan, "serve": probe_serve,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help=f"probe groups to run (default: all): {', '.join(PROBES)}")
    ap.add_argument("--keep", default=None, help="folder for the probes' files (default: a temporary folder, removed)")
    args = ap.parse_args()
    from crosspath.envinfo import machine

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="hostile-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\ncommand: python benchmarks/hostile.py {' '.join(sys.argv[1:])}\n")
    rows = []
    for name, fn in PROBES.items():
        if args.only and name not in args.only:
            continue
        try:
            got = fn(tmp)
        except Exception as e:  # a probe that crashes is a failed probe, not a crashed table
            got = [(name, "runs", f"probe crashed: {type(e).__name__}: {e}"[:120], False)]
        rows += got
        for r in got:
            print(f"  {'ok ' if r[3] else 'FAIL'} {r[0]}", file=sys.stderr, flush=True)
    print("| probe | expected | observed | pass |\n|---|---|---|---|")
    for probe, expected, observed, ok in rows:
        print(f"| {probe} | {expected} | {observed} | {'yes' if ok else '**no**'} |")
    print(f"\n{sum(r[3] for r in rows)} of {len(rows)} probes pass")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
