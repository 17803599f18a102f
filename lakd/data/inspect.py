"""What a set of shards holds, and whether it is intact: `lakd shards inspect`.

Reads every shard once (metadata only; audio is decoded only for samples whose JSON has no duration),
tallies language x emotion counts and durations, speakers and label distribution, and verifies each
shard's sha256 against its directory's index.json (lakd's format or EmoSynth's, which has no "format" key).
A shard that an index lists but the disk lacks is a failure. With `decode=True` (`--decode`) every sample's
audio is decoded and checked as the loader would (`decode_problem`): undecodable bytes, a bad sample rate,
empty / non-finite / out-of-range / silent / too short audio, and a JSON `duration` that disagrees with the
decoded length are each reported naming the sample.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from lakd.data.audio import AudioDecodeError, audio_problem, decode_audio, describe_problem
from lakd.data.index import ShardIndex, listed_but_absent
from lakd.data.shards import (
    INDEX_NAME,
    Sample,
    SampleError,
    ShardFormatError,
    expand_urls,
    iter_tar_samples,
    parse_sample,
)
from lakd.data.skips import MIN_SECONDS
from lakd.io import sha256_file

# checksum status of one shard
OK, MISMATCH, MISSING_INDEX, NOT_IN_INDEX, NOT_VERIFIED = (
    "ok",
    "mismatch",
    "missing index",
    "not in index",
    "not verified",
)
DURATION_TOLERANCE_S = 0.05  # JSON duration vs decoded length: more apart than this (or 2 %) is a mismatch


def decode_problem(sample: Sample, where: str) -> tuple[float | None, str | None]:
    """(decoded seconds, problem) of one sample: the loader's checks plus the JSON duration against the audio."""
    try:
        audio, sr = decode_audio(sample.audio, sample.audio_ext, where)
    except AudioDecodeError as e:
        return None, f"{e.reason}: {str(e).split(': ', 1)[-1]}"
    seconds = audio.shape[0] / sr
    problem = audio_problem(audio, sr, MIN_SECONDS)
    if problem:
        return seconds, f"{problem}: {describe_problem(problem, audio, sr)}"
    claimed = sample.meta.get("duration")
    if claimed is not None and abs(float(claimed) - seconds) > max(DURATION_TOLERANCE_S, 0.02 * seconds):
        return seconds, f"duration_mismatch: JSON says {float(claimed):.3f} s, the audio is {seconds:.3f} s"
    return seconds, None


def _load_index(directory: str) -> ShardIndex | str | None:
    """The directory's index, None when it has none, or the error message when it cannot be read."""
    try:
        return ShardIndex.load(directory)
    except ShardFormatError as e:
        return str(e)


def _checksum(path: str, index: ShardIndex | str | None, verify: bool) -> tuple[str, str]:
    """(status, detail) of one shard against its directory's index."""
    if not verify:
        return NOT_VERIFIED, ""
    if index is None:
        return (
            MISSING_INDEX,
            f"no {INDEX_NAME} in {os.path.dirname(path) or '.'} (write one with `lakd shards index DIR`)",
        )
    if isinstance(index, str):
        return MISMATCH, index
    entry = index.entry(path)
    if entry is None or entry.sha256 is None:
        return NOT_IN_INDEX, f"{path} has no sha256 entry in {INDEX_NAME}"
    actual = sha256_file(path)
    if actual != entry.sha256:
        return MISMATCH, f"{path}: sha256 {actual[:12]}... != index {str(entry.sha256)[:12]}..."
    return OK, ""


def inspect_shards(spec, verify: bool = True, decode: bool = False) -> dict:
    """Counts, durations, speakers and label distribution of the shards of `spec`; checksums if `verify`;
    every sample's audio decoded and checked if `decode` (durations are then the decoded ones).

    Unreadable shards and bad samples are reported (never raised), so a damaged corpus can be inspected.
    `checksum_failures` lists shards whose sha256 does not match index.json, that are missing from an
    existing index, that an index lists but the disk lacks, or that cannot be read; a directory without
    index.json is reported, not a failure. `problems` names each bad sample ("shard:key: reason: detail").
    """
    urls = expand_urls(spec)
    counts: dict[str, Counter] = defaultdict(Counter)
    durations: dict[str, defaultdict] = defaultdict(lambda: defaultdict(float))
    speakers: dict[str, set] = defaultdict(set)
    indexes: dict[str, ShardIndex | str | None] = {}
    shards, problems, failures = [], [], []
    for url in urls:
        d = os.path.dirname(os.path.abspath(url))
        if d not in indexes:
            indexes[d] = _load_index(d)
        n, dur, error = 0, 0.0, None
        try:
            for key, members in iter_tar_samples(url):
                where = f"{url}:{key}"
                try:
                    sample = parse_sample(key, members)
                except SampleError as e:
                    problems.append(f"{where}: {e}")
                    continue
                if decode:
                    seconds, problem = decode_problem(sample, where)
                    if problem:
                        problems.append(f"{where}: {problem}")
                    if seconds is None:
                        continue
                else:
                    try:
                        seconds = sample.duration()
                    except SampleError as e:
                        problems.append(f"{where}: audio unreadable ({e})")
                        continue
                meta = sample.meta
                lang, emo = str(meta.get("language", "?")), str(meta.get("emotion", "?"))
                counts[lang][emo] += 1
                durations[lang][emo] += seconds
                speakers[lang].add(str(meta.get("speaker", "?")))
                n += 1
                dur += seconds
        except Exception as e:  # truncated or corrupt tar: report and go on with the next shard
            error = f"{type(e).__name__}: {e}"
        status, detail = _checksum(url, indexes[d], verify)
        row = {
            "path": url,
            "num_samples": n,
            "duration_s": round(dur, 2),
            "bytes": os.path.getsize(url),
            "checksum": status,
            "detail": detail,
            "error": error,
        }
        shards.append(row)
        if status in (MISMATCH, NOT_IN_INDEX):
            failures.append({"path": url, "status": status, "detail": detail})
        if error:
            failures.append({"path": url, "status": "unreadable", "detail": f"{url}: {error} after {n} samples"})
    for path, entry in listed_but_absent(urls):
        detail = f"{path}: listed in {INDEX_NAME} ({entry.num_samples} samples) but not on disk"
        failures.append({"path": path, "status": "missing", "detail": detail})
    labels: Counter = Counter()
    for c in counts.values():
        labels.update(c)
    total = sum(labels.values())
    status_counts = Counter(s["checksum"] for s in shards)
    return {
        "spec": [str(s) for s in spec] if isinstance(spec, (list, tuple)) else str(spec),
        "num_shards": len(urls),
        "num_samples": total,
        "duration_s": round(sum(s["duration_s"] for s in shards), 2),
        "bytes": sum(s["bytes"] for s in shards),
        "counts": {l: dict(sorted(c.items())) for l, c in sorted(counts.items())},
        "durations_s": {l: {e: round(v, 2) for e, v in sorted(c.items())} for l, c in sorted(durations.items())},
        "labels": dict(sorted(labels.items())),
        "label_fractions": {e: round(n / total, 4) for e, n in sorted(labels.items())} if total else {},
        "speakers": {l: sorted(s) for l, s in sorted(speakers.items())},
        "num_speakers": {l: len(s) for l, s in sorted(speakers.items())},
        "shards": shards,
        "checksums": {k: status_counts.get(k, 0) for k in (OK, MISMATCH, MISSING_INDEX, NOT_IN_INDEX, NOT_VERIFIED)},
        "checksum_failures": failures,
        "problems": problems,
        "decoded": decode,
    }


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def print_inspection(report: dict, console=None, max_shard_rows: int = 40, max_problem_rows: int = 50) -> None:
    """Render an `inspect_shards` report as rich tables (all shards if few, else only those with problems)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(
        f"[bold]{report['spec']}[/]: {report['num_shards']} shards, {report['num_samples']} samples, "
        f"{report['duration_s'] / 3600:.2f} hours, {report['bytes'] / 1e6:.1f} MB",
        emoji=False,
    )
    emotions = sorted({e for c in report["counts"].values() for e in c})
    t = Table(title="samples per language x emotion")
    d = Table(title="minutes of audio per language x emotion")
    for table in (t, d):
        table.add_column("language")
        for e in emotions:
            table.add_column(e, justify="right")
        table.add_column("total", justify="right")
    t.add_column("speakers", justify="right")
    for lang, c in report["counts"].items():
        mins = report["durations_s"][lang]
        t.add_row(lang, *[str(c.get(e, 0)) for e in emotions], str(sum(c.values())), str(report["num_speakers"][lang]))
        d.add_row(lang, *[_minutes(mins.get(e, 0.0)) for e in emotions], _minutes(sum(mins.values())))
    if report["labels"]:
        t.add_row(
            "[bold]all[/]",
            *[str(report["labels"].get(e, 0)) for e in emotions],
            str(report["num_samples"]),
            str(sum(report["num_speakers"].values())),
            end_section=False,
        )
        t.add_row(
            "[bold]share[/]", *[f"{100 * report['label_fractions'].get(e, 0):.1f}%" for e in emotions], "100%", ""
        )
        d.add_row(
            "[bold]all[/]",
            *[_minutes(sum(v.get(e, 0.0) for v in report["durations_s"].values())) for e in emotions],
            _minutes(report["duration_s"]),
        )
    console.print(t)
    console.print(d)

    shown = (
        report["shards"]
        if len(report["shards"]) <= max_shard_rows
        else [s for s in report["shards"] if s["checksum"] not in (OK, NOT_VERIFIED) or s["error"]]
    )
    if shown:
        st = Table(title="shards" if len(shown) == len(report["shards"]) else "shards with problems")
        for col, just in (
            ("shard", "left"),
            ("samples", "right"),
            ("minutes", "right"),
            ("MB", "right"),
            ("checksum", "left"),
        ):
            st.add_column(col, justify=just)
        colors = {OK: "green", MISMATCH: "red", NOT_IN_INDEX: "red", MISSING_INDEX: "yellow", NOT_VERIFIED: "dim"}
        for s in shown:
            status = f"[{colors.get(s['checksum'], 'white')}]{s['checksum']}[/]"
            if s["error"]:
                status += f" [red]unreadable: {s['error']}[/]"
            st.add_row(
                os.path.basename(s["path"]),
                str(s["num_samples"]),
                _minutes(s["duration_s"]),
                f"{s['bytes'] / 1e6:.1f}",
                status,
            )
        console.print(st)
    c = report["checksums"]
    console.print("checksums: " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    for f in report["checksum_failures"]:
        console.print(f"[red]FAILED[/] {f['status']}: ", end="")
        console.print(f["detail"] or f["path"], markup=False, emoji=False)
    if report["problems"]:
        skipped = "" if report.get("decoded") else " (the loader skips them)"
        console.print(f"[yellow]{len(report['problems'])} bad sample(s)[/]{skipped}:", emoji=False)
        for p in report["problems"][:max_problem_rows]:
            console.print(f"  {p}", markup=False, emoji=False)
        if len(report["problems"]) > max_problem_rows:
            console.print(f"  ... and {len(report['problems']) - max_problem_rows} more", markup=False)
