"""The published method's settings as config overrides, read from the authors' code (aalto-speech/mtkd4ser),
and the per-language summary of an evaluation report that paper-style tables print.

The runs themselves are the `paper` grid of lakd.experiments (`lakd experiment run --grid paper`, or its alias
`lakd experiment paper-table`): every teacher, cache and student is a job of the job graph there.
"""

from __future__ import annotations

# The published code's loss balance (utils.train_kd / train_mtkd): KLDivLoss(reduction="mean") at T = 5 with
# T² scaling; λ = 0.75 with one teacher, 0.25 with the per-language teachers weighted once per batch.
PUBLISHED_KD = {"distill.kl_reduction": "mean", "distill.temperature": 5.0, "distill.kd_weight": 0.75}
PUBLISHED_MTKD = {
    "distill.weighting": "cosine-batch",
    "distill.cosine_tau": 0.25,
    "distill.kl_reduction": "mean",
    "distill.temperature": 5.0,
    "distill.kd_weight": 0.25,
}
# the published student is a plain wav2vec2 classifier: no language embedding, no hierarchical attention
PLAIN_STUDENT = {"student.language_embedding": False, "student.hierarchical_attention": False}


def summarize(report: dict, langs: list[str]) -> dict:
    """{group: {ua, ua_ci, wa, wa_ci, n}} for each language and overall."""
    out = {}
    metrics = report["metrics"]
    for g in [*langs, "overall"]:
        m = metrics["overall"] if g == "overall" else metrics["groups"].get(g)
        if m is None:
            continue
        out[g] = {k: m[k] for k in ("ua", "ua_ci", "wa", "wa_ci", "n") if k in m}
    return out
