"""A pretrained base rehearses its own words (data.self_replay).

A pretrained base comes without its training data, so replay has nothing general to draw from and a
fine-tune on a narrow domain overwrites what the base could say (measured on SmolLM2: 40 steps at lr
3e-3 on the shop domain alone turned "The capital of France is Paris." into "... is Talwick."). At
generation 0 the base answers a set of prompts (greedy, through its chat template); the answers are
stored as a delta (`data/<sha>.parquet`, named in `self_replay.json`), and every later training mix
replays `k` of them. The prompts are kept apart from eval.general's sets, which measure what was kept.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

from evo.atomic import atomic_write_json, read_json
from evo.data.records import Record, parse_record

FILE = "self_replay.json"


def answer(root: str, sha: str, prompts: list[str], max_new_tokens: int, dtype: str = "float32") -> list[dict]:
    """The model's greedy answers to `prompts`, as chat records: a Ray task body."""
    import torch

    from evo.evals.general import chat_prompt
    from evo.evals.generate import generate
    from evo.model.lineage_model import load_generation

    model, tok = load_generation(root, sha, dtype)
    if torch.cuda.is_available():
        model = model.to("cuda")
    replies = generate(model, tok, [chat_prompt(tok, p) for p in prompts], max_new_tokens, 16)
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r.strip()}],
             "category": "self-replay"} for p, r in zip(prompts, replies) if r.strip()]


def prompts_sha(prompts: list[str]) -> str:
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()


def ensure(cfg, lin, progress, gen0: str = "gen-0") -> None:
    """Write the base's answers once per base and prompt set (again after either changes)."""
    import ray

    from evo.evals.general import read_prompts

    sc = cfg.data.self_replay
    base = lin.registry.by_gen(gen0)
    if sc is None or base is None:
        return
    prompts = read_prompts(sc.prompts)
    path = lin.root / FILE
    if path.exists() and (old := read_json(path))["base"] == base and old["prompts_sha"] == prompts_sha(prompts) \
            and old.get("max_new_tokens") == sc.max_new_tokens and lin.data.path(old["sha"]).exists():
        return
    progress(gen0, f"self-replay: the base answers {len(prompts)} prompts from {Path(sc.prompts).name}; every "
                   f"generation rehearses {sc.k} of its answers")
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=1, num_gpus=1 if cfg.train.use_gpu else 0)(answer)
    rows = ray.get(task.remote(lin.location, base, prompts, sc.max_new_tokens, cfg.model.dtype))
    records = [parse_record(r) for r in rows]
    sha = lin.data.put(records)
    atomic_write_json(path, {"sha": sha, "base": base, "prompts": sc.prompts, "prompts_sha": prompts_sha(prompts),
                             "max_new_tokens": sc.max_new_tokens, "records": len(records),
                             "seconds": round(time.perf_counter() - t0, 1)})
    progress(gen0, f"self-replay: {len(records)} answers stored as {sha[:12]} ({time.perf_counter() - t0:.0f} s)")


def rehearsal(lin, k: int, seed: int) -> list[Record]:
    """`k` of the base's stored answers for one generation's mix (none when self-replay is off)."""
    path = lin.root / FILE
    if k <= 0 or not path.exists():
        return []
    records = sorted(lin.data.get(read_json(path)["sha"]), key=lambda r: r.sha)
    return random.Random(seed).sample(records, min(k, len(records)))
