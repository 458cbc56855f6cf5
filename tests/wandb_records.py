"""Read back an offline W&B run file (`run-<id>.wandb`) so tests can check what was logged.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB
blocks of chunks, each `crc32 (4) | length (2) | type (1) | payload`, type 1 = full record,
2/3/4 = first/middle/last piece of one split across blocks. Each record is a protobuf
`wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32768
CHUNK_HEADER = 7


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + CHUNK_HEADER <= len(data):
        block_left = BLOCK - (pos % BLOCK)
        if block_left < CHUNK_HEADER:  # block trailer padding
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        payload = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            break
        pending += payload
        if kind in (1, 4):  # full record, or last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def logged_run(run_dir: Path, wait: float = 10.0) -> dict:
    """The run record (name, group, tags, config) and all history rows of the run in `run_dir/wandb`.

    The file is written by wandb-core, a separate process, so a read right after `finish()` returns can, rarely,
    find the file without its run record yet; a file without one is read again for up to `wait` seconds before
    the test fails."""
    files = sorted(Path(run_dir).glob("wandb/*run-*/run-*.wandb"))
    assert files, f"no W&B run file under {run_dir}/wandb"
    deadline = time.monotonic() + wait
    records = read_records(files[-1])
    while not any(r.WhichOneof("record_type") == "run" for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = read_records(files[-1])
    run, history, summary = None, [], {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
    assert run is not None, "no run record"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    return {
        "name": run.display_name,
        "group": run.run_group,
        "job_type": run.job_type,
        "project": run.project,
        "tags": list(run.tags),
        "config": config,
        "history": history,
        "summary": summary,
    }
