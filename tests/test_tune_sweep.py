"""tune/sweep.yaml: W&B's schema, the same parameters as the Ray Tune space, every value valid for its config, and
the command line `wandb agent` builds from it (W&B's own helpers; no server is reachable here, so the slow test in
test_tune.py runs that command)."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from lakd.config import ConfigError, load_config
from lakd.tune.space import load_space
from lakd.tune.sweep import agent_command, check_sweep, parse_agent_args, sweep_config

REPO = Path(__file__).resolve().parents[1]
SWEEP = yaml.safe_load((REPO / "tune" / "sweep.yaml").read_text())


def test_the_sweep_is_valid_and_searches_the_default_space_of_its_config():
    space = check_sweep(SWEEP)
    tiny = load_config("tiny")
    assert space.as_dict() == load_space(None, tiny).as_dict()
    assert SWEEP == sweep_config(load_space(None, tiny), "tiny", "runs/sweep")
    assert SWEEP["method"] == "bayes" and SWEEP["metric"] == {"name": "dev/ua", "goal": "maximize"}
    assert SWEEP["early_terminate"]["type"] == "hyperband"
    assert (REPO / SWEEP["program"]).exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(method="tpe"), "method must be one of"),
        (lambda s: s.update(metrik={}), "unknown top-level"),
        (lambda s: s["parameters"].pop("config"), "parameters.config must be fixed"),
        (lambda s: s["early_terminate"].update(eta=1), "eta must be > 1"),
        (lambda s: s["parameters"]["student.attention_depth"].update(max=3), "outside [1, 2]"),
        (lambda s: s["parameters"].update({"teacher.dropout": {"values": [0.1]}}), "share the search's teachers"),
        (lambda s: s["parameters"]["distill.kd_weight"].update(distribution="beta"), "expected value, values"),
    ],
)
def test_a_broken_sweep_is_refused_with_the_reason(change, message):
    broken = copy.deepcopy(SWEEP)
    change(broken)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_sweep(broken)


def test_the_agent_command_is_the_default_command_with_every_parameter_as_a_flag():
    values = {"distill.kd_weight": 0.3, "student.language_embedding": False, "student_optim.lr": 1.2e-05}
    assert agent_command(SWEEP, values) == [
        "/usr/bin/env",
        "python",
        "tune/sweep_run.py",
        "--config=tiny",
        "--run_dir=runs/sweep",
        "--distill.kd_weight=0.3",
        "--student.language_embedding=False",
        "--student_optim.lr=1.2e-05",
    ]
    config, overrides = parse_agent_args(agent_command(SWEEP, values)[3:])
    assert config == "tiny"
    cfg = load_config(config, overrides)
    assert cfg.distill.kd_weight == 0.3 and cfg.student.language_embedding is False and cfg.student_optim.lr == 1.2e-05
    with pytest.raises(ConfigError, match="--key=value"):
        parse_agent_args(["--config", "tiny"])
