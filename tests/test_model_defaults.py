"""Per-model run defaults (models.ModelSpec.defaults): the small models get the demo's LeaP budgets
unless the user sets them; flags, YAML files and a resumed run's saved config win."""

import yaml

from crosspath.cli import build_parser, main
from crosspath.config import from_args
from crosspath.infer.budget import path_budget
from crosspath.infer.runner import RunConfig, read_results
from crosspath.models import SMALL_MODEL_DEFAULTS, model_defaults
from crosspath.serve.config import ServeConfig


def run_cfg(*argv):
    args = build_parser().parse_args(["run", *argv])
    return from_args(RunConfig, args, args.config)


def test_small_models_get_the_demo_budgets_unless_set(tmp_path):
    cfg = run_cfg("--method", "leap", "--model", "smollm2-135m")
    assert (cfg.rounds, cfg.round_tokens, cfg.summary_tokens, cfg.answer_tokens) == (2, 96, 32, 32)
    assert path_budget(cfg) == 2 * 96 + 32 + 32
    assert run_cfg("--model", "tiny-random").round_tokens == 96
    # a flag wins, and only that option changes
    cfg = run_cfg("--model", "smollm2-135m", "--round-tokens", "200")
    assert (cfg.rounds, cfg.round_tokens, cfg.summary_tokens) == (2, 200, 32)
    # a YAML key wins too
    y = tmp_path / "c.yaml"
    y.write_text("model: smollm2-135m\nrounds: 3\n")
    cfg = run_cfg("--config", str(y))
    assert (cfg.rounds, cfg.round_tokens) == (3, 96)
    # any other model keeps the paper-scale defaults
    cfg = run_cfg("--model", "Qwen/Qwen2.5-1.5B-Instruct")
    assert (cfg.rounds, cfg.round_tokens, cfg.summary_tokens, cfg.answer_tokens) == (3, 512, 64, 64)
    assert model_defaults("Qwen/Qwen2.5-1.5B-Instruct") == {}


def test_independent_budget_follows_the_model_defaults():
    cfg = run_cfg("--method", "independent", "--model", "smollm2-135m")
    assert cfg.max_tokens is None and path_budget(cfg) == 256  # LeaP's budget under the same options


def test_serve_takes_the_model_defaults_too():
    args = build_parser().parse_args(["serve", "--model", "tiny-random", "--summary-tokens", "20"])
    cfg = from_args(ServeConfig, args, args.config)
    assert (cfg.rounds, cfg.round_tokens, cfg.summary_tokens, cfg.answer_tokens) == (2, 96, 20, 32)


def test_help_states_the_model_defaults(capsys):
    parser = build_parser()
    try:
        parser.parse_args(["run", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 512; with smollm2-135m or tiny-random: 96" in text
    assert "default: 3; with smollm2-135m or tiny-random: 2" in text
    assert set(SMALL_MODEL_DEFAULTS) == set(RunConfig.MODEL_DEFAULTS)


def test_resume_keeps_the_budgets_the_run_recorded(tmp_path, capsys, tiny_gen):
    out = tmp_path / "r"
    argv = ["run", "--model", "tiny-random", "--task", "demo", "--paths", "1", "--out", str(out)]
    assert main([*argv, "--limit", "1", "--round-tokens", "3", "--rounds", "1", "--answer-tokens", "1"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["round_tokens"], saved["rounds"], saved["answer_tokens"], saved["summary_tokens"]) == (3, 1, 1, 32)
    # resumed without the flags: the recorded values, not the model's defaults (which would be refused)
    assert main([*argv, "--limit", "2", "--resume"]) == 0
    assert len(read_results(out / "results.jsonl")) == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["round_tokens"] == 3
    # a flag that contradicts the record is still refused by name
    assert main([*argv, "--limit", "2", "--resume", "--round-tokens", "4"]) == 2
    assert "round_tokens" in capsys.readouterr().err


def test_demo_loads_the_model_once_for_both_methods(tmp_path, monkeypatch, capsys, tiny_gen):
    from crosspath.infer import runner

    loads = []
    monkeypatch.setattr(runner, "make_generator", lambda cfg: loads.append(cfg.dtype) or tiny_gen)
    assert main(["demo", "--model", "tiny-random", "--limit", "1", "--dtype", "float32", "--out", str(tmp_path)]) == 0
    assert loads == ["float32"]
    for method in ("independent", "leap"):
        assert len(read_results(tmp_path / method / "results.jsonl")) == 1
    assert "| independent | demo | 4 | 1 |" in capsys.readouterr().out
