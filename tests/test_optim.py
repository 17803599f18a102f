"""Layer-wise learning-rate decay (`*_optim.layer_lr_decay`): each parameter's group and learning rate."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import LABELS, TINY_BACKBONE

from lakd.config import ConfigError, ModelConfig, OptimConfig, load_config
from lakd.models.ser import SERModel
from lakd.train.optim import build_optimizer, build_scheduler, layer_depth


def _model():
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone=dict(TINY_BACKBONE), language_embedding=True, hierarchical_attention=True, freeze_feature_encoder=False
    )
    return SERModel(cfg, LABELS, ["en", "fi"])


def _lr_of(opt):
    return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}


def test_without_decay_there_are_the_two_weight_decay_groups():
    model = _model()
    opt = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-3, weight_decay=0.1))
    assert [(g["weight_decay"], g["lr"]) for g in opt.param_groups] == [(0.1, 1e-3), (0.0, 1e-3)]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_each_parameter_gets_lr_times_decay_to_its_depth():
    model = _model()
    n = model.backbone.config.num_hidden_layers
    opt = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-3, layer_lr_decay=0.5))
    lr = _lr_of(opt)
    params = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)  # each once
    assert lr[id(params["head.weight"])] == pytest.approx(1e-3)
    assert lr[id(params["language_embedding.weight"])] == pytest.approx(1e-3)
    top = f"backbone.encoder.layers.{n - 1}.attention.q_proj.weight"
    assert lr[id(params[top])] == pytest.approx(1e-3 * 0.5)
    assert lr[id(params["backbone.encoder.layers.0.attention.q_proj.weight"])] == pytest.approx(1e-3 * 0.5**n)
    cnn = next(k for k in params if k.startswith("backbone.feature_extractor."))
    assert lr[id(params[cnn])] == pytest.approx(1e-3 * 0.5 ** (n + 1))
    for g in opt.param_groups:  # biases and norms never decay, whatever their depth
        assert g["weight_decay"] == 0.0 or all(p.ndim > 1 for p in g["params"])
    assert layer_depth("module.backbone.encoder.layers.3.x", 4) == 1  # names under a wrapper (DDP) too


def test_the_schedule_keeps_the_ratios_and_lower_layers_move_less():
    model = _model()
    opt = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-2, layer_lr_decay=1e-3, weight_decay=0.0))
    sched = build_scheduler(opt, total_steps=10, warmup_steps=2, schedule="cosine")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.randn(4, 8000, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        out = model(x, torch.ones_like(x, dtype=torch.long), torch.tensor([0, 1, 0, 1]))
        F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert max(lrs) / min(lrs) == pytest.approx(1e3 ** (model.backbone.config.num_hidden_layers + 1))
    moved = {k: float((v.detach() - before[k]).abs().max()) for k, v in model.named_parameters()}
    cnn = [m for k, m in moved.items() if k.startswith("backbone.feature_extractor.") and k.endswith("conv.weight")]
    assert moved["head.weight"] > 100 * max(cnn)


def test_a_bad_decay_is_refused_at_load():
    with pytest.raises(ConfigError, match="student_optim.layer_lr_decay must be a number > 0 and <= 1"):
        load_config(None, ["student_optim.layer_lr_decay=1.5"])
    assert load_config(None, ["teacher_optim.layer_lr_decay=0.8"]).teacher_optim.layer_lr_decay == 0.8
