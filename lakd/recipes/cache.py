"""Recipe: run each frozen teacher once over the student's training shards and store its knowledge.

lakd cache --config tiny          # after the teachers are trained

Every teacher is checked before anything is computed (a language of the data whose teacher is not trained
is named, with the command that trains it); see lakd.distill.cache_write for what an interrupted run leaves.
"""

from __future__ import annotations

from lakd.config import Config
from lakd.recipes import common


def run(cfg: Config, teacher_dirs: dict[str, str]) -> str:
    from lakd.distill.cache_write import write_teacher_cache
    from lakd.train.runtime import setup_runtime

    dist = setup_runtime(cfg)
    out = common.run_path(cfg, "cache")
    if dist.is_main:
        write_teacher_cache(
            teacher_dirs,
            common.data_spec(cfg, "train"),
            out,
            list(cfg.labels),
            list(cfg.languages),
            cfg.data,
            dist.device,
            batch_size=cfg.data.eval_batch_size,
            scope=cfg.distill.cache_scope,
        )
    return str(out)
