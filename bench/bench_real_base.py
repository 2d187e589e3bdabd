"""The real base (SmolLM2-135M-Instruct from its package's GGUF) on this machine, in one process and
on the same data: Ray Train against a plain PEFT loop, the FLOP/s a step achieves against a measured
fp32 matmul peak, served tokens/s through `evo serve` against plain `generate`, and the memory of
serving a second generation.

    .venv/bin/python bench/bench_real_base.py [--steps 20] [--requests 8] [--rounds 3]

Training is measured in rounds that alternate which side goes first (Ray Train, then the plain loop
with Ray shut down, or the other way round), serving as repeated passes: one run of each on a shared
2-core machine varies by 5-10%, so the table gives medians and the spread over the rounds.

Goals (issue 14): Ray Train at least 0.9x the plain loop; `evo serve` at least 0.8x plain generate;
a second served generation costs its adapters, not another base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import psutil  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from bench_generation import plain_peft_loop  # noqa: E402
from ray import serve  # noqa: E402
from report import update_section  # noqa: E402

from evo.config import load_config  # noqa: E402
from evo.data.shop import write_shop_data  # noqa: E402
from evo.driver import generation_zero, run_generation  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Progress  # noqa: E402
from evo.ray_start import start_ray  # noqa: E402
from evo.train.child import train_run  # noqa: E402
from evo.train.worker_config import worker_config  # noqa: E402

PORT = 18793
QUESTIONS = ["What is the capital of France?", "Describe a walk by the sea.", "Give me a tip for cooking rice.",
             "Write a sentence about a red kite.", "How many days are in a week?", "What is a library?",
             "Describe a quiet morning.", "Explain what a bridge does."]


def matmul_peak(n: int = 1024, reps: int = 20) -> float:
    """fp32 FLOP/s of a square matmul with this process's threads (best of three)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


def train_flops_per_token(model) -> float:
    """LoRA training: forward 2N and the input gradients of the backward pass 2N per token, N the
    matmul weights (the frozen base gets no weight gradients); LoRA's own matrices are under 1%."""
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in name)
    return 4.0 * n


def chat(sha_or_name: str, question: str, max_tokens: int) -> dict:
    body = json.dumps({"model": sha_or_name, "messages": [{"role": "user", "content": question}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/chat/completions", body,
                                 {"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2 ** 20


def main() -> None:
    if sys.argv[1:2] == ["--memory-probe"]:
        return run_memory_probe(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="alternating Ray Train / plain-loop rounds; serving passes")
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="evo-bench-real-"))
    cfg = load_config(write_shop_data(work / "data", generations=2),
                      [f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}", "eval.general=null",
                       "data.self_replay=null", "train.rehearsal_kl=0", "eval.max_items=16", "gate.min_recall=null",
                       "gate.min_generalization=null", "gate.max_style_drift=null", "gate.max_style_drift_rise=null"])
    start_ray(None, 2)  # what `evo run` starts on a laptop
    lin = Lineage(work / "lineage")
    progress = Progress()
    generation_zero(cfg, lin, progress)
    base = lin.registry.alias("champion")
    rows = [run_generation(cfg, lin, i, cfg.data.generations[i - 1], progress) for i in (1, 2)]

    # serving: both generations on one replica, sequential requests, `rounds` passes
    from evo.http.app import SERVE_LOGGING, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT}, logging_config=SERVE_LOGGING)
    serve.run(build_app(str(lin.root), 0.5), name="evo", route_prefix="/")
    child = rows[0]["child_sha"]
    chat(child, QUESTIONS[0], 4)  # load and warm
    served_tps, served = [], []
    for _ in range(args.rounds):
        t0, tokens, served = time.perf_counter(), 0, []
        for q in QUESTIONS[: args.requests]:
            out = chat(child, q, args.max_tokens)
            tokens += out["usage"]["completion_tokens"]
            served.append(out["choices"][0]["message"]["content"])
        served_tps.append(tokens / (time.perf_counter() - t0))
    serve.shutdown()
    ray.shutdown()

    # training: the same steps on gen-1's mix, Ray Train against the plain loop (Ray shut down), in
    # rounds that alternate which goes first
    ray_tps, plain_tps, threads, poll = [], [], None, None
    mix_dir = lin.run_dir("gen-1")
    for r in range(args.rounds):
        for side in (("ray", "plain") if r % 2 == 0 else ("plain", "ray")):
            if side == "plain":
                plain_tps.append(plain_peft_loop(lin.root, base, mix_dir / "mix.parquet", cfg, warmup=0))
                continue
            meta = ray_train_round(cfg, lin, base, mix_dir, f"bench-{r}")
            ray_tps.append(meta["tokens"] / meta["step_seconds"])
            threads, poll = meta.get("torch_threads"), meta.get("poll_interval_s")
        print(f"round {r + 1}: Ray Train {ray_tps[-1]:.0f} tokens/s, plain loop {plain_tps[-1]:.0f}", flush=True)

    # the baselines, in this process, after Ray is gone
    from evo.evals.general import chat_prompt
    from evo.model.generate import Sampling, generate_batch
    from evo.model.lineage_model import load_generation

    model, tok = load_generation(lin.root, child)
    flops_token = train_flops_per_token(model)
    peak = matmul_peak()
    prompts = [chat_prompt(tok, q) for q in QUESTIONS[: args.requests]]
    generate_batch(model, tok, prompts[:1], Sampling(4, 0.0), [])
    plain_gen_tps, plain = [], []
    for _ in range(args.rounds):
        t0, tokens, plain = time.perf_counter(), 0, []
        for p in prompts:
            (o,) = generate_batch(model, tok, [p], Sampling(args.max_tokens, 0.0), [])
            tokens += o[0].completion_tokens
            plain.append(o[0].text)
        plain_gen_tps.append(tokens / (time.perf_counter() - t0))
    same = sum(a == b for a, b in zip(served, plain))
    del model

    # memory, each way in a fresh process (freed memory that the allocator keeps would blur it here):
    # the pool evo serves from (one base, adapters per generation) against two merged models
    shas = [rows[0]["child_sha"], rows[1]["child_sha"]]
    pool_mb, merged_mb = memory_probe("pool", lin.root, shas), memory_probe("merged", lin.root, shas)
    write_report(args, cfg, ray_tps, plain_tps, flops_token, peak, served_tps, plain_gen_tps, same, pool_mb, merged_mb,
                 threads, poll)


def ray_train_round(cfg, lin: Lineage, base: str, mix_dir: Path, gid: str) -> dict:
    """One Ray Train run of the configured steps from `base` on the files in `mix_dir`; its summary."""
    run = lin.run_dir(gid)
    run.mkdir(parents=True, exist_ok=True)
    for name in ("mix.parquet", "val.parquet"):
        shutil.copy(mix_dir / name, run / name)
    start_ray(None, 2)
    try:
        return train_run(cfg, lin, gid, worker_config(cfg, lin, gid, parent_sha=base), Progress()).summary
    finally:
        ray.shutdown()


def memory_probe(mode: str, root: Path, shas: list[str]) -> tuple[float, float]:
    """(MB added by the first generation, by the second) in a fresh process."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--memory-probe", mode, str(root), *shas], check=True,
                         capture_output=True, text=True).stdout
    first, second = json.loads(out.strip().splitlines()[-1])
    return first, second


def run_memory_probe(mode: str, root: str, shas: list[str]) -> None:
    import gc

    from evo.inference.pool import ModelPool
    from evo.model.generate import Sampling, generate_batch
    from evo.model.lineage_model import load_generation

    torch.set_num_threads(2)
    gc.collect()
    held, sizes, before = [], [], rss_mb()
    pool = ModelPool(root)
    for sha in shas:
        model, tok = pool.get(sha) if mode == "pool" else load_generation(root, sha)
        # one answer, so every weight is touched: memory-mapped weights count only once they are read
        generate_batch(model, tok, [QUESTIONS[0]], Sampling(2, 0.0), [])
        held.append(model)
        gc.collect()
        sizes.append(rss_mb() - before)
        before = rss_mb()
    print(json.dumps(sizes))


def write_report(args, cfg, ray_tps, plain_tps, flops_token, peak, served_tps, plain_gen_tps, same, pool_mb, merged_mb,
                 threads, poll):
    med = statistics.median
    train_ratios = sorted(a / b for a, b in zip(ray_tps, plain_tps))
    achieved = min(ray_tps + plain_tps) * flops_token, max(ray_tps + plain_tps) * flops_token
    body = "\n".join([
        f"SmolLM2-135M-Instruct (converted from the package's Q4_1 GGUF to float32), the shop domain's generation-1 "
        f"mix; {args.steps} LoRA steps (r {cfg.train.lora.r}, every projection) at batch {cfg.train.batch_size} x up "
        f"to {cfg.model.max_length} tokens; 2 CPU cores. One process. Training: {args.rounds} rounds, each a Ray "
        f"Train run and a plain-loop run (Ray shut down), alternating which goes first; serving: {args.rounds} "
        f"passes each way. Medians, with the range over rounds in brackets.",
        "",
        "| measure | evo | baseline | ratio | goal |",
        "|---|---|---|---|---|",
        f"| training tokens/s, every step counted (Ray Train, 1 worker x 2 CPUs, {threads} torch threads, its "
        f"controller polling every {poll} s / plain PEFT loop, 2 threads) | "
        f"{med(ray_tps):,.0f} [{min(ray_tps):,.0f}-{max(ray_tps):,.0f}] | "
        f"{med(plain_tps):,.0f} [{min(plain_tps):,.0f}-{max(plain_tps):,.0f}] | {med(train_ratios):.2f}x "
        f"[{train_ratios[0]:.2f}-{train_ratios[-1]:.2f}] | >= 0.9x |",
        f"| served tokens/s, greedy, {args.requests} sequential chats of up to {args.max_tokens} tokens "
        f"(`evo serve` over HTTP / plain `generate` on the merged model) | {med(served_tps):.1f} "
        f"[{min(served_tps):.1f}-{max(served_tps):.1f}] | {med(plain_gen_tps):.1f} "
        f"[{min(plain_gen_tps):.1f}-{max(plain_gen_tps):.1f}] | {med(served_tps) / med(plain_gen_tps):.2f}x | >= 0.8x |",
        f"| memory added by serving generation 1, then generation 2 (MB of RSS, each way in a fresh process; evo's "
        f"pool: one base + adapters / two merged models) | {pool_mb[0]:.0f}, then {pool_mb[1]:.0f} | "
        f"{merged_mb[0]:.0f}, then {merged_mb[1]:.0f} | "
        f"second: {pool_mb[1] / max(merged_mb[1], 1):.2f}x | the second costs its adapters |",
        "",
        f"- FLOP/s of a training step: {flops_token / 1e6:.0f} MFLOP per token (4N, N = the matmul weights; the "
        f"frozen base needs no weight gradients) x tokens/s = {achieved[0] / 1e9:.1f}-{achieved[1] / 1e9:.1f} GFLOP/s, "
        f"against an fp32 matmul peak of {peak / 1e9:.1f} GFLOP/s measured here (1024x1024, 2 threads): "
        f"{achieved[0] / peak:.0%}-{achieved[1] / peak:.0%} of peak.",
        f"- Served answers equal to plain generate's: {same} of {args.requests} (evo serves the adapters unmerged "
        "on the shared base; the sum is the same up to float rounding).",
    ])
    print(body)
    update_section("real-base", body)


if __name__ == "__main__":
    main()
