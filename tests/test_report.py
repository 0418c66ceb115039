"""`crosspath report`: the HTML of a hand-written inference run (2 questions x 3 paths x 2 LeaP rounds
with peers) and of a training run renders, is self-contained, escapes model text, and shows the
right numbers; then headless Chromium loads it offline without a script error or a broken image and
takes screenshots (kept in tests/artifacts/).

Chromium comes from `bash scripts/install_chromium.sh` (part of the project's set-up); without it
the browser test is skipped.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from crosspath.cli import main
from crosspath.report import build_report, render
from crosspath.report.page import read_jsonl
from crosspath.report.plots import round_curve, training_keys
from crosspath.tasks.metrics import summarize

EVIL = "<script>document.documentElement.setAttribute('data-pwned','1')</script>"
EVIL_IMG = '<img src="https://evil.example/x.png" onerror="alert(1)">'
ARTIFACTS = Path(__file__).parent / "artifacts"
REMOTE = re.compile(r"""(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:https?:|ftp:)?//""", re.I)


def _round(r, text, answer, correct, peers=None, summary=None):
    rd = {"round": r, "text": text, "tokens": 16, "answer": answer, "correct": correct}
    if summary is not None:
        rd.update(summary=summary, summary_tokens=8)
    if peers is not None:
        rd["peers"] = [{"peer": j, "similarity": s} for j, s in peers]
    return rd


def _path(answer, correct, rounds):
    return {"text": "".join(rd["text"] for rd in rounds) + f" \\boxed{{{answer}}}", "answer": answer,
            "correct": correct, "tokens": 16 * len(rounds) + 8 * sum("summary" in rd for rd in rounds) + 4,
            "finish": "forced", "rounds": rounds}


def _row(qid, question, gold, paths):
    answers, correct = [p["answer"] for p in paths], [p["correct"] for p in paths]
    cons = max(set(answers), key=answers.count)
    return {"id": qid, "question": question, "answer": gold, "source": "demo", "choices": None, "meta": {},
            "method": "leap", "config": "abc123", "prompt": f"<|im_start|>user\n{question}<|im_end|>",
            "paths": paths, "cons_answer": cons, "cons_correct": cons == gold, "pass_at_1": sum(correct) / 3,
            "tokens": sum(p["tokens"] for p in paths), "wall_seconds": 1.5}


def _write_inference_run(d: Path) -> Path:
    ring = {0: [(1, 0.41), (2, 0.30)], 1: [(2, 0.52), (0, 0.41)], 2: [(0, 0.30), (1, 0.52)]}
    q0 = [  # P0 wrong -> right after comments, P1 right -> wrong (and carries the attack), P2 stays right
        _path("11", True, [_round(0, "8 + 3 = 12", "12", False, ring[0], "I get 12"),
                           _round(1, "no: 8 + 3 = 11", "11", True)]),
        _path("12", False, [_round(0, "8 + 3 = 11 " + EVIL, "11", True, ring[1], "11 " + EVIL_IMG),
                            _round(1, "hmm, 12 " + EVIL, "12", False)]),
        _path("11", True, [_round(0, "eleven: 11", "11", True, ring[2], "it is 11"),
                           _round(1, "still 11", "11", True)]),
    ]
    q1 = [
        _path("16", True, [_round(0, "5 + 4 = 9", None, False, ring[0], "9 so far"), _round(1, "9 + 7 = 16", "16", True)]),
        _path("15", False, [_round(0, "5 + 4 + 7", None, False, ring[1], "adding"), _round(1, "= 15", "15", False)]),
        _path("16", True, [_round(0, "16", "16", True, ring[2], "16"), _round(1, "yes 16", "16", True)]),
    ]
    rows = [_row("demo-0", "What is 8 + 3? " + EVIL, "11", q0), _row("demo-1", "What is 5 + 4 + 7?", "16", q1)]
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"method": "leap", "model": "tiny-random", "task": "demo", "paths": 3, "rounds": 2, "top_k": 2,
              "router": "dispersed", "api_key": "sk-secret-123", "stop": [EVIL]}
    summary = summarize(rows)
    summary.update(method="leap", task="demo", model="tiny-random", backend="hf", paths=3, wall_seconds=3.0,
                   tokens_per_second=summary["tokens"] / 3.0, config=config, out=str(d))
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    return d


def _write_training_run(d: Path) -> Path:
    """Rows shaped like crosspath.train.trainer's: an eval-only step 0, eval every 4 steps, a KL of
    None now and then, a boolean, and a half-written last line."""
    (d / "checkpoints" / "step-4").mkdir(parents=True)
    (d / "checkpoints" / "step-8").mkdir()
    (d / "checkpoints" / ".tmp-step-12").mkdir()  # a checkpoint being written: not listed
    (d / "samples").mkdir()
    (d / "samples" / "step-12.jsonl").write_text(json.dumps({"step": 12, "text": "7 " + EVIL, "reward": 1.0}) + "\n")
    (d / "config.yaml").write_text(yaml.safe_dump({"algo": "m3po", "model": "tiny-random", "lr": 1e-5, "steps": 12}))
    lines = [json.dumps({"step": 0, "eval_accuracy": 0.15, "eval_format_rate": 0.5, "eval_questions": 20}) + "\n"]
    for s in range(1, 13):
        m = {"step": s, "epoch": s / 100, "reward_mean": 0.1 + 0.05 * s, "reward_std": 0.2, "accuracy": 0.1 + 0.04 * s,
             "completion_length": 60 + s, "filtered_frac": 0.25, "kl": None if s % 3 == 0 else 0.001 * s,
             "loss": 0.5 - 0.02 * s, "grad_norm": 1.0, "lr": 1e-5, "skipped": False, "step_seconds": 30.0}
        if s % 4 == 0:
            m.update(eval_accuracy=0.15 + 0.02 * s, eval_format_rate=0.6, eval_questions=20)
        lines.append(json.dumps(m) + "\n")
    (d / "metrics.jsonl").write_text("".join(lines) + '{"step": 13, "rew')  # a run writing right now
    return d


@pytest.fixture
def inference_run(tmp_path):
    return _write_inference_run(tmp_path / "leap-run")


@pytest.fixture
def training_run(tmp_path):
    return _write_training_run(tmp_path / "m3po-run")


def test_inference_report_shows_paths_rounds_peers_and_changes(inference_run):
    html = render(inference_run)
    assert html.count("data-path=") == 6  # 2 questions x 3 paths, side by side
    assert html.count('data-question="') == 2
    assert html.count("<th scope=\"row\">round 0") == 2 and html.count("<th scope=\"row\">round 1") == 2
    assert html.count("changed after comments") == 4  # q0: P0 up, P1 down; q1: P0, P1 from no answer
    assert html.count('td class="cell changed up"') == 2 and html.count('td class="cell changed down"') == 1
    assert 'received ← <span class="peer">P1</span> <small>sim 0.41</small>' in html
    assert "sent → " in html and "I get 12" in html  # summaries and who read them
    assert html.count('<img src="data:image/png;base64,') == 2  # accuracy vs tokens, influence
    assert "cons@3" in html and "pass@2" in html and "tokens per second" in html
    assert "sk-secret-123" not in html  # secrets in the config are redacted


def test_training_report_shows_curves_checkpoints_and_config(training_run):
    html = render(training_run)
    assert html.count('<img src="data:image/png;base64,') == 1
    assert "m3po run, at step 12" in html  # the half-written 13th line is skipped
    assert "best eval_accuracy" in html and "0.3900" in html and "first eval_accuracy" in html
    assert "<code>step-4</code>, <code>step-8</code></p>" in html  # not the .tmp- one
    assert "samples/step-12.jsonl" in html
    assert (training_run / "metrics.jsonl").read_text().endswith('"rew')  # the report only reads
    keys = training_keys(read_jsonl(training_run / "metrics.jsonl"))  # one panel each, known ones first
    assert keys == ["reward_mean", "accuracy", "eval_accuracy", "kl", "loss", "completion_length", "filtered_frac",
                    "step_seconds", "eval_format_rate", "grad_norm", "lr"]  # no bools, counters or positions


@pytest.mark.parametrize("which", ["inference", "training"])
def test_page_is_self_contained(which, inference_run, training_run):
    html = render(inference_run if which == "inference" else training_run)
    assert not REMOTE.search(html), REMOTE.search(html)
    assert "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html  # CSP: nothing can be fetched


def test_model_text_is_escaped(inference_run, training_run):
    for html in (render(inference_run), render(training_run)):
        assert EVIL not in html and "<img src=\"https://evil" not in html
        assert len(re.findall(r"<script\b", html)) == 2  # the page's own two
    html = render(inference_run)
    assert "&lt;script&gt;document.documentElement.setAttribute(&#x27;data-pwned&#x27;" in html
    assert "&lt;img src=&quot;https://evil.example/x.png&quot;" in html


def test_round_curve_and_question_cap(inference_run):
    rows = [json.loads(line) for line in (inference_run / "results.jsonl").read_text().splitlines()]
    curve = round_curve(rows)
    assert [c[0] for c in curve] == ["r0", "r1", "final"]
    assert [round(c[2], 4) for c in curve] == [0.5, round(4 / 6, 4), round(4 / 6, 4)]
    assert curve[0][1] == 24 and curve[1][1] == 40  # 16 round + 8 summary tokens, then 16 more
    html = render(inference_run, max_questions=1)
    assert html.count("data-path=") == 3 and "Showing the first 1 of 2 questions" in html


def test_run_in_progress_is_read_not_repaired(inference_run):
    """No summary.json yet and a half-written last line: numbers come from the finished rows, and
    the file stays as it is (the runner owns it)."""
    (inference_run / "summary.json").unlink()
    results = inference_run / "results.jsonl"
    first = results.read_text().splitlines()[0]
    results.write_text(first + "\n" + '{"id": "demo-1", "pa')
    html = render(inference_run)
    assert html.count("data-path=") == 3 and "cons@3" in html and "leap on demo, 1 question " in html
    assert results.read_text().endswith('"pa')


def test_cli_writes_report(inference_run, tmp_path, capsys):
    assert main(["report", str(inference_run)]) == 0
    assert (inference_run / "report.html").stat().st_size > 10_000
    assert main(["report", str(inference_run), "-o", str(tmp_path / "r.html"), "--max-questions", "0"]) == 0
    assert (tmp_path / "r.html").exists()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0 and "--max-questions" in capsys.readouterr().out


def _chromium() -> str | None:
    for name in (os.environ.get("CROSSPATH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("which,paths", [("inference", 6), ("training", 0)])
def test_headless_chromium_loads_report(which, paths, inference_run, training_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not found on PATH: run `bash scripts/install_chromium.sh` (the project set-up does)")
    ARTIFACTS.mkdir(exist_ok=True)
    out = build_report(inference_run if which == "inference" else training_run, ARTIFACTS / f"report-{which}.html")
    url = out.resolve().as_uri()
    dom = _browser(exe, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    root = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert 'data-js="ok"' in root, f"the page's script did not run: {root}"  # CSP hashes match, no error
    assert "data-js-error" not in root, root
    assert 'data-images-broken="0"' in root and 'data-images-ok="0"' not in root, root
    assert "data-pwned" not in root
    assert dom.stdout.count("data-path=") == paths
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]  # the page logs nothing
    assert not console, console
    png = ARTIFACTS / f"report-{which}.png"
    png.unlink(missing_ok=True)
    shot = _browser(exe, tmp_path / "profile-shot", "--hide-scrollbars", "--window-size=1400,1000",
                    f"--screenshot={png}", url)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[:2] == (1000, 1400) and pixels[..., :3].std() > 0.05  # not a blank page


def test_wrong_typed_lines_are_reported_and_skipped(inference_run, capsys):
    """Each bad line of results.jsonl is named by file:line and field (a warning, and on the page),
    skipped, and the two good questions render as before."""
    results = inference_run / "results.jsonl"
    good = results.read_text().splitlines()
    q0 = json.loads(good[0])

    def broken(**change):  # q0 with one field replaced; keys like "paths.0.tokens" reach inside
        row = json.loads(json.dumps(q0))
        for dotted, value in change.items():
            *where, last = dotted.split(".")
            target = row
            for k in where:
                target = target[int(k) if k.isdigit() else k]
            target[int(last) if last.isdigit() else last] = value
        return json.dumps(row)

    bad = {  # line number in the file -> the field its message must name
        2: (broken(**{"paths.0.tokens": "many"}), "'paths[0].tokens' should be a number, got str \"many\""),
        3: (broken(paths="P0 P1 P2"), "'paths' should be a list"),
        4: (broken(**{"paths.1": 7}), "'paths[1]' should be an object"),
        5: (broken(**{"paths.0.rounds": "r0"}), "'paths[0].rounds' should be a list"),
        6: (broken(**{"paths.2.rounds.0.peers.0.peer": "P1"}), "'paths[2].rounds[0].peers[0].peer' should be an integer"),
        7: (broken(**{"paths.0.rounds.1.tokens": None}), "'paths[0].rounds[1].tokens' should be a number, got null"),
        8: (broken(pass_at_1="half"), "'pass_at_1' should be a number"),
        9: (broken(wall_seconds="1.5 s"), "'wall_seconds' should be a number"),
        10: (broken(**{"paths.1.correct": "yes"}), "'paths[1].correct' should be true, false or null"),
        11: ("[1, 2, 3]", "not a JSON object but list"),
        12: ('{"id": "demo-9", "paths": [', "not valid JSON"),
    }
    lines = [good[0]] + [bad[n][0] for n in sorted(bad)] + [good[1]]
    results.write_text("\n".join(lines) + "\n")
    said = []
    html = render(inference_run, warn=said.append)
    assert len(said) == len(bad)
    for message, (n, (_, field)) in zip(said, sorted(bad.items())):
        assert message.startswith(f"{results}:{n}: ") and field in message and message.endswith("; line skipped"), message
    assert html.count('data-question="') == 2 and html.count("data-path=") == 6  # the rest renders
    assert "leap on demo, 2 questions" in html and "11 lines of results.jsonl skipped" in html
    assert "<code>results.jsonl:2</code>: field &#x27;paths[0].tokens&#x27; should be a number" in html

    with pytest.warns(UserWarning) as seen:  # without `warn`: Python warnings
        render(inference_run)
    assert [str(w.message) for w in seen] == said
    capsys.readouterr()
    assert main(["report", str(inference_run)]) == 0  # the command line: one warning per line on stderr
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(bad) and err[0].startswith(f"crosspath report: warning: {results}:2: field 'paths[0].tokens'")


def test_page_holds_no_absolute_path_of_the_machine(inference_run, training_run, tmp_path):
    """The run directory appears by its name; absolute paths in the config (out, a local model, a
    task file) are shown relative to the run directory or by their last part."""
    config = yaml.safe_load((inference_run / "config.yaml").read_text())
    config.update(out=str(inference_run.resolve()), model="/opt/models/tiny-random",
                  task=str(tmp_path / "data" / "questions.jsonl"))
    (inference_run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = json.loads((inference_run / "summary.json").read_text())
    summary.update(config=config, model=config["model"], task=config["task"])
    (inference_run / "summary.json").write_text(json.dumps(summary))
    (training_run / "config.yaml").write_text(yaml.safe_dump({"algo": "m3po", "out": str(training_run.resolve()),
                                                              "resume_from": str(training_run / "checkpoints")}))
    for run in (inference_run, training_run):
        html = render(run)
        assert str(tmp_path) not in html and str(tmp_path.resolve()) not in html and "/opt/models" not in html
        assert f"{run.name} · " in html  # the subtitle names the run directory
    html = render(inference_run)
    assert "<code>…/tiny-random</code>" in html and "<code>…/questions.jsonl</code>" in html
    assert "<dt>out</dt><dd><code>leap-run</code>" in html
    assert "<code>m3po-run/checkpoints</code>" in render(training_run)
    (training_run / "config.yaml").write_text(f"out: {training_run.resolve()}\nnot: [valid yaml\n")  # shown as text
    html = render(training_run)
    assert str(tmp_path.resolve()) not in html and "out: m3po-run" in html
