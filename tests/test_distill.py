"""Distillation: QR-Distill (generate, filter, router, mutual learning, trainer) and LeaP-T masking.

Everything runs on tiny models: the 2-layer random Llama with SmolLM2's tokenizer, and a 2-layer
Llama over a character-level tokenizer built here (so two students never share a tokenizer).
"""

from __future__ import annotations

import json
import string

import pytest
import torch

from crosspath.distill import prompts as dprompts
from crosspath.distill.data import IGNORE, Sample, collate, encode_sft, read_rows
from crosspath.distill.filter import FilterConfig, filter_paths
from crosspath.distill.generate import GenerateConfig, generate
from crosspath.distill.leap_t import LeapTConfig, leap_t_samples
from crosspath.distill.qr import QRConfig, build, qr_step, train
from crosspath.distill.router import Router, balance_entropy, router_loss, st_gumbel
from crosspath.infer.prompts import STEP_BY_STEP, TAG_SETS, peer_block, summary_request
from crosspath.models import load_model, render_prompt
from crosspath.backends.base import Completion


# ---- helpers ------------------------------------------------------------------------------------

def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for c in string.printable:
        vocab.setdefault(c, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant] {% endif %}")
    return tok


def char_model(tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval()


def two_students():
    """(tiny-random + SmolLM2 tokenizer, char-level tiny Llama): fresh copies (LoRA edits models in place)."""
    a = load_model("tiny-random", device="cpu")
    ctok = char_tokenizer()
    return [a, (char_model(ctok), ctok)]


SAMPLES = [Sample(id=f"q{i}", user=STEP_BY_STEP.format(question=f"What is {i} + {i + 1}?"),
                  target=("Step 1: add.\n" if i % 2 else "x = {i}; y = x + 1\n") + f"So \\boxed{{{2 * i + 1}}}",
                  style="step" if i % 2 else "program", question=f"What is {i} + {i + 1}?") for i in range(6)]


# ---- prompts and judge parsing --------------------------------------------------------------------

def test_six_styles_and_verdicts():
    assert len(dprompts.STYLES) == 6 and all("{question}" in p and "boxed" in p for p in dprompts.STYLES.values())
    assert dprompts.parse_verdict(" VALID: each step checks out") == ("VALID", "each step checks out")
    assert dprompts.parse_verdict("This is NOT valid, the sum is off")[0] == "INVALID"
    assert dprompts.parse_verdict("invalid\nReason: skipped a term") == ("INVALID", "skipped a term")
    assert dprompts.parse_verdict("I cannot tell.")[0] is None


# ---- label masking per tokenizer --------------------------------------------------------------------

@pytest.mark.parametrize("which", ["smollm2", "char"])
def test_label_masking_per_tokenizer(which):
    tok = load_model("tiny-random", device="cpu")[1] if which == "smollm2" else char_tokenizer()
    prompt = render_prompt(tok, "What is 2 + 3?")
    target = "2 + 3 = 5.\n\nSo the answer is \\boxed{5}."
    enc = encode_sft(tok, prompt, target)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert n_prompt > 0 and enc.labels[:n_prompt] == [IGNORE] * n_prompt  # prompt: no loss
    trained = enc.labels[n_prompt:]
    assert trained == enc.input_ids[n_prompt:]  # every completion token is kept
    assert trained[-1] == tok.eos_token_id
    assert tok.decode(trained[:-1]) == target
    if which == "char":
        assert len(trained) == len(target) + 1
    # masking a character span removes exactly the tokens that touch it
    s = target.index("So the")
    enc2 = encode_sft(tok, prompt, target, masked=[(s, s + len("So the answer is"))])
    kept = [t for t in enc2.labels[n_prompt:] if t != IGNORE]
    assert "answer" not in tok.decode(kept) and "boxed{5}" in tok.decode(kept) and "2 + 3 = 5" in tok.decode(kept)
    batch = collate([enc, enc2], pad_id=tok.pad_token_id)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["attention_mask"].sum() == \
        len(enc.input_ids) + len(enc2.input_ids)


def test_sft_encoding_under_truncation():
    """max_len cuts the end of the target (its EOS first), never moves the prompt; nothing left to train -> None."""
    tok = char_tokenizer()  # one token per character: lengths are known by hand
    prompt, target = "Q: 2+3?\nA: ", "2+3=5 #### 5"
    full = encode_sft(tok, prompt, target)
    n = len(prompt)
    assert len(full.input_ids) == n + len(target) + 1 and full.labels[-1] == tok.eos_token_id
    cut = encode_sft(tok, prompt, target, max_len=n + 4)
    assert cut.input_ids == full.input_ids[: n + 4]  # the prompt and the first 4 target tokens
    assert cut.labels == [IGNORE] * n + full.input_ids[n : n + 4]  # trained: "2+3=", no EOS
    assert tok.decode(cut.labels[n:]) == "2+3="
    assert cut.chars == full.chars == len(target)  # the loss normaliser is the target's, cut or not
    assert encode_sft(tok, prompt, target, max_len=n + len(target) + 1).input_ids == full.input_ids  # fits exactly
    edge = encode_sft(tok, prompt, target, max_len=n + len(target))  # only the EOS goes
    assert edge.labels[-1] != tok.eos_token_id and tok.decode(edge.labels[n:]) == target
    assert encode_sft(tok, prompt, target, max_len=n) is None  # only the prompt would be left
    # a masked span inside what is left stays masked
    masked = encode_sft(tok, prompt, target, masked=[(0, 4)], max_len=n + 6)
    assert masked.labels[n:] == [IGNORE] * 4 + full.input_ids[n + 4 : n + 6]
    assert encode_sft(tok, prompt, target, masked=[(0, 4)], max_len=n + 4) is None


# ---- LeaP-T ---------------------------------------------------------------------------------------------

def _leap_text():
    tags = TAG_SETS["comment"]
    return ("First I add 2 and 3 to get 5." + summary_request(0, 0, tags) + "I have 5.</summarize>"
            + peer_block(["I got 5 too.", "Mine says 6."], tags)
            + "Peer answers agree mostly; 5 stands." + summary_request(1, 0, tags) + "5.</summarize>"
            + peer_block([], tags) + "The answer is \\boxed{5}.")


def _rounds(n_summaries):
    return [{"round": r, "summary": "So far, 5.", "summary_tokens": 3, "peers": []} for r in range(n_summaries)] + [{"round": n_summaries}]


def test_leap_t_samples_from_leap_runs_mask_peer_blocks(tmp_path):
    text = _leap_text()
    paths = [{"text": text, "correct": True, "rounds": _rounds(2)}, {"text": "wrong \\boxed{7}", "correct": False},
             {"text": "\\boxed{5}", "correct": True, "rounds": _rounds(0)}]  # correct, but never summarized
    row = {"id": "q1", "question": "What is 2 + 3?", "answer": "5", "method": "leap", "paths": paths}
    run = tmp_path / "leap-run"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps(row) + "\n" + '{"id": "half-writ')  # a killed run's last line
    samples, stats = leap_t_samples(LeapTConfig(runs=[str(run)]))
    assert stats == {"traces": 1, "origins": {"leap": 1}, "questions": 1, "masked_spans": 2} and len(samples) == 1
    s = samples[0]
    assert s.user == STEP_BY_STEP.format(question="What is 2 + 3?")
    tok = load_model("tiny-random", device="cpu")[1]
    enc = encode_sft(tok, render_prompt(tok, s.user), s.target, s.masked)
    trained = tok.decode([t for t in enc.labels if t != IGNORE])
    hidden = tok.decode([i for i, t in zip(enc.input_ids, enc.labels) if t == IGNORE])
    for own in ("First I add 2 and 3", "<summarize>", "I have 5.", "</summarize>", "5 stands", "\\boxed{5}"):
        assert own in trained
    for injected in ("Peer 1", "Mine says 6", "<comment>", "</comment>", "Let me compare these",
                     "carry on with my own"):
        assert injected not in trained and injected in hidden


def test_leap_t_trains_an_adapter_that_runs_with_leap_t(tmp_path):
    from crosspath.distill.leap_t import LeapTConfig, train_leap_t
    from crosspath.infer.runner import RunConfig, run

    run_dir = tmp_path / "leap-run"
    run_dir.mkdir()
    row = {"id": "q1", "question": "What is 2 + 3?", "method": "leap",
           "paths": [{"text": _leap_text(), "correct": True, "rounds": _rounds(2)}]}
    (run_dir / "results.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "leap-t"
    res = train_leap_t(LeapTConfig(runs=[str(run_dir)], model="tiny-random", out=str(out), steps=1, batch_size=1,
                                   lora_r=4, device="cpu"), log=lambda s: None)
    assert res["adapter"] == str(out / "adapter") and (out / "adapter" / "adapter_config.json").exists()
    summary = run(RunConfig(method="leap", leap_t=True, adapter=res["adapter"], model="tiny-random", task="demo",
                            limit=1, paths=2, rounds=2, round_tokens=6, summary_tokens=4, answer_tokens=4,
                            out=str(tmp_path / "run")), progress=False)
    assert summary["questions"] == 1


# ---- router -------------------------------------------------------------------------------------------

def test_straight_through_gumbel_is_one_hot_with_soft_gradient():
    torch.manual_seed(0)
    logits = torch.randn(8, 3, requires_grad=True)
    y, choice = st_gumbel(logits)
    assert torch.equal(y.detach(), torch.nn.functional.one_hot(choice, 3).float())
    loss = (y * torch.tensor([1.0, 2.0, 3.0])).sum()
    loss.backward()
    assert logits.grad.abs().sum() > 0  # the hard sample still passes a gradient
    assert torch.allclose(logits.grad.sum(-1), torch.zeros(8), atol=1e-6)  # softmax Jacobian rows sum to 0


def test_router_loss_gradient_favours_the_lower_loss_student():
    logits = torch.zeros(1, 2, requires_grad=True)
    torch.manual_seed(0)
    grads = []
    for _ in range(200):  # expected gradient over the Gumbel noise
        logits.grad = None
        y, _ = st_gumbel(logits)
        router_loss(y, torch.tensor([[0.5, 2.0]]), logits, entropy_weight=0.0).backward()
        grads.append(logits.grad.clone())
    g = torch.stack(grads).mean(0)[0]
    assert g[0] < 0 < g[1]  # gradient descent raises student 0's logit (its loss is lower)
    # the entropy term alone pushes a collapsed router back towards using both students
    lg = torch.tensor([[3.0, -3.0], [2.0, -2.0]], requires_grad=True)
    (-balance_entropy(lg)).backward()
    assert lg.grad[:, 0].sum() > 0 > lg.grad[:, 1].sum()


def test_routing_moves_paths_to_the_student_that_fits_them():
    """Student A is good at style X (low loss), student B at style Y: the router learns to send X to A."""
    torch.manual_seed(0)
    n, d = 64, 384
    style = torch.arange(n) % 2  # 0 = X, 1 = Y
    centers = torch.randn(2, d)
    emb = torch.nn.functional.normalize(centers[style] + 0.5 * torch.randn(n, d), dim=-1)  # [n, d]
    loss = torch.where(style[:, None] == 0, torch.tensor([0.4, 1.2]), torch.tensor([1.0, 0.6]))  # [n, S]
    loss = loss + 0.1 * torch.rand(n, 2)  # per-path noise
    router = Router(d, 2, hidden=32)
    opt = torch.optim.Adam(router.parameters(), lr=3e-3)

    def p_right():
        with torch.no_grad():
            p = torch.softmax(router(emb), -1)
        return float(p[style == 0, 0].mean()), float(p[style == 1, 1].mean())

    before = p_right()
    for step in range(150):
        idx = torch.randint(n, (16,))
        logits = router(emb[idx])
        y, _ = st_gumbel(logits)
        opt.zero_grad()
        router_loss(y, loss[idx], logits, entropy_weight=0.1).backward()
        opt.step()
    after = p_right()
    assert after[0] > before[0] + 0.2 and after[0] > 0.8, (before, after)
    assert after[1] > before[1] + 0.2 and after[1] > 0.8, (before, after)


def test_gradients_reach_router_projections_and_competence():
    cfg = QRConfig(students=["tiny-random", "char"], routing="learned", mutual_weight=0.1, lora_r=4, max_len=128)
    system, toks, enc, kept = build(cfg, SAMPLES, models=two_students())
    assert len(kept) == len(SAMPLES) and toks[0] is not toks[1]
    idx = [0, 1, 2, 3]
    batches = [collate([enc[s][i] for i in idx], toks[s].pad_token_id) for s in range(2)]
    torch.manual_seed(1)
    emb = torch.randn(4, 384)
    res = qr_step(system, batches, emb, cfg)
    assert res["path_loss"].shape == (4, 2) and set(res) >= {"router_loss", "mutual", "competence_loss", "sft"}
    res["loss"].backward()
    norm = lambda ps: sum(float(p.grad.abs().sum()) for p in ps if p.grad is not None)  # noqa: E731
    assert norm(system.router.parameters()) > 0
    for proj in system.mutual.proj:
        assert norm(proj.parameters()) > 0
    assert float(system.mutual.competence.grad.abs().sum()) > 0
    for s in system.students:  # LoRA weights of both students get the SFT + mutual gradient
        assert norm([p for n, p in s.named_parameters() if "lora_" in n]) > 0


def test_routed_sft_only_trains_a_student_on_its_paths():
    cfg = QRConfig(students=["a", "b"], routing="random", mutual_weight=0.0, lora_r=4, max_len=128)
    system, toks, enc, _ = build(cfg, SAMPLES, models=two_students())
    batches = [collate([enc[s][i] for i in range(4)], toks[s].pad_token_id) for s in range(2)]
    torch.manual_seed(3)
    res = qr_step(system, batches, None, cfg)
    for s in range(2):
        mine = res["choice"] == s
        expect = res["path_loss"].new_tensor(0.0)
        if mine.any():
            nll = []
            for i in torch.nonzero(mine).flatten().tolist():  # the token-mean loss of each routed path
                b = {k: v[i:i + 1] for k, v in batches[s].items()}
                out = system.students[s](input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                from crosspath.distill.data import sequence_nll

                tot, cnt = sequence_nll(out.logits, b["labels"])
                nll.append(float((tot / cnt).detach()))
            expect = torch.tensor(sum(nll) / len(nll))
        assert torch.allclose(res["sft"][s].detach(), expect, atol=1e-4)


# ---- trainer: run directory, checkpoints, resume ---------------------------------------------------

def test_train_writes_run_dir_and_resume_matches(tmp_path, monkeypatch):
    import crosspath.distill.qr as qr

    monkeypatch.setattr(qr, "embed_samples", lambda samples, enc: torch.nn.functional.normalize(
        torch.stack([torch.full((384,), float(len(s.target) % 7)) + torch.arange(384.0) * (s.style == "step")
                     for s in samples]), dim=-1))
    base = dict(students=["tiny-random", "char"], steps=4, batch_size=3, save_every=2, keep=3, lora_r=4,
                max_len=160, lr=1e-3)
    res = train(QRConfig(out=str(tmp_path / "a"), **base), samples=SAMPLES, models=two_students(), log=lambda s: None)
    a = tmp_path / "a"
    rows = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"router_loss", "entropy", "mutual", "competence_s0", "router_p_s1", "sft_s0"} <= set(rows[-1])
    assert (a / "student-0/adapter/adapter_config.json").exists() and (a / "student-1/adapter").is_dir()
    assert set(res["routing"]) == {"program", "step"} and (a / "routing.json").exists()
    assert sorted(p.name for p in (a / "checkpoints").iterdir()) == ["step-2", "step-4"]
    # interrupted after step 2: drop what came later, resume, and land on the same weights
    import shutil

    from safetensors.torch import load_file

    final = load_file(str(a / "checkpoints/step-4/adapter/model.safetensors"))
    shutil.rmtree(a / "checkpoints/step-4")
    res2 = train(QRConfig(out=str(a), resume=True, **base), samples=SAMPLES, models=two_students(),
                 log=lambda s: None)
    again = load_file(str(a / "checkpoints/step-4/adapter/model.safetensors"))
    assert set(final) == set(again) and any("router" in k for k in final) and any("mutual" in k for k in final)
    for k in final:
        assert torch.allclose(final[k], again[k], atol=1e-5), k
    assert [json.loads(x)["step"] for x in (a / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert res2["steps"] == 4
    with pytest.raises(FileExistsError):
        train(QRConfig(out=str(a), **base), samples=SAMPLES, models=two_students(), log=lambda s: None)


# ---- filter -------------------------------------------------------------------------------------------

class ScriptedJudge:
    """Answers by what the path says: 'good' -> VALID, 'bad' -> INVALID, else babble."""

    def __init__(self):
        self.tok = char_tokenizer()
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts.extend(prompts)
        outs = []
        for p in prompts:
            path = p.split("Solution:\n", 1)[1]
            reply = " VALID: the steps hold" if "good" in path else (
                " INVALID: step 2 is wrong" if "bad" in path else " hmm, hard to say")
            outs.append(Completion(text=reply, finish_reason="stop"))
        return outs


def _paths_file(tmp_path):
    rows = []
    for i, (style, text, ok) in enumerate([("step", "good 1", True), ("step", "bad 1", True), ("step", "good 2", False),
                                           ("program", "good 3", True), ("program", "unsure", True),
                                           ("tree", "bad 4", False)]):
        rows.append({"id": f"q{i}", "question": f"Q{i}", "gold": "1", "style": style, "sample": 0, "text": text,
                     "answer": "1", "correct": ok})
    path = tmp_path / "paths.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_filter_statistics_with_scripted_judge(tmp_path):
    paths = _paths_file(tmp_path)
    judge = ScriptedJudge()
    out = tmp_path / "filtered.jsonl"
    stats = filter_paths(FilterConfig(input=str(paths), out=str(out), judge="scripted"), generator=judge,
                         log=lambda s: None)
    assert len(judge.prompts) == 4  # only paths with a correct answer are judged
    assert stats["styles"]["step"] == {"paths": 3, "answer_ok": 2, "valid": 1, "invalid": 1, "unparseable": 0, "kept": 1}
    assert stats["styles"]["program"] == {"paths": 2, "answer_ok": 2, "valid": 1, "invalid": 0, "unparseable": 1,
                                          "kept": 2}
    assert stats["styles"]["tree"] == {"paths": 1, "answer_ok": 0, "valid": 0, "invalid": 0, "unparseable": 0, "kept": 0}
    assert stats["filters"]["answer"] == {"in": 6, "out": 4}
    assert stats["filters"]["judge"] == {"in": 4, "valid": 2, "invalid": 1, "unparseable": 1, "out": 3}
    kept = read_rows(out)
    assert [r["text"] for r in kept] == ["good 1", "good 3", "unsure"]
    assert kept[0]["judge"] == "VALID" and kept[0]["judge_reason"] == "the steps hold" and kept[2]["judge"] is None
    assert json.loads((tmp_path / "filtered.jsonl.stats.json").read_text())["total"]["kept"] == 3
    # unparseable replies dropped on request; the answer filter alone keeps every correct path
    s2 = filter_paths(FilterConfig(input=str(paths), out=str(out), judge="x", unparseable="drop"),
                      generator=ScriptedJudge(), log=lambda s: None)
    assert s2["total"]["kept"] == 2
    s3 = filter_paths(FilterConfig(input=str(paths), out=str(out), no_judge=True), log=lambda s: None)
    assert s3["total"]["kept"] == 4 and s3["filters"]["judge"] is None


# ---- generate: resumable ---------------------------------------------------------------------------------

class ScriptedTeacher:
    """Writes a correct path for every request; raises (a kill) on call number die_after + 1."""

    def __init__(self, problems, die_after=None):
        self.tok = char_tokenizer()
        self.gold = {p.question: p.answer for p in problems}
        self.calls = 0
        self.die_after = die_after

    def generate(self, prompts, params):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        answers = [next(a for q, a in self.gold.items() if q in p) for p in prompts]
        return [Completion(text=f"Adding up gives {a}. \\boxed{{{a}}}", token_ids=[1, 2, 3], finish_reason="stop")
                for a in answers]


def test_generate_resumes_without_duplicates(tmp_path):
    from crosspath.tasks import load_task

    problems = load_task("demo", limit=5)
    out = tmp_path / "paths.jsonl"
    cfg = GenerateConfig(out=str(out), styles=["step", "program", "tree"], per_style=2, batch_questions=2)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, generator=ScriptedTeacher(problems, die_after=1), problems=problems, log=lambda s: None)
    first = read_rows(out)
    assert len(first) == 2 * 3 * 2  # the first batch of 2 questions was written before the kill
    with open(out, "a") as f:
        f.write('{"id": "demo-2", "style": "st')  # a half-written last line
    res = generate(cfg, generator=ScriptedTeacher(problems), problems=problems, log=lambda s: None)
    rows = read_rows(out)
    keys = [(r["id"], r["style"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == 5 * 3 * 2 and res["written"] == 3 * 3 * 2 and res["skipped"] == 12
    assert all(r["correct"] for r in rows) and {r["style"] for r in rows} == {"step", "program", "tree"}
    assert generate(cfg, generator=ScriptedTeacher(problems, die_after=0), problems=problems, log=lambda s: None)["written"] == 0


def test_cli_has_distill_subcommands(capsys):
    from crosspath.cli import build_parser

    parser = build_parser()
    for cmd in ("generate", "filter", "train", "leap-t"):
        with pytest.raises(SystemExit):
            parser.parse_args(["distill", cmd, "--help"])
    out = capsys.readouterr().out
    assert "--per-style" in out and "--no-judge" in out and "--mutual-weight" in out and "--runs" in out
    args = parser.parse_args(["distill", "filter", "--in", "p.jsonl", "--no-judge"])
    assert args.input == "p.jsonl" and args.no_judge


def test_target_only_logits_give_the_full_logits_loss_and_gradients():
    """qr_step's memory path (output head at the labelled positions) = sequence_nll on the model's logits."""
    from types import SimpleNamespace

    from crosspath.distill.data import plain_output_head, sequence_nll, target_nll

    cfg = QRConfig(students=["tiny-random"], routing="all", mutual_weight=0, lora_r=4, max_len=128)
    system, toks, enc, _ = build(cfg, SAMPLES, models=[load_model("tiny-random", device="cpu")])
    model = system.students[0]
    b = collate([enc[0][i] for i in (0, 1, 2)], toks[0].pad_token_id)  # right-padded: padding is IGNORE
    head = plain_output_head(model)
    assert head is not None and head is model.get_base_model().get_output_embeddings()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    for p in lora:  # LoRA B starts at zero: give it weight so the comparison is not trivial
        torch.nn.init.normal_(p, std=0.1)
    results = []
    for fast in (False, True):
        model.zero_grad()
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True,
                    **({"logits_to_keep": 1} if fast else {}))
        if fast:
            assert out.logits.shape[1] == 1  # the full [B, T, V] logits were never made
        nll, n = (target_nll(out.hidden_states[-1], head, b["labels"]) if fast
                  else sequence_nll(out.logits, b["labels"]))
        (nll / n).sum().backward()
        results.append((nll.detach(), n, [p.grad.clone() for p in lora]))
    (full, n_full, g_full), (part, n_part, g_part) = results
    assert torch.equal(n_full, n_part) and bool((n_full > 0).all())
    torch.testing.assert_close(part, full, rtol=1e-4, atol=1e-5)
    for a, c in zip(g_part, g_full):
        torch.testing.assert_close(a, c, rtol=1e-3, atol=1e-6)
    # models whose logits are not head(hidden): the full logits path
    capped = SimpleNamespace(config=SimpleNamespace(final_logit_softcapping=30.0), forward=model.forward)
    assert plain_output_head(capped) is None
    assert plain_output_head(SimpleNamespace(config=SimpleNamespace(), forward=lambda input_ids: None)) is None


def test_micro_batches_accumulate_to_the_same_step(tmp_path):
    """--micro-batch-size splits a step's forward/backward passes; the step (weights, logged loss) is the same."""
    from safetensors.torch import load_file

    base = dict(students=["tiny-random"], routing="all", steps=2, batch_size=4, save_every=2, lora_r=4,
                max_len=160, lr=1e-3)
    weights, logs = [], []
    for micro in (0, 3):  # 3 + 1: unequal parts
        out = tmp_path / f"m{micro}"
        train(QRConfig(out=str(out), micro_batch_size=micro, **base), samples=SAMPLES,
              models=[load_model("tiny-random", device="cpu")], log=lambda s: None)
        weights.append(load_file(str(out / "checkpoints/step-2/adapter/model.safetensors")))
        logs.append([json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()])
    assert set(weights[0]) == set(weights[1]) and weights[0]
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-4, atol=1e-6)
    for whole, parts in zip(*logs):
        assert whole["loss"] == pytest.approx(parts["loss"], rel=1e-4)
        assert whole["nll_per_char_s0"] == pytest.approx(parts["nll_per_char_s0"], rel=1e-4)
        assert whole["grad_norm"] == pytest.approx(parts["grad_norm"], rel=1e-3)
    # two students: routing and mutual losses belong to the whole batch, refused before the run directory
    with pytest.raises(ValueError, match="needs one student"):
        train(QRConfig(out=str(tmp_path / "two"), micro_batch_size=2, **{**base, "students": ["tiny-random", "char"]}),
              samples=SAMPLES, models=two_students(), log=lambda s: None)
    assert not (tmp_path / "two").exists()
