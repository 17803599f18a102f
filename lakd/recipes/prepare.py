"""Recipe: make the run's data when the config asks for a synthetic corpus (`synth:` section).

Idempotent: existing splits (with index.json) are kept. The only recipe without `setup_runtime`: it runs no
torch model, and the corpus is seeded from `cfg.seed` explicitly.
"""

from __future__ import annotations

import logging

from lakd.config import Config
from lakd.recipes import common

log = logging.getLogger("lakd.recipes.prepare")


def run(cfg: Config) -> str | None:
    if not cfg.synth:
        return None
    out = common.run_path(cfg, "data")
    if all((out / s / "index.json").exists() for s in ("train", "dev", "test")):
        log.info("synthetic corpus already at %s", out)
        return str(out)
    from lakd.data.synth import synthesize_corpus

    opts = {"languages": tuple(cfg.languages), "labels": tuple(cfg.labels), "seed": cfg.seed, **cfg.synth}
    synthesize_corpus(out, overwrite=True, **opts)  # the run owns run_dir/data: a partial one is redone
    return str(out)
