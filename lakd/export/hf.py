"""Export a lakd checkpoint as a directory transformers alone loads and runs (`lakd export --format hf`).

Two routes, chosen by what the stock classes can represent exactly:

- teachers and plain students (no language embedding, no hierarchical attention): a stock
  `Wav2Vec2ForSequenceClassification` (or HuBERT / WavLM). lakd pools `head(masked_mean(last_layer))`; the stock
  head is `classifier(masked_mean(projector(last_layer)))`. Both maps are affine and the mean is linear, so
  `projector` = identity (classifier_proj_size = hidden size) and `classifier` = lakd's head give the same logits
  (up to float rounding: summation order).
- language-aware models: `LakdForAudioClassification` through transformers' custom-code convention: config.json
  names `configuration_lakd.LakdConfig` / `modeling_lakd.LakdForAudioClassification` in `auto_map` and
  `pipeline_lakd.LakdAudioClassificationPipeline` in `custom_pipelines`; those files (lakd/export/hf_modeling)
  are copied beside the weights and load with `trust_remote_code=True`.

Both write `preprocessor_config.json` (Wav2Vec2FeatureExtractor: 16 kHz; `do_normalize` = lakd's
`normalize_audio`, the same zero-mean/unit-variance formula; an attention mask only for layer-norm encoders, as
lakd) and a model card. The export is checked before it is returned: transformers loads it back and its
probabilities must match lakd's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from lakd import SAMPLE_RATE
from lakd.io import apply_umask, create_temp_dir

MAX_DIFF = 1e-4  # an export whose probabilities differ more from lakd's is refused


def _stock_model(model):
    """The stock *ForSequenceClassification with lakd's backbone and head (identity projector)."""
    from transformers import AutoModelForAudioClassification

    config = model.backbone.config.__class__.from_dict(_portable(model.backbone.config.to_dict()))
    config.id2label = dict(enumerate(model.labels))
    config.label2id = {label: i for i, label in enumerate(model.labels)}
    config.classifier_proj_size = model.hidden_size
    config.use_weighted_layer_sum = False
    hf = AutoModelForAudioClassification.from_config(config)
    getattr(hf, hf.base_model_prefix).load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        hf.projector.weight.copy_(torch.eye(model.hidden_size))
        hf.projector.bias.zero_()
        hf.classifier.weight.copy_(model.head.weight)
        hf.classifier.bias.copy_(model.head.bias)
    return hf.eval()


def _portable(config: dict) -> dict:
    """A backbone config without what ties it to this machine or to a task (local path, labels, versions)."""
    drop = {"architectures", "transformers_version", "id2label", "label2id"}
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in drop}


def _custom_model(model):
    """`LakdForAudioClassification` (the template module) holding lakd's state dict unchanged."""
    from lakd.export.hf_modeling.configuration_lakd import LakdConfig
    from lakd.export.hf_modeling.modeling_lakd import LakdForAudioClassification

    cfg = model.cfg
    config = LakdConfig(
        backbone_family=cfg.family,
        backbone_config=_portable(model.backbone.config.to_dict()),
        languages=list(model.languages),
        language_embedding=bool(cfg.language_embedding),
        hierarchical_attention=bool(cfg.hierarchical_attention),
        attention_depth=int(cfg.attention_depth),
        attention_dim=int(cfg.attention_dim),
        attention_stats=bool(cfg.attention_stats),
        classifier_dropout=float(cfg.dropout),
        id2label=dict(enumerate(model.labels)),
        label2id={label: i for i, label in enumerate(model.labels)},
    )
    config.auto_map = {
        "AutoConfig": "configuration_lakd.LakdConfig",
        "AutoModelForAudioClassification": "modeling_lakd.LakdForAudioClassification",
    }
    config.custom_pipelines = {
        "audio-classification": {
            "impl": "pipeline_lakd.LakdAudioClassificationPipeline",
            "pt": ["AutoModelForAudioClassification"],
            "type": "audio",
        }
    }
    config.architectures = ["LakdForAudioClassification"]
    hf = LakdForAudioClassification(config)
    hf.load_state_dict(model.state_dict())
    return hf.eval()


def feature_extractor(model):
    from transformers import Wav2Vec2FeatureExtractor

    from lakd.models.backbone import uses_attention_mask

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=bool(model.cfg.normalize_audio),
        return_attention_mask=uses_attention_mask(model.backbone),
    )


def check_export(directory: Path, predictor, custom_code: bool, seconds: float = 1.5) -> float:
    """Largest |p_transformers - p_lakd| over test signals and every language (plus unknown)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from lakd.models.backbone import quiet_progress

    with quiet_progress():
        hf = AutoModelForAudioClassification.from_pretrained(directory, trust_remote_code=custom_code).eval()
    fe = AutoFeatureExtractor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(SAMPLE_RATE * seconds)) + 0.05).astype(np.float32)
    languages = [*predictor.languages, None] if custom_code else [None]
    worst = 0.0
    for language in languages:
        want = np.array(list(predictor.predict(audio, SAMPLE_RATE, language=language).values()))
        inputs = dict(fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"))
        if custom_code:
            inputs["language_ids"] = torch.tensor([predictor.language_id(language)])
        with torch.no_grad():
            got = torch.softmax(hf(**inputs).logits.float(), -1)[0].numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export_hf(checkpoint, out, report: Path | None = None, license: str | None = None) -> dict:
    """Write the Hugging Face directory `out` (replaced if it exists); returns what was written and verified."""
    from lakd.export.card import find_report, model_card
    from lakd.export.hf_modeling import TEMPLATE_DIR, TEMPLATE_FILES
    from lakd.inference import Predictor
    from lakd.models.backbone import quiet_progress
    from lakd.models.ser import read_metadata

    predictor = Predictor.from_checkpoint(checkpoint)
    model = predictor.model
    source = Path(checkpoint)
    if not (source / "lakd.json").exists():
        source = source / "best"
    meta = read_metadata(source)
    custom_code = bool(model.cfg.language_embedding or model.cfg.hierarchical_attention)
    hf = _custom_model(model) if custom_code else _stock_model(model)
    report_path = find_report(source, report)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_dir(out)  # mode 0o777 less the umask (mkdtemp's would be 0o700)
    try:
        with quiet_progress():
            hf.save_pretrained(tmp)
        feature_extractor(model).save_pretrained(tmp)
        if custom_code:
            for name in TEMPLATE_FILES:
                shutil.copyfile(TEMPLATE_DIR / name, tmp / name)
        card = model_card(meta, custom_code=custom_code, report_path=report_path, license=license)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        apply_umask(tmp)  # safetensors writes its files 0o600: a group sharing the export must read them
        diff = check_export(tmp, predictor, custom_code)
        if diff > MAX_DIFF:
            raise RuntimeError(f"Hugging Face export of {checkpoint} disagrees with lakd by {diff:.2e}")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "format": "hf",
        "path": str(out),
        "class": type(hf).__name__,
        "custom_code": custom_code,
        "labels": predictor.labels,
        "languages": predictor.languages,
        "report": str(report_path) if report_path else None,
        "files": sorted(p.name for p in out.iterdir()),
        "max_abs_diff_vs_lakd": diff,
    }
