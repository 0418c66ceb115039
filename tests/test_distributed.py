"""Two CPU processes (torchrun, gloo) x half the batch == one process x the whole batch.

The same fixed rollouts (sampled once with a fixed seed, M3PO blend on, identical on every rank)
feed `Trainer.update`; each rank takes its half of the questions. The optimizer is swapped for
plain SGD without clipping so the new weights are w - lr * grad: equal weights mean equal
gradients (Adam's first step, ~lr * sign(grad), would hide a wrong scale). Checked for the grpo
(per-sequence mean) and dapo (global token mean) losses with KL, and for batch-scaled advantages,
whose std must then be the global one.
"""

import json
import os
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import json, sys
    import torch
    torch.set_num_threads(1)
    from crosspath.models import render_prompt
    from crosspath.train.rollout import sample_rollouts
    from crosspath.train.trainer import PROMPT, TrainConfig, Trainer

    out = sys.argv[1]
    results = {}
    for loss_type, scale in (("grpo", "group"), ("dapo", "batch")):
        cfg = TrainConfig(model="tiny-random", device="cpu", algo="m3po", m3po_lambda=0.3, questions_per_step=4,
                          group_size=3, max_new_tokens=8, train_size=20, eval_size=0, steps=2, beta=0.1,
                          loss_type=loss_type, scale_rewards=scale, micro_batch_size=4, max_grad_norm=0.0,
                          progress=False, tensorboard=False, out=f"{out}/{loss_type}", overwrite=True)
        t = Trainer(cfg)
        t.optimizer = torch.optim.SGD(t.params, lr=0.5)
        t.scheduler = torch.optim.lr_scheduler.LambdaLR(t.optimizer, lambda s: 1.0)
        problems = t.train_set[:4]
        prompts = [render_prompt(t.tok, PROMPT.format(question=p.question, marker="####")) for p in problems]
        r = sample_rollouts(t.model, t.tok, prompts, group_size=3, max_new_tokens=8, seed=123,
                            input_hook=t.hook)  # [12 rows], the same on every rank
        rewards = torch.tensor([1., 0., 0., 1., 1., 1., 0., 1., 1., 0., 0., 0.])  # [4 questions x 3]
        per_rank = 12 // t.dist.world_size
        rows = list(range(t.dist.rank * per_rank, (t.dist.rank + 1) * per_rank))
        adv = t.advantages(rewards[rows])
        stats = [t.update(r.select(rows), adv, step=s) for s in (1, 2)]  # 2nd: LoRA A gets gradients too
        if t.dist.rank == 0:
            weights = {k: v.detach() for k, v in t.model.named_parameters() if "lora_" in k}
            torch.save(weights, f"{out}/{loss_type}-weights.pt")
            results[loss_type] = stats
    if results:
        with open(f"{out}/stats.json", "w") as f:
            json.dump(results, f)
''')


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_ranks_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    argv, threads = sys.argv, torch.get_num_threads()
    try:  # the single process runs right here (one interpreter start less)
        sys.argv = [str(script), str(single)]
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
          str(script), str(double)], tmp_path)

    s_stats = json.loads((single / "stats.json").read_text())
    d_stats = json.loads((double / "stats.json").read_text())
    for loss_type in ("grpo", "dapo"):
        a = torch.load(single / f"{loss_type}-weights.pt")
        b = torch.load(double / f"{loss_type}-weights.pt")
        assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)  # the step did something
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=f"{loss_type}: {k}")
        for s, d in zip(s_stats[loss_type], d_stats[loss_type]):
            for key in ("loss", "kl", "grad_norm"):
                assert d[key] == pytest.approx(s[key], rel=1e-4, abs=1e-7), (loss_type, key)
