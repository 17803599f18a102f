"""Recipe: add languages to a trained student without retraining it from scratch.

    lakd train teacher --language de --config grown.yaml          # the new language's teacher
    lakd distill --config grown.yaml --extend runs/demo/student/best

`grown.yaml` lists the checkpoint's languages first, in their order, then the new ones, and its `data.train`
holds the training shards of all of them. The student starts from the checkpoint with its language table grown
(`lakd.models.ser.grow_languages`: old rows unchanged, a new row starts as the shared "any" vector) and is
distilled on all the training data: the old languages are replayed in full, at the loader's usual language mix
(`data.language_alpha`), so that what the student knew is rehearsed while it learns the new language; being
warm, it needs fewer epochs than a student from scratch (`student_optim.epochs`; `lakd bench extend` measures
both side by side). A partial replay (a fraction of the old data per epoch) is not offered: the loader's mix is
per-language sampling, and a full replay kept the old languages within a few points in the benchmark.

Teacher knowledge: LA-MTKD routes each utterance to its own language's teacher (`distill.weighting=route`), so
the old languages need only the old teachers' knowledge, which is read unchanged from the cache(s) the checkpoint
was distilled with; only the new teachers run, over the shards of the new languages, into
`run_dir/cache-<codes>`. Without a cache (`distill.use_cache=false`) every teacher runs online (any weighting).
The old teachers are those the checkpoint records; the new ones are this run's `teachers/<code>/best`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lakd.config import Config
from lakd.recipes import common

log = logging.getLogger("lakd.recipes.extend")

ARCHITECTURE = ("family", "backbone", "language_embedding", "hierarchical_attention", "attention_depth",
                "attention_dim", "attention_stats", "normalize_audio")  # fmt: skip


class ExtendError(ValueError):
    """The checkpoint cannot be extended as configured; the message names the checkpoint or config key."""


def _old_knowledge(ckpt: Path, meta: dict) -> list[dict]:
    """The caches the checkpoint was distilled with: [{"cache_dir", "teachers": {code: checkpoint}}]."""
    inner = meta.get("meta", {})
    if inner.get("knowledge"):  # an extended student records each cache it read
        return list(inner["knowledge"])
    teachers = inner.get("teachers") or {}
    if inner.get("cache_dir") is None or not teachers:
        raise ExtendError(
            f"{ckpt} was not distilled from a teacher cache (no cache_dir in its lakd.json); extend it with "
            "distill.use_cache=false (teachers run online)"
        )
    return [{"cache_dir": inner["cache_dir"], "teachers": dict(teachers)}]


def plan(cfg: Config, checkpoint: str) -> dict:
    """Check everything an extension needs before any work; one ExtendError naming the problem otherwise.

    Returns {"old": codes, "new": codes, "teachers": {code: checkpoint}, "knowledge": [old caches]}."""
    from lakd.models.ser import LanguageTableError, check_extends, read_metadata

    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise ExtendError(f"--extend {checkpoint}: no such checkpoint directory")
    meta = read_metadata(ckpt)  # CheckpointError: not a lakd model directory
    if list(meta["labels"]) != list(cfg.labels):
        raise ExtendError(
            f"labels: the config lists {list(cfg.labels)}, the checkpoint {ckpt} predicts {meta['labels']}; an "
            "extension keeps the label set (the head is sized by it): train a new student for other labels"
        )
    old = list(meta["languages"])
    try:
        new = check_extends(old, list(cfg.languages), where="languages: the config's list")
    except LanguageTableError as e:
        raise ExtendError(f"{e} (checkpoint {ckpt})") from e
    if not new:
        raise ExtendError(f"languages: the config lists only the checkpoint's {old}; append the codes to add")
    model = meta["model"]
    for key in ARCHITECTURE:
        if getattr(cfg.student, key) != model.get(key):
            raise ExtendError(
                f"student.{key}: the config has {getattr(cfg.student, key)!r}, the checkpoint {ckpt} "
                f"{model.get(key)!r}; an extension keeps the checkpoint's architecture"
            )
    recorded = dict(meta.get("meta", {}).get("teachers") or {})
    teachers = {}
    for code in cfg.languages:  # old teachers: those the checkpoint learned from (and whose knowledge is cached)
        where = common.teacher_dir(cfg, code) / "best" if code in new else recorded.get(code)
        if where is None:
            raise ExtendError(
                f"{ckpt / 'lakd.json'} records no teacher of {code!r} (its teachers: {sorted(recorded)}); an "
                "extension needs a student distilled from one teacher per language"
            )
        if not (Path(where) / "lakd.json").exists():
            hint = (
                f"train it first: lakd train teacher --language {code}"
                if code in new
                else "the checkpoint learned from it: was it moved?"
            )
            raise ExtendError(f"teacher {code!r}: no trained teacher at {where}; {hint}")
        teachers[code] = str(where)
    knowledge = []
    if cfg.distill.use_cache:
        if cfg.distill.weighting != "route":
            raise ExtendError(
                f"distill.weighting={cfg.distill.weighting}: an extension reads the old languages' knowledge from "
                "their cache, which needs weighting=route (each utterance from its own language's teacher); "
                "or set distill.use_cache=false"
            )
        knowledge = _old_knowledge(ckpt, meta)
        _check_coverage(cfg, knowledge, new)
    return {"checkpoint": str(ckpt), "old": old, "new": new, "teachers": teachers, "knowledge": knowledge}


def _check_coverage(cfg: Config, knowledge: list[dict], new: list[str]) -> None:
    """Every training shard with old-language samples was cached by the cache of those languages."""
    from lakd.distill.cache import data_fingerprint, read_manifest

    spec = common.data_spec(cfg, "train")
    for source in knowledge:
        manifest = read_manifest(source["cache_dir"])
        if manifest is None:
            raise ExtendError(f"teacher cache {source['cache_dir']}: missing (the checkpoint was distilled from it)")
        langs = [code for code in source["teachers"] if code not in new]
        cached = {tuple(s) for s in manifest["data"]["shards"]}
        now = data_fingerprint(common.shards_for_languages(spec, langs), [], [], None)["shards"]
        missing = [name for name, ident in now if (name, ident) not in cached]
        if missing:
            raise ExtendError(
                f"data.train: shard {missing[0]} holds {'/'.join(langs)} samples that the teacher cache "
                f"{source['cache_dir']} was not computed on; keep the old languages' shards as they were, "
                "or set distill.use_cache=false"
            )


class RoutedKnowledge:
    """Teacher knowledge read from several caches, each utterance from the cache of its language's teacher.

    `lookup(batch)` -> logits `[K, B, C]` and K embeddings `[B, H_k]` in `names` order, as one TeacherCache
    gives; an entry of a teacher that does not teach the utterance's language stays zero, which route weighting
    never reads (its weight there is 0)."""

    def __init__(self, sources: list[tuple], names: list[str], num_classes: int):
        self.sources = sources  # [(TeacherCache, codes it answers for)]
        self.names = names
        self.num_classes = num_classes
        self.dims = {n: d for cache, _ in sources for n, d in zip(cache.teacher_names, cache.embed_dims)}

    def __call__(self, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        keys, langs = list(batch["keys"]), list(batch["languages"])
        logits = torch.zeros(len(self.names), len(keys), self.num_classes)
        embeds = [torch.zeros(len(keys), self.dims[n]) for n in self.names]
        for cache, codes in self.sources:
            idx = [i for i, code in enumerate(langs) if code in codes]
            if not idx:
                continue
            part_logits, part_embeds = cache.lookup([keys[i] for i in idx], [langs[i] for i in idx])
            rows = torch.tensor(idx)
            for j, name in enumerate(cache.teacher_names):
                k = self.names.index(name)
                logits[k, rows] = part_logits[j]
                embeds[k][rows] = part_embeds[j]
        return logits, embeds


def _new_cache(cfg: Config, p: dict) -> dict:
    """The new teachers' knowledge of the new languages' training shards (computed once; a rerun reuses it)."""
    from lakd.distill.cache import read_manifest
    from lakd.distill.cache_write import write_teacher_cache
    from lakd.train.runtime import setup_runtime

    out = common.run_path(cfg, "cache-" + "-".join(p["new"]))
    teachers = {code: p["teachers"][code] for code in p["new"]}
    # the old knowledge's truncation, so that every utterance's knowledge was computed on the same view
    eval_max = read_manifest(p["knowledge"][0]["cache_dir"])["data"]["eval_max_seconds"]
    dist = setup_runtime(cfg)
    if dist.is_main:
        spec = common.shards_for_languages(common.data_spec(cfg, "train"), p["new"])
        write_teacher_cache(teachers, spec, out, list(cfg.labels), list(cfg.languages), cfg.data, dist.device,
                            batch_size=cfg.data.eval_batch_size, eval_max_seconds=eval_max,
                            scope=cfg.distill.cache_scope)  # fmt: skip
    if dist.world_size > 1:
        torch.distributed.barrier()
    return {"cache_dir": str(out), "teachers": teachers}


def run(cfg: Config, checkpoint: str, name: str = "student", on_eval=None) -> str:
    """Extend the student at `checkpoint` to `cfg.languages`; returns the extended student's best checkpoint."""
    from lakd.models.ser import SERModel, grown_state_dict
    from lakd.recipes.distill import _distill

    p = plan(cfg, checkpoint)
    out = common.run_path(cfg, name)
    if Path(checkpoint).resolve().is_relative_to(out.resolve()):
        raise ExtendError(
            f"the extended student would be written to {out}, over the checkpoint it starts from; "
            "give another --name or --run-dir"
        )
    languages = list(cfg.languages)
    with common.claim_output(cfg, out, "student", teachers=list(p["teachers"]), student_languages=languages,
                             extends=str(Path(checkpoint).resolve())):  # fmt: skip
        knowledge, open_knowledge = p["knowledge"], None
        if cfg.distill.use_cache:
            knowledge = [*knowledge, _new_cache(cfg, p)]

            def open_knowledge():
                from lakd.distill.cache import TeacherCache

                sources = [(TeacherCache(k["cache_dir"], teacher_dirs=k["teachers"]), set(k["teachers"]))
                           for k in knowledge]  # fmt: skip
                return RoutedKnowledge(sources, list(p["teachers"]), len(cfg.labels))

        state = grown_state_dict(SERModel.from_pretrained(checkpoint), languages)
        log.info("extending %s (%s) with %s", checkpoint, ", ".join(p["old"]), ", ".join(p["new"]))
        meta = {"extends": {k: p[k] for k in ("checkpoint", "old", "new")}, "knowledge": knowledge}
        return _distill(
            cfg,
            p["teachers"],
            knowledge[-1]["cache_dir"] if knowledge else None,
            name,
            on_eval,
            out,
            languages,
            open_knowledge=open_knowledge,
            init_model=lambda model: model.load_state_dict(state),
            extra_meta=meta,
        )


def ua_by_language(cfg: Config, checkpoint: str, split: str = "dev") -> dict[str, float | None]:
    """UA per language of `cfg.languages` on a split, by the model at `checkpoint`: the before/after of an
    extension. The model reads the data with its own language list, so a student that does not know a language
    yet meets it as an unknown one (the shared "any" vector), as it would in use."""
    import numpy as np

    from lakd.eval.metrics import unweighted_accuracy
    from lakd.models.ser import SERModel
    from lakd.recipes.evaluate import predict_shards
    from lakd.train.runtime import setup_runtime

    device = setup_runtime(cfg).device
    model = SERModel.from_pretrained(checkpoint).to(device)
    pred = predict_shards(model, common.data_spec(cfg, split), cfg.labels, model.languages, cfg.data, device)
    y_true, y_pred, langs = np.asarray(pred["y_true"]), pred["probs"].argmax(1), np.asarray(pred["languages"])
    return {
        code: unweighted_accuracy(y_true[langs == code], y_pred[langs == code]) if (langs == code).any() else None
        for code in cfg.languages
    }


def forgetting_lines(before: dict, after: dict, new: list[str], split: str = "dev") -> list[str]:
    """`lakd distill --extend`'s summary: UA per language before -> after, the new languages marked."""
    cell = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    return [f"{split} UA before -> after extension (%):"] + [
        f"  {code}{' (new)' if code in new else ''}: {cell(before[code])} -> {cell(after[code])}" for code in before
    ]


def extend_and_compare(cfg: Config, checkpoint: str, name: str = "student") -> tuple[str, list[str]]:
    """`lakd distill --extend`: extend, then UA per language on dev before and after (forgetting, and the new
    languages' gain); returns the best checkpoint and the summary lines."""
    from lakd.models.ser import read_metadata

    best = run(cfg, checkpoint, name=name)
    new = [code for code in cfg.languages if code not in read_metadata(checkpoint)["languages"]]
    return best, forgetting_lines(ua_by_language(cfg, checkpoint), ua_by_language(cfg, best), new)
