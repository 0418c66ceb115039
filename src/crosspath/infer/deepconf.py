"""DeepConf: Deep Think with Confidence (arXiv 2508.15260), offline and online.

Token confidence (the paper's definition): at generated position i, with the k most likely tokens'
log-probs P_i(1..k) (k = `conf_top_k`, paper 20),

    C_i = -(1/k) * sum_j log P_i(j)                      (higher = a more peaked distribution)

Group confidence: the mean of C over a sliding window of n tokens (`conf_window`; paper 2048),
stride 1; a path's lowest group confidence C_least is the smallest of them (the whole path's mean
when it is shorter than the window). `aggregate.confidence_stats` also keeps C_avg, bottom-10% and
tail, so every aggregator is recomputed from results.jsonl.

offline   N paths sampled as independent sampling, each with its token confidences; the answer is
          the top-eta% filtered, confidence-weighted vote (aggregators top10_conf / top90_conf;
          `conf_weighted` without the filter). Nothing stops early.
online    per question, `warmup_paths` paths (paper 16) are sampled in full; the stopping threshold
          s = the (100 - eta)-th percentile of their C_least (eta=90: DeepConf-high, the 10th
          percentile; eta=10: DeepConf-low, the 90th). The other N - warm-up paths are generated in
          chunks of `conf_check_tokens`; after each chunk a path whose window mean (full windows only,
          as in the reference code) fell below s stops: finish "confidence", `early_stop` = the token at
          which it fell. Voting set: warm-up paths with C_least >= s and the paths that did not stop
          (the others are recorded with `vote: false`); paths that reach max_tokens are forced to
          answer as in independent sampling.

Checking between chunks (not inside the backend's decoding loop) keeps this on the plain Generator
protocol of every backend; a stopped path may have generated up to conf_check_tokens - 1 tokens past
its stop point, and they are counted in its tokens (`early_stop` records where it would have stopped).
The reference code's consensus-based early end of sampling (tau) is not implemented (nor is it in
the reference code): every question gets all N paths.
"""

from __future__ import annotations

from ..backends.base import SamplingParams
from ..tasks.problem import Problem
from .aggregate import confidence_stats, percentile
from .independent import _split, force_answers, question_prompt, sample
from .paths import PathStore, PathTrace

MODES = ("offline", "online")


def first_low_window(conf: list[float], window: int, threshold: float, start: int = 0) -> int | None:
    """The token count at which a path stops online: the first t (>= window) whose window mean of
    C over tokens t-window..t-1 is below `threshold`, looking only at windows ending after `start`
    tokens; None when no full window is below it.

    >>> first_low_window([3.0, 3.0, 1.0, 1.0, 3.0], window=2, threshold=2.5)  # mean(3, 1) = 2 < 2.5
    3
    >>> first_low_window([1.0, 1.0], window=4, threshold=9.0) is None  # never a full window
    True
    """
    if len(conf) < window:
        return None
    run = sum(conf[:window])
    for t in range(window, len(conf) + 1):
        if t > window:
            run += conf[t - 1] - conf[t - 1 - window]
        if t > start and run / window < threshold:
            return t
    return None


def threshold(warmup: list[PathTrace], window: int, eta: float) -> float:
    """s = Percentile_{100 - eta} of the warm-up paths' lowest group confidences.

    >>> t = [PathTrace("", confidence=c) for c in ([1.0, 1.0], [2.0, 2.0], [3.0, 3.0])]
    >>> threshold(t, window=2, eta=90)  # 10th percentile of 1, 2, 3
    1.2
    """
    lows = [confidence_stats(t.confidence or [], window)["lowest_group"] for t in warmup]
    return percentile(lows, 100 - eta)


def solve(problems: list[Problem], store: PathStore, cfg, render, seed: int) -> list[list[PathTrace]]:
    """DeepConf over a batch of questions (`cfg.deepconf_mode`); the store records token confidences."""
    if cfg.deepconf_mode == "offline":
        flat = sample(store, [question_prompt(p, render) for p in problems], problems, [cfg.paths] * len(problems),
                      cfg, seed, cfg.answer_tokens)
        return _split(flat, [cfg.paths] * len(problems))
    W = min(cfg.warmup_paths, cfg.paths)
    prompts = [question_prompt(p, render) for p in problems]
    warm = _split(sample(store, prompts, problems, [W] * len(problems), cfg, seed, cfg.answer_tokens),
                  [W] * len(problems))
    bars = [threshold(w, cfg.conf_window, cfg.conf_eta) for w in warm]
    for w, s in zip(warm, bars):
        for t in w:
            low = confidence_stats(t.confidence or [], cfg.conf_window)["lowest_group"]
            t.extra.update(warmup=True, conf_threshold=round(s, 4), vote=low >= s)
    rest = online(store, prompts, problems, [cfg.paths - W] * len(problems), bars, cfg, seed + 500_000)
    return [w + r for w, r in zip(warm, rest)]


def online(store: PathStore, prompts: list[str], problems: list[Problem], counts: list[int], bars: list[float],
           cfg, seed: int) -> list[list[PathTrace]]:
    """`counts[j]` paths per question generated chunk by chunk; each stops once a full window of its
    token confidences averages below its question's threshold `bars[j]` (see the module docstring)."""
    paths = []  # (store id, trace, question index)
    for j, (prompt, n) in enumerate(zip(prompts, counts)):
        for _ in range(n):
            paths.append((store.add(prompt), PathTrace(prompt=prompt), j))
    sample_opts = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.sample_top_k, min_p=cfg.min_p)
    active, step = list(paths), 0
    while active:
        still = []
        budgets = {i: min(cfg.conf_check_tokens, cfg.max_tokens - t.tokens) for i, t, _ in active}
        for b in sorted(set(budgets.values()), reverse=True):  # one call per distinct budget
            batch = [a for a in active if budgets[a[0]] == b]
            params = SamplingParams(max_tokens=b, stop=tuple(cfg.stop), seed=seed + 10_000 * step, **sample_opts)
            step += 1
            for (i, t, j), c in zip(batch, store.advance([i for i, _, _ in batch], params)):
                seen = t.tokens
                t.tokens += c.num_tokens
                t.rounds.append({"text": c.text, "tokens": c.num_tokens})
                at = first_low_window(store.confidences(i) or [], cfg.conf_window, bars[j], start=seen)
                if at is not None:
                    t.finished, t.finish = True, "confidence"
                    t.extra.update(early_stop=at, vote=False)
                elif c.finish_reason == "stop":
                    t.finished, t.finish = True, "stop" if c.stop else "eos"
                elif t.tokens >= cfg.max_tokens or c.num_tokens == 0:
                    t.finish = "length"
                else:
                    still.append((i, t, j))
        active = still
    cut = [(i, t, j) for i, t, j in paths if t.finish == "length"] if cfg.answer_tokens > 0 else []
    force_answers(store, [i for i, _, _ in cut], [t for _, t, _ in cut], [problems[j] for _, _, j in cut],
                  cfg.answer_tokens, seed, sample_opts)
    out: list[list[PathTrace]] = [[] for _ in prompts]
    for i, t, j in paths:
        t.finished = True
        t.text = store.text(i)[len(t.prompt):]
        t.confidence = store.confidences(i)
        t.extra.setdefault("vote", True)
        t.extra["conf_threshold"] = round(bars[j], 4)
        out[j].append(t)
    return out
