"""Backbones, pooling and SERModel: padding invariance, language embedding, save/load round trip."""

import copy
import json

import pytest
import torch
from transformers import HubertModel, Wav2Vec2Model, WavLMModel

from lakd.config import ModelConfig
from lakd.models.backbone import BackboneError, build_backbone, frame_mask, num_frames
from lakd.models.pooling import AttentionPool, HierarchicalAttentionPool, masked_mean
from lakd.models.ser import CheckpointError, SERModel

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
LABELS = ["anger", "happiness", "neutral", "sadness"]
LANGS = ["en", "fi", "fr"]
HF_CLASSES = {"wav2vec2": Wav2Vec2Model, "hubert": HubertModel, "wavlm": WavLMModel}


def tiny_cfg(student: bool = False, family: str = "wav2vec2", **kw) -> ModelConfig:
    return ModelConfig(
        family=family,
        backbone=dict(TINY),
        language_embedding=student,
        hierarchical_attention=student,
        attention_depth=2,
        attention_dim=16,
        **kw,
    )


def make_model(student: bool = False, family: str = "wav2vec2", seed: int = 0, **kw) -> SERModel:
    torch.manual_seed(seed)
    m = SERModel(tiny_cfg(student, family, **kw), LABELS, LANGS)
    if m.language_projection is not None:  # zero-init would make the language path trivially invariant
        torch.nn.init.normal_(m.language_projection.weight, std=0.5)
    return m.eval()


def padded_pair(n_short: int = 7000, n_long: int = 12000):
    g = torch.Generator().manual_seed(1)
    short, long = torch.randn(1, n_short, generator=g), torch.randn(1, n_long, generator=g)
    x = torch.zeros(2, n_long)
    x[0, :n_short], x[1] = short[0], long[0]
    mask = torch.zeros(2, n_long, dtype=torch.long)
    mask[0, :n_short], mask[1] = 1, 1
    return short, x, mask


# ----------------------------------------------------------------------------- backbone


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_build_backbone_random_init_all_families(family):
    bb = build_backbone(tiny_cfg(family=family))
    assert isinstance(bb, HF_CLASSES[family])
    out = bb(torch.randn(1, 16000), output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 49, 32)  # stride 320: ~50 frames per second
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1


def test_build_backbone_from_local_dir(tmp_path):
    src = build_backbone(tiny_cfg())
    src.save_pretrained(tmp_path / "bb")
    loaded = build_backbone(ModelConfig(pretrained=str(tmp_path / "bb"), backbone={"mask_time_prob": 0.0}))
    assert loaded.config.mask_time_prob == 0.0  # cfg.backbone overrides the stored config
    ref = src.state_dict()
    assert set(loaded.state_dict()) == set(ref) - {"masked_spec_embed"}  # no SpecAugment vector without masking
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_build_backbone_errors_name_the_directory(tmp_path):
    with pytest.raises(BackboneError, match="not a local directory"):
        build_backbone(ModelConfig(pretrained=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(BackboneError, match="empty.*no weights"):
        build_backbone(ModelConfig(pretrained=str(tmp_path / "empty")))
    with pytest.raises(BackboneError, match="freeze_layers=5"):
        build_backbone(tiny_cfg(freeze_layers=5))


def test_freezing():
    bb = build_backbone(tiny_cfg(freeze_feature_encoder=True, freeze_layers=1))
    assert not any(p.requires_grad for p in bb.feature_extractor.parameters())
    assert not any(p.requires_grad for p in bb.encoder.layers[0].parameters())
    assert not any(p.requires_grad for p in bb.feature_projection.parameters())
    assert all(p.requires_grad for p in bb.encoder.layers[1].parameters())
    free = build_backbone(tiny_cfg(freeze_feature_encoder=False))
    assert all(p.requires_grad for p in free.parameters())


def test_frame_mask_matches_transformers_and_handles_tiny_inputs():
    bb = build_backbone(tiny_cfg())
    mask = torch.zeros(3, 16000, dtype=torch.long)
    mask[0], mask[1, :9000], mask[2, :200] = 1, 1, 1  # 200 samples < receptive field: no frame
    fm = frame_mask(bb, mask)
    assert fm.dtype == torch.bool and fm.shape == (3, int(num_frames(bb, 16000)))
    assert fm.sum(-1).tolist() == [int(num_frames(bb, 16000)), int(num_frames(bb, 9000)), 0]
    ref = bb._get_feature_vector_attention_mask(fm.shape[1], mask[:2])
    assert torch.equal(fm[:2], ref)


# ----------------------------------------------------------------------------- pooling


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert torch.allclose(masked_mean(x, mask), torch.tensor([[2.0, 3.0]]))


def test_attention_pool_masked_and_conditioned():
    torch.manual_seed(0)
    pool = AttentionPool(8, 4, cond_dim=3)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    cond = torch.randn(2, 3)
    out, w = pool(x, mask, cond, return_weights=True)
    assert torch.allclose(w.sum(-1), torch.ones(2)) and (w[0, 3:] == 0).all()
    x2 = x.clone()
    x2[0, 3:] = 1e3  # garbage in the padding changes nothing
    assert torch.allclose(pool(x2, mask, cond), out)
    assert not torch.allclose(pool(x, mask, cond + 1.0), out, atol=1e-4)  # the language vector matters
    with pytest.raises(ValueError, match="conditioning"):
        pool(x, mask)


def test_hierarchical_pool_depth_one_is_a_single_attention_pool():
    torch.manual_seed(0)
    hp = HierarchicalAttentionPool(8, 4, depth=1, cond_dim=2)
    x, cond = torch.randn(2, 6, 8), torch.randn(2, 2)
    mask = torch.ones(2, 6, dtype=torch.bool)
    pooled, w = hp([x], mask, cond, return_weights=True)
    assert torch.allclose(w["layers"], torch.ones(2, 1))
    assert torch.allclose(pooled, hp.frame_pools[0](hp.norms[0](x), mask, cond), atol=1e-6)
    hp3 = HierarchicalAttentionPool(8, 4, depth=3)
    _, w3 = hp3([x, x * 2, x - 1], mask, return_weights=True)
    assert w3["frames"].shape == (2, 3, 6) and torch.allclose(w3["layers"].sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="depth=3"):
        hp3([x], mask)


def test_attentive_statistics_pool_adds_the_weighted_spread_and_starts_as_the_plain_pool():
    torch.manual_seed(0)
    plain, stats = AttentionPool(8, 4, cond_dim=3), AttentionPool(8, 4, cond_dim=3, stats=True)
    stats.load_state_dict(plain.state_dict(), strict=False)  # same attention; the projection starts as [I 0]
    x, cond = torch.randn(2, 5, 8), torch.randn(2, 3)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    assert torch.allclose(stats(x, mask, cond), plain(x, mask, cond), atol=1e-6)
    # keep only the spread half of the projection: the output is then the attention-weighted std
    with torch.no_grad():
        stats.stats.weight.zero_()
        stats.stats.weight[:, 8:].copy_(torch.eye(8))
    spread, w = stats(x, mask, cond, return_weights=True)
    mean = (w.unsqueeze(-1) * x).sum(1)
    expected = ((w.unsqueeze(-1) * (x - mean.unsqueeze(1)) ** 2).sum(1)).sqrt()
    assert torch.allclose(spread, expected, atol=1e-4)
    x2 = x.clone()
    x2[0, 3:] = 1e3  # padding stays out of the spread too
    assert torch.allclose(stats(x2, mask, cond), spread, atol=1e-4)
    constant = torch.ones(1, 4, 8)  # no spread: finite output and finite gradients (sqrt at 0 is clamped)
    constant.requires_grad_(True)
    stats(constant, None, torch.randn(1, 3)).sum().backward()
    assert torch.isfinite(constant.grad).all()


def test_student_with_attentive_statistics_is_padding_invariant_and_config_checked(tmp_path):
    from lakd.config import ConfigError, load_config

    m = make_model(True, attention_stats=True)
    assert all(p.stats is not None for p in m.pool.frame_pools) and m.pool.layer_pool.stats is None
    short, x, mask = padded_pair()
    with torch.no_grad():
        alone = m(short, torch.ones_like(short, dtype=torch.long), torch.tensor([1]))
        batched = m(x, mask, torch.tensor([1, 0]))
    assert torch.allclose(alone.logits, batched.logits[:1], atol=1e-5)
    with pytest.raises(ConfigError, match=r"student.attention_stats: true needs student.hierarchical_attention"):
        load_config("tiny", overrides=["student.attention_stats=true", "student.hierarchical_attention=false"])


# ----------------------------------------------------------------------------- SERModel


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # inside transformers' WavLM
@pytest.mark.parametrize("student,family", [(False, "wav2vec2"), (True, "wav2vec2"), (True, "hubert"), (True, "wavlm")])
def test_padding_never_changes_the_output(student, family):
    m = make_model(student, family)
    short, x, mask = padded_pair()
    lang = torch.tensor([1, 0])
    with torch.no_grad():
        alone = m(short, torch.ones_like(short, dtype=torch.long), lang[:1])
        batched = m(x, mask, lang)
    assert alone.logits.shape == (1, 4) and batched.pooled.shape == (2, 32)
    assert torch.allclose(alone.logits, batched.logits[:1], atol=1e-5)
    assert torch.allclose(alone.pooled, batched.pooled[:1], atol=1e-5)


def test_group_norm_backbone_gets_no_attention_mask_but_pools_valid_frames():
    """wav2vec2-base-style backbones (group norm in the feature encoder) must not be given an attention mask
    (transformers: they were trained on zero padding), so padding does change their frame features and an
    utterance alone does not equal it padded. What the model controls is the pooling: exactly the frames of the
    backbone's unmasked output that hold audio are averaged, and the padded ones are not."""
    m = SERModel(ModelConfig(backbone={**TINY, "feat_extract_norm": "group"}), LABELS, LANGS).eval()
    assert m.pass_attention_mask is False
    _, x, mask = padded_pair()
    with torch.no_grad():
        out = m(x, mask)
        frames = m.backbone(x).last_hidden_state  # no attention mask, as the model must call it
    valid = frame_mask(m.backbone, mask, frames.shape[1])
    assert 0 < int(valid[0].sum()) < frames.shape[1] and bool(valid[1].all())  # the short one has padded frames
    torch.testing.assert_close(out.pooled, masked_mean(frames, valid), atol=1e-5, rtol=0)
    assert not torch.allclose(out.pooled[0], frames[0].mean(0), atol=1e-3)  # counting padded frames would differ
    assert out.logits.shape == (2, 4) and torch.isfinite(out.logits).all()


def test_language_ids_any_vector_and_range_check():
    m = make_model(student=True)
    x = torch.randn(3, 8000)
    with torch.no_grad():
        none = m(x).logits
        unknown = m(x, language_ids=torch.tensor([-1, -1, -1])).logits
        langs = m(x, language_ids=torch.tensor([0, 1, 2])).logits
    assert torch.allclose(none, unknown)
    assert not torch.allclose(langs, unknown, atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        m(x, language_ids=torch.tensor([0, 3, 1]))
    assert m.language_id("fi") == 1 and m.language_id("xx") == -1 and m.language_id(None) == -1


def test_language_projection_starts_at_zero_so_pretrained_features_are_unchanged():
    torch.manual_seed(0)
    cfg = tiny_cfg(student=True)
    cfg.hierarchical_attention = False  # mean pooling: the language reaches the logits only through the frames
    m = SERModel(cfg, LABELS, LANGS).eval()
    x = torch.randn(2, 8000)
    with torch.no_grad():
        a = m(x, language_ids=torch.tensor([0, 1])).logits
        b = m(x, language_ids=torch.tensor([2, -1])).logits
        assert torch.allclose(a, b)
        torch.nn.init.normal_(m.language_projection.weight, std=0.5)  # once learned, the frames carry the language
        assert not torch.allclose(
            m(x, language_ids=torch.tensor([0, 1])).logits, m(x, language_ids=torch.tensor([2, -1])).logits, atol=1e-4
        )


def test_training_step_reaches_student_parts():
    m = make_model(student=True).train()
    short, x, mask = padded_pair(9000, 16000)
    out = m(x, mask, torch.tensor([0, 2]))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 3])).backward()
    for name in (
        "language_embedding.weight",
        "language_projection.weight",
        "pool.layer_pool.key.weight",
        "pool.frame_pools.0.score.weight",
        "head.weight",
        "backbone.encoder.layers.0.feed_forward.output_dense.weight",
    ):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_normalize_audio_removes_loudness_and_respects_padding():
    m = make_model(student=False, normalize_audio=True)
    short, x, mask = padded_pair()
    with torch.no_grad():
        a = m(x, mask).logits
        b = m(x * 7.0, mask).logits
        alone = m(short).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(alone, a[:1], atol=1e-5)


def test_deepcopy_keeps_its_own_language_injection():
    m = make_model(student=True)
    c = copy.deepcopy(m)
    x, lang = torch.randn(1, 8000), torch.tensor([1])
    with torch.no_grad():
        before = m(x, language_ids=lang).logits
        c.language_projection.weight.mul_(3.0)
        assert torch.allclose(m(x, language_ids=lang).logits, before)
        assert not torch.allclose(c(x, language_ids=lang).logits, before, atol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    m = make_model(student=True)
    _, x, mask = padded_pair()
    lang = torch.tensor([2, -1])
    target = tmp_path / "ckpt"
    m.save_pretrained(target, extra_meta={"data_fingerprint": "abc"})
    m.save_pretrained(target, extra_meta={"data_fingerprint": "abc", "again": True})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or backup dirs left
    assert sorted(p.name for p in target.iterdir()) == [
        "checksums.json",
        "config.json",
        "lakd.json",
        "lakd_head.safetensors",
        "model.safetensors",
    ]
    meta = json.loads((target / "lakd.json").read_text())
    assert meta["labels"] == LABELS and meta["languages"] == LANGS and meta["meta"]["again"] is True
    assert meta["model"]["attention_depth"] == 2

    r = SERModel.from_pretrained(target)
    assert not r.training
    with torch.no_grad():
        assert torch.equal(m(x, mask, lang).logits, r(x, mask, lang).logits)
        # the backbone alone loads with transformers and gives the same features
        hf = Wav2Vec2Model.from_pretrained(target).eval()
        ref = m.backbone(x, attention_mask=mask).last_hidden_state
        assert torch.equal(hf(x, attention_mask=mask).last_hidden_state, ref)
    assert SERModel.embed_dim_of(target) == 32 and SERModel.embed_dim_for(m.cfg) == 32
    assert r.num_parameters() == m.num_parameters()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no lakd.json"):
        SERModel.from_pretrained(tmp_path)
    m = make_model()
    m.save_pretrained(tmp_path / "c")
    (tmp_path / "c" / "lakd_head.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lakd_head.safetensors"):
        SERModel.from_pretrained(tmp_path / "c")


def test_num_parameters_counts_trainable_separately():
    m = SERModel(tiny_cfg(freeze_feature_encoder=True), LABELS, LANGS)
    frozen = sum(p.numel() for p in m.backbone.feature_extractor.parameters())
    assert m.num_parameters() - m.num_parameters(trainable_only=True) == frozen > 0


def test_attention_depth_must_fit_the_backbone():
    with pytest.raises(ValueError, match="attention_depth=3"):
        SERModel(ModelConfig(backbone=TINY, hierarchical_attention=True, attention_depth=3), LABELS, LANGS)


def test_language_dropout_trains_the_any_vector():
    m = make_model(student=True)
    m.cfg.language_dropout = 1.0  # ModelConfig field proposed to the lead; read with getattr until it exists
    ids = torch.tensor([0, 1, 2])
    any_vec = m.language_embedding.weight[m.any_language_id]
    assert torch.equal(m.train().language_vector(ids, 3, torch.device("cpu")), any_vec.expand(3, -1))
    assert torch.equal(m.eval().language_vector(ids, 3, torch.device("cpu")), m.language_embedding.weight[:3])


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_training_on_a_very_short_batch_skips_specaugment_instead_of_crashing(family):
    m = SERModel(tiny_cfg(family=family), LABELS, LANGS).train()
    assert m.backbone.config.mask_time_prob > 0  # transformers' default SpecAugment is on
    out = m(torch.randn(2, 1600))  # 0.1 s = 4 frames < mask_time_length 10
    assert out.logits.shape == (2, 4)
    assert m(torch.randn(2, 16000)).logits.shape == (2, 4)  # long enough: SpecAugment runs as usual
