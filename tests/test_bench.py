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


@pytest.mark.slow
def test_bench_scale_runs_every_stage_per_language_count(tmp_path):
    from lakd.bench.scale import bench_scale

    out = tmp_path / "scale.json"
    bench_scale(language_counts=(1, 2), per_language=8, teacher_steps=2, steps=2, batch_size=4, out_json=out)
    saved = json.loads(out.read_text())
    one, two = saved["rows"]
    assert (one["languages"], two["languages"]) == (1, 2)
    assert two["train_utterances"] == 2 * one["train_utterances"] == 16
    assert two["eval_utterances"] == 2 * one["eval_utterances"]  # every language's dev set is evaluated
    # the cache holds every teacher's knowledge of every sample: 2 teachers x 2x the samples
    assert two["cache_bytes"] > 2.5 * one["cache_bytes"] and two["cache_bytes_vs_first"] > 2.5
    # own-language: each teacher on its own language only, so 2 teachers x 1x the samples each
    assert two["own_language_cache_bytes"] < 0.7 * two["cache_bytes"]
    assert two["own_language_cache_bytes"] < 2.5 * one["own_language_cache_bytes"]
    for r in saved["rows"]:
        assert r["teacher_parallel_s"] <= r["teacher_total_s"] and r["student_step_s"] > 0
        assert r["student_peak_rss_mb"] >= r["student_rss_growth_mb"] >= 0
        assert r["student_step_s_vs_first"] == pytest.approx(r["student_step_s"] / one["student_step_s"])
