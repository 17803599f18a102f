"""The training engine across processes: DDP under torchrun (gloo) against one process on the merged batches,
and DeepSpeed (ZeRO 0/1/2, exact resume) in subprocesses, never inside pytest (it keeps global state)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tiny_training import TinySER, ce_loss, make_batches, optim, run_in_new_session

from lakd.train.distributed import find_free_port
from lakd.train.engine import Trainer

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ multi-process (torchrun)

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from tiny_training import TinySER, make_batches, ce_loss, optim
    from lakd.train.distributed import init_distributed, all_gather_object
    from lakd.train.engine import Trainer

    dist = init_distributed()
    torch.manual_seed(0)
    model = TinySER(dropout=0.0)
    use_ds = {deepspeed!r}
    t = Trainer(model, optim(epochs=1, warmup_ratio=0.0), loss_fn=ce_loss, steps_per_epoch=3,
                train_loader_factory=lambda e: make_batches(e, 3, 4, rank=dist.rank, world_size=dist.world_size),
                out_dir={out!r}, dist=dist, use_deepspeed=use_ds, zero_stage={zero}, micro_batch_size=4)
    t.fit()
    params = {{k: v.tolist() for k, v in t.model.state_dict().items()}}
    gathered = all_gather_object(params)
    if dist.is_main:
        json.dump({{"same": all(g == gathered[0] for g in gathered), "params": gathered[0],
                   "world": dist.world_size, "launcher": dist.launcher}}, open({result!r}, "w"))
""")


def run_torchrun(tmp_path: Path, nproc: int, deepspeed: bool = False, zero: int = 0) -> dict:
    result = tmp_path / f"result_{nproc}.json"
    script = tmp_path / "train_script.py"
    script.write_text(
        DDP_SCRIPT.format(
            tests=str(REPO / "tests"),
            repo=str(REPO),
            out=str(tmp_path / f"run{nproc}"),
            result=str(result),
            deepspeed=deepspeed,
            zero=zero,
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LAKD_LAUNCHER")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = (
        [str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(find_free_port()), str(script)]
        if nproc > 1
        else [sys.executable, str(script)]
    )
    rc, out = run_in_new_session(cmd, env=env, cwd=tmp_path, timeout=240)
    assert rc == 0, out[-6000:]
    return json.loads(result.read_text())


def merged_two_ranks(epoch):
    """Both ranks' batches of `epoch` concatenated: what one process would see with the global batch."""
    r0, r1 = make_batches(epoch, 3, 4, rank=0, world_size=2), make_batches(epoch, 3, 4, rank=1, world_size=2)
    return [{k: (torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else a[k] + b[k]) for k in a} for a, b in zip(r0, r1)]


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """2 ranks x 4 samples (DDP, gloo) == 1 process x 8 samples (the same samples): gradients are averaged."""
    two = run_torchrun(tmp_path, 2)
    assert two["same"] and two["world"] == 2 and two["launcher"] == "torchrun"
    # one process seeing both ranks' batches concatenated
    torch.manual_seed(0)
    model = TinySER(dropout=0.0)

    t = Trainer(
        model,
        optim(epochs=1, warmup_ratio=0.0),
        loss_fn=ce_loss,
        train_loader_factory=merged_two_ranks,
        steps_per_epoch=3,
        out_dir=tmp_path / "one",
    )
    t.fit()
    for k, v in t.model.state_dict().items():
        torch.testing.assert_close(torch.tensor(two["params"][k]), v, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- DeepSpeed
# DeepSpeed creates a process group and global state, so it runs in a subprocess, never inside pytest.

DS_SINGLE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from tiny_training import TinySER, make_batches, ce_loss, optim
    from lakd.train.distributed import init_distributed
    from lakd.train.engine import Trainer

    dist = init_distributed()
    out = {{}}

    def train(name, use_ds, zero, loss_fn=ce_loss, dropout=0.0, **cfg):
        torch.manual_seed(0)
        m = TinySER(dropout=dropout)
        t0 = time.perf_counter()
        t = Trainer(m, optim(**cfg), loss_fn=loss_fn, steps_per_epoch=6,
                    train_loader_factory=lambda e: make_batches(e, 6), out_dir={out_dir!r} + "/" + name,
                    dist=dist, use_deepspeed=use_ds, zero_stage=zero, micro_batch_size=8)
        out[name + "_init_s"] = time.perf_counter() - t0
        t.fit()
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    ref = train("plain", False, 0, epochs=1, grad_accum=2)
    for zero in (0, 1, 2):
        out[f"diff_zero{{zero}}"] = float((train(f"ds{{zero}}", True, zero, epochs=1, grad_accum=2) - ref).abs().max())
    # exact resume under ZeRO-2 with dropout and a crash after the checkpoint at step 4
    cfg = dict(epochs=2, checkpoint_every=2)
    straight = train("z2_straight", True, 2, dropout=0.2, **cfg)
    calls = {{"n": 0}}
    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("node died")
        return ce_loss(model, batch)
    try:
        train("z2_resumed", True, 2, loss_fn=crashing, dropout=0.2, **cfg)
    except RuntimeError as e:
        out["crash"] = str(e)
    resumed = train("z2_resumed", True, 2, dropout=0.2, **cfg)
    out["resume_diff"] = float((straight - resumed).abs().max())
    json.dump(out, open({result!r}, "w"))
""")


def test_deepspeed_single_process_matches_torch_and_resumes_exactly(tmp_path):
    result = tmp_path / "ds.json"
    script = tmp_path / "ds_script.py"
    script.write_text(
        DS_SINGLE_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO), out_dir=str(tmp_path), result=str(result))
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LAKD_LAUNCHER")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    rc, out = run_in_new_session([sys.executable, str(script)], env=env, cwd=tmp_path, timeout=240)
    assert rc == 0, out[-6000:]
    r = json.loads(result.read_text())
    for zero in (0, 1, 2):
        assert r[f"diff_zero{zero}"] < 1e-5, r
    assert r["crash"] == "node died"
    assert r["resume_diff"] == 0.0, r
    assert (tmp_path / "z2_resumed" / "last" / "deepspeed" / "state").is_dir()
    assert (tmp_path / "ds2" / "best" / "model.safetensors").exists()


@pytest.mark.slow
def test_deepspeed_zero2_two_processes(tmp_path):
    """2 ranks, gloo, ZeRO-2: identical parameters on both ranks, equal to one process on the merged batches."""
    two = run_torchrun(tmp_path, 2, deepspeed=True, zero=2)
    assert two["same"] and two["world"] == 2
    torch.manual_seed(0)
    model = TinySER(dropout=0.0)

    Trainer(
        model,
        optim(epochs=1, warmup_ratio=0.0),
        loss_fn=ce_loss,
        train_loader_factory=merged_two_ranks,
        steps_per_epoch=3,
        out_dir=tmp_path / "one",
    ).fit()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(torch.tensor(two["params"][k]), v, rtol=1e-4, atol=1e-5)
