"""The model card (`README.md`) of a Hugging Face export: the hub's YAML metadata block, then how to use the model,
what it is, its evaluation and its training configuration.

The metadata block is built with huggingface_hub's `ModelCardData` / `EvalResult`, so `huggingface-cli upload`
publishes it as it is: languages, labels (as tags and in the text), `pipeline_tag: audio-classification`, and a
`model-index` with UA / WA overall and per language from the checkpoint's evaluation report when one is found.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lakd import __version__

REPORT_JSON = "metrics.json"
_CONFIG_SECTIONS = ("name", "seed", "labels", "languages", "data", "teacher", "teacher_optim", "student")
_CONFIG_SECTIONS += ("student_optim", "distill")


def find_report(checkpoint: Path, report: Path | None = None) -> Path | None:
    """The evaluation report of a checkpoint: `report` (a metrics.json or its directory) or the one lakd wrote
    beside it (`lakd evaluate`: <checkpoint>/../eval; the pipeline: <run>/eval/<name>/test)."""
    if report is not None:
        path = Path(report) / REPORT_JSON if Path(report).is_dir() else Path(report)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no evaluation report there")
        return path
    name = checkpoint.parent.name
    candidates = [checkpoint.parent / "eval" / REPORT_JSON]
    candidates += [p / "eval" / name / "test" / REPORT_JSON for p in list(checkpoint.parents)[:3]]
    if _kind(checkpoint) == "ft-mono":  # the pipeline evaluates the per-language teachers together: <run>/eval/ft-mono
        candidates += [p / "eval" / "ft-mono" / "test" / REPORT_JSON for p in list(checkpoint.parents)[:3]]
    return next((c for c in candidates if c.exists()), None)


def _kind(checkpoint: Path) -> str:
    try:
        return json.loads((checkpoint / "lakd.json").read_text()).get("meta", {}).get("kind", "")
    except (OSError, ValueError):
        return ""


def report_for_languages(report: dict, languages: list[str]) -> dict | None:
    """The part of a report about `languages`: a one-language teacher's card takes its own language's results out
    of the report that evaluated every teacher together (the other languages were other models). None when the
    report has no results for one of them."""
    groups = report["metrics"].get("groups") or {}
    if set(groups) <= set(languages):
        return report
    if any(lang not in groups for lang in languages):
        return None
    kept = {lang: groups[lang] for lang in languages}
    overall = kept[languages[0]] if len(languages) == 1 else report["metrics"]["overall"]
    n = sum(g.get("n", 0) for g in kept.values()) or report.get("n")
    return {**report, "n": n, "metrics": {**report["metrics"], "overall": overall, "groups": kept}}


def _eval_results(report: dict, dataset: str) -> list:
    from huggingface_hub import EvalResult

    m = report["metrics"]
    entries = [(None, m["overall"])] + sorted(m["groups"].items())
    out = []
    for lang, e in entries:
        for key, metric_type, metric_name in (
            ("ua", "recall", "UA (unweighted average recall)"),
            ("wa", "accuracy", "WA (weighted accuracy)"),
        ):
            if e.get(key) is None:
                continue
            out.append(
                EvalResult(
                    task_type="audio-classification",
                    task_name="Speech emotion recognition",
                    dataset_type=dataset,
                    dataset_name=dataset + (f" ({lang})" if lang else ""),
                    dataset_config=lang,
                    dataset_split="test",
                    metric_type=metric_type,
                    metric_name=metric_name + (f", {lang}" if lang else ""),
                    metric_value=round(100 * float(e[key]), 2),
                )
            )
    return out


def _results_table(report: dict) -> str:
    m = report["metrics"]
    rows = ["| language | n | UA % | WA % | macro-F1 % |", "|---|---:|---:|---:|---:|"]

    def pct(e, key):
        v = e.get(key)
        text = "–" if v is None else f"{100 * v:.1f}"
        ci = e.get(f"{key}_ci")
        return text + (f" [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]" if ci and ci.get("low") is not None else "")

    for name, e in sorted(m["groups"].items()) + [("overall", m["overall"])]:
        rows.append(f"| {name} | {e.get('n', '')} | {pct(e, 'ua')} | {pct(e, 'wa')} | {pct(e, 'macro_f1')} |")
    return "\n".join(rows)


def _yes(flag) -> str:
    return "yes" if flag else "no"


def card_languages(meta: dict) -> list[str]:
    """The languages a model was trained on, for the hub's `language` tag and the card's first line. A teacher's
    lakd.json lists the run's whole language table (the order the student's language ids follow), but an FT-Mono
    teacher learned one language (`languages_trained`); its card must not claim the others."""
    return list(meta.get("meta", {}).get("languages_trained") or meta["languages"])


def model_card(meta: dict, *, custom_code: bool, report_path: Path | None, license: str | None = None) -> str:
    """README.md text for an export of the lakd checkpoint described by `meta` (its lakd.json)."""
    from huggingface_hub import ModelCardData

    cfg = meta.get("meta", {}).get("config") or {}
    run_name = cfg.get("name") or "lakd"
    kind = meta.get("meta", {}).get("kind", "")
    model = meta["model"]
    languages = card_languages(meta)
    report = report_for_languages(json.loads(report_path.read_text()), languages) if report_path else None
    data = ModelCardData(
        language=languages,
        license=license,
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=["audio-classification", "speech-emotion-recognition", "lakd", model["family"]]
        + (["knowledge-distillation", "custom_code"] if custom_code else []),
        metrics=["recall", "accuracy"],
        model_name=f"lakd-{run_name}-{kind or ('student' if custom_code else 'classifier')}",
        labels=list(meta["labels"]),
        eval_results=_eval_results(report, run_name) if report else None,
    )
    remote = ", trust_remote_code=True" if custom_code else ""
    pooling = (
        f"hierarchical attention over the top {model['attention_depth']} layers"
        + (" (attentive statistics: weighted mean and std of the frames)" if model.get("attention_stats") else "")
        if model.get("hierarchical_attention")
        else "mean over the last layer"
    )
    usage = [
        "```python",
        "from transformers import pipeline",
        "",
        f'pipe = pipeline("audio-classification", model="PATH_OR_REPO_ID"{remote})',
        'pipe("speech.wav")  # [{"label": ..., "score": ...}, ...] for every emotion',
        'pipe({"raw": waveform, "sampling_rate": 44100})  # a mono float array of any rate',
    ]
    if custom_code:
        usage.append(f'pipe("speech.wav", language="{meta["languages"][0]}")  # condition on the language when known')
    usage.append("```")
    parts = [
        "---",
        data.to_yaml().rstrip(),
        "---",
        "",
        f"# {data.model_name}",
        "",
        f"Speech emotion recognition ({', '.join(meta['labels'])}) for {', '.join(languages)}, "
        f"exported from a lakd checkpoint (lakd {meta.get('lakd_version', __version__)}, "
        f"run kind `{kind or 'unknown'}`).",
        "",
        "## Use",
        "",
        *usage,
        "",
        "Input is mono speech at 16 kHz (the pipeline resamples). "
        + (
            "The model is language-aware: it was trained with a language embedding and uses a shared "
            "“unknown language” embedding when no `language` is given (the stock audio-classification pipeline "
            "never passes one; this repository's pipeline class adds the argument). Loading it needs "
            "`trust_remote_code=True` (modeling_lakd.py, configuration_lakd.py, pipeline_lakd.py)."
            if custom_code
            else "A stock transformers model: no custom code."
        ),
        "",
        "## Model",
        "",
        f"- backbone: {model['family']}, hidden size {meta.get('hidden_size', '?')}, "
        + (f"fine-tuned from {Path(model['pretrained']).name}" if model.get("pretrained") else "trained from scratch"),
        f"- pooling: {pooling}",
        f"- language embedding: {_yes(model.get('language_embedding'))}",
        f"- audio normalisation (zero mean, unit variance per utterance): {_yes(model.get('normalize_audio'))}",
        f"- labels: {', '.join(meta['labels'])}",
    ]
    teachers = meta.get("meta", {}).get("teachers")
    if teachers:
        parts.append(f"- distilled from teachers: {', '.join(teachers)}")
    parts += ["", "## Evaluation", ""]
    if report:
        parts += [
            f"Test split of `{run_name}`, {report.get('n', '?')} utterances. UA = mean recall over the classes "
            "present, WA = accuracy; brackets: 95% bootstrap confidence intervals"
            f" ({report.get('bootstrap', {}).get('unit', 'utterance')} resampling).",
            "",
            _results_table(report),
        ]
    else:
        parts.append(
            "No evaluation report was found beside the checkpoint (run `lakd evaluate`, or export with --report)."
        )
    if cfg:
        trimmed = {k: cfg[k] for k in _CONFIG_SECTIONS if k in cfg}
        parts += [
            "",
            "## Training configuration",
            "",
            "```yaml",
            yaml.safe_dump(trimmed, sort_keys=False).rstrip(),
            "```",
        ]
    return "\n".join(parts) + "\n"
