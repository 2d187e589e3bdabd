"""LoRA step throughput under Ray Train against a plain single-process PEFT loop, and the fixed
overhead of a generation (wall time minus time in training steps and evals), in one run.

    .venv/bin/python bench/bench_generation.py [--steps 300] [--generations 2] [--layouts 2x1,1x2]

Both loops train the same model on the same mix with the same global batch. Ray Train uses each
layout of `--layouts` (WORKERSxCPUS: 2x1 is 2 workers of 1 CPU and thread each, DDP over gloo, the
default config; 1x2 one worker with 2 threads), each in its own copy of the root after generation 0;
the plain loop is one process with 2 threads, run for every generation of every layout on that
generation's parent and mix.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import ray  # noqa: E402
import torch  # noqa: E402
from report import update_section  # noqa: E402

from evo.atomic import read_json  # noqa: E402
from evo.config import load_config  # noqa: E402
from evo.data.demo import write_demo_data  # noqa: E402
from evo.data.store import read_records  # noqa: E402
from evo.driver import generation_zero, run_generation  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Progress  # noqa: E402
from evo.ray_start import WORKER_ENV  # noqa: E402
from evo.train.examples import batches, collate, count_target_tokens, encode  # noqa: E402

WARMUP = 5


def plain_peft_loop(root: Path, parent: str, mix_path: Path, cfg, warmup: int = WARMUP) -> float:
    """tokens/s of a single-process PEFT LoRA loop over the same mix (after `warmup` steps)."""
    from peft import LoraConfig, get_peft_model

    from evo.model.lineage_model import load_generation

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, tok = load_generation(root, parent)
    lora = cfg.train.lora
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    examples = [encode(r, tok, cfg.model.max_length) for r in read_records(str(mix_path))]
    model.train()
    tokens, seconds = 0, 0.0
    for step, batch_ex in batches(examples, cfg.train.batch_size, 0, cfg.train.steps):
        batch = collate(batch_ex, tok.pad_token_id)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= warmup:
            seconds += time.perf_counter() - t0
            tokens += count_target_tokens(batch)
    return tokens / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--layouts", default="2x1", help="Ray Train layouts, WORKERSxCPUS, comma-separated (e.g. 2x1,1x2)")
    args = ap.parse_args()
    layouts = [tuple(int(x) for x in lay.split("x")) for lay in args.layouts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="evo-bench-"))
    data = write_demo_data(work / "data")
    base_cfg = load_config(data, [f"train.steps={args.steps}", "model.pretrain.steps=200"])
    ray.init(address="local", runtime_env={"env_vars": WORKER_ENV})
    progress = Progress()
    generation_zero(base_cfg, Lineage(work / "lineage"), progress)
    gens = []
    for workers, cpus in layouts:
        root = work / f"lineage-{workers}x{cpus}"
        shutil.copytree(work / "lineage", root)
        cfg = load_config(data, [f"train.steps={args.steps}", "model.pretrain.steps=200",
                                 f"train.num_workers={workers}", f"train.cpus_per_worker={cpus}"])
        lin = Lineage(root)
        for i in range(1, args.generations + 1):
            parent = lin.registry.alias("champion")
            row = run_generation(cfg, lin, i, cfg.data.generations[i - 1], progress)
            meta, ev = lin.models.meta(row["child_sha"]), read_json(lin.eval_path(row["GEN_ID"]))
            gens.append((f"{workers}x{cpus}", lin, row, meta, ev["seconds"], parent))
    ray.shutdown()
    # each generation's baseline: the same parent on the same mix (one loop per generation, after Ray is gone)
    plain = [plain_peft_loop(lin.root, parent, lin.run_dir(row["GEN_ID"]) / "mix.parquet", base_cfg)
             for _, lin, row, _, _, parent in gens]
    write_report(gens, plain, args)


def write_report(gens, plain: list[float], args) -> None:
    lines = [
        f"{args.steps} LoRA steps per generation, global batch 16, tiny demo Llama; Ray Train in each layout "
        "(workers x CPUs each: 2x1 is DDP over gloo, 1 thread a worker; 1x2 one worker with 2 threads) against a "
        "plain one-process PEFT loop with 2 threads; each generation's plain loop trains the same parent on that "
        "generation's own mix.",
        "",
        "| layout | generation | torch threads a worker | Ray Train tokens/s | plain loop tokens/s | ratio | wall s "
        "| in steps s | evals s | fixed overhead s | of which: Ray Train start-up, teardown, worker setup, checkpoints (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (layout, _, row, meta, eval_s, _), base in zip(gens, plain):
        wall = float(row["walltime_min"]) * 60
        ray_tps = meta["tokens"] / meta["train_seconds"]
        overhead = wall - meta["train_seconds"] - eval_s
        lines.append(
            f"| {layout} | {row['GEN_ID']} | {meta.get('torch_threads', '?')} | {ray_tps:,.0f} | {base:,.0f} | "
            f"{ray_tps / base:.2f}x | {wall:.1f} | "
            f"{meta['train_seconds']:.1f} | {eval_s:.1f} | {overhead:.1f} | {meta['ray_startup_seconds']:.1f}, "
            f"{meta['ray_teardown_seconds']:.1f}, {meta['setup_seconds']:.1f}, {meta['checkpoint_seconds']:.1f} |")
    body = "\n".join(lines)
    print(body)
    update_section("generation", body)


if __name__ == "__main__":
    main()
