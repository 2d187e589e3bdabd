"""A pretrained base rehearses its own words (data.self_replay).

A pretrained base comes without its training data, so replay has nothing general to draw from and a
fine-tune on a narrow domain overwrites what the base could say (measured on SmolLM2: 40 steps at lr
3e-3 on the shop domain alone turned "The capital of France is Paris." into "... is Talwick."). At
generation 0 the base answers a set of prompts (greedy, through its chat template); the answers are
stored as a delta (`data/<sha>.parquet`, named in `self_replay.json`), and every later training mix
replays `k` of them. The prompts are kept apart from eval.general's sets, which measure what was kept:
none may be a near-copy of a measured prompt (`evo.nearcopy`, checked by `evo.inputs` before a run).
The answers are made by the driver (it has the model); this module stores them and draws from them.
"""

from __future__ import annotations

import hashlib
import json
import random

from evo.atomic import atomic_write_json, read_json
from evo.data.records import Record, parse_record

FILE = "self_replay.json"


def prompts_sha(prompts: list[str]) -> str:
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()


def is_current(lin, base: str, prompts: list[str], max_new_tokens: int) -> bool:
    """Whether the stored answers are the base's answers to these prompts at this length."""
    path = lin.root / FILE
    if not path.exists():
        return False
    old = read_json(path)
    return old["base"] == base and old["prompts_sha"] == prompts_sha(prompts) \
        and old.get("max_new_tokens") == max_new_tokens and lin.data.path(old["sha"]).exists()


def store(lin, rows: list[dict], base: str, prompts_file: str, prompts: list[str], max_new_tokens: int,
          seconds: float) -> tuple[str, int]:
    """Store the base's answers (chat records) as a delta and name it in `self_replay.json`."""
    records = [parse_record(r) for r in rows]
    sha = lin.data.put(records)
    atomic_write_json(lin.root / FILE, {"sha": sha, "base": base, "prompts": prompts_file,
                                        "prompts_sha": prompts_sha(prompts), "max_new_tokens": max_new_tokens,
                                        "records": len(records), "seconds": round(seconds, 1)})
    return sha, len(records)


def as_records(prompts: list[str], replies: list[str]) -> list[dict]:
    """One chat record per answered prompt (an empty answer is left out)."""
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r.strip()}],
             "category": "self-replay"} for p, r in zip(prompts, replies) if r.strip()]


def rehearsal(lin, k: int, seed: int) -> list[Record]:
    """`k` of the base's stored answers for one generation's mix (none when self-replay is off)."""
    path = lin.root / FILE
    if k <= 0 or not path.exists():
        return []
    records = sorted(lin.data.get(read_json(path)["sha"]), key=lambda r: r.sha)
    return random.Random(seed).sample(records, min(k, len(records)))
