"""Read an offline W&B run file (`run-<id>.wandb`) back, for tests: W&B 0.31 dropped its Python reader.

The file is W&B's 7-byte header (":W&B", magic 0xBEE1, version 0) and then a LevelDB log: 32 KiB blocks of
records, each with a 7-byte header (crc32c, little-endian length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4); a block's
tail shorter than a header is zero padding. Each full record is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding at the end of a block, or a torn tail
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        record = pb.Record()
        record.ParseFromString(pending)
        yield record
        pending = b""


def run_facts(path: str | Path) -> dict:
    """name, group, job_type, tags, config keys and the history keys of one offline run."""
    facts = {"history_keys": set(), "config_keys": set(), "name": None, "group": None, "job_type": None, "tags": []}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            facts["history_keys"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        elif kind == "run":
            found = {"name": r.run.display_name, "group": r.run.run_group, "job_type": r.run.job_type}
            facts.update({k: v for k, v in found.items() if v})
            facts["tags"] = list(r.run.tags) or facts["tags"]
            facts["config_keys"] |= {c.key for c in r.run.config.update}
            facts["run_id"] = r.run.run_id or facts.get("run_id")
        elif kind == "config":
            facts["config_keys"] |= {c.key for c in r.config.update}
    return facts
