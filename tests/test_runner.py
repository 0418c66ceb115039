"""The shared inference loop: run directory, resume, CLI, errors."""

import json
import re

import pytest

from crosspath.backends.base import Completion
from crosspath.cli import main
from crosspath.infer.runner import RunConfig, read_results, run
from crosspath.models import ModelError, resolve


def _cfg(tmp_path, **kw):
    base = dict(model="tiny-random", task="demo", limit=3, paths=2, max_tokens=6, batch_questions=1, seed=3,
                out=str(tmp_path / "run"))
    base.update(kw)
    return RunConfig(**base)


def test_run_writes_run_directory(tmp_path, tiny_gen):
    s = run(_cfg(tmp_path), generator=tiny_gen, progress=False)
    out = tmp_path / "run"
    rows = read_results(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["demo-0", "demo-1", "demo-2"]
    r = rows[0]
    assert len(r["paths"]) == 2 and {"text", "answer", "correct", "tokens"} <= set(r["paths"][0])
    assert (out / "config.yaml").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 3 and summary["tokens"] == s["tokens"] > 0 and "cons_at_n" in summary


class Answers:
    """A stateless generator with the tiny model's tokenizer that answers path j of a question with
    SCRIPT[question][j] (one sequence per question; repeated prompts are its paths, in order)."""

    SCRIPT = {"What is 8 + 3?": ["\\boxed{11}", "\\boxed{12}", "\\boxed{11}", "\\boxed{13}"],  # gold 11
              "What is 5 + 4 + 7?": ["\\boxed{16}"] * 4,  # gold 16
              "What is 5 + 9?": ["\\boxed{14}", "\\boxed{15}", "\\boxed{15}", "\\boxed{15}"]}  # gold 14

    def __init__(self, tok):
        self.tok, self.seen = tok, {}

    def generate(self, prompts, params):
        out = []
        for pr in prompts:
            q = next(q for q in self.SCRIPT if q in pr)
            j = self.seen[q] = self.seen.get(q, -1) + 1
            out.append(Completion(text=self.SCRIPT[q][j % 4], token_ids=[1, 2, 3], finish_reason="stop"))
        return out


def test_pass_at_1_and_cons_at_n_are_the_hand_computed_values(tmp_path, tiny):
    s = run(_cfg(tmp_path, paths=4), generator=Answers(tiny[1]), progress=False)
    rows = read_results(tmp_path / "run" / "results.jsonl")
    assert [r["pass_at_1"] for r in rows] == [0.5, 1.0, 0.25]
    assert [r["cons_answer"] for r in rows] == ["11", "16", "15"] and [r["cons_correct"] for r in rows] == [1, 1, 0]
    # the first path of the last question is right and the majority wrong: cons@N is the majority's
    answers = [[p["answer"] for p in r["paths"]] for r in rows]
    assert answers[0] == ["11", "12", "11", "13"] and answers[2] == ["14", "15", "15", "15"]
    assert s["pass_at_1"] == pytest.approx((0.5 + 1.0 + 0.25) / 3) and s["cons_at_n"] == pytest.approx(2 / 3)
    assert s["tokens"] == 3 * 4 * 3


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_gen):
    full = _cfg(tmp_path, out=str(tmp_path / "full"))
    run(full, generator=tiny_gen, progress=False)
    part = _cfg(tmp_path, out=str(tmp_path / "part"), limit=2)
    run(part, generator=tiny_gen, progress=False)
    res = tmp_path / "part" / "results.jsonl"
    with open(res, "a") as f:
        f.write('{"id": "demo-2", "paths": [')  # killed half-way through writing a line
    resumed = _cfg(tmp_path, out=str(tmp_path / "part"), resume=True)
    first_two = res.read_text().splitlines()[:2]
    run(resumed, generator=tiny_gen, progress=False)
    a = read_results(tmp_path / "full" / "results.jsonl")
    b = read_results(res)
    assert res.read_text().splitlines()[:2] == first_two  # finished questions are not redone
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_gen):
    run(_cfg(tmp_path, limit=1), generator=tiny_gen, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run(_cfg(tmp_path, limit=1), generator=tiny_gen, progress=False)
    with pytest.raises(ValueError, match="other options: temperature 0.6 -> 0.1"):
        run(_cfg(tmp_path, limit=1, temperature=0.1, resume=True), generator=tiny_gen, progress=False)


def test_threads_option_sets_torch_threads_and_does_not_block_resume(tmp_path, tiny_gen):
    import torch

    before = torch.get_num_threads()
    try:
        run(_cfg(tmp_path, limit=1, threads=1), generator=tiny_gen, progress=False)
        assert torch.get_num_threads() == 1
        # a resumed run may use another thread count: it is not part of the configuration's identity
        run(_cfg(tmp_path, limit=2, resume=True), generator=tiny_gen, progress=False)
        assert len(read_results(tmp_path / "run" / "results.jsonl")) == 2
    finally:
        torch.set_num_threads(before)


class Reasons:
    """A stateless generator that never finishes a round on its own: every path is still reasoning
    after round 0, so every path summarizes and reads its peers."""

    def __init__(self, tok):
        self.tok = tok

    def generate(self, prompts, params):
        from crosspath.infer.prompts import SUMMARY_OPENER

        def one(pr):
            if pr.endswith(SUMMARY_OPENER):
                return Completion(text="the sum is 5.</summarize>", token_ids=[1] * 4, finish_reason="stop",
                                  stop="</summarize>")
            if pr.endswith("\\boxed{"):
                return Completion(text="5}", token_ids=[1, 2], finish_reason="length")
            return Completion(text="Adding the numbers.\n\nStill", token_ids=[1] * 5, finish_reason="length")
        return [one(pr) for pr in prompts]


def test_leap_run_records_traces(tmp_path, tiny):
    cfg = _cfg(tmp_path, method="leap", rounds=2, round_tokens=5, summary_tokens=3, answer_tokens=3, limit=2,
               batch_questions=2, paths=3, peers_k=2)
    run(cfg, generator=Reasons(tiny[1]), progress=False)
    rows = read_results(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 2
    for r in rows:
        for n, p in enumerate(r["paths"]):
            rd = p["rounds"][0]
            assert rd["summary"] == "So far, the sum is 5."  # the opener the loop wrote, and the text
            assert len(rd["peers"]) == 2 and n not in [x["peer"] for x in rd["peers"]]
            assert all({"peer", "similarity"} <= set(x) for x in rd["peers"])
            assert "correct" in rd and p["answer"] == "5"


def test_cli_run_prints_table(tmp_path, capsys, tiny_gen):
    code = main(["run", "--model", "tiny-random", "--task", "demo", "--limit", "1", "--paths", "2",
                 "--max-tokens", "4", "--out", str(tmp_path / "cli")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| independent | demo | 2 | 1 |" in out


def test_cli_eval_with_task_options(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "--model", "tiny-random", "--task", "rg:chain_sum", "--limit", "3", "--max-tokens", "2",
                 "--task-options", '{"min_terms": 4, "max_terms": 4, "max_digits": 1}', "--out", str(out)]) == 0
    assert "| greedy | rg:chain_sum | 1 | 3 |" in capsys.readouterr().out
    questions = [r["question"] for r in read_results(out / "results.jsonl")]
    assert len(questions) == 3 and all(len(re.findall(r"\d+", q)) == 4 for q in questions)  # 4 terms
    with pytest.raises(SystemExit):  # argparse: "expected a JSON object"
        main(["eval", "--task-options", "[1]", "--out", str(out)])
    assert "expected a JSON object" in capsys.readouterr().err


def test_cli_yaml_config_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny-random\ntask: demo\nlimit: 1\npaths: 3\nmax_tokens: 4\n")
    assert main(["run", "--config", str(cfg), "--paths", "2", "--out", str(tmp_path / "y")]) == 0
    assert "| independent | demo | 2 | 1 |" in capsys.readouterr().out
    cfg.write_text("modle: tiny-random\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "z")]) == 2
    assert "unknown keys ['modle']" in capsys.readouterr().err


def test_unknown_model_lists_known_names():
    with pytest.raises(ModelError) as e:
        resolve("smollm3-9000")
    assert "smollm2-135m" in str(e.value) and "Hugging Face id" in str(e.value)


def test_bad_task_is_a_clear_cli_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    code = main(["run", "--model", "tiny-random", "--task", str(bad), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl" in err and "2" in err and "answer" in err


# ---- errors found before any work: prompt length, model folder, openai upstream ---------------------

def test_prompt_longer_than_the_context_is_refused_up_front(tmp_path, capsys):
    task = tmp_path / "long.jsonl"
    rows = [{"id": "ok", "question": "What is 1 + 1?", "answer": "2"},
            {"id": "huge", "question": "1 + " * 1_250_000 + "1?", "answer": "1250001"},  # 5 MB
            {"id": "long", "question": "1 + " * 3000 + "1?", "answer": "3001"}]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r"
    assert main(["run", "--model", "tiny-random", "--task", str(task), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    # tiny-random: max_position_embeddings 4096; the 5 MB question is refused without tokenizing it
    assert "2 question(s) have a prompt longer than 4096 tokens (the context length of tiny-random)" in err
    assert re.search(r"huge \(50\d{5} characters\), long \(\d+ tokens\)", err) and " ok (" not in err
    assert not (out / "results.jsonl").exists()  # nothing ran
    assert main(["run", "--model", "tiny-random", "--task", "demo", "--limit", "3", "--max-prompt-tokens", "20",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3 question(s) have a prompt longer than 20 tokens (--max-prompt-tokens): demo-0 (" in err
    assert "raise --max-prompt-tokens" in err


def test_model_folder_that_is_not_a_model(tmp_path, capsys):
    empty, adapter = tmp_path / "empty", tmp_path / "adapter"
    empty.mkdir()
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for folder, hint in ((empty, "holds config.json, the weights"), (adapter, "pass it with --adapter")):
        assert main(["run", "--model", str(folder), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"--model {folder} is a folder, not a transformers model" in err and hint in err
        assert "Traceback" not in err
    assert main(["run", "--model", "tiny-random", "--adapter", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "is not a LoRA adapter folder" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["down", "garbage"])
def test_openai_upstream_down_or_garbage_is_a_clear_error(tmp_path, capsys, monkeypatch, mode):
    from openai_stub import StubServer

    import crosspath.backends.openai as openai_backend

    monkeypatch.setattr(openai_backend, "BACKOFF_MAX", 0.0)  # retries without the waits
    with StubServer() as srv:
        url = srv.url
        srv.fail("garbage", times=100)
        if mode == "garbage":
            code = main(["run", "--backend", "openai", "--base-url", url, "--model", "tiny-random", "--limit", "1",
                         "--paths", "1", "--out", str(tmp_path / "r")])
    if mode == "down":  # the port is closed now
        code = main(["run", "--backend", "openai", "--base-url", url, "--model", "tiny-random", "--limit", "1",
                     "--paths", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and f"POST {url}/completions" in err and "Traceback" not in err
    assert ("no answer after 6 tries" in err and "ConnectError" in err) if mode == "down" else "not JSON" in err


class Marked(Answers):
    """Answers in the training format: reasoning, then `#### answer` (the first path of each question)."""

    def generate(self, prompts, params):
        self.prompts = getattr(self, "prompts", []) + list(prompts)
        outs = super().generate(prompts, params)
        return [Completion(text="Adding up.\n#### " + o.text[len("\\boxed{"):-1], token_ids=[1, 2, 3],
                           finish_reason="stop") for o in outs]


@pytest.mark.parametrize("style", ["marker", "think"])
def test_independent_asks_an_adapter_with_its_training_prompt(tmp_path, tiny, style):
    from crosspath.infer.prompts import question_text
    from crosspath.infer.runner import method_label
    from crosspath.tasks.problem import Problem
    from crosspath.train import TrainConfig
    from crosspath.train.data import prompt_text

    gen = Marked(tiny[1])
    s = run(_cfg(tmp_path, paths=4, prompt=style), generator=gen, progress=False)
    rows = read_results(tmp_path / "run" / "results.jsonl")
    train_text = prompt_text(TrainConfig(answer_format="think" if style == "think" else "plain"), "What is 8 + 3?")
    assert question_text(Problem("q", "What is 8 + 3?", "11"), style) == train_text  # the trainer's own words
    assert train_text in rows[0]["prompt"] and "boxed" not in rows[0]["prompt"]
    assert all(train_text.replace("What is 8 + 3?", q) in p for q, p in zip(Answers.SCRIPT, gen.prompts[::4]))
    assert [r["pass_at_1"] for r in rows] == [0.5, 1.0, 0.25]  # the #### answers are graded
    assert method_label(s) == f"independent ({style} prompt)"


def test_a_prompt_that_does_not_fit_the_method_is_refused(tmp_path, tiny_gen):
    from crosspath.config import ConfigError

    for method, prompt in (("independent", "leap"), ("leap", "think"), ("pacore", "marker")):
        with pytest.raises(ConfigError, match=f"--prompt {prompt}"):
            run(_cfg(tmp_path, method=method, prompt=prompt, out=str(tmp_path / method)), generator=tiny_gen,
                progress=False)
        assert not (tmp_path / method).exists()  # refused before the run directory
    with pytest.raises(ConfigError, match="--leap-control is an option of --method leap"):
        run(_cfg(tmp_path, leap_control="no-peers"), generator=tiny_gen, progress=False)
