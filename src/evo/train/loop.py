"""`train_loop_per_worker`: one generation's training on one Ray Train worker (DDP or DeepSpeed).

Every `checkpoint_every` steps all workers evaluate validation loss on their shard, rank 0 saves
the trainable weights, and the checkpoint is reported with its metrics; the driver keeps the
best one. A restarted worker group resumes from the latest checkpoint. A run asked to pause (its
`pause_file` appears: a fine-tuning job's pause) stops after the step in progress, with a checkpoint
of that step, and returns `paused`; fitted again under the same name it resumes from that checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from evo.data.store import read_records
from evo.model.lineage_model import load_generation
from evo.model.loading import load_causal_lm, load_tokenizer
from evo.storage import local_file, local_tree
from evo.tracking.files import note_report
from evo.train.deepspeed_config import deepspeed_config
from evo.train.dpo import PairStats, dpo_loss, pair_terms, reference_logps, sequence_logps, stats_of
from evo.train.examples import (
    IGNORE,
    batches,
    collate_pairs,
    count_target_tokens,
    encode,
    encode_pair,
    kl_to_reference,
    mean_token_loss,
    token_loss_sum,
    training_batch,
)
from evo.train.pause import pause_asked
from evo.train.state import TrainState, load_optimizer, records_sha, save_optimizer
from evo.train.worker_config import WorkerConfig

# How often Ray Train's controller polls the workers; Ray Train hands it from the process that calls
# fit() to its controller and on to the workers (evo.train.trainer.controller_polling sets it).
POLL_ENV_VAR = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def _load(cfg: WorkerConfig, checkpoint_dir: Path | None):
    """The model to train, from the checkpoint when resuming."""
    # Imported here, not at the top: Ray Train's controller unpickles train_loop_per_worker by
    # reference, so it imports this module on every run; transformers and peft cost it 4-5 s of CPU.
    from peft import LoraConfig, PeftModel, get_peft_model


    if cfg.mode == "full":
        init = local_tree(cfg.init_dir, cfg.root)  # a URI root: fetched onto this node
        return load_causal_lm(str(checkpoint_dir or init), cfg.dtype), load_tokenizer(init)
    # a deep parent from the merged cache (`load_generation`). A load draws random numbers when it merges
    # (PEFT initializes each LoRA layer before loading it) and none on a cache hit, so the new adapter
    # is initialized from a seed of its own: the child is the same whether its parent was cached or not
    model, tok = load_generation(cfg.root, cfg.parent_sha, cfg.dtype)
    if checkpoint_dir is not None:
        return PeftModel.from_pretrained(model, str(checkpoint_dir), is_trainable=True), tok
    lora = cfg.lora
    refuse_tied_targets(model, lora.target_modules)
    spec = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    torch.manual_seed(cfg.seed)  # the same adapter on every rank, as DDP's first broadcast would make it
    return get_peft_model(model, spec), tok


TIED = ("lm_head", "embed_tokens")


def refuse_tied_targets(model, targets) -> None:
    """A model whose input and output embeddings are one tensor (the tiny base, SmolLM2) takes no LoRA on
    either: evo merges each generation's adapter into its parent when it loads it, and merging one
    changes the shared tensor for both, so the loaded model is not the trained one (measured on the
    tiny base: logits up to 5.7 apart, a next generation starting at loss 10.3 instead of 2.6)."""
    tied = getattr(model.config, "tie_word_embeddings", False)
    hit = [t for t in targets if any(t == name or t.endswith("." + name) for name in TIED)]
    if tied and hit:
        raise ValueError(f"train.lora.target_modules {hit}: this base ties its input and output embeddings, and a "
                         "generation's adapter is merged into its parent when it loads, which would change both: "
                         "target the attention and MLP projections only")


def _schedule(cfg: WorkerConfig):
    warm, total = max(1, cfg.warmup_steps), cfg.steps

    def factor(step: int) -> float:  # linear warm-up, then cosine down to 10%
        if step < warm:
            return (step + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor


class Engine:
    """One interface over DDP and DeepSpeed: step on a batch, eval a loss, reach the inner model."""

    def __init__(self, model, cfg: WorkerConfig, per_worker_batch: int, start_step: int, checkpoint_dir):
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _schedule(cfg), last_epoch=-1)
        self.deepspeed = cfg.strategy == "deepspeed"
        if checkpoint_dir is not None and not self.deepspeed:
            load_optimizer(self.opt, checkpoint_dir)
        with warnings.catch_warnings():  # fast-forwarding the schedule on resume, before any step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start_step):
                self.sched.step()
        if self.deepspeed:
            import deepspeed

            # DeepSpeed's CPU backend JIT-compiles its shared-memory all-reduce kernel when it first
            # initializes (27-80 s with g++ on a machine that never built it); only its tensor-parallel
            # inference uses that kernel, never ZeRO training, which reduces through torch.distributed.
            # Marked incompatible, the kernel is skipped (DeepSpeed keeps edits to this table).
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
            ds = deepspeed_config(cfg.zero_stage, per_worker_batch, cfg.dtype)
            self.model, self.opt, _, self.sched = deepspeed.initialize(
                model=model, optimizer=self.opt, lr_scheduler=self.sched, config=ds)
        else:
            self.model = ray.train.torch.prepare_model(model)
        self.zero3 = self.deepspeed and cfg.zero_stage == 3
        self.rehearsal_kl = cfg.rehearsal_kl
        self.beta, self.sft_weight = cfg.beta, cfg.sft_weight
        self.device = ray.train.torch.get_device()  # cpu here; this worker's GPU on a cluster

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @property
    def inner(self):
        return self.model.module if hasattr(self.model, "module") else self.model

    def step(self, batch: dict, rehearsal: torch.Tensor | None = None) -> float:
        """One optimizer step. With `rehearsal_kl` > 0 the rows `rehearsal` marks (a base's own answers)
        learn the parent's whole next-token distribution at every position, KL(parent ‖ child) weighted
        by it, instead of its greedy tokens; the parent is this model with the new adapter switched off."""
        self.model.train()
        batch = self._to_device(batch)
        if self.rehearsal_kl > 0 and rehearsal is not None and bool(rehearsal.any()):
            loss = distilled_loss(self.model, self.inner, batch, rehearsal.to(self.device), self.rehearsal_kl)
        else:
            loss = self.model(**batch).loss
        return self._apply(loss)

    def dpo_step(self, batch: dict, n_pairs: int) -> float:
        """One optimizer step of method dpo: the batch's pairs (its first 2 x n_pairs rows) learn DPO
        against the parent (this model with the new adapter switched off), its other rows (replay) their
        token loss (`evo.train.dpo.dpo_loss`)."""
        self.model.train()
        loss, _ = dpo_loss(self.model, self.inner, self._to_device(batch), n_pairs, self.beta, self.sft_weight)
        return self._apply(loss)

    @torch.no_grad()
    def dpo_sums(self, batch: dict, n_pairs: int) -> tuple[PairStats, float, int]:
        """(the pairs' DPO sums, the other rows' summed token loss, their labelled tokens), no step taken."""
        self.model.eval()
        batch = self._to_device(batch)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels, rows = batch["labels"], 2 * n_pairs
        stats = stats_of(*pair_terms(sequence_logps(logits[:rows], labels[:rows]),
                                     reference_logps(self.inner, batch, n_pairs), n_pairs, self.beta)) \
            if n_pairs else PairStats()
        rest = token_loss_sum(logits[rows:], labels[rows:]) if len(labels) > rows else (0.0, 0)
        return stats, rest[0], rest[1]

    def _apply(self, loss: torch.Tensor) -> float:
        if self.deepspeed:
            self.model.backward(loss)
            self.model.step()
        else:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.inner.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
        return float(loss.detach())

    @torch.no_grad()
    def loss_sum(self, batch: dict) -> tuple[float, int]:
        """Summed token loss and labelled tokens of a padded or a packed batch (`training_batch`)."""
        self.model.eval()
        batch = self._to_device(batch)
        logits = self.model(**_inputs(batch)).logits
        return token_loss_sum(logits, batch["labels"])

    def save(self, folder: Path, rank: int, full: bool) -> None:
        """Trainable weights (safetensors) on rank 0; every rank joins a ZeRO-3 gather."""
        gather = _zero3_gather(self.inner) if self.zero3 else _nullcontext()
        with gather:
            if rank == 0:
                self.inner.save_pretrained(str(folder), safe_serialization=True)
        if rank == 0 and not self.deepspeed:
            save_optimizer(self.opt, folder)


def distilled_loss(model, peft_model, batch: dict, rows: torch.Tensor, weight: float) -> torch.Tensor:
    """Mean token loss of the rows not marked in `rows`, plus `weight` times the mean KL(parent ‖ child)
    at every position of the marked rows. `model` is what trains (maybe wrapped by DDP or DeepSpeed),
    `peft_model` the PeftModel inside it: with its adapter switched off it is the parent. The batch is
    padded (an attention mask) or packed (position ids, `evo.train.examples.pack`: a row is rehearsal or
    not as a whole, and the KL counts only positions whose next token is of their own example)."""
    inputs = _inputs(batch)
    with torch.no_grad(), peft_model.disable_adapter():
        ref = peft_model(**{k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}).logits
    logits = model(**inputs).logits
    mask, pos = batch.get("attention_mask"), batch.get("position_ids")
    return mean_token_loss(logits, batch["labels"].masked_fill(rows[:, None], IGNORE)) \
        + weight * kl_to_reference(logits[rows], ref, None if mask is None else mask[rows],
                                   None if mask is not None or pos is None else pos[rows])


def _inputs(batch: dict) -> dict:
    """What the model is given: everything but the labels (ids with an attention mask, or packed: position
    ids and use_cache False)."""
    return {k: v for k, v in batch.items() if k != "labels"}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _zero3_gather(model):
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _val_loss(engine: Engine, val, per_worker_batch: int, pad_id: int, cfg: WorkerConfig) -> float:
    """Mean token loss over the whole validation set, summed across workers (batches packed as
    training's are, with train.packing: the same sums)."""
    total, count = 0.0, 0
    for i in range(0, len(val), per_worker_batch):
        s, n = engine.loss_sum(training_batch(val[i : i + per_worker_batch], pad_id, cfg.max_length, cfg.packing)[0])
        total, count = total + s, count + n
    t = torch.tensor([total, float(count)], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return float(t[0] / max(1.0, t[1]))


def _val_dpo(engine: Engine, val, per_worker_batch: int, pad_id: int) -> tuple[float, dict]:
    """Method dpo's validation, summed across workers: (val loss, {val_pref_accuracy, val_reward_margin,
    val_pairs}). The val loss (what chooses the checkpoint) is the pairs' mean DPO loss plus the other
    records' mean token loss (each 0 where there are none)."""
    total, rest, rest_n = PairStats(), 0.0, 0
    for i in range(0, len(val), per_worker_batch):
        stats, s, n = engine.dpo_sums(*collate_pairs(val[i : i + per_worker_batch], pad_id))
        total.add(stats)
        rest, rest_n = rest + s, rest_n + n
    t = torch.tensor([total.loss, total.correct, total.margin, total.pairs, rest, rest_n], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    pairs = float(t[3])
    loss = float(t[0] / pairs) if pairs else 0.0
    loss += float(t[4] / t[5]) if t[5] else 0.0
    return loss, {"val_pref_accuracy": float(t[1] / pairs) if pairs else float("nan"),
                  "val_reward_margin": float(t[2] / pairs) if pairs else float("nan"), "val_pairs": int(pairs)}


def _encode(record, tok, cfg: WorkerConfig):
    """Method dpo: a preference record is a pair; every other record (and every record otherwise) an example."""
    if cfg.method == "dpo" and record.kind == "preference":
        return encode_pair(record, tok, cfg.max_length)
    return encode(record, tok, cfg.max_length)


def _equal_shards(items: list, rank: int, world: int) -> list:
    """rank's share, padded by repetition so every rank runs the same number of batches."""
    need = math.ceil(len(items) / world)
    shard = items[rank::world]
    return shard + shard[: need - len(shard)] if shard else items[:need]


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report at INFO under its module's file name; evo prints its own."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(loop_config: dict) -> dict:
    t_start, started_at = time.perf_counter(), time.time()
    cfg = WorkerConfig.from_loop_config(loop_config)
    hook = cfg.hook()
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    ckpt = ray.train.get_checkpoint()
    own_run = ckpt is not None  # this run's own checkpoint (a restart, a resume), not another run's to start from
    if ckpt is None and cfg.init_checkpoint:  # a sweep trial continuing from another run's checkpoint
        ckpt = ray.train.Checkpoint(cfg.init_checkpoint)
    with (ckpt.as_directory() if ckpt else _nullcontext()) as ckpt_dir:
        ckpt_dir = Path(ckpt_dir) if ckpt else None
        state = TrainState.load(ckpt_dir) if ckpt_dir else TrainState()
        t_load = time.perf_counter()
        model, tok = _load(cfg, ckpt_dir)
        torch.manual_seed(cfg.seed + rank)  # the training draws (dropout) do not depend on what the load drew
        state.load_seconds = time.perf_counter() - t_load
        per_worker = max(1, cfg.batch_size // world)
        engine = Engine(model, cfg, per_worker, state.step, ckpt_dir)

    mix, held = local_file(cfg.mix_path, cfg.root), local_file(cfg.val_path, cfg.root)
    records = read_records(mix)
    if own_run:
        state.continues(records, world, cfg.mix_path)
    state.mix_sha, state.world = records_sha(records), world
    train = _equal_shards([_encode(r, tok, cfg) for r in records], rank, world)
    val = _equal_shards([_encode(r, tok, cfg) for r in read_records(held)], rank, world)
    dpo = cfg.method == "dpo"
    resumed_from = state.step
    state.setup_seconds = time.perf_counter() - t_start
    window: list[float] = []
    pause = False
    for step, examples in batches(train, per_worker, state.step, cfg.steps):
        t0 = time.perf_counter()
        if dpo:  # never packed: a pair's two rows are scored as whole sequences (evo.train.dpo)
            batch, n_pairs = collate_pairs(examples, tok.pad_token_id)
            loss = engine.dpo_step(batch, n_pairs)
            n_tokens = count_target_tokens(batch)
        else:
            batch, rehearsal = training_batch(examples, tok.pad_token_id, cfg.max_length, cfg.packing)
            loss = engine.step(batch, rehearsal)
            n_tokens = sum(len(e.input_ids) for e in examples)  # real tokens, padded or packed
        if hook is not None:
            loss = hook(cfg, step, rank, resumed_from, loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {step + 1} (lr {cfg.lr:g}): the run diverged")
        state.step_seconds += time.perf_counter() - t0
        state.tokens += n_tokens * world
        state.losses.append(loss)
        window.append(loss)
        state.step = step + 1
        pause = state.step < cfg.steps and pause_asked(cfg.pause_file, world, engine.device)
        if pause or state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            t0 = time.perf_counter()
            _checkpoint(engine, state, cfg, rank, val, per_worker, tok.pad_token_id, sum(window) / len(window),
                        started_at)
            state.checkpoint_seconds += time.perf_counter() - t0
            window = []
        if pause:
            break
    return {**state.__dict__, "resumed_from": resumed_from, "steps_run": state.step - resumed_from, "paused": pause,
            "world_size": world, "torch_threads": torch.get_num_threads(),
            "poll_interval_s": float(os.environ[POLL_ENV_VAR]) if os.environ.get(POLL_ENV_VAR) else None,
            "loop_started_at": time.time() - (time.perf_counter() - t_start), "loop_ended_at": time.time()}


def _checkpoint(engine, state, cfg: WorkerConfig, rank, val, per_worker, pad_id, train_loss, started_at: float) -> None:
    extra: dict = {}
    if cfg.method == "dpo":
        val_loss, extra = _val_dpo(engine, val, per_worker, pad_id)
    else:
        val_loss = _val_loss(engine, val, per_worker, pad_id, cfg)
    state.val.append((state.step, val_loss))
    metrics = {"step": state.step, "val_loss": val_loss, "train_loss": train_loss,
               "node_id": ray.get_runtime_context().get_node_id(),  # where rank 0 ran (sweeps list it)
               "step_seconds": state.step_seconds, "checkpoint_seconds": state.checkpoint_seconds,
               # where a run's time goes before its first step (sweeps break a trial's fixed cost down)
               "loop_started_at": started_at, "setup_seconds": state.setup_seconds, **extra}
    if rank == 0 and cfg.metrics_path:
        with open(cfg.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.step, "steps": cfg.steps, "train_loss": train_loss, "val_loss": val_loss,
                                "label": cfg.label, "time": time.time(), **extra}) + "\n")
    if rank == 0:  # the step curve of the run's MLflow view, sent by the driver as it appears (evo.tracking)
        note_report(cfg.root, cfg.label, metrics)
    if rank == 0:  # shows in the driver's console, prefixed by Ray with the worker's pid
        # (written, not print()ed: Ray Train's patched print would also log it, doubling the line)
        pref = f", val preference accuracy {extra['val_pref_accuracy']:.2f}" if extra else ""
        sys.stdout.write(f"[{cfg.label}] step {state.step}/{cfg.steps}: "
                         f"train loss {train_loss:.3f}, val loss {val_loss:.3f}{pref}\n")
        sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="evo-ckpt-") as tmp:
        folder = Path(tmp)
        engine.save(folder, rank, cfg.mode == "full")
        if rank == 0:
            state.save(folder)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
