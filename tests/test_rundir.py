"""Run directories are safe: one process at a time (lock file), --overwrite deletes nothing until the
new configuration has loaded, a refused resume names the options, --out must be a writable folder.
The same implementation (crosspath.rundir) serves `run`, `train` and `distill train`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crosspath.cli import main
from crosspath.rundir import LOCK_NAME, RunDirError, RunLock, check_writable, claim_run_dir

SRC = str(Path(__file__).resolve().parents[1] / "src")
RUN = ["run", "--model", "tiny-random", "--task", "demo", "--limit", "1", "--paths", "2", "--max-tokens", "3"]
TRAIN = ["train", "--model", "tiny-random", "--device", "cpu", "--steps", "1", "--group-size", "2",
         "--max-new-tokens", "2", "--train-size", "4", "--eval-size", "0", "--no-tensorboard", "--no-progress"]


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of tmp_path/'busy' until it is killed."""
    busy = tmp_path / "busy"
    busy.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from crosspath.rundir import RunLock; "
                              f"lock = RunLock({str(busy)!r}); print('held', flush=True); time.sleep(120)"],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert child.stdout.readline().strip() == "held"
        yield busy, child
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("argv", [RUN, TRAIN, ["distill", "train", "--data", "x.jsonl"]], ids=["run", "train", "distill"])
def test_second_process_on_the_same_out_is_refused(holder, argv, capsys):
    busy, child = holder
    assert main(argv + ["--out", str(busy)]) == 2
    err = capsys.readouterr().err
    assert f"{busy} is in use by pid {child.pid}" in err and "Traceback" not in err


def test_lock_of_a_dead_process_is_taken_over(holder):
    busy, child = holder
    child.kill()  # SIGKILL: no clean-up, the lock file stays with the dead pid in it
    child.wait()
    assert (busy / LOCK_NAME).read_text().strip() == str(child.pid)
    lock = RunLock(busy)
    assert (busy / LOCK_NAME).read_text().strip() == str(os.getpid())
    again = RunLock(busy)  # re-entrant within one process
    again.release()
    assert (busy / LOCK_NAME).exists()
    lock.release()
    assert not (busy / LOCK_NAME).exists()


def test_run_releases_its_lock(tmp_path):
    assert main(RUN + ["--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / LOCK_NAME).exists()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.yaml", "results.jsonl", "summary.json"]


@pytest.mark.parametrize("change,message", [
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--task", "missing.jsonl"], "missing.jsonl"),
    (["--method", "leap", "--rounds", "0"], "--rounds 0"),
    (["--backend", "openai"], "--base-url"),
    (["--max-prompt-tokens", "5"], "longer than 5 tokens"),
])
def test_overwrite_checks_the_whole_new_run_before_deleting(tmp_path, capsys, change, message):
    out = tmp_path / "r"
    assert main(RUN + ["--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(RUN + change + ["--overwrite", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old run is untouched


def _fake_training_run(out: Path) -> dict:
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    (out / "checkpoints" / "step-1" / "trainer_state.json").write_text('{"step": 1}')
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    (out / "config.yaml").write_text("steps: 1\n")
    return {str(p.relative_to(out)) for p in out.rglob("*")}


def test_train_and_distill_overwrite_keep_the_old_run_when_the_new_one_cannot_start(tmp_path, capsys):
    out = tmp_path / "t"
    files = _fake_training_run(out)
    assert main(TRAIN + ["--model", "no-such-model", "--overwrite", "--out", str(out)]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert {str(p.relative_to(out)) for p in out.rglob("*")} == files
    assert main(["distill", "train", "--data", str(tmp_path / "missing.jsonl"), "--overwrite", "--out", str(out)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert {str(p.relative_to(out)) for p in out.rglob("*")} == files


def test_refused_resume_names_the_options_that_differ(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(RUN + ["--out", str(out)]) == 0
    assert main(RUN + ["--temperature", "0.1", "--paths", "3", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other options: paths 2 -> 3; temperature 0.6 -> 0.1" in err
    # options that are not part of a run's identity may change
    assert main(RUN + ["--limit", "2", "--max-prompt-tokens", "4000", "--resume", "--out", str(out)]) == 0


def test_out_must_be_a_writable_folder(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert main(RUN + ["--out", str(afile / "sub" / "run")]) == 2
    assert f"--out {afile / 'sub' / 'run'} is under {afile}, which is a file" in capsys.readouterr().err
    assert main(TRAIN + ["--out", str(afile)]) == 2
    assert f"--out {afile} is a file, not a folder" in capsys.readouterr().err
    assert main(["distill", "generate", "--out", str(afile / "paths.jsonl")]) == 2  # a file's --out
    assert f"--out {afile / 'paths.jsonl'} is under {afile}, which is a file" in capsys.readouterr().err
    assert main(["distill", "filter", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; name a file" in capsys.readouterr().err
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(RunDirError, match="is not writable"):
        check_writable(tmp_path / "ro")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_parent_is_a_clear_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(RUN + ["--out", str(ro / "run")]) == 2
        assert "cannot create --out" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_claim_without_overwrite_and_distributed_ranks(tmp_path):
    out = tmp_path / "r"
    (out / "results.jsonl").parent.mkdir()
    (out / "results.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="--resume .* --overwrite"):
        claim_run_dir(out, {}, markers=("results.jsonl",))
    rank1 = claim_run_dir(out, {}, markers=("results.jsonl",), overwrite=True, main=False)
    rank1.clear()  # only the main rank deletes
    assert (out / "results.jsonl").exists() and rank1.lock is None
    main_rank = claim_run_dir(out, {}, markers=("results.jsonl",), overwrite=True)
    main_rank.clear()
    assert not (out / "results.jsonl").exists() and (out / LOCK_NAME).exists()
    main_rank.release()
