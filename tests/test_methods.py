"""The field's methods end to end on the tiny model through `runner.run`: DeepConf (offline, online),
PaCoRe rounds, Mixture-of-Agents layers, the confidence option on another method, and the refusal
of a backend without log-probs."""

import json

import pytest

from crosspath.backends.base import Completion
from crosspath.config import ConfigError
from crosspath.infer.aggregate import recompute
from crosspath.infer.runner import RunConfig, read_results, run


def _cfg(tmp_path, **kw):
    base = dict(model="tiny-random", task="demo", limit=2, paths=4, max_tokens=12, answer_tokens=3,
                batch_questions=2, seed=3, out=str(tmp_path / "run"))
    base.update(kw)
    return RunConfig(**base)


def _rows(tmp_path):
    return read_results(tmp_path / "run" / "results.jsonl"), json.loads((tmp_path / "run" / "summary.json").read_text())


def test_deepconf_offline_records_confidence_and_every_aggregator(tmp_path, tiny_gen):
    run(_cfg(tmp_path, method="deepconf", deepconf_mode="offline", conf_window=4), generator=tiny_gen, progress=False)
    rows, s = _rows(tmp_path)
    conf = rows[0]["paths"][0]["confidence"]
    assert set(conf) == {"mean", "lowest_group", "bottom10", "tail", "window"} and conf["window"] == 4
    assert conf["lowest_group"] <= conf["mean"] and conf["mean"] > 0
    assert set(s["aggregates"]) == {"majority", "conf_weighted", "top10_conf", "top90_conf", "longest"}
    assert s["aggregated"]["aggregator"] == "top90_conf"
    assert recompute(rows) == s["aggregates"]  # from results.jsonl alone
    assert s["pass@k:k=1&n=4"] == s["pass_at_1"] and "maj@4_stderr" in s and "avg@n:n=4" in s


def test_deepconf_online_stops_paths_after_the_warm_up(tmp_path, tiny_gen):
    # a threshold no window can reach (eta=10 keeps only the warm-up's most confident) stops paths early
    run(_cfg(tmp_path, method="deepconf", paths=5, warmup_paths=2, conf_window=2, conf_check_tokens=4,
             conf_eta=10), generator=tiny_gen, progress=False)
    rows, s = _rows(tmp_path)
    assert any(p["finish"] == "confidence" for r in rows for p in r["paths"])
    for r in rows:
        warm, rest = r["paths"][:2], r["paths"][2:]
        assert all(p["warmup"] for p in warm) and not any(p.get("warmup") for p in rest)
        assert len({p["conf_threshold"] for p in r["paths"]}) == 1
        for p in rest:
            if p["finish"] == "confidence":
                assert p["vote"] is False and 2 <= p["early_stop"] <= p["tokens"] < p["early_stop"] + 4
    assert s["aggregated"]["aggregator"] == "conf_weighted"


@pytest.mark.parametrize("method,extra,sizes", [("pacore", {"paths_per_round": [3, 2]}, [3, 2]),
                                                ("moa", {"moa_layers": 3, "paths": 2}, [2, 2, 1])])
def test_rounds_methods_grade_the_last_round_and_count_every_token(tmp_path, tiny_gen, method, extra, sizes):
    s = run(_cfg(tmp_path, method=method, **extra), generator=tiny_gen, progress=False)
    rows, _ = _rows(tmp_path)
    for r in rows:
        assert [sum(p["round"] == k for p in r["paths"]) for k in range(len(sizes))] == sizes
        graded = [p for p in r["paths"] if p.get("graded", True)]
        assert all(p["round"] == len(sizes) - 1 for p in graded) and len(graded) == sizes[-1]
        assert r["tokens"] == sum(p["tokens"] for p in r["paths"])
        assert r["pass_at_1"] == sum(p["correct"] for p in graded) / len(graded)
    assert s["paths"] == sizes[-1] and s["tokens"] == sum(r["tokens"] for r in rows)


def test_confidence_option_on_independent_runs(tmp_path, tiny_gen):
    s = run(_cfg(tmp_path, confidence=True, conf_window=3), generator=tiny_gen, progress=False)
    assert "conf_weighted" in s["aggregates"] and s["aggregated"]["aggregator"] == "majority"


class NoLogprobs:
    def generate(self, prompts, params):
        return [Completion("\\boxed{2}", [1], "stop") for _ in prompts]


def test_deepconf_refuses_a_backend_without_logprobs(tmp_path, tiny_gen):
    NoLogprobs.tok = tiny_gen.tok
    with pytest.raises(ConfigError, match="does not return top-k token log-probs"):
        run(_cfg(tmp_path, method="deepconf", paths=5), generator=NoLogprobs(), progress=False)
    with pytest.raises(ConfigError, match="more --paths"):
        run(_cfg(tmp_path, method="deepconf", paths=4, warmup_paths=4), generator=tiny_gen, progress=False)


def test_compare_shows_every_aggregator_recomputed_from_results(tmp_path, tiny_gen):
    from crosspath.infer.analysis import compare

    a, b = tmp_path / "a", tmp_path / "b"
    run(_cfg(tmp_path, out=str(a)), generator=tiny_gen, progress=False)
    run(_cfg(tmp_path, out=str(b), method="deepconf", deepconf_mode="offline"), generator=tiny_gen, progress=False)
    text = compare([str(a), str(b)])
    assert "| method | majority | conf_weighted | top10_conf | top90_conf | longest | pass@k:k=1&n=N | maj@N |" in text
    ind, dc = [ln for ln in text.splitlines() if ln.startswith("| independent |") or ln.startswith("| deepconf (")][-2:]
    assert ind.split(" | ")[2] == "-" and dc.split(" | ")[2] != "-"  # no confidence recorded, then recorded


def test_cli_runs_pacore_and_deepconf(tmp_path, capsys):
    from crosspath.cli import main

    base = ["run", "--model", "tiny-random", "--task", "demo", "--limit", "1", "--max-tokens", "4",
            "--answer-tokens", "2"]
    assert main(base + ["--method", "pacore", "--paths-per-round", "2", "1", "--out", str(tmp_path / "p")]) == 0
    assert main(base + ["--method", "deepconf", "--paths", "3", "--warmup-paths", "2", "--conf-eta", "10",
                        "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "| pacore (2-1) | demo | 1 | 1 |" in out and "| deepconf (online, eta 10) |" in out
    assert main(base + ["--paths-per-round", "2", "--out", str(tmp_path / "x")]) != 0  # not an independent option


def test_methods_run_through_an_openai_compatible_server(tmp_path):
    """deepconf, pacore and moa on the openai backend (a scripted server): the top-k log-probs travel
    from the server into the confidence (k = 2: C = -(-0.5 - 1.5) / 2 = 1.0 at every token), the
    rounds' prompts reach the server and every round's tokens are counted."""
    from openai_stub import StubServer

    with StubServer() as srv:
        common = dict(backend="openai", base_url=[srv.url], served_model=srv.model, model="tiny-random",
                      limit=2, paths=2, max_tokens=8, answer_tokens=3)
        s = run(_cfg(tmp_path, method="deepconf", deepconf_mode="offline", conf_top_k=2, conf_window=2, **common),
                generator=None, progress=False)
        rows, _ = _rows(tmp_path)
        assert srv.requests and all(b["logprobs"] == 2 for b in srv.requests)
        for p in (p for r in rows for p in r["paths"]):
            assert p["confidence"]["mean"] == pytest.approx(1.0) and p["confidence"]["lowest_group"] == pytest.approx(1.0)
        assert s["aggregated"]["aggregator"] == "top90_conf"
        for method, extra, sizes in (("pacore", {"paths_per_round": [2, 1]}, [2, 1]), ("moa", {"moa_layers": 2}, [2, 1])):
            out = tmp_path / method
            run(_cfg(tmp_path, method=method, **{**common, **extra, "out": str(out)}), progress=False)
            rows = read_results(out / "results.jsonl")
            for r in rows:
                assert [sum(p["round"] == k for p in r["paths"]) for k in range(len(sizes))] == sizes
                assert r["tokens"] == sum(p["tokens"] for p in r["paths"]) > 0
        last = srv.requests[-1]["prompt"]  # the aggregator read both proposers' (scripted) answers
        assert "Answer 1:" in last and "Answer 2:" in last and last.count(".0 x x") >= 2
