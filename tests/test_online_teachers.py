"""Online teachers: eval mode gives the cache's deterministic targets; train mode keeps dropout on (published code)."""

import torch

from lakd.config import ModelConfig
from lakd.models.ser import SERModel
from lakd.recipes.distill import OnlineTeachers

LABELS = ["anger", "happiness", "neutral", "sadness"]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _teacher_dir(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=dict(TINY), language_embedding=False, hierarchical_attention=False, dropout=0.3)
    SERModel(cfg, LABELS, ["en"]).save_pretrained(tmp_path / "en")
    return {"en": str(tmp_path / "en")}


def test_online_teachers_eval_mode_is_deterministic_and_train_mode_keeps_dropout(tmp_path):
    dirs = _teacher_dir(tmp_path)
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(x, dtype=torch.long)
    for mode, same in (("eval", True), ("train", False)):
        t = OnlineTeachers(dirs, "cpu", mode=mode)
        t.train()  # what the engine does to everything it trains: must not flip the teachers' chosen mode
        assert all(m.training == (mode == "train") for m in t.models)
        a, _ = t(x, mask, None)
        b, _ = t(x, mask, None)
        assert torch.equal(a, b) == same, mode
        assert not a.requires_grad and all(not p.requires_grad for p in t.parameters())
