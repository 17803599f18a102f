"""Config loading: built-ins, overrides with type coercion, and clear errors for typos and bad values."""

import pytest

from lakd.config import ConfigError, load_config, save_config


def test_builtin_configs_load_and_override():
    cfg = load_config(
        "tiny",
        ["student_optim.lr=1e-3", "distill.weighting=cosine-batch", "data.bucket=false", "student.attention_depth=3"],
    )
    assert cfg.student_optim.lr == pytest.approx(1e-3)
    assert cfg.distill.weighting == "cosine-batch"
    assert cfg.data.bucket is False
    assert cfg.student.attention_depth == 3 and isinstance(cfg.student.attention_depth, int)
    assert cfg.student.language_embedding and cfg.student.hierarchical_attention
    assert not cfg.teacher.language_embedding
    emo = load_config("emosynth3")
    assert emo.data.train.endswith("emosynth3/train") and emo.data.test.endswith("emosynth3/test")


def test_unknown_key_names_the_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("distill:\n  temprature: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.distill.*temprature"):
        load_config(p)
    with pytest.raises(ConfigError, match="weightin"):
        load_config("tiny", ["distill.weightin=route"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("distill.weighting=best", "route, cosine-batch, cosine-sample, mean"),
        ("distill.weighting=cosine", "renamed: use cosine-sample"),
        ("distill.kl_reduction=sum", "batchmean, mean"),
        ("distill.online_teacher_mode=dropout", "eval, train"),
        ("distill.kd_weight=1.5", r"\[0, 1\]"),
        ("launch.executor=kubernetes", "slurm, local, debug"),
        ("student.family=whisper", "wav2vec2, hubert, wavlm"),
        ("teacher_optim.precision=fp8", "auto, fp32, bf16, fp16"),
        ("student_optim.schedule=step", "cosine, linear, constant"),
        ("data.batch_size=many", "cannot read"),
        # numbers that would hang, divide by zero or train nothing
        ("data.batch_size=-3", r"data\.batch_size must be an integer >= 1, got -3"),
        ("data.batch_size=0", r"data\.batch_size must be an integer >= 1, got 0"),
        ("data.eval_batch_size=0", r"data\.eval_batch_size must be an integer >= 1"),
        ("data.max_seconds=-1", r"data\.max_seconds must be a number > 0, got -1"),
        ("data.max_seconds=.nan", r"data\.max_seconds must be a number > 0"),
        ("data.num_workers=-1", r"data\.num_workers must be an integer >= 0"),
        ("teacher_optim.lr=0", r"teacher_optim\.lr must be a number > 0"),
        ("student_optim.grad_accum=0", r"student_optim\.grad_accum must be an integer >= 1"),
        ("student_optim.epochs=0", "nothing would be trained"),
        ("student_optim.warmup_ratio=1.5", r"warmup_ratio must be a number >= 0 and <= 1"),
        ("student_optim.select_metric=f1", "ua, wa"),
        ("student.dropout=2", r"student\.dropout must be a number >= 0 and <= 1"),
        ("distill.temperature=0", r"distill\.temperature must be a number > 0"),
        ("launch.zero_stage=3", "0, 1, 2"),
        ("wandb.mode=cloud", "online, offline, disabled"),
        ("device=gpu", "auto, cpu, cuda, cuda:N or mps"),
        ("seed=-1", r"seed must be an integer >= 0"),
        ("on_config_change=later", "refuse, restart, resume"),
        # misspelt values get the nearest allowed one
        ("teacher_optim.precision=fp17", r"auto, fp32, bf16, fp16, got 'fp17' \(did you mean 'fp16'\?\)"),
        ("student_optim.schedule=cosin", r"cosine, linear, constant, got 'cosin' \(did you mean 'cosine'\?\)"),
        # unknown sections and keys: one line with the closest key and every valid one
        (
            "datta.batch_size=4",
            r"override datta\.batch_size: unknown key 'datta' \(did you mean 'data'\?\); valid keys: data,",
        ),
        ("stdent.attention_depth=2", r"unknown key 'stdent' \(did you mean 'student'\?\); valid keys: .*student,"),
        ("data.batch_sise=4", r"unknown key 'batch_sise' \(did you mean 'batch_size'\?\)"),
        ("seed.value=1", "seed is a value"),
        ("labels=[anger", "not valid YAML"),
        # backbone keys are the transformers config class's fields
        (
            "student.backbone.hiden_size=32",
            r"student\.backbone: unknown key 'hiden_size' \(did you mean 'hidden_size'\?\) "
            r"for Wav2Vec2Config; valid keys: .*hidden_size",
        ),
        ("teacher.backbone=32", r"teacher\.backbone: expected a mapping"),
        # launch resources are checked at load too, not when the graph is built
        ("launch.resources.teachr.gpus=1", r"launch\.resources\.teachr: unknown stage \(did you mean 'teacher'\?\)"),
        ("launch.resources.teacher.gpu=1", r"unknown key 'gpu' \(did you mean 'gpus'\?\)"),
        ("launch.resources.student.time_min=0", r"launch\.resources\.student\.time_min must be an integer >= 1"),
    ],
)
def test_invalid_values_are_rejected(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [override])


def test_missing_config_lists_builtins():
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_config("no-such-config")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config("tiny", ["seed=7", "languages=[en, de]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert again.languages == ["en", "de"] and again.seed == 7


def test_every_allowed_value_is_implemented_by_the_module_that_owns_it():
    """config.validate accepts what lakd.choices lists; the implementing modules must handle exactly that."""
    import torch

    from lakd import choices
    from lakd.distill.losses import teacher_weights
    from lakd.models.backbone import FAMILIES
    from lakd.train.optim import lr_lambda, resolve_precision

    assert tuple(FAMILIES) == choices.MODEL_FAMILIES
    from lakd.launch.graph import STAGE_ALIASES, STAGES
    from lakd.train.logging import WANDB_MODES

    assert (STAGES, STAGE_ALIASES) == (choices.STAGES, choices.STAGE_ALIASES)
    assert WANDB_MODES == choices.WANDB_MODES
    for schedule in choices.LR_SCHEDULES:
        assert lr_lambda(10, 2, schedule)(5) > 0
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    logits = torch.randn(2, 3, 4)
    for mode in choices.WEIGHTING_MODES:
        w = teacher_weights(mode, torch.randn(3, 4), logits, torch.tensor([0, 1, -1]), ["en", "fi"], ["en", "fi"])
        assert w.shape == (3, 2) and torch.allclose(w.sum(-1), torch.ones(3))


def test_a_list_setting_given_as_one_value_is_a_list_of_its_comma_separated_items(tmp_path):
    cfg = load_config("tiny", ["labels=anger", "languages=en,fi", "wandb.tags=a, b"])
    assert cfg.labels == ["anger"] and cfg.languages == ["en", "fi"] and cfg.wandb.tags == ["a", "b"]
    p = tmp_path / "c.yaml"
    p.write_text("languages: en\nlaunch:\n  resources:\n    teacher: {setup: 'module load a,b'}\n")
    cfg = load_config(p)
    assert cfg.languages == ["en"]
    from lakd.launch.graph import stage_resources

    assert stage_resources(cfg, "teachers").setup == ["module load a,b"]  # a shell line is never split
    with pytest.raises(ConfigError, match=r"languages must be a non-empty list of distinct ISO codes"):
        load_config("tiny", ["languages=en,en"])
    with pytest.raises(ConfigError, match=r"labels: expected a list"):
        load_config("tiny", ["labels=3"])


def test_every_built_in_config_passes_its_own_checks():
    from lakd.config import BUILTIN_DIR

    for path in BUILTIN_DIR.glob("*.yaml"):
        load_config(path)


def test_backbone_keys_are_the_fields_of_the_transformers_config_classes():
    """lakd.choices lists them so that loading a config never imports transformers; they must agree."""
    from lakd import choices
    from lakd.models.backbone import FAMILIES

    for family, (config_cls, _) in FAMILIES.items():
        assert config_cls.__name__ == choices.BACKBONE_CONFIG_CLASSES[family]
        fields = set(config_cls().to_dict()) - {"_name_or_path", "transformers_version", "model_type"}
        assert set(choices.BACKBONE_KEYS[family]) == fields, family
