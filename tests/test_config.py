"""Every option is checked before work starts: bounds of numeric options (flags and YAML alike),
YAML value types, YAML syntax errors. Errors name the option and the value; exit code 2, no traceback."""

import pytest
import yaml

from crosspath.cli import build_parser, main
from crosspath.config import ConfigError, check, from_args
from crosspath.infer.runner import RunConfig, run
from crosspath.train import TrainConfig

BAD = [  # (command line, what the error must name)
    (["run", "--paths", "0"], "--paths 0: must be >= 1"),
    (["run", "--max-tokens", "0"], "--max-tokens 0: must be >= 1"),
    (["run", "--temperature", "-0.5"], "--temperature -0.5: must be >= 0"),
    (["run", "--top-p", "0"], "--top-p 0.0: must be > 0 and <= 1"),
    (["run", "--top-p", "1.5"], "--top-p 1.5: must be > 0 and <= 1"),
    (["run", "--min-p", "2"], "--min-p 2.0: must be >= 0 and <= 1"),
    (["run", "--method", "leap", "--rounds", "0"], "--rounds 0: must be >= 1"),
    (["run", "--batch-questions", "0"], "--batch-questions 0: must be >= 1"),
    (["run", "--max-prompt-tokens", "0"], "--max-prompt-tokens 0: must be >= 1"),
    (["run", "--temperature", "nan"], "--temperature NaN: must be a finite number"),
    (["eval", "--max-tokens", "-1"], "--max-tokens -1: must be >= 1"),
    (["train", "--warmup-ratio", "1.5"], "--warmup-ratio 1.5: must be >= 0 and <= 1"),
    (["train", "--micro-batch-size", "0"], "--micro-batch-size 0: must be >= 1"),
    (["train", "--group-size", "0"], "--group-size 0: must be >= 1"),
    (["train", "--group-size", "1"], "--group-size 1: must be >= 2 without --baseline spo"),
    (["train", "--lr", "0"], "--lr 0.0: must be > 0"),
    (["train", "--betas", "0.9", "1.0"], "--betas [0.9, 1.0]: element 1.0: must be >= 0 and < 1"),
    (["distill", "generate", "--per-style", "0"], "--per-style 0: must be >= 1"),
    (["distill", "filter", "--judge-batch", "0"], "--judge-batch 0: must be >= 1"),
    (["distill", "train", "--data", "x.jsonl", "--warmup-ratio", "-0.1"], "--warmup-ratio -0.1: must be >= 0"),
    (["distill", "leap-t", "--runs", "r", "--steps", "0"], "--steps 0: must be >= 1"),
    (["serve", "--paths", "0"], "--paths 0: must be >= 1"),
    (["serve", "--port", "70000"], "--port 70000: must be >= 0 and <= 65535"),
    (["serve", "--top-p", "2"], "--top-p 2.0: must be > 0 and <= 1"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_out_of_range_options_are_refused_before_work(argv, message, tmp_path, capsys):
    assert main(argv + ([] if argv[0] == "serve" else ["--out", str(tmp_path / "out")])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_all_problems_are_named_at_once_and_the_api_checks_too(tmp_path):
    with pytest.raises(ConfigError) as e:
        check(RunConfig(paths=0, top_p=1.5))
    assert "--paths 0: must be >= 1" in str(e.value) and "--top-p 1.5" in str(e.value)
    with pytest.raises(ConfigError, match="--paths 0"):  # run() itself, before the run directory exists
        run(RunConfig(paths=0, out=str(tmp_path / "r")), progress=False)
    assert not (tmp_path / "r").exists()


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("stop: abc\n", "--stop 'abc' (in {path}): expected a list, got str 'abc'"),
    ("paths: '4'\n", "--paths '4' (in {path}): expected an integer, got str '4'"),
    ("paths: true\n", "--paths true (in {path}): expected an integer"),
    ("paths: 0\n", "--paths 0 (in {path}): must be >= 1"),
    ("model: null\n", "--model null (in {path}): expected a string, got null"),
    ("comm_rounds: [0, x]\n", "--comm-rounds [0, \"x\"] (in {path}): element 'x': expected an integer"),
    ("task_options: [1]\n", "expected a mapping"),
    ("- paths\n", "{path}: expected a mapping of option: value, got a list"),
])
def test_yaml_values_are_type_checked(tmp_path, capsys, text, message):
    path = _yaml(tmp_path, text)
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and "Traceback" not in err


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    path = _yaml(tmp_path, "model: tiny-random\npaths: [4\nmax_tokens: 3\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3:" in err and "YAML syntax error" in err and "Traceback" not in err
    path.write_bytes(b"model: tiny-random\nstop: ['\xff']\n")
    assert main(["run", "--config", str(path)]) == 2
    assert f"{path}:2: not UTF-8" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_flags_win_over_yaml_and_yaml_reads_exponent_floats(tmp_path):
    path = _yaml(tmp_path, "lr: 5e-5\nbetas: [0.9, 0.95]\ngroup_size: 4\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--group-size", "6"])
    cfg = from_args(TrainConfig, args, args.config)
    assert cfg.lr == 5e-5 and cfg.betas == [0.9, 0.95] and cfg.group_size == 6
    path.write_text("group_size: 1\n")  # a bad YAML value overridden by a good flag is fine
    args = build_parser().parse_args(["train", "--config", str(path), "--group-size", "6"])
    assert from_args(TrainConfig, args, args.config).group_size == 6


def test_help_shows_the_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "default: 0.95; > 0 and <= 1" in out and "--max-prompt-tokens" in out


def test_renamed_options_old_flag_and_yaml_key_warn_and_keep_the_hash(tmp_path):
    """top_k -> peers_k (runs) / sample_top_k (training): the old names still work for one release."""
    import argparse
    import hashlib
    import json

    from crosspath.config import DeprecatedOption, add_arguments, config_hash, from_args, to_dict
    from crosspath.infer.runner import RunConfig
    from crosspath.rundir import claim_run_dir
    from crosspath.train import TrainConfig

    for cls, new in ((RunConfig, "peers_k"), (TrainConfig, "sample_top_k")):
        p = argparse.ArgumentParser()
        p.add_argument("--config")
        add_arguments(p, cls)
        with pytest.warns(DeprecatedOption, match=f"--top-k is deprecated, use --{new.replace('_', '-')}"):
            args = p.parse_args(["--top-k", "3"])
        assert getattr(from_args(cls, args), new) == 3
        y = tmp_path / "c.yaml"
        y.write_text("top_k: 5\n")
        with pytest.warns(DeprecatedOption, match=f"`top_k` is deprecated, use `{new}`"):
            assert getattr(from_args(cls, p.parse_args([]), str(y)), new) == 5
        y.write_text(f"top_k: 5\n{new}: 5\n")
        with pytest.raises(ConfigError, match="give only"):
            from_args(cls, p.parse_args([]), str(y))
    # the hash of a run is what it was under the old name
    cfg = RunConfig(peers_k=3)
    old = {("top_k" if k == "peers_k" else k): v for k, v in to_dict(cfg).items()}
    assert config_hash(cfg) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    # a run directory saved with the old name resumes with the new one
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text("{}\n")
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    claim_run_dir(out, to_dict(cfg), markers=("results.jsonl",), resume=True, renamed=RunConfig.RENAMED).release()
