"""Paper recipes: every shipped config parses, validates and resolves without a model (dry run);
`--config NAME` finds them; the LeaP and M3PO recipes hold the papers' settings; docs give each command."""

import argparse
from pathlib import Path

import pytest

from crosspath import recipes
from crosspath.cli import main
from crosspath.config import ConfigError, config_file, from_args
from crosspath.infer.budget import path_budget
from crosspath.infer.runner import RunConfig

NAMES = [r.name for r in recipes.list_recipes()]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def test_the_papers_recipes_are_shipped():
    assert {"leap-r1-distill-qwen-7b-aime24", "independent-r1-distill-qwen-7b-aime24", "m3po-qwen2.5-1.5b-gsm8k",
            "grpo-qwen2.5-1.5b-gsm8k", "qr-distill-generate", "qr-distill-filter", "qr-distill-train"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_builds_its_run_without_a_model(name):
    recipe, cfg, facts = recipes.dry_run(name)
    module, cls = recipes.COMMANDS[recipe.subcommand]
    assert type(cfg).__name__ == cls and recipe.command == f"crosspath {recipe.subcommand} --config {name}"
    assert recipe.paper and facts
    got = dict(facts)
    if recipe.subcommand in ("run", "distill generate", "distill filter"):
        assert got["generator"].startswith("crosspath.backends.")
    if "task" in got:
        assert "unknown" not in got["task"]
    assert f"`{recipe.command}`" in DOCS.read_text()  # docs give the exact command


def test_leap_recipe_has_the_reference_settings_and_a_fair_baseline():
    leap = from_args(RunConfig, argparse.Namespace(), "leap-r1-distill-qwen-7b-aime24")
    assert (leap.method, leap.backend, leap.task) == ("leap", "vllm", "aime24")
    assert (leap.paths, leap.rounds, leap.round_tokens, leap.peers_k, leap.router) == (4, 5, 2048, 2, "dispersed")
    assert (leap.summary_tokens, leap.answer_tokens) == (256, 256)
    assert (leap.temperature, leap.top_p, leap.sample_top_k, leap.min_p) == (0.6, 0.95, 40, 0.05)
    base = from_args(RunConfig, argparse.Namespace(), "independent-r1-distill-qwen-7b-aime24")
    assert path_budget(base) == path_budget(leap) == 11520
    assert (base.temperature, base.top_p, base.sample_top_k, base.min_p, base.paths) == (0.6, 0.95, 40, 0.05, 4)


def test_m3po_recipe_has_table_3():
    from crosspath.train.cli import _config

    cfg = _config(argparse.Namespace(config="m3po-qwen2.5-1.5b-gsm8k"))
    assert (cfg.algo, cfg.model, cfg.task, cfg.split, cfg.eval_split) == (
        "m3po", "Qwen/Qwen2.5-1.5B-Instruct", "gsm8k", "train", "test")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lr, cfg.betas, cfg.weight_decay) == (32, 64, 5e-6, [0.9, 0.99], 0.1)
    assert (cfg.warmup_ratio, cfg.max_grad_norm, cfg.beta, cfg.group_size, cfg.max_new_tokens) == (
        0.1, 0.1, 0.005, 8, 1024)
    assert (cfg.m3po_lambda, cfg.m3po_temperature, cfg.questions_per_step * cfg.group_size) == (0.1, 0.1, 64)


def test_config_names_resolve_and_the_cli_lists_them(capsys, tmp_path):
    assert config_file("qr-distill-train") == recipes.RECIPES_DIR / "qr-distill-train.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("paths: 2\n")
    assert config_file(str(own)) == own  # a file path still works
    with pytest.raises(ConfigError, match="neither a file nor a shipped recipe"):
        config_file("no-such-recipe")
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES) and "paper: AIME 2024 Pass@1 60.52" in out
    assert main(["recipes", "leap-r1-distill-qwen-7b-aime24"]) == 0
    out = capsys.readouterr().out
    assert "per-path token budget  11520" in out and "crosspath.backends.vllm.VLLMGenerator" in out
    assert main(["recipes", "nope"]) == 2
