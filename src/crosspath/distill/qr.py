"""QR-Distill training: a router hands teacher paths to several LoRA students, who also teach each other.

One step over a batch of B paths and S students (see `router.py` for the math):

    every student s scores every path b:  L_tok[b, s] (mean NLL per target token, its own tokenizer)
                                          L_chr[b, s] (summed NLL / target characters: comparable
                                                       across tokenizers; the router's signal)
                                          h_s[b]      (last hidden state pooled over target tokens)
    routing   learned: y = straight-through hard Gumbel-softmax of Router(frozen embedding)
              random:  y = a uniformly random one-hot (ablation)
              all:     y = 1 for every student (multi-path SFT without routing; S=1: plain SFT)
    sft       = sum_s  mean_{b routed to s} L_tok[b, s]          (each student learns its own paths)
    router    = mean_b sum_s y[b,s] sg(L_chr[b,s]) - entropy_weight * H(mean_b p[b])
    mutual    = sum_s mean_b |z_s - sg(sum_t w_t z_t)|^2,  z_s = unit(P_s h_s),  w = softmax(c)
    competence= sum_s w_s sg(mean_b L_chr[b, s])
    loss      = sft + router + mutual_weight * mutual + competence

Every student forwards every path (the router needs each student's loss on each path to learn,
and the mutual term needs every student's view of the same path); only the routed paths enter a
student's SFT loss. Students may have different tokenizers: each encodes the same text itself.

The run directory follows `crosspath.train.rundir` and `.checkpoint`: config.yaml, metrics.jsonl
(+ tb/), checkpoints/step-N/ (resume with --resume), and at the end student-<i>/adapter (peft),
routing.json (the trained router's choice per style) and eval/ (held-out accuracy).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..config import to_dict
from ..rundir import claim_run_dir
from ..train import checkpoint, guard, lora, optim, rng, rundir
from .data import Encoded, Sample, collate, encode_sft, plain_output_head, pooled_hidden, sequence_nll, target_nll
from .router import Mutual, Router, balance_entropy, competence_loss, mutual_loss, router_loss, st_gumbel

from . import ROUTINGS, QRConfig  # noqa: F401  (the config lives where the CLI can read it without torch)

RESUME_FREE = {"steps", "resume", "overwrite", "out", "log_every", "save_every", "keep", "device", "micro_batch_size",
               "eval_task", "eval_split", "eval_limit", "eval_task_seed", "eval_task_options", "eval_max_tokens", "eval_before"}


def load_samples(path: str | Path, styles: list[str] | None = None) -> list[Sample]:
    """Filtered path rows -> Samples: the student sees the plain step-by-step prompt, learns the path."""
    from ..infer.prompts import STEP_BY_STEP
    from .data import read_rows

    rows = [r for r in read_rows(path) if not styles or r.get("style") in styles]
    return [Sample(id=str(r["id"]), user=STEP_BY_STEP.format(question=r["question"]), target=r["text"],
                   style=r.get("style", ""), question=r["question"]) for r in rows]


class StudentSet(nn.Module):
    """All trainable parts in one module, so one checkpoint holds them (train.checkpoint.save_checkpoint)."""

    def __init__(self, students: list[nn.Module], router: Router | None, mutual: Mutual | None):
        super().__init__()
        self.students = nn.ModuleList(students)
        self.router = router
        self.mutual = mutual

    def save_pretrained(self, folder, safe_serialization: bool = True) -> None:
        """model.safetensors: every trainable tensor (what load_weights restores); student-i/: peft adapters."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.named_parameters() if v.requires_grad},
                  str(folder / "model.safetensors"))
        for i, s in enumerate(self.students):
            s.save_pretrained(folder / f"student-{i}")


def qr_step(system: StudentSet, batches: list[dict], emb: torch.Tensor | None, cfg: QRConfig) -> dict:
    """Losses of one step (see the module docstring). batches[s]: the batch encoded by student s."""
    S = len(system.students)
    l_tok, l_chr, pooled = [], [], []
    for model, b in zip(system.students, batches):
        head = plain_output_head(model)  # logits at the target positions only: a fraction of the memory
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True,
                    **({} if head is None else {"logits_to_keep": 1}))
        nll, n = (sequence_nll(out.logits, b["labels"]) if head is None
                  else target_nll(out.hidden_states[-1], head, b["labels"]))  # [B], [B]
        l_tok.append(nll / n.clamp(min=1.0))
        l_chr.append(nll / b["chars"].to(nll.device))
        pooled.append(pooled_hidden(out.hidden_states[-1], b["labels"]))  # [B, H_s]
    l_tok, l_chr = torch.stack(l_tok, 1), torch.stack(l_chr, 1)  # [B, S]
    B, dev = l_tok.shape[0], l_tok.device
    res: dict = {"path_loss": l_chr.detach()}
    if cfg.routing == "learned" and S > 1:
        logits = system.router(emb)  # [B, S]
        y, choice = st_gumbel(logits, cfg.tau)
        res["router_loss"] = router_loss(y, l_chr, logits, cfg.entropy_weight)
        res["router_probs"] = torch.softmax(logits, -1).detach()
        res["entropy"] = balance_entropy(logits).detach()
    elif cfg.routing == "random" and S > 1:
        choice = torch.randint(S, (B,), device=dev)
        y = nn.functional.one_hot(choice, S).float()
    else:
        choice, y = None, torch.ones(B, S, device=dev)
    assign = y.detach()  # [B, S]
    res["choice"] = choice
    res["sft"] = (assign * l_tok).sum(0) / assign.sum(0).clamp(min=1.0)  # [S]
    loss = res["sft"].sum() + res.get("router_loss", 0.0)
    if system.mutual is not None:
        w = system.mutual.weights()  # [S]
        res["competence_loss"] = competence_loss(w, l_chr)
        res["w"] = w.detach()
        loss = loss + res["competence_loss"]
        if cfg.mutual_weight > 0:
            res["mutual"] = mutual_loss(system.mutual(pooled), w)
            loss = loss + cfg.mutual_weight * res["mutual"]
    res["loss"] = loss
    return res


def embed_samples(samples: list[Sample], encoder: str | None, batch: int = 32) -> torch.Tensor:
    """Frozen MiniLM (mean pooled, unit norm) embedding of question + path, computed once. [N, D]"""
    from ..infer.routing import SemanticSimilarity

    enc = SemanticSimilarity(encoder)
    texts = [f"{s.question}\n\n{s.target}" for s in samples]
    return torch.cat([enc.embed(texts[i:i + batch]) for i in range(0, len(texts), batch)])


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Sample indices of a step: epochs of seeded permutations, so a resumed run sees the same data.

    >>> batch_indices(0, 5, 2, 0) + batch_indices(1, 5, 2, 0) + batch_indices(2, 5, 2, 0)[:1]  # one epoch
    [2, 1, 0, 4, 3]
    """
    out = []
    for g in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(g, n)
        order = list(range(n))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        out.append(order[pos])
    return out


def build(cfg: QRConfig, samples: list[Sample], models=None):
    """Load + LoRA-wrap the students, encode the samples per tokenizer; returns (system, toks, enc, kept)."""
    from ..models import load_model, render_prompt

    if models is None:
        models = []
        for i, name in enumerate(cfg.students):
            model, tok = load_model(name, dtype=cfg.dtype, device=cfg.device)
            models.append((model, tok))
    students, toks = [], []
    for i, (model, tok) in enumerate(models):
        rng.set_seed(cfg.seed + 1000 * i)  # different LoRA inits for copies of one model
        model = lora.setup_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        model.train()
        students.append(model)
        toks.append(tok)
    enc: list[list[Encoded | None]] = [
        [encode_sft(tok, render_prompt(tok, s.user), s.target, s.masked, cfg.max_len) for s in samples] for tok in toks]
    kept = [k for k in range(len(samples)) if all(e[k] is not None for e in enc)]
    enc = [[e[k] for k in kept] for e in enc]
    S = len(students)
    router = mutual = None
    if S > 1:
        hidden = [m.config.hidden_size for m in students]
        mutual = Mutual(hidden, cfg.mutual_dim)
        if cfg.routing == "learned":
            router = Router(384 if cfg.encoder is None else _encoder_dim(cfg.encoder), S, cfg.router_hidden)
    system = StudentSet(students, router, mutual)
    dev = next(students[0].parameters()).device
    system.to(dev)
    return system, toks, enc, kept


def _encoder_dim(path: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path).hidden_size


def make_optimizer(system: StudentSet, cfg: QRConfig):
    groups = [{"params": [p for s in system.students for p in lora.trainable_parameters(s)], "lr": cfg.lr}]
    if system.router is not None:
        groups.append({"params": list(system.router.parameters()), "lr": cfg.router_lr})
    if system.mutual is not None:
        groups.append({"params": list(system.mutual.parameters()), "lr": cfg.aux_lr, "weight_decay": 0.0})
    return optim.make_optimizer(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(cfg: QRConfig, samples: list[Sample] | None = None, models=None,
          log: Callable[[str], None] = print) -> dict:
    """Train (or resume) and return {"steps", "out", "routing", "eval"}. `models`: preloaded (model, tok) pairs."""
    out = Path(cfg.out)
    if 0 < cfg.micro_batch_size < cfg.batch_size and len(models or cfg.students) > 1:
        raise ValueError(f"--micro-batch-size {cfg.micro_batch_size} < --batch-size {cfg.batch_size} needs one "
                         "student: routing and mutual learning are losses of the whole batch "
                         f"({len(models or cfg.students)} students given)")
    claim = claim_run_dir(out, to_dict(cfg), markers=("config.yaml",), resume=cfg.resume, overwrite=cfg.overwrite,
                          ignore=RESUME_FREE, what="distillation run")
    rng.set_seed(cfg.seed)
    samples = samples if samples is not None else load_samples(cfg.data, cfg.styles)
    if not samples:
        raise ValueError(f"no training paths in {cfg.data!r}" + (f" for styles {cfg.styles}" if cfg.styles else ""))
    system, toks, enc, kept = build(cfg, samples, models)
    if not kept:
        raise ValueError(f"no path fits in --max-len {cfg.max_len} tokens after its prompt for every student")
    claim.clear()  # --overwrite: the old run goes only now that data and students have loaded
    run = rundir.RunDir(out)
    run.save_config(cfg)
    samples = [samples[k] for k in kept]
    S, N = len(system.students), len(samples)
    dev = next(system.parameters()).device
    emb = embed_samples(samples, cfg.encoder).to(dev) if system.router is not None else None
    log(f"QR-Distill: {N} paths, {S} student(s) {cfg.students[:S]}, routing={cfg.routing if S > 1 else 'all'}, "
        f"mutual_weight={cfg.mutual_weight if S > 1 else 0}")
    result: dict = {"out": str(out)}
    if cfg.eval_before and cfg.eval_task:
        result["eval_before"] = _evaluate(cfg, system, toks, out / "eval-before", log)
    opt = make_optimizer(system, cfg)
    sched = optim.make_scheduler(opt, cfg.steps, cfg.warmup_ratio)
    params = [p for g in opt.param_groups for p in g["params"]]
    start = 0
    last = checkpoint.latest_checkpoint(out)
    if cfg.resume and last is not None:
        start = checkpoint.load_checkpoint(last, system, opt, sched)["step"]
        run.truncate_metrics(start)
        log(f"resumed from {last} (step {start})")
    micro = cfg.micro_batch_size or cfg.batch_size
    styles = sorted({s.style for s in samples})
    counts = torch.zeros(len(styles), max(S, 1))  # routed paths per style and student since the last log
    for step in range(start, cfg.steps):
        t0 = time.time()
        idx = batch_indices(step, N, cfg.batch_size, cfg.seed)
        opt.zero_grad(set_to_none=True)
        parts = []
        for j in range(0, len(idx), micro):  # one pass unless --micro-batch-size (then S == 1: the loss is a mean)
            sub = idx[j:j + micro]
            batches = [{k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in collate([enc[s][i] for i in sub],
                        toks[s].pad_token_id if toks[s].pad_token_id is not None else 0).items()} for s in range(S)]
            part = qr_step(system, batches, emb[sub] if emb is not None else None, cfg)
            (part["loss"] * (len(sub) / len(idx))).backward()
            parts.append((len(sub) / len(idx), part))
        res = parts[0][1] if len(parts) == 1 else merge_parts(parts)
        gnorm = optim.clip_gradients(params, cfg.max_grad_norm)
        guard.check_finite({"loss": res["loss"].item(), "grad_norm": gnorm}, step + 1,
                           [samples[i].id for i in idx], checkpoint.latest_checkpoint(out))
        opt.step()
        sched.step()
        if res["choice"] is not None:
            for i, c in zip(idx, res["choice"].tolist()):
                counts[styles.index(samples[i].style), c] += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            run.log(_metrics(step + 1, res, counts, styles, gnorm, sched.get_last_lr()[0], time.time() - t0))
            counts.zero_()
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            checkpoint.save_checkpoint(run, step + 1, system, opt, sched, {"data_position": (step + 1) * cfg.batch_size},
                                       keep=cfg.keep)
    for i, s in enumerate(system.students):
        s.save_pretrained(out / ("adapter" if S == 1 else f"student-{i}/adapter"))
    result["steps"] = cfg.steps
    if system.router is not None:
        result["routing"] = routing_table(system.router, emb, samples, out)
    if cfg.eval_task:
        result["eval"] = _evaluate(cfg, system, toks, out / "eval", log)
        run.log({"step": cfg.steps, **{f"eval_acc_s{i}": s["accuracy"] for i, s in enumerate(result["eval"]["students"])},
                 **({"eval_acc_ensemble": result["eval"]["ensemble"]} if "ensemble" in result["eval"] else {})})
    run.close()
    claim.release()
    return result


def merge_parts(parts: list[tuple[float, dict]]) -> dict:
    """One student's step made of micro-batches (weight = share of the batch): the batch's loss and logs."""
    res = {k: sum(w * part[k].detach() for w, part in parts) for k in ("loss", "sft")}
    return {**res, "path_loss": torch.cat([part["path_loss"] for _, part in parts]), "choice": None}


def _metrics(step: int, res: dict, counts: torch.Tensor, styles: list[str], gnorm: float, lr: float,
             secs: float) -> dict:
    row = {"step": step, "loss": round(res["loss"].item(), 5), "grad_norm": round(gnorm, 4), "lr": lr,
           "step_seconds": round(secs, 3)}
    for s, v in enumerate(res["sft"].tolist()):
        row[f"sft_s{s}"] = round(v, 5)
    for s, v in enumerate(res["path_loss"].mean(0).tolist()):
        row[f"nll_per_char_s{s}"] = round(v, 5)
    for key in ("router_loss", "entropy", "mutual", "competence_loss"):
        if key in res:
            row[key] = round(float(res[key].detach()), 5)
    if "w" in res:
        row.update({f"competence_s{s}": round(v, 4) for s, v in enumerate(res["w"].tolist())})
    if "router_probs" in res:
        row.update({f"router_p_s{s}": round(v, 4) for s, v in enumerate(res["router_probs"].mean(0).tolist())})
    if res["choice"] is not None and counts.sum() > 0:
        for k, st in enumerate(styles):
            tot = counts[k].sum()
            if tot > 0:
                row.update({f"route_{st or 'none'}_s{s}": round(float(counts[k, s] / tot), 3) for s in range(counts.shape[1])})
    return row


@torch.no_grad()
def routing_table(router: Router, emb: torch.Tensor, samples: list[Sample], out: Path) -> dict:
    """Mean router probability per style and student (no noise) -> routing.json."""
    import json

    p = torch.softmax(router(emb), -1).cpu()  # [N, S]
    table = {}
    for st in sorted({s.style for s in samples}):
        rows = [k for k, s in enumerate(samples) if s.style == st]
        table[st or "none"] = [round(float(v), 4) for v in p[rows].mean(0)]
    (out / "routing.json").write_text(json.dumps(table, indent=2))
    return table


def _evaluate(cfg: QRConfig, system: StudentSet, toks, out: Path, log) -> dict:
    from .evaluate import evaluate_students

    from ..tasks import load_task

    w = system.mutual.weights().tolist() if system.mutual is not None else None
    problems = load_task(cfg.eval_task, limit=cfg.eval_limit, seed=cfg.eval_task_seed, split=cfg.eval_split,
                         **(cfg.eval_task_options or {}))
    log(f"evaluating on {cfg.eval_task} ({len(problems)} questions, greedy) -> {out}")
    return evaluate_students(list(system.students), toks, cfg.students[:len(system.students)], out, problems,
                             cfg.eval_max_tokens, competence=w, log=log)
