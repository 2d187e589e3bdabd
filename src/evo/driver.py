"""The generation loop: one step per function, every step resumable, the only writer of state.

A generation: ingest its delta -> build the training mix -> train on Ray Train -> register the
child -> evaluate child and parent on Ray -> gate and stop rule -> write the decision record ->
apply it (registry statuses and aliases, then the ledger row). The decision record is written
before anything it describes, so a driver killed at any point resumes without a duplicated or
half row and without an alias left pointing at an undecided model.
"""

from __future__ import annotations

import io
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from evo.atomic import atomic_write_bytes, atomic_write_json, read_json
from evo.config import EvoConfig
from evo.data.ingest import ingest_jsonl
from evo.data.mix import build_mix
from evo.data.records import Record
from evo.data.store import DataStore, split
from evo.evals.suite import EvalSpec, SuiteResult, evaluate_generation, load_probes
from evo.healing.corrections import CorrectionStore, read_corrections_file
from evo.healing.validators import PatternRule, healed_and_recurred, healing_items, read_paraphrases
from evo.gate import STOP_MESSAGE, GenerationScores, gate, should_stop
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry
from evo.model.artifacts import ModelStore
from evo.progress import Progress, Silent
from evo.train.trainer import run_training

GEN0 = "gen-0"


def gen_id(index: int) -> str:
    return f"gen-{index}"


@dataclass
class Lineage:
    """Everything under one lineage root."""

    root: Path  # a local folder, or a URI (s3://, gs://, file://) that every node reaches: see evo.storage
    location: str = field(init=False)  # the root as other processes open it (the URI, or the folder)
    ledger: Ledger = field(init=False)
    registry: Registry = field(init=False)
    data: DataStore = field(init=False)
    models: ModelStore = field(init=False)

    def __post_init__(self):
        from evo.storage import is_uri, remote_for, resolve

        self.location = str(self.root).rstrip("/") if is_uri(self.root) else str(Path(self.root).resolve())
        self.root = resolve(self.root)  # a URI: this process's mirror of it, its mutable files fresh
        self.root.mkdir(parents=True, exist_ok=True)
        if (remote := remote_for(self.root)) is not None:
            remote.pull_state()
        self.ledger, self.registry = Ledger(self.root), Registry(self.root)
        self.data, self.models = DataStore(self.root), ModelStore(self.root)

    def run_dir(self, gid: str) -> Path:
        return self.root / "runs" / gid

    def decision_path(self, gid: str) -> Path:
        return self.run_dir(gid) / "decision.json"

    def eval_path(self, gid: str) -> Path:
        return self.root / "evals" / f"{gid}.json"


@dataclass
class RunSummary:
    root: Path
    generations: list[dict]
    stopped: bool = False
    message: str = ""


# ---------------------------------------------------------------- decisions: write, then apply


def commit_decision(lin: Lineage, gid: str, row: dict, child: str, status: str, champion: Optional[str]) -> None:
    """Persist the decision, then apply it. Applying is idempotent (see `reconcile`)."""
    atomic_write_json(lin.decision_path(gid), {"row": row, "child": child, "status": status, "champion": champion})
    apply_decision(lin, gid)


def apply_decision(lin: Lineage, gid: str) -> None:
    d = read_json(lin.decision_path(gid))
    lin.registry.set_status(d["child"], d["status"])
    if d["champion"]:
        lin.registry.move("champion", d["champion"], reason=f"{gid}: {d['row']['decision']}")
    if lin.registry.alias("candidate") == d["child"] or d["status"] != "candidate":
        lin.registry.move("candidate", None, reason=f"{gid} decided")
    lin.ledger.append(d["row"])


def reconcile(lin: Lineage, progress: Progress) -> None:
    """Finish what a killed driver left half done: apply any decision without its ledger row."""
    for path in sorted((lin.root / "runs").glob("*/decision.json")):
        gid = path.parent.name
        if lin.ledger.get(gid) is None:
            progress(gid, "resuming: applying a decision made before the interruption")
            apply_decision(lin, gid)
    cand = lin.registry.alias("candidate")
    if cand and (m := lin.registry.model(cand)) and lin.ledger.get(m["gen_id"]) is not None:
        lin.registry.move("candidate", None, reason="reconcile: candidate already decided")


# ---------------------------------------------------------------- data


def ingest(lin: Lineage, path: str, cfg: EvoConfig, progress: Progress, gid: str) -> str:
    report = ingest_jsonl(path, skip_invalid=cfg.data.skip_invalid, max_chars=cfg.data.max_chars)
    progress(gid, report.summary())
    for p in report.invalid[:5]:
        progress(gid, f"  skipped {p}")
    return lin.data.put(report.records)


def write_records(path: Path, records: list[Record]) -> str:
    rows = [r.to_row() for r in records]
    table = pa.table({k: [row[k] for row in rows] for k in Record.__dataclass_fields__})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def accepted_ancestors(lin: Lineage, champion: str) -> list[tuple[str, str]]:
    """(gen_id, data_delta_sha) of every generation on the champion's line, oldest first."""
    out = []
    for sha in lin.models.chain(champion):
        gid = lin.registry.model(sha)["gen_id"]
        row = lin.ledger.get(gid)
        if row is None:
            raise RuntimeError(f"model {sha[:12]} ({gid}) has no ledger row; the lineage root is inconsistent")
        out.append((gid, row["data_delta_sha"]))
    return out


def ancestor_data(lin: Lineage, champion: str, val_fraction: float) -> tuple[list[Record], dict[str, list[Record]]]:
    """Training records of all ancestors (the replay pool), and each one's QA set (its holdout)."""
    pool, qa = [], {}
    for gid, dsha in accepted_ancestors(lin, champion):
        if not dsha:  # a user's base model registered without a base corpus
            continue
        train, val = split(lin.data.get(dsha), val_fraction)
        pool.extend(train)
        qa[gid] = val
    return pool, qa


# ---------------------------------------------------------------- evals


def eval_spec(cfg: EvoConfig, qa: dict[str, list[Record]], holdout: list[Record], val: list[Record],
              lin: Optional[Lineage] = None) -> EvalSpec:
    """What every model of a generation is scored on; with `lin`, also every past correction."""
    e, h = cfg.eval, cfg.healing
    items = []
    if lin is not None:
        items = healing_items(CorrectionStore(lin.root).all(), read_paraphrases(h.paraphrases), h.max_items_per_pattern)
    rules = {p: PatternRule(tuple(r.forbid), tuple(r.require), r.check) for p, r in h.patterns.items()}
    return EvalSpec(qa, holdout, load_probes(e.probes), e.banned_phrases, val,
                    e.max_new_tokens, e.batch_size, e.max_items, cfg.model.max_length, items, rules)


def evaluate_many(lin: Lineage, shas: list[str], spec: EvalSpec, cfg: EvoConfig) -> list[SuiteResult]:
    """Each model evaluated in its own Ray task (in parallel where there are CPUs or GPUs)."""
    gpus = 1 if cfg.train.use_gpu else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_generation)
    return ray.get([task.remote(lin.location, s, spec, cfg.model.dtype) for s in shas])


def scores_of(child: SuiteResult, parent: SuiteResult, recurred: tuple = ()) -> GenerationScores:
    return GenerationScores(child.recall, child.generalization.value, child.style_drift.hits,
                            parent.generalization.value, parent.style_drift.hits, tuple(recurred))


def healing_history(lin: Lineage, champion: str) -> list[dict]:
    """The healing results of every generation on the champion's line, oldest first."""
    out = []
    for gid, _ in accepted_ancestors(lin, champion):
        if lin.eval_path(gid).exists():
            out.append(read_json(lin.eval_path(gid))["child"].get("healing") or {})
    return out


def score_history(lin: Lineage) -> list[GenerationScores]:
    """Scores of every generation after the base, in order, from their eval reports."""
    out = []
    for row in lin.ledger.rows():
        if row["GEN_ID"] != GEN0 and lin.eval_path(row["GEN_ID"]).exists():
            out.append(GenerationScores(**read_json(lin.eval_path(row["GEN_ID"]))["scores"]))
    return out


# ---------------------------------------------------------------- training


def loop_config(cfg: EvoConfig, lin: Lineage, gid: str, **extra) -> dict:
    from evo.storage import uri_of

    t = cfg.train
    return {
        "root": lin.location, "mix_path": uri_of(lin.run_dir(gid) / "mix.parquet"),
        "val_path": uri_of(lin.run_dir(gid) / "val.parquet"), "strategy": t.strategy,
        "zero_stage": t.zero_stage, "steps": t.steps, "batch_size": t.batch_size, "lr": t.lr,
        "warmup_steps": t.warmup_steps, "checkpoint_every": t.checkpoint_every, "seed": t.seed,
        "lora": t.lora.model_dump(), "max_length": cfg.model.max_length, "dtype": cfg.model.dtype,
        "mode": "lora", "label": gid, **extra,
    }


def ray_storage(lin: Lineage) -> str:
    """Ray Train's and Tune's storage_path: `runs/` under the root (a URI root: Ray writes there itself)."""
    from evo.storage import uri_of

    return uri_of(lin.root / "runs" / "ray")


def train(cfg: EvoConfig, lin: Lineage, gid: str, loop_cfg: dict, progress: Progress):
    t = cfg.train
    progress(gid, f"training on Ray Train: {t.num_workers} workers, {t.strategy}"
             + (f" ZeRO-{t.zero_stage}" if t.strategy == "deepspeed" else "")
             + f", {loop_cfg['steps']} steps, checkpoint every {loop_cfg['checkpoint_every']}")
    out = run_training(loop_cfg, t, ray_storage(lin), f"{cfg.name}-{gid}",
                       lin.run_dir(gid) / "best")
    s = out.summary
    tps = s["tokens"] / s["step_seconds"] if s.get("step_seconds") else float("nan")
    progress(gid, f"trained in {out.wall_seconds:.0f}s ({s.get('step_seconds', 0):.1f}s in steps, "
             f"{tps:.0f} tokens/s); best checkpoint at step {out.best_metrics['step']} "
             f"(val loss {out.best_metrics['val_loss']:.3f})")
    return out


def training_meta(out, loop_cfg: dict, cfg: EvoConfig, data_sha: str, gid: str) -> dict:
    s = out.summary
    return {
        "gen_id": gid, "data_delta_sha": data_sha, "config": cfg.model_dump(mode="json"),
        "best": out.best_metrics, "loss_start": s["losses"][0] if s.get("losses") else None,
        "val_curve": s.get("val"), "train_seconds": s.get("step_seconds"), "tokens": s.get("tokens"),
        "train_wall_seconds": out.wall_seconds, "steps": loop_cfg["steps"], "lr": loop_cfg["lr"],
        "checkpoint_seconds": s.get("checkpoint_seconds"), "setup_seconds": s.get("setup_seconds"),
        "ray_startup_seconds": s.get("startup_seconds"), "ray_teardown_seconds": s.get("teardown_seconds"),
        "resumed_from": s.get("resumed_from"),
    }


# ---------------------------------------------------------------- generation 0


def build_base(cfg: EvoConfig, lin: Lineage, data_sha: str, progress: Progress) -> str:
    """Tokenizer + tiny Llama pretrained from scratch on Ray Train (full weights), stored by sha."""
    from transformers.utils import logging as hf_logging

    from evo.model.loading import build_tiny_llama
    from evo.model.tokenizer import train_bpe_tokenizer

    hf_logging.disable_progress_bar()
    records = lin.data.get(data_sha)
    train_part, val = split(records, cfg.data.val_fraction)
    order = build_mix(train_part, [], 0, cfg.data.curriculum, cfg.train.seed).records
    random.Random(cfg.train.seed).shuffle(order)  # pretraining wants i.i.d. batches, not a curriculum
    write_records(lin.run_dir(GEN0) / "mix.parquet", order)
    write_records(lin.run_dir(GEN0) / "val.parquet", val)
    tok = train_bpe_tokenizer([r.prompt + r.completion for r in records], cfg.model.tiny.vocab_size)
    init_dir = lin.run_dir(GEN0) / "init"
    if init_dir.exists():
        shutil.rmtree(init_dir)
    build_tiny_llama(cfg.model.tiny, tok, cfg.train.seed).save_pretrained(str(init_dir))
    tok.save_pretrained(str(init_dir))
    from evo.storage import after_write_tree, uri_of

    after_write_tree(init_dir)  # a URI root: the workers fetch it from there
    progress(GEN0, f"built tokenizer ({len(tok)} tokens) and a tiny Llama from config; pretraining")
    p = cfg.model.pretrain
    loop_cfg = loop_config(cfg, lin, GEN0, mode="full", init_dir=uri_of(init_dir), steps=p.steps,
                           batch_size=p.batch_size, lr=p.lr, checkpoint_every=max(1, p.steps // 4))
    out = train(cfg, lin, GEN0, loop_cfg, progress)

    def save(folder: Path) -> None:
        for f in out.best_dir.iterdir():
            if f.suffix in (".safetensors", ".json") and f.name != "trainer_state.json":
                shutil.copy2(f, folder / f.name)
        tok.save_pretrained(str(folder))

    return lin.models.put_base(save, training_meta(out, loop_cfg, cfg, data_sha, GEN0))


def generation_zero(cfg: EvoConfig, lin: Lineage, progress: Progress) -> None:
    if lin.ledger.get(GEN0) is not None:
        progress(GEN0, "already in the ledger")
        return
    t0 = time.perf_counter()
    data_sha = ingest(lin, cfg.data.base, cfg, progress, GEN0) if cfg.data.base else ""
    if cfg.model.path is None:
        sha = build_base(cfg, lin, data_sha, progress)
    else:
        sha = register_pretrained(cfg.model.path, lin, data_sha, progress)
    lin.registry.add(sha, GEN0, "", "base")
    meta = lin.models.meta(sha)
    records = lin.data.get(data_sha) if data_sha else []
    _, val = split(records, cfg.data.val_fraction)
    (res,) = evaluate_many(lin, [sha], eval_spec(cfg, {}, val, val, lin), cfg)
    atomic_write_json(lin.eval_path(GEN0), {"child": res.to_json()})
    row = {
        "GEN_ID": GEN0, "parent_sha": "", "child_sha": sha, "data_delta_sha": data_sha,
        "steps": meta.get("steps", 0), "lr": meta.get("lr"), "walltime_min": (time.perf_counter() - t0) / 60,
        "loss_start": meta.get("loss_start"), "loss_end": (meta.get("best") or {}).get("train_loss"),
        "eval_recall": None, "eval_generalization": res.generalization.value,
        "eval_style_drift": res.style_drift.hits, "replay_k": 0, "decision": "promoted",
        "reason": "generation 0 (base model)", "eval_perplexity": res.perplexity,
        "best_step": (meta.get("best") or {}).get("step"),
    }
    commit_decision(lin, GEN0, row, sha, "base", sha)
    progress(GEN0, f"base {sha[:12]}: holdout accuracy {_f(res.generalization.value)}, "
             f"style drift {res.style_drift.hits}/{res.style_drift.total}, perplexity {_f(res.perplexity)}")


def register_pretrained(path: str, lin: Lineage, data_sha: str, progress: Progress) -> str:
    """Use a user's model as generation 0, by reference (it is not copied), verified by sha."""
    local = path
    if not Path(path).exists():
        from huggingface_hub import snapshot_download

        progress(GEN0, f"fetching {path} from the Hugging Face hub")
        local = snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    progress(GEN0, f"registering {path} as the base (hashing its weights)")
    return lin.models.put_reference(local, {"gen_id": GEN0, "data_delta_sha": data_sha, "model_path": path})


# ---------------------------------------------------------------- generation N


def prepare_mix(cfg: EvoConfig, lin: Lineage, gid: str, index: int, delta: list[Record], champion: str,
                replay_ks: Optional[list[int]] = None):
    """Write mix.parquet (one mix-k<k>.parquet per replay size for a sweep) and val.parquet for the
    workers; returns (mix, holdout, qa sets, val), or with replay_ks ({k: (path, mix)}, holdout, qa, val)."""
    train_part, holdout = split(delta, cfg.data.val_fraction)
    if not train_part or not holdout:
        raise ValueError(f"{gid}: the delta has {len(delta)} records, too few to split into train and holdout")
    pool, qa = ancestor_data(lin, champion, cfg.data.val_fraction)
    corrections = CorrectionStore(lin.root).all()  # every one so far, whole: never held out or sampled away
    if corrections:
        train_part = train_part + [c.record() for c in corrections]
        atomic_write_json(lin.run_dir(gid) / "corrections.json", sorted(c.cid for c in corrections))
    rng = random.Random(cfg.train.seed + index)
    anc_val = [r for recs in qa.values() for r in recs]
    val = holdout + rng.sample(anc_val, min(len(anc_val), max(len(holdout), 32)))
    write_records(lin.run_dir(gid) / "val.parquet", val)
    if replay_ks is not None:
        mixes = {}
        for k in sorted(set(replay_ks)):
            mix = build_mix(train_part, pool, k, cfg.data.curriculum, cfg.train.seed + index)
            path = lin.run_dir(gid) / f"mix-k{k}.parquet"
            write_records(path, mix.records)
            mixes[k] = (str(path), mix)
        return mixes, holdout, qa, val
    mix = build_mix(train_part, pool, cfg.train.replay_k, cfg.data.curriculum, cfg.train.seed + index)
    write_records(lin.run_dir(gid) / "mix.parquet", mix.records)
    return mix, holdout, qa, val


def train_child(cfg, lin, gid, parent, data_sha, progress, extra) -> str:
    """Train (or, on resume, reuse the registered candidate of this generation) and register it."""
    cand = lin.registry.alias("candidate")
    if cand and lin.registry.model(cand)["gen_id"] == gid:
        progress(gid, f"resuming: child {cand[:12]} was trained before the interruption")
        return cand
    loop_cfg = loop_config(cfg, lin, gid, parent_sha=parent, **extra)
    out = train(cfg, lin, gid, loop_cfg, progress)
    child = lin.models.put_adapter(out.best_dir, parent, training_meta(out, loop_cfg, cfg, data_sha, gid))
    lin.registry.add(child, gid, parent, "candidate")
    lin.registry.move("candidate", child, reason=f"{gid} trained")
    return child


def sweep_child(cfg, lin, gid, index, parent, data_sha, delta, progress):
    """A Ray Tune sweep for this generation; its winner (chosen by the gate's evals) is the child.
    Returns (child sha, replayed records, winning trial id)."""
    from evo.tune.sweep import choose_winner, run_sweep, save_trials

    mixes, holdout, qa, val = prepare_mix(cfg, lin, gid, index, delta, parent, replay_ks=cfg.tune.replay_k)
    cand = lin.registry.alias("candidate")
    if cand and lin.registry.model(cand)["gen_id"] == gid:
        meta = lin.models.meta(cand)
        progress(gid, f"resuming: the sweep's winner {cand[:12]} was chosen before the interruption")
        return cand, mixes[meta["replay_k"]][1].n_replay, meta.get("trial_id", "")
    loop_cfg = loop_config(cfg, lin, gid, parent_sha=parent)
    records = run_sweep(cfg, lin, gid, parent, {k: (p, m.n_replay) for k, (p, m) in mixes.items()},
                        str(lin.run_dir(gid) / "val.parquet"), loop_cfg, progress)
    try:
        winner = choose_winner(cfg, lin, gid, parent, records, data_sha, eval_spec(cfg, qa, holdout, val), progress)
    finally:
        path = save_trials(lin, gid, records)
    progress(gid, f"winner: trial {winner.trial_id} (lr {winner.config['lr']:.3g}, {winner.config['steps']} steps, "
             f"replay k {winner.config['replay_k']}; gate {winner.gate}); every trial in {path}")
    child = winner.child_sha
    lin.registry.add(child, gid, parent, "candidate")
    lin.registry.move("candidate", child, reason=f"{gid}: winner of the sweep (trial {winner.trial_id})")
    return child, mixes[int(winner.config["replay_k"])][1].n_replay, winner.trial_id


def decide(cfg: EvoConfig, lin: Lineage, scores: GenerationScores) -> tuple[str, str]:
    """(decision, reason): stopped by the stop rule, else promoted or rejected by the gate."""
    if should_stop(score_history(lin) + [scores], cfg.gate):
        return "stopped", STOP_MESSAGE.format(n=cfg.gate.patience, eps=cfg.gate.epsilon, theta=cfg.gate.theta)
    verdict = gate(scores, cfg.gate)
    return ("promoted" if verdict.accepted else "rejected"), verdict.reason


def run_generation(cfg: EvoConfig, lin: Lineage, index: int, path: str, progress: Progress, extra=None,
                   tune: bool = False) -> dict:
    gid, t0 = gen_id(index), time.perf_counter()
    champion = lin.registry.alias("champion")
    if index in cfg.data.corrections:  # scripted corrections arrive now (idempotent on resume)
        added = CorrectionStore(lin.root).add(read_corrections_file(cfg.data.corrections[index]))
        progress(gid, f"{len(added)} correction(s) recorded from {cfg.data.corrections[index]}")
    data_sha = ingest(lin, path, cfg, progress, gid)
    delta = lin.data.get(data_sha)
    trial = ""
    if tune:
        child, n_replay, trial = sweep_child(cfg, lin, gid, index, champion, data_sha, delta, progress)
        _, holdout, qa, val = prepare_mix(cfg, lin, gid, index, delta, champion)
    else:
        mix, holdout, qa, val = prepare_mix(cfg, lin, gid, index, delta, champion)
        n_replay = mix.n_replay
        progress(gid, f"mix: {mix.n_delta} new + {mix.n_replay} replayed records; parent {champion[:12]}")
        child = train_child(cfg, lin, gid, champion, data_sha, progress, extra or {})
    progress(gid, f"evaluating child {child[:12]} against parent {champion[:12]} (Ray tasks)")
    t_eval = time.perf_counter()
    res_child, res_parent = evaluate_many(lin, [child, champion], eval_spec(cfg, qa, holdout, val, lin), cfg)
    t_eval = time.perf_counter() - t_eval
    child_healing = res_child.to_json()["healing"]
    healed, recurred = healed_and_recurred(child_healing, healing_history(lin, champion))
    scores = scores_of(res_child, res_parent, tuple(recurred))
    decision, reason = decide(cfg, lin, scores)
    atomic_write_json(lin.eval_path(gid), {"child": res_child.to_json(), "parent": res_parent.to_json(),
                                           "scores": scores.__dict__, "seconds": t_eval})
    meta = lin.models.meta(child)
    row = {
        "GEN_ID": gid, "parent_sha": champion, "child_sha": child, "data_delta_sha": data_sha,
        "steps": meta["steps"], "lr": meta["lr"], "walltime_min": (time.perf_counter() - t0) / 60,
        "loss_start": meta["loss_start"], "loss_end": meta["best"]["train_loss"],
        "eval_recall": res_child.recall, "eval_generalization": res_child.generalization.value,
        "eval_style_drift": res_child.style_drift.hits, "replay_k": n_replay, "decision": decision,
        "reason": reason, "eval_perplexity": res_child.perplexity, "best_step": meta["best"]["step"],
        "trial": trial, "patterns_healed": f"{len(healed)}/{len(child_healing)}" if child_healing else "",
        "patterns_recurred": ";".join(recurred),
    }
    commit_decision(lin, gid, row, child, decision, child if decision == "promoted" else None)
    progress(gid, f"{decision}: recall {_f(res_child.recall)}, generalization {res_child.generalization.value:.2f} "
             f"(parent {res_parent.generalization.value:.2f}), style drift {res_child.style_drift.hits} "
             f"(parent {res_parent.style_drift.hits}) — {reason}")
    for line in against_parent(res_child, res_parent):
        progress(gid, line)
    return row


def against_parent(child: SuiteResult, parent: SuiteResult) -> list[str]:
    """Quality per category and violations per pattern, child against parent, a line each."""
    lines = []
    qc, qp = child.quality_by_category, parent.quality_by_category
    if qc:
        lines.append("quality by category (exact match, child / parent): " + ", ".join(
            f"{c} {q['accuracy']:.2f} / {_f((qp.get(c) or {}).get('accuracy'))}" for c, q in qc.items()))
    if child.healing:
        lines.append("violations per pattern (child / parent): " + ", ".join(
            f"{p} {r.violations}/{r.total} / " + (f"{parent.healing[p].violations}/{parent.healing[p].total}"
                                                   if p in parent.healing else "n/a")
            for p, r in sorted(child.healing.items())))
    return lines


def _f(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def run(cfg: EvoConfig, root: str | Path, progress: Progress | None = None, tune: bool = False,
        max_generations: Optional[int] = None) -> RunSummary:
    """Run generation 0 (if needed) and every configured generation not yet in the ledger
    (at most `max_generations` new ones); with `tune`, each one is a Ray Tune sweep."""
    progress = progress or Silent()
    lin = Lineage(root)
    # The resolved config of the latest run, for verbs that take only --root (evo ab).
    atomic_write_json(lin.root / "run_config.json", cfg.model_dump(mode="json"))
    reconcile(lin, progress)
    generation_zero(cfg, lin, progress)
    done = 0
    for index, path in enumerate(cfg.data.generations, start=1):
        gid = gen_id(index)
        if (row := lin.ledger.get(gid)) is None:
            if max_generations is not None and done >= max_generations:
                break
            row = run_generation(cfg, lin, index, path, progress, tune=tune)
            done += 1
        else:
            progress(gid, f"already in the ledger ({row['decision']})")
        if row["decision"] == "stopped":
            return RunSummary(lin.root, lin.ledger.rows(), True, row["reason"])
    return RunSummary(lin.root, lin.ledger.rows())
