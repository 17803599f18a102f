"""The benchmarks run and write complete, self-consistent results (timings are reported, never asserted)."""

import json

import pytest

from lakd.bench.distill import bench_distill


def test_bench_distill_compares_cached_online_and_finetune(tmp_path):
    out = tmp_path / "distill.json"
    res = bench_distill(teacher_counts=(1, 2), steps=2, warmup=1, batch_size=2, seconds=1.0, device="cpu", out_json=out)
    saved = json.loads(out.read_text())
    assert saved["settings"] == json.loads(json.dumps(res["settings"]))
    rows = {(r["setting"], r["teachers"]): r for r in saved["settings"]}
    assert set(rows) == {("finetune", 0), ("cached", 1), ("online", 1), ("cached", 2), ("online", 2)}
    assert saved["student_params"] > 0 and saved["teacher_params"] > 0 and saved["batch_size"] == 2
    base = rows[("finetune", 0)]["step_s_median"]
    for r in saved["settings"]:
        # every number is derived from that setting's own step time, and ratios are against fine-tuning's
        assert 0 < r["step_s_median"] < 60 and 0 < r["step_s_mean"] < 60
        assert r["ratio_vs_finetune"] == pytest.approx(r["step_s_median"] / base)
        assert r["utterances_per_s"] == pytest.approx(2 / r["step_s_median"])
        assert r["audio_s_per_s"] == pytest.approx(2 * 1.0 / r["step_s_median"])
