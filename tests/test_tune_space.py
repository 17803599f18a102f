"""The search space (checked against the config before anything trains), seeded proposals, trial names, best.yaml,
the evaluation count ASHA uses, and W&B's environment winning over the config."""

from pathlib import Path

import pytest
import yaml

from lakd.config import load_config
from lakd.launch.graph import build_graph
from lakd.train.logging import wandb_settings
from lakd.tune.results import write_best_config
from lakd.tune.runner import SearchOptions, _searcher, check_options, evaluations_per_trial
from lakd.tune.space import DEFAULT_SPACE, SpaceError, load_space, trial_label

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


def write_space(tmp_path, entries: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def test_the_documented_space_file_is_the_default_and_depths_follow_the_students_layers(tiny):
    documented = load_space(REPO / "tune" / "space.yaml", tiny)
    assert documented.as_dict() == load_space(None, tiny).as_dict()
    assert set(documented.paths) == set(DEFAULT_SPACE)
    assert documented.as_dict()["student.attention_depth"] == {"int": [1, 2]}  # tiny's student has 2 layers
    deeper = load_config("tiny", ["student.backbone.num_hidden_layers=4"])
    assert load_space(None, deeper).as_dict()["student.attention_depth"] == {"int": [1, 4]}


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"student.attention_depth": {"choice": [1, 2, 3]}}, "depth 3 outside [1, 2]"),
        ({"distill.kd_weigth": {"uniform": [0.1, 0.9]}}, "unknown key 'kd_weigth' (did you mean 'kd_weight'?)"),
        ({"distill.kd_weight": {"uniform": [0.5, 1.5]}}, "kd_weight must be in [0, 1]"),
        ({"distill.temperature": {"loguniform": [0.0, 10.0]}}, "low > 0"),
        ({"distill.temperature": {"uniform": [5.0, 1.0]}}, "low must be below high"),
        ({"distill.weighting": {"choice": ["route", "cosine"]}}, "distill.weighting"),
        ({"teacher_optim.lr": {"loguniform": [1e-4, 1e-3]}}, "share the search's teachers"),
        ({"distill.use_cache": {"choice": [True, False]}}, "share the search's teachers"),
        ({"student.language_dropout": {"uniform": [0.0, 1.0]}}, "dropout rate must be in [0, 1)"),
        ({"distill.kd_weight": {"uniform": [0.1, 0.9], "normal": [0, 1]}}, "exactly one of"),
    ],
)
def test_a_bad_entry_is_refused_before_anything_trains_and_the_message_names_it(tmp_path, tiny, entries, message):
    with pytest.raises(SpaceError) as e:
        load_space(write_space(tmp_path, entries), tiny)
    assert message in str(e.value) and next(iter(entries)) in str(e.value)


def test_depth_is_pointless_without_hierarchical_attention(tmp_path):
    flat = load_config("tiny", ["student.hierarchical_attention=false"])
    with pytest.raises(SpaceError, match="hierarchical_attention is off"):
        load_space(write_space(tmp_path, {"student.attention_depth": {"int": [1, 2]}}), flat)


def test_grid_points_and_ray_domains(tmp_path, tiny):
    space = load_space(
        write_space(
            tmp_path,
            {
                "distill.kd_weight": {"uniform": [0.1, 0.9]},
                "distill.temperature": {"loguniform": [1.0, 100.0], "grid": [2.0, 4.0]},
                "student.attention_depth": {"int": [1, "layers"]},
            },
        ),
        tiny,
    )
    grid = {p.path: p.grid_values() for p in space}
    assert grid["distill.kd_weight"] == pytest.approx([0.1, 0.5, 0.9])
    assert grid["distill.temperature"] == [2.0, 4.0]
    assert grid["student.attention_depth"] == [1, 2]
    assert space.ray_space("grid")["distill.kd_weight"] == {"grid_search": grid["distill.kd_weight"]}
    depth = space.ray_space("tpe")["student.attention_depth"]
    assert {depth.sample() for _ in range(50)} == {1, 2}  # randint's high is exclusive: the space's is not


def test_seeded_tpe_proposals_repeat_and_another_seed_differs(tiny):
    space = load_space(None, tiny).ray_space("tpe")

    def proposals(seed):
        searcher = _searcher(SearchOptions(algorithm="tpe"), seed)
        searcher.set_search_properties("dev_ua", "max", space)
        return [searcher.suggest(f"t{i}") for i in range(4)]

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_option_combinations_that_cannot_work_are_refused(tiny):
    space = load_space(None, tiny)
    with pytest.raises(ValueError, match="pbt"):
        check_options(SearchOptions(scheduler="pbt", algorithm="tpe"), space)
    with pytest.raises(ValueError, match="whole number"):
        check_options(SearchOptions(gpus_per_trial=1.5), space)
    check_options(SearchOptions(gpus_per_trial=0.25, scheduler="pbt", algorithm="random"), space)


def test_trial_names_say_the_values():
    params = {"distill.kd_weight": 0.3129, "distill.temperature": 4.213, "student.attention_depth": 2}
    assert trial_label(params) == "λ0.31-T4.21-D2"
    assert trial_label({"student_optim.lr": 0.00031, "student.language_embedding": False}) == "lr0.00031-LE0"


def test_evaluations_per_trial_count_dev_evaluations_whatever_eval_every_is(tmp_path, emosynth3, tiny):
    data = [f"data.train={emosynth3 / 'train'}", "data.batch_size=16", "data.epoch_samples=64"]
    per_epoch = load_config("tiny", [*data, "student_optim.epochs=3"])  # 4 steps an epoch, 3 epochs
    assert evaluations_per_trial(per_epoch, load_space(None, tiny)) == 3
    every = load_config("tiny", [*data, "student_optim.epochs=3", "student_optim.eval_every=5"])  # 12 steps
    assert evaluations_per_trial(every, load_space(None, tiny)) == 3  # steps 5, 10 and the last
    searched = write_space(tmp_path, {"student_optim.epochs": {"choice": [2, 6]}})
    assert evaluations_per_trial(per_epoch, load_space(searched, tiny)) == 6


def test_best_yaml_is_a_complete_config_that_launch_accepts(tmp_path):
    base = load_config("tiny", [f"run_dir={tmp_path / 'run'}"])
    (tmp_path / "run" / "teachers").mkdir(parents=True)
    out = tmp_path / "run" / "tune" / "search"
    out.mkdir(parents=True)
    params = {"distill.kd_weight": 0.42, "student.attention_depth": 1, "student.language_embedding": False}
    path = write_best_config(base, params, out, {"trial": "trial_x", "dev UA": 0.5, "checkpoint": "/c/best"})
    assert path.read_text().startswith("# best trial of a lakd tune search")
    cfg = load_config(str(path))
    assert cfg.distill.kd_weight == 0.42 and cfg.student.attention_depth == 1 and not cfg.student.language_embedding
    assert cfg.to_dict() == base.copy(**params, run_dir=str(out / "best-run"), name="tiny-best").to_dict()
    assert (out / "best-run" / "teachers").resolve() == (tmp_path / "run" / "teachers").resolve()
    assert [s.name for s in build_graph(cfg)][-2:] == ["student", "evaluate"]


def test_wandb_environment_wins_over_the_config(monkeypatch, tmp_path):
    cfg = load_config("tiny", ["wandb.mode=offline", "wandb.project=fromconfig"])
    for k in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_DISABLED"):
        monkeypatch.delenv(k, raising=False)
    s = wandb_settings(cfg.wandb, tmp_path)
    assert (s["mode"], s["project"], s["entity"], s["dir"], s["run_id"]) == (
        "offline",
        "fromconfig",
        None,
        str(tmp_path),
        None,
    )
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_PROJECT", "fromenv")
    monkeypatch.setenv("WANDB_ENTITY", "team")
    monkeypatch.setenv("WANDB_DIR", "/scratch/wandb")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    s = wandb_settings(cfg.wandb, tmp_path)
    assert (s["mode"], s["project"], s["entity"], s["dir"], s["run_id"]) == (
        "disabled",
        "fromenv",
        "team",
        "/scratch/wandb",
        "agentrun1",
    )
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_settings(cfg.wandb, tmp_path)["mode"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        wandb_settings(cfg.wandb, tmp_path)


def test_pbt_changes_only_values_a_copied_checkpoint_can_continue_with(tiny, tmp_path):
    mutable = load_space(None, tiny).pbt_mutations()
    assert set(mutable) == {
        "distill.kd_weight",
        "distill.temperature",
        "distill.weighting",
        "distill.cosine_tau",
        "student.language_dropout",
    }  # not the model's shape (depth, language embedding, β's projections) nor the resumed optimizer's lr
    shape_only = load_space(write_space(tmp_path, {"student.attention_depth": {"int": [1, 2]}}), tiny)
    with pytest.raises(ValueError, match="nothing in the space can change"):
        check_options(SearchOptions(scheduler="pbt", algorithm="random"), shape_only)
