"""report.md of an experiment, rendered from report.json's dict (lakd.experiments.report)."""

from __future__ import annotations


def _ms(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "–"
    return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}" if s["n"] > 1 else f"{100 * s['mean']:.1f}"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def _diff(r: dict | None) -> str:
    if r is None:
        return "–"
    text = f"{_pp(r['diff'])} [{_pp(r['low'])}, {_pp(r['high'])}] p={r['p_value']:.3g}"
    return f"**{text}** *" if r.get("significant") else text


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _training(training: dict, label: dict, order: list[str]) -> list[str]:
    """Steps, where the best dev evaluation was, and how many models were still improving at the end."""
    rows = []
    for v in [v for v in order if v in training]:
        t = training[v]
        at = f"{t['best_step']:.0f} ({100 * t['best_step'] / t['steps']:.0f}%)" if t["steps"] else "–"
        secs = f"{t['train_seconds']:.0f}" if t["train_seconds"] is not None else "–"
        rows.append([label[v], str(t["models"]), f"{t['steps']:.0f}", at, f"{t['best_at_last_eval']}", secs])
    if not rows:
        return []
    head = ["variant", "models", "steps", "best dev step", "best at the last evaluation", "train s"]
    return [
        "",
        "## Training",
        "",
        *_table(head, rows),
        "",
        "Means over the seeds (and, for Mono variants, the per-language models). A model whose best dev UA is its "
        "last evaluation was still improving when its schedule ended: a longer one may help.",
    ]


def render(report: dict) -> str:
    langs, labels = report["languages"], report["labels"]
    label = {v["name"]: v["label"] for v in report["variants"]}
    order = [v["name"] for v in report["variants"] if v["name"] in report["summary"]]
    summary, comparisons = report["summary"], report["comparisons"]
    opts = report["statistics"]
    n_seeds = len(report["seeds"])
    base = report["baseline"]
    out = [
        f"# Experiment {report['experiment']}: grid `{report['grid']}` on `{report['config']}`",
        "",
        (report.get("grid_description") or "").strip(),
        "",
        f"Seeds {', '.join(map(str, report['seeds']))}. Trained on train, selected on dev, reported on test. "
        f"UA = mean recall over the classes, WA = accuracy, in %: mean ± sd over the seeds (sd with n − 1).",
        "",
        "## UA / WA per language",
        "",
    ]
    rows = []
    for v in order:
        s = summary[v]
        rows.append(
            [
                label[v],
                *[_ms(s[g]["ua"]) for g in langs],
                _ms(s["overall"]["ua"]),
                _ms(s["overall"]["wa"]),
                str(len(report["runs"][v])),
            ]  # fmt: skip
        )
    out += _table(["variant", *[f"{g} UA" for g in langs], "overall UA", "overall WA", "seeds"], rows)
    out += ["", "## Per-class recall, all languages", ""]
    rows = [[label[v], *[_ms(summary[v]["overall"]["per_class_recall"][c]) for c in labels]] for v in order]
    out += _table(["variant", *labels], rows)
    out += [
        "",
        f"## Paired differences against {label.get(base, base)} ({opts['metric'].upper()}, percentage points)",
        "",
    ]
    if comparisons:
        rows = [[label[v], *[_diff(comparisons[v].get(g)) for g in ["overall", *langs]]] for v in comparisons]
        out += _table(["variant", "overall", *langs], rows)
        n_cmp = sum(len(c) for c in comparisons.values())
        out += [
            "",
            f"Each cell: variant − {label.get(base, base)}, the mean over the seeds both have of the per-seed "
            f"difference on the same test utterances; [{100 * (1 - opts['alpha']):.0f}% paired bootstrap CI, "
            f"{opts['n_bootstrap']} resamples of speakers where a group has enough of them, else of utterances]; "
            f"p = two-sided paired permutation test ({opts['n_permutations']} permutations, each seed × utterance "
            f"pair swapped with probability 1/2). **Bold \\*** = significant: Holm-adjusted p < {opts['alpha']} "
            f"over the {n_cmp} comparisons of this table. Anything else cannot be told from noise at this test-set "
            f"size and number of seeds ({n_seeds}).",
        ]
    else:
        out += [f"No paired comparisons: the baseline {base!r} has no finished run."]
    tt = report.get("teacher_trainings") or {}
    if tt:
        saved = tt["without_sharing"] - tt["trained"]
        out += [
            "",
            "## Teachers",
            "",
            f"{tt['trained']} teacher trainings, each shared by every variant that reads it; training them per run "
            f"would have taken {tt['without_sharing']} ({saved} saved).",
        ]
    out += _training(report.get("training") or {}, label, order)
    if report["missing"]:
        out += ["", "## Missing runs", "", "Not finished, so not in the tables: " + ", ".join(report["missing"])]
    if report["figures"]:
        out += ["", "## Figures", ""]
        out += [f"![{name}]({path})" for name, path in report["figures"].items()]
    out += ["", "## Runs", ""]
    rows = []
    for v in order:
        for seed, r in sorted(report["runs"][v].items(), key=lambda kv: int(kv[0])):
            cells = [f"{100 * r['groups'][g]['ua']:.1f}" if g in r["groups"] else "–" for g in langs]
            ua, wa = r["overall"]["ua"], r["overall"]["wa"]
            rows.append([label[v], seed, *cells, f"{100 * ua:.1f}", f"{100 * wa:.1f}", f"`{r['report_dir']}`"])
    out += _table(["variant", "seed", *[f"{g} UA" for g in langs], "UA", "WA", "evaluation"], rows)
    return "\n".join(out).replace("\n\n\n", "\n\n").rstrip() + "\n"
