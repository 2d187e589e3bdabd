"""Training throughput with packed batches (train.packing) against today's right-padded ones: the
real base (SmolLM2-135M-Instruct from its package's GGUF), the shop domain's generation-1 mix, one
process, no Ray.

    .venv/bin/python bench/bench_packing.py [--steps 10] [--rounds 3] [--work DIR]

First the share of padding in the padded batches of the whole mix (batch 8, max_length 128, as the
shop config trains), and in the packed ones. Then two plain PEFT LoRA loops (r 16, every projection, the
shop config's rehearsal KL on the base's own answers, as `evo.train.loop` steps), padded and packed,
taking the same steps on the same batches in turn, step by step, in a few rounds of fresh adapters.
Useful tokens are the batches' real (non-padding) tokens, the same count both ways: the ratio of
their rates is the ratio of the step times. The mix (the base converted, its answers to the
self-replay prompts, generation 1 ingested and mixed, all without Ray) is kept in --work for a rerun.

Goal (issue 32, item 2): useful tokens/s packed >= 1.3x padded on the same mix and steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from report import update_section  # noqa: E402

from evo.config import load_config  # noqa: E402
from evo.data import self_replay  # noqa: E402
from evo.data.shop import write_shop_data  # noqa: E402
from evo.data.store import read_records  # noqa: E402
from evo.driver import base_answers, ingest, prepare_mix, register_pretrained  # noqa: E402
from evo.evals.general import read_prompts  # noqa: E402
from evo.lineage.root import GEN0, Lineage  # noqa: E402
from evo.progress import Progress  # noqa: E402
from evo.train.examples import IGNORE, batches, collate, encode, pack, training_batch  # noqa: E402

GID = "gen-1"


def shop_mix(work: Path):
    """(config, lineage, base sha, generation 1's training records): the shop run's own mix, built once."""
    cfg_path = work / "data" / "shop.yaml"
    if not cfg_path.exists():
        write_shop_data(work / "data", generations=1)
    cfg = load_config(cfg_path, ["tracking.backend=off"])
    lin = Lineage(work / "lineage")
    progress = Progress()
    base = lin.registry.by_gen(GEN0)
    if base is None:
        base = register_pretrained(cfg.model.path, lin, "", progress, cfg.model.dtype)
        lin.registry.add(base, GEN0, "", "base")
    if lin.ledger.get(GEN0) is None:  # the base's row (no evals here: only the mix is wanted)
        lin.decisions.record({"GEN_ID": GEN0, "parent_sha": "", "child_sha": base, "data_delta_sha": "",
                              "decision": "promoted", "reason": "base"}, base, "base")
    sc = cfg.data.self_replay
    prompts = read_prompts(sc.prompts)
    if not self_replay.is_current(lin, base, prompts, sc.max_new_tokens):
        t0 = time.perf_counter()
        rows = base_answers(str(lin.root), base, prompts, sc.max_new_tokens, cfg.model.dtype)
        self_replay.store(lin, rows, base, sc.prompts, prompts, sc.max_new_tokens, time.perf_counter() - t0)
    mix_path = work / "mix.parquet"
    if not mix_path.exists():
        from evo.data.store import write_records

        sha = ingest(lin, cfg.data.generations[0], cfg, progress, GID)
        prep = prepare_mix(cfg, lin, GID, 1, lin.data.get(sha), base)
        write_records(mix_path, prep.mix.records)
    return cfg, lin, base, list(read_records(str(mix_path)))


def padding_shares(examples, batch_size: int, pad_id: int, max_length: int) -> dict:
    """Over one pass of the mix in the loop's batches: real tokens, computed tokens padded and packed."""
    steps = -(-len(examples) // batch_size)
    real = padded = packed = labelled = rows_padded = rows_packed = 0
    for _, ex in batches(examples, batch_size, 0, steps):
        real += sum(len(e.input_ids) for e in ex)
        labelled += sum(sum(t != IGNORE for t in e.labels[1:]) for e in ex)
        b = collate(ex, pad_id)
        p, _ = pack(ex, pad_id, max_length)
        padded += b["input_ids"].numel()
        packed += p["input_ids"].numel()
        rows_padded += b["input_ids"].shape[0]
        rows_packed += p["input_ids"].shape[0]
    return {"steps": steps, "real": real, "labelled": labelled, "padded": padded, "packed": packed,
            "rows_padded": rows_padded, "rows_packed": rows_packed}


def _peft(lin: Lineage, base: str, cfg):
    from peft import LoraConfig, get_peft_model

    from evo.model.lineage_model import load_generation

    torch.manual_seed(0)
    model, tok = load_generation(lin.root, base, cfg.model.dtype)
    lora = cfg.train.lora
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    model.train()
    return model, tok, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)


def _step(model, opt, ex, tok, cfg, packing: bool) -> tuple[float, float, int, float]:
    """One optimizer step as `evo.train.loop` takes it: (wall s, CPU s of this process, labelled tokens, loss)."""
    from evo.train.loop import distilled_loss

    t0, c0 = time.perf_counter(), time.process_time()
    batch, rehearsal = training_batch(ex, tok.pad_token_id, cfg.model.max_length, packing)
    if cfg.train.rehearsal_kl > 0 and bool(rehearsal.any()):
        loss = distilled_loss(model, model, batch, rehearsal, cfg.train.rehearsal_kl)
    else:
        loss = model(**batch).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return time.perf_counter() - t0, time.process_time() - c0, int((batch["labels"][:, 1:] != IGNORE).sum()), float(loss)


def interleaved(lin: Lineage, base: str, examples, cfg, steps: int) -> dict:
    """Two PEFT LoRA loops in this process, one padded and one packed, each with a fresh adapter, taking
    the same steps in turn (which goes first alternates step by step): a shared machine's load falls on
    both alike. The first step of each is not timed (it allocates). Per side: (useful tokens/s, labelled
    tokens/s, useful tokens per CPU second of the process), and the largest gap between their losses."""
    sides = {False: _peft(lin, base, cfg), True: _peft(lin, base, cfg)}
    tok = sides[False][1]
    acc = {k: [0.0, 0.0, 0, 0] for k in sides}  # wall, cpu, labelled, useful
    gap = 0.0
    for step, ex in batches(examples, cfg.train.batch_size, 0, steps):
        losses = {}
        for packing in ((False, True) if step % 2 == 0 else (True, False)):
            model, _, opt = sides[packing]
            wall, cpu, labelled, losses[packing] = _step(model, opt, ex, tok, cfg, packing)
            if step >= 1:
                a = acc[packing]
                a[0], a[1], a[2], a[3] = a[0] + wall, a[1] + cpu, a[2] + labelled, a[3] + sum(len(e.input_ids) for e in ex)
        gap = max(gap, abs(losses[True] - losses[False]))
    out = {k: (a[3] / a[0], a[2] / a[0], a[3] / a[1]) for k, a in acc.items()}
    return {"padded": out[False], "packed": out[True], "loss_gap": gap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for the mix (kept for a rerun); a fresh one by default")
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="evo-bench-packing-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg, lin, base, records = shop_mix(work)
    from evo.model.lineage_model import load_generation

    tok = load_generation(lin.root, base, cfg.model.dtype)[1]
    examples = [encode(r, tok, cfg.model.max_length) for r in records]
    shares = padding_shares(examples, cfg.train.batch_size, tok.pad_token_id, cfg.model.max_length)
    print(shares, flush=True)
    load = [os.getloadavg()[0]]
    padded, packed, gaps = [], [], []
    for r in range(args.rounds):
        got = interleaved(lin, base, examples, cfg, args.steps)
        padded.append(got["padded"])
        packed.append(got["packed"])
        gaps.append(got["loss_gap"])
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}: padded {padded[-1][0]:.0f} useful tokens/s ({padded[-1][2]:.0f} per CPU second), "
              f"packed {packed[-1][0]:.0f} ({packed[-1][2]:.0f})", flush=True)
    write_report(args, cfg, records, examples, shares, padded, packed, load, max(gaps))


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} [{min(xs):.0f}-{max(xs):.0f}]"


def write_report(args, cfg, records, examples, s, padded, packed, load, gap: float) -> None:
    ratios = [b[0] / a[0] for a, b in zip(padded, packed)]
    cpu = [b[2] / a[2] for a, b in zip(padded, packed)]
    rehearse = sum(e.rehearsal for e in examples)
    lengths = sorted(len(e.input_ids) for e in examples)
    lines = [
        f"SmolLM2-135M-Instruct (float32, from the package's Q4_1 GGUF), the shop domain's generation-1 mix: "
        f"{len(records)} records ({rehearse} of them the base's own answers, distilled with rehearsal_kl "
        f"{cfg.train.rehearsal_kl:g}), {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}); batch "
        f"{cfg.train.batch_size}, max_length {cfg.model.max_length}. One process, no Ray, 2 torch threads.",
        "",
        f"Padding over one pass of the mix ({s['steps']} batches): padded batches compute {s['padded']} token "
        f"positions for {s['real']} real tokens, **{1 - s['real'] / s['padded']:.0%} padding** "
        f"({s['rows_padded']} rows); packed, {s['packed']} positions in {s['rows_packed']} rows, "
        f"{1 - s['real'] / s['packed']:.0%} padding. {s['labelled']} of the real tokens are labelled (trained "
        "by their token loss; the base's own answers are distilled at every position).",
        "",
        f"Plain PEFT LoRA loops (r {cfg.train.lora.r}, every projection), one padded and one packed in one process, "
        f"taking the same {args.steps} steps in turn (the first not timed; which goes first alternates step by step), "
        f"{args.rounds} rounds, fresh adapters each round. Their losses agree to {gap:.1e} at every step. Medians, "
        "the range over the rounds in brackets:",
        "",
        "| measure | packed | padded | ratio | goal |",
        "|---|---|---|---|---|",
        f"| useful (real) tokens/s | {_med([p[0] for p in packed])} | {_med([p[0] for p in padded])} | "
        f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] | >= 1.3x |",
        f"| labelled tokens/s | {_med([p[1] for p in packed])} | {_med([p[1] for p in padded])} | | |",
        f"| useful tokens per CPU second of the process (what the waits for a core on a shared machine leave out) | "
        f"{_med([p[2] for p in packed])} | {_med([p[2] for p in padded])} | {statistics.median(cpu):.2f}x "
        f"[{min(cpu):.2f}-{max(cpu):.2f}] | |",
        "",
        f"- Load average (1 min) over the run: {min(load):.1f}-{max(load):.1f} on the 2 cores: the machine was "
        "shared with other processes while this ran." if max(load) > 2.5 else
        f"- Load average (1 min) over the run: {min(load):.1f}-{max(load):.1f} on the 2 cores.",
    ]
    update_section("packing", "\n".join(lines))


if __name__ == "__main__":
    main()
