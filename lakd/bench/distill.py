"""`lakd bench distill`: student step time with cached teacher knowledge vs online teachers vs plain fine-tuning.

All settings run side by side in one process on the same batches (read once from real shards through the
loader), so the ratios are comparable. Teachers and student are the tiny random-init models of the `tiny`
config unless a config is given; only the time of a training step (forward, loss, backward, optimizer) is timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lakd.bench import publish


def _make_shards(root: Path, n: int, seconds: float, languages: list[str], labels: list[str]) -> Path:
    from lakd.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    with ShardWriter(root, "bench", max_count=10_000) as w:
        for i in range(n):
            f0 = 100 + 50 * (i % len(labels))
            audio = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)
            w.write(
                f"b{i:05d}",
                {
                    "emotion": labels[i % len(labels)],
                    "language": languages[i % len(languages)],
                    "speaker": f"s{i % 7}",
                    "corpus": "bench",
                    "split": "train",
                },
                audio=audio,
            )
    return root


def bench_distill(
    teacher_counts=(1, 3, 6),
    steps: int = 10,
    warmup: int = 2,
    batch_size: int = 8,
    seconds: float = 3.0,
    device: str = "auto",
    config: str = "tiny",
    out_json=None,
    console=None,
) -> dict:
    from rich.console import Console
    from rich.table import Table

    from lakd.config import load_config
    from lakd.data.loader import build_loader
    from lakd.distill.cache import TeacherCache
    from lakd.distill.cache_write import write_teacher_cache
    from lakd.distill.losses import distillation_loss, teacher_weights
    from lakd.models.ser import SERModel
    from lakd.train.distributed import resolve_device

    console = console or Console()
    cfg = load_config(config)
    dev = resolve_device(device)
    max_k = max(teacher_counts)
    languages = [f"l{i}" for i in range(max_k)]
    labels = list(cfg.labels)
    n_batches = steps + warmup
    results = {
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "seconds_per_utterance": seconds,
        "steps": steps,
        "student_params": None,
        "teacher_params": None,
        "settings": [],
    }
    autocast = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = _make_shards(tmp / "shards", n_batches * batch_size, seconds, languages, labels)
        data_cfg = cfg.data.__class__(
            **{
                **vars(cfg.data),
                "batch_size": batch_size,
                "eval_batch_size": batch_size,
                "max_seconds": seconds,
                "bucket": False,
                "shuffle_buffer": 0,
            }
        )
        batches = list(build_loader(shards, labels, languages, cfg=data_cfg, train=False, eval_max_seconds=seconds))
        for b in batches:
            for k in ("input_values", "attention_mask", "labels", "language_ids"):
                b[k] = b[k].to(dev)
        teacher_dirs = {}
        for k in range(max_k):
            torch.manual_seed(100 + k)
            t = SERModel(cfg.teacher, labels, languages)
            teacher_dirs[languages[k]] = str(t.save_pretrained(tmp / "teachers" / languages[k]))
            results["teacher_params"] = t.num_parameters()
        write_teacher_cache(
            teacher_dirs,
            shards,
            tmp / "cache",
            labels,
            languages,
            data_cfg,
            device=dev,
            batch_size=batch_size,
            eval_max_seconds=seconds,
        )

        def time_setting(name: str, k: int) -> dict:
            torch.manual_seed(0)
            student = SERModel(cfg.student, labels, languages).to(dev).train()
            results["student_params"] = student.num_parameters()
            opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
            names = languages[:k]
            cache = TeacherCache(tmp / "cache", {n: teacher_dirs[n] for n in names}) if name == "cached" else None
            online = (
                [SERModel.from_pretrained(teacher_dirs[n]).to(dev).eval().requires_grad_(False) for n in names]
                if name == "online"
                else None
            )
            times = []
            for i, b in enumerate(batches):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                    s = student(b["input_values"], b["attention_mask"], b["language_ids"])
                    if name == "finetune":
                        loss = torch.nn.functional.cross_entropy(s.logits.float(), b["labels"])
                    else:
                        if cache is not None:
                            t_logits, _ = cache.lookup(b["keys"])
                            t_logits = t_logits.to(dev)
                        else:
                            with torch.no_grad():
                                t_logits = torch.stack(
                                    [m(b["input_values"], b["attention_mask"]).logits.float() for m in online]
                                )
                        w = teacher_weights("route", s.logits, t_logits, b["language_ids"], names, languages)
                        loss = distillation_loss(s.logits, t_logits, b["labels"], w, 5.0, 0.25)["loss"]
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            return {
                "setting": name,
                "teachers": k,
                "step_s_median": med,
                "step_s_mean": statistics.mean(times),
                "utterances_per_s": batch_size / med,
                "audio_s_per_s": batch_size * seconds / med,
            }

        rows = [time_setting("finetune", 0)]
        for k in teacher_counts:
            rows.append(time_setting("cached", k))
            rows.append(time_setting("online", k))
        base = rows[0]["step_s_median"]
        for r in rows:
            r["ratio_vs_finetune"] = r["step_s_median"] / base
        results["settings"] = rows
    table = Table(
        "setting",
        "teachers",
        "step (ms, median)",
        "utt/s",
        "× fine-tune step",
        title=f"lakd bench distill ({results['device']}, batch {batch_size} x {seconds:.0f} s)",
    )
    for r in rows:
        table.add_row(
            r["setting"],
            str(r["teachers"]),
            f"{1000 * r['step_s_median']:.1f}",
            f"{r['utterances_per_s']:.1f}",
            f"{r['ratio_vs_finetune']:.2f}",
        )
    return publish(table, results, out_json, console)
