"""`lakd bench scale`: how each stage's cost grows with the number of languages (default 1, 3, 6, 9).

Per language count N, on a synthetic corpus with the same amount of audio per language:
- teacher stage: N per-language teachers, each trained for the same number of steps. On SLURM they are array
  jobs that run in parallel, so the stage's wall time is the slowest teacher (`teacher_parallel_s`), while its
  compute grows with N (`teacher_total_s`);
- teacher-knowledge cache: build time and bytes on disk, with every teacher on every sample (`all`: N teachers
  × N languages' samples, quadratic) and with each teacher on its own language (`own-language`, linear; the
  student reads this one: route weighting needs no more);
- student: the time of one training step with cached knowledge from N teachers, and the peak RSS of the process
  that runs it (cache opened memory-mapped). It should stay flat in N: the cache turns N teacher forwards into
  N lookups of C + H floats;
- evaluation: the student over every language's dev set (grows with the data, i.e. with N here).

Each N runs in a fresh child process (spawn), and within it the student steps run in a second fresh process, so
the peak RSS is that of the student alone, not of the teacher training before it. All counts run one after the
other in one invocation: compare the ratios to N = 1, not absolute numbers across machines.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from lakd.bench import machine_facts, publish
from lakd.bench.distill import _make_shards


def _in_fresh_process(fn, *args):
    """fn(*args) in a new spawned interpreter (its own peak RSS); not a daemon, so it may start one itself."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _data_cfg(cfg, batch_size: int, seconds: float):
    return cfg.data.__class__(
        **{**vars(cfg.data), "batch_size": batch_size, "eval_batch_size": batch_size, "max_seconds": seconds}
        | {"bucket": False, "shuffle_buffer": 0}
    )


def _timed_steps(model, batches, loss_of, warmup: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        loss = loss_of(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _student_phase(work: str, n_lang: int, steps: int, warmup: int, batch_size: int, seconds: float, config: str):
    """In a fresh process: student steps with cached knowledge of n_lang teachers, then evaluation on dev."""
    from lakd.config import load_config
    from lakd.data.loader import build_loader
    from lakd.distill.cache import TeacherCache
    from lakd.distill.losses import distillation_loss, teacher_weights
    from lakd.models.ser import SERModel

    torch.set_num_threads(1)
    work_dir = Path(work)
    cfg = load_config(config)
    languages = [f"l{i}" for i in range(n_lang)]
    labels = list(cfg.labels)
    data_cfg = _data_cfg(cfg, batch_size, seconds)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    teacher_dirs = {lang: str(work_dir / "teachers" / lang) for lang in languages}
    cache = TeacherCache(work_dir / "cache", teacher_dirs)
    train = build_loader(work_dir / "train", labels, languages, cfg=data_cfg, train=True, eval_max_seconds=seconds)
    batches = []
    while len(batches) < steps + warmup:
        batches.extend(train)
    batches = batches[: steps + warmup]
    torch.manual_seed(0)
    student = SERModel(cfg.student, labels, languages).train()

    def loss_of(model, b):
        s = model(b["input_values"], b["attention_mask"], b["language_ids"])
        t_logits, _ = cache.lookup(b["keys"], b["languages"])
        w = teacher_weights("route", s.logits, t_logits, b["language_ids"], languages, languages)
        return distillation_loss(s.logits, t_logits, b["labels"], w, 5.0, 0.25)["loss"]

    step_times = _timed_steps(student, batches, loss_of, warmup)
    student.eval()
    t0 = time.perf_counter()
    n_eval = 0
    with torch.no_grad():
        for b in build_loader(work_dir / "dev", labels, languages, cfg=data_cfg, train=False, eval_max_seconds=seconds):
            student(b["input_values"], b["attention_mask"], b["language_ids"])
            n_eval += len(b["keys"])
    return {
        "student_step_s": statistics.median(step_times),
        "student_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "student_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024,
        "eval_s": time.perf_counter() - t0,
        "eval_utterances": n_eval,
    }


def _one_count(n_lang: int, per_language: int, teacher_steps: int, steps: int, batch_size: int, seconds: float, config):
    """In a fresh process: shards, N teachers, the cache, then the student phase in another fresh process."""
    from lakd.config import load_config
    from lakd.data.loader import build_loader
    from lakd.distill.cache_write import write_teacher_cache
    from lakd.models.ser import SERModel

    torch.set_num_threads(1)
    cfg = load_config(config)
    languages = [f"l{i}" for i in range(n_lang)]
    labels = list(cfg.labels)
    data_cfg = _data_cfg(cfg, batch_size, seconds)
    warmup = 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _make_shards(work / "train", per_language * n_lang, seconds, languages, labels)
        _make_shards(work / "dev", max(batch_size, per_language // 2) * n_lang, seconds, languages, labels)
        teacher_times = []
        for lang in languages:
            batches = []
            loader = build_loader(work / "train", labels, languages, cfg=data_cfg, train=True, language_filter=[lang])
            while len(batches) < teacher_steps + warmup:
                batches.extend(loader)
            torch.manual_seed(0)
            teacher = SERModel(cfg.teacher, labels, [lang]).train()

            def ce(model, b):
                out = model(b["input_values"], b["attention_mask"], None)
                return torch.nn.functional.cross_entropy(out.logits, b["labels"])

            t0 = time.perf_counter()
            _timed_steps(teacher, batches[: teacher_steps + warmup], ce, warmup)
            teacher_times.append(time.perf_counter() - t0)
            teacher.save_pretrained(work / "teachers" / lang)
        built = {}
        for scope, directory in (("all", "cache-all"), ("own-language", "cache")):  # the student reads the latter
            t0 = time.perf_counter()
            write_teacher_cache(
                {lang: work / "teachers" / lang for lang in languages},
                work / "train",
                work / directory,
                labels,
                languages,
                data_cfg,
                batch_size=batch_size,
                eval_max_seconds=seconds,
                scope=scope,
            )
            built[scope] = (time.perf_counter() - t0, _dir_bytes(work / directory))
        student = _in_fresh_process(_student_phase, str(work), n_lang, steps, warmup, batch_size, seconds, config)
        return {
            "languages": n_lang,
            "train_utterances": per_language * n_lang,
            "teacher_total_s": sum(teacher_times),
            "teacher_parallel_s": max(teacher_times),
            "cache_build_s": built["all"][0],
            "cache_bytes": built["all"][1],
            "own_language_cache_build_s": built["own-language"][0],
            "own_language_cache_bytes": built["own-language"][1],
            **student,
        }


def bench_scale(
    language_counts=(1, 3, 6, 9),
    per_language: int = 32,
    teacher_steps: int = 8,
    steps: int = 10,
    batch_size: int = 8,
    seconds: float = 1.0,
    config: str = "tiny",
    out_json=None,
    console=None,
) -> dict:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rows = []
    for n in language_counts:
        rows.append(_in_fresh_process(_one_count, n, per_language, teacher_steps, steps, batch_size, seconds, config))
        console.print(f"{n} language(s): done")
    base = rows[0]
    for r in rows:
        for key in (
            "teacher_total_s",
            "teacher_parallel_s",
            "cache_build_s",
            "cache_bytes",
            "own_language_cache_build_s",
            "own_language_cache_bytes",
            "student_step_s",
        ):
            r[f"{key}_vs_first"] = r[key] / base[key] if base[key] else None
        r["student_peak_rss_vs_first"] = r["student_peak_rss_mb"] / base["student_peak_rss_mb"]
        r["eval_s_vs_first"] = r["eval_s"] / base["eval_s"]
    results = {
        "device": "cpu",
        "torch_threads": 1,
        "config": config,
        "per_language_train_utterances": per_language,
        "seconds_per_utterance": seconds,
        "batch_size": batch_size,
        "teacher_steps": teacher_steps,
        "student_steps": steps,
        "rows": rows,
        **machine_facts(),
    }
    table = Table(
        "languages",
        "teachers total (×)",
        "teachers in parallel (×)",
        "cache build (×)",
        "cache MB",
        "own-language cache build (×)",
        "own-language MB",
        "student step ms (×)",
        "student peak RSS MB (growth)",
        "eval (×)",
        title=f"lakd bench scale (config {config}, {per_language} utterances/language, relative to the first row)",
    )
    for r in rows:
        table.add_row(
            str(r["languages"]),
            f"{r['teacher_total_s']:.1f} s ({r['teacher_total_s_vs_first']:.2f})",
            f"{r['teacher_parallel_s']:.1f} s ({r['teacher_parallel_s_vs_first']:.2f})",
            f"{r['cache_build_s']:.1f} s ({r['cache_build_s_vs_first']:.2f})",
            f"{r['cache_bytes'] / 2**20:.2f}",
            f"{r['own_language_cache_build_s']:.1f} s ({r['own_language_cache_build_s_vs_first']:.2f})",
            f"{r['own_language_cache_bytes'] / 2**20:.2f}",
            f"{1000 * r['student_step_s']:.0f} ({r['student_step_s_vs_first']:.2f})",
            f"{r['student_peak_rss_mb']:.0f} ({r['student_rss_growth_mb']:.0f})",
            f"{r['eval_s']:.2f} s ({r['eval_s_vs_first']:.2f})",
        )
    return publish(table, results, out_json, console)
