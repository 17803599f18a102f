"""`lakd bench extend`: adding a language to a trained student (`lakd distill --extend`) against retraining the
student from scratch, accuracy and cost side by side, on a small synthetic corpus (espeak-ng).

One process, one machine, in order: the old pipeline (teachers, cache, student on the old languages), the new
language's teacher (needed by both paths, reported apart), then the two paths on the grown language list:

* extend: the new teacher's knowledge of the new language only (the old knowledge is the old cache), then the
  old student grown and distilled on all data for `extend_epochs`;
* scratch: every teacher's knowledge of all data (the cache depends on the data, which changed), then a fresh
  student for the config's `student_optim.epochs`.

Reported: test UA per language of the old student (before), the extended and the scratch student; forgetting
(extended - before on each old language); wall seconds and optimizer steps of each path and their ratio.
Timings are comparable only within one results file.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import typer

SPLITS = ("train", "dev", "test")


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _steps(checkpoint: str) -> int:
    """Optimizer steps of the run whose best/ checkpoint this is (its trainer's summary.json)."""
    return int(json.loads((Path(checkpoint).parent / "summary.json").read_text())["steps"])


def bench_extend(
    old=("en", "fi", "fr"),
    new=("de",),
    speakers: int = 8,
    utterances: int = 24,
    eval_speakers: int = 2,
    extend_epochs: int = 3,
    config: str = "tiny",
    overrides: list[str] | None = None,
    work_dir: str | None = None,
    out_json=None,
    console=None,
) -> dict:
    from rich.console import Console

    from lakd.config import load_config
    from lakd.data.synth import synthesize_corpus
    from lakd.recipes import cache, common, distill, extend, finetune
    from lakd.train.runtime import setup_runtime

    console = console or Console()
    old, new = list(old), list(new)
    base = load_config(config, list(overrides or []))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work_dir or tmp)
        corpus = {}
        for part, langs in (("old", old), ("new", new)):
            corpus[part] = synthesize_corpus(
                root / part,
                languages=langs,
                speakers_per_language=speakers,
                utterances_per_speaker=utterances,
                labels=base.labels,
                seed=base.seed,
                splits={"train": speakers - 2 * eval_speakers, "dev": eval_speakers, "test": eval_speakers},
                overwrite=True,
            )

        def config_for(run: str, langs: list[str], **changes):
            data = {
                f"data.{s}": [str(root / p / s) for p in ("old", "new") if p == "old" or langs != old] for s in SPLITS
            }
            return base.copy(**{"synth": {}, "run_dir": str(root / run), "languages": langs, "wandb.mode": "disabled",
                                **data, **changes})  # fmt: skip

        cfg_old = config_for("old-run", old)
        console.print(f"bench extend: the old student ({', '.join(old)}) ...")
        start = time.perf_counter()
        dirs = {code: finetune.run_teacher(cfg_old, code) for code in old}
        old_ckpt = distill.run(cfg_old, dirs, cache.run(cfg_old, dirs))
        old_seconds = time.perf_counter() - start

        grown = [*old, *new]
        cfg_ext = config_for("extend-run", grown, **{"student_optim.epochs": extend_epochs})
        console.print(f"bench extend: the new teachers ({', '.join(new)}) ...")
        start = time.perf_counter()
        dirs.update({code: finetune.run_teacher(cfg_ext, code) for code in new})
        teacher_seconds = time.perf_counter() - start

        console.print("bench extend: extending the old student ...")
        ext_ckpt, ext_seconds = _timed(extend.run, cfg_ext, old_ckpt)
        ext_cache = json.loads((common.run_path(cfg_ext, "cache-" + "-".join(new)) / "manifest.json").read_text())

        console.print("bench extend: a student from scratch ...")
        cfg_scr = config_for("scratch-run", grown)
        scr_cache, scr_cache_seconds = _timed(cache.run, cfg_scr, dirs)
        scr_ckpt, scr_student_seconds = _timed(distill.run, cfg_scr, dirs, scr_cache)

        ua = {name: extend.ua_by_language(cfg_ext, ckpt, "test")
              for name, ckpt in (("before", old_ckpt), ("extended", ext_ckpt), ("scratch", scr_ckpt))}  # fmt: skip
        teacher_ua = {code: extend.ua_by_language(cfg_ext, dirs[code], "test")[code] for code in new}
        device = str(setup_runtime(cfg_ext).device)
        ext_cache_seconds = sum(t["seconds"] for t in ext_cache["teachers"].values())
        cost = {
            "extend": {"seconds": ext_seconds, "cache_seconds": ext_cache_seconds,
                       "student_seconds": ext_seconds - ext_cache_seconds, "steps": _steps(ext_ckpt),
                       "epochs": extend_epochs},
            "scratch": {"seconds": scr_cache_seconds + scr_student_seconds, "cache_seconds": scr_cache_seconds,
                        "student_seconds": scr_student_seconds, "steps": _steps(scr_ckpt),
                        "epochs": cfg_scr.student_optim.epochs},
        }  # fmt: skip

    def mean(d, langs):
        return sum(d[c] for c in langs) / len(langs)

    results = {
        "device": device,
        "torch_threads": __import__("torch").get_num_threads(),
        "config": config,
        "overrides": list(overrides or []),
        "old_languages": old,
        "new_languages": new,
        "corpus": {
            p: {
                "speakers_per_language": speakers,
                "utterances_per_speaker": utterances,
                "dev_test_speakers": eval_speakers,
                "train_samples": c["splits"]["train"]["num_samples"],
                "test_samples": c["splits"]["test"]["num_samples"],
            }
            for p, c in corpus.items()
        },  # fmt: skip
        "ua_test": ua,
        "new_teacher_ua_test": teacher_ua,  # the new languages' FT-Mono teachers, for reference
        "mean_ua_test": {k: {"old": mean(v, old), "new": mean(v, new)} for k, v in ua.items()},
        "forgetting": {c: ua["extended"][c] - ua["before"][c] for c in old},
        "cost": cost,
        "extend_vs_scratch": {k: cost["extend"][k] / cost["scratch"][k] for k in ("seconds", "steps")},
        "shared_seconds": {"old_pipeline": old_seconds, "new_teachers": teacher_seconds},
    }
    _print(results, console)
    if out_json:
        from lakd.io import atomic_write_json

        atomic_write_json(out_json, results)
        console.print(f"written to {out_json}")
    return results


def _print(r: dict, console) -> None:
    from rich.table import Table

    langs = [*r["old_languages"], *r["new_languages"]]
    table = Table("student", *[f"{c} UA" for c in langs], "old mean", "new mean", "steps", "wall s",
                  title="lakd bench extend: test UA (%), cost of adding " + ", ".join(r["new_languages"]))  # fmt: skip
    for name in ("before", "extended", "scratch"):
        c = r["cost"].get({"extended": "extend"}.get(name, name), {})
        cells = [f"{100 * r['ua_test'][name][x]:.1f}" for x in langs]
        m = r["mean_ua_test"][name]
        table.add_row(name, *cells, f"{100 * m['old']:.1f}", f"{100 * m['new']:.1f}", str(c.get("steps", "—")),
                      f"{c['seconds']:.0f}" if c else "—")  # fmt: skip
    console.print(table)
    ratio = r["extend_vs_scratch"]
    console.print(f"extend / scratch: {ratio['seconds']:.2f}x the wall time, {ratio['steps']:.2f}x the steps")


def bench_extend_cmd(
    old: str = typer.Option("en,fi,fr", help="Languages of the trained student."),
    new: str = typer.Option("de", help="Languages to add."),
    speakers: int = typer.Option(8, help="Speakers per language (2 x --eval-speakers for dev and test)."),
    utterances: int = typer.Option(24, help="Utterances per speaker."),
    eval_speakers: int = typer.Option(2, help="Speakers per language in dev, and as many in test."),
    extend_epochs: int = typer.Option(3, help="Epochs of the extension (scratch: the config's student epochs)."),
    config: str = typer.Option(
        "tiny", "--config", "-c", help="Config for models and training (its synth is replaced)."
    ),
    set: list[str] | None = typer.Option(None, "--set", "-s", help="Override a config value (repeatable)."),
    out: Path = typer.Option(Path("bench/results/extend.json"), "--out", help="Where the results JSON goes."),
) -> None:
    """Adding a language to a trained student vs retraining from scratch: test UA (forgetting, new language)
    and wall time / steps side by side."""
    bench_extend(
        old.split(","), new.split(","), speakers, utterances, eval_speakers, extend_epochs, config, set, out_json=out
    )
