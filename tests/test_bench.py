"""The benchmarks run and write complete results (their numbers are reported, never asserted as timings)."""

import json

from lakd.bench.distill import bench_distill


def test_bench_distill_compares_cached_online_and_finetune(tmp_path):
    out = tmp_path / "distill.json"
    res = bench_distill(teacher_counts=(1, 2), steps=1, warmup=1, batch_size=2, seconds=1.0, device="cpu", out_json=out)
    saved = json.loads(out.read_text())
    assert saved["settings"] == json.loads(json.dumps(res["settings"]))
    got = {(r["setting"], r["teachers"]) for r in saved["settings"]}
    assert got == {("finetune", 0), ("cached", 1), ("online", 1), ("cached", 2), ("online", 2)}
    assert all(r["step_s_median"] > 0 and r["utterances_per_s"] > 0 for r in saved["settings"])
    assert saved["settings"][0]["ratio_vs_finetune"] == 1.0
