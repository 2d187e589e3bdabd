"""The generation loop, one step per function; every step resumes after an interruption.

A generation: corrections that arrive with it are recorded -> its delta is ingested -> the
training mix is built -> a child is trained on Ray Train (or a Ray Tune sweep picks one) and
proposed as candidate -> child and parent are evaluated on Ray -> the stop rule and the gate
decide -> the decision is recorded through `evo.lineage.decisions`, the one place that moves an
alias or writes a verdict (planned on disk before it is applied, so a killed driver finishes it
when it starts again, and never applies it twice).

The verbs that run the loop are here too: `evo run`, `evo sweep`, `evo run-job` (a fine-tuning
job, `evo.finetune.run_job.execute`, handed `run_generation`) and `evo compare-bases`
(`evo.compare.compare_bases`, handed `run`); neither room imports the driver back.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ray
import torch

from evo import ray_waits
from evo.atomic import atomic_write_json
from evo.compare import compare_bases, reasons, table
from evo.config import EvoConfig, load_config, verb_overrides
from evo.data import self_replay
from evo.data.ingest import ingest_jsonl
from evo.data.mix import KeptApart, ReplayMix, build_mix, trained_answers
from evo.data.records import Record
from evo.data.store import SCHEME, DeltaParts, Split, delta_sha, write_records
from evo.evals.general import chat_prompt, read_prompts
from evo.evals.lineage_evals import base_flags_of, eval_spec, evaluate_many, scores_of
from evo.evals.suite import EvalSpec, SuiteResult
from evo.finetune.run_job import execute
from evo.gate import STOP_MESSAGE, GenerationScores, base_reason, gate, interval_note, should_stop, stalled_and_drifting
from evo.healing.corrections import CorrectionStore, corrected_answers, read_corrections_file, retire_scored
from evo.healing.validators import healed_and_recurred
from evo.inputs import check_inputs
from evo.lineage.decisions import ChampionMoved, last_good
from evo.lineage.ledger import print_ledger
from evo.lineage.root import GEN0, Ancestry, Lineage, gen_id
from evo.model import gguf
from evo.model.generate import greedy
from evo.model.lineage_model import load_generation
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer
from evo.numbers import show
from evo.progress import Progress, Silent, Stopwatch
from evo.ray_start import start_ray
from evo.storage import after_write_tree, location, open_root, uri_of
from evo.tracking import live as tracking
from evo.train.child import build_child, train_run
from evo.train.dpo import child_pair_scores
from evo.train.method import method_problem
from evo.train.worker_config import training_meta, worker_config
from evo.tune.sweep import choose_winner, run_sweep, save_trials

__all__ = ["GEN0", "Lineage", "RunSummary", "gen_id", "generation_zero", "run", "run_generation"]


@dataclass
class RunSummary:
    root: Path
    generations: list[dict]
    stopped: bool = False
    message: str = ""


# ---------------------------------------------------------------- data


def split_for(cfg: EvoConfig, own_val: bool = False) -> Split:
    """How a delta ingested now is divided: the current scheme and the config's fractions (no val part
    when the generation's selection records are given apart: a job's validation file)."""
    return Split(SCHEME, 0.0 if own_val else cfg.data.val_fraction, cfg.data.test_fraction)


def ingest(lin: Lineage, path: str, cfg: EvoConfig, progress: Progress, gid: str, own_val: bool = False) -> str:
    """Store the delta at `path` and record its split (the first time it is stored: used for it from
    then on, so a later config's fractions never move its trained records into a test part)."""
    report = ingest_jsonl(path, skip_invalid=cfg.data.skip_invalid, max_chars=cfg.data.max_chars)
    progress(gid, report.summary())
    for p in report.invalid[:5]:
        progress(gid, f"  skipped {p}")
    sha = lin.data.put(report.records)
    split = lin.data.record_split(sha, split_for(cfg, own_val))
    if split != split_for(cfg, own_val):
        progress(gid, f"delta {sha[:12]} was stored before: divided as then ({split.scheme}, val {split.val_fraction}, "
                      f"test {split.test_fraction})")
    return sha


# ---------------------------------------------------------------- generation 0


def build_base(cfg: EvoConfig, lin: Lineage, data_sha: str, progress: Progress) -> str:
    """Tokenizer + tiny Llama pretrained from scratch on Ray Train (full weights), stored by sha."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    records = lin.data.get(data_sha)
    parts = lin.data.parts(data_sha, split_for(cfg))
    train_part, val = parts.train, parts.val
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
    after_write_tree(init_dir)  # a URI root: the workers fetch it from there
    progress(GEN0, f"built tokenizer ({len(tok)} tokens) and a tiny Llama from config; pretraining")
    p = cfg.model.pretrain
    worker = worker_config(cfg, lin, GEN0, mode="full", method="supervised", init_dir=uri_of(init_dir), lora=None, steps=p.steps,
                           batch_size=p.batch_size, lr=p.lr, checkpoint_every=max(1, p.steps // 4))
    out = train_run(cfg, lin, GEN0, worker, progress)

    def save(folder: Path) -> None:
        for f in out.best_dir.iterdir():
            # the model's weights and config; not the checkpoint's training state (optimizer, counters)
            if f.suffix in (".safetensors", ".json") and f.name not in ("trainer_state.json", "optimizer.safetensors"):
                shutil.copy2(f, folder / f.name)
        tok.save_pretrained(str(folder))

    return lin.models.put_base(save, training_meta(out, worker, cfg, data_sha, GEN0))


def generation_zero(cfg: EvoConfig, lin: Lineage, progress: Progress) -> None:
    if lin.ledger.get(GEN0) is not None:
        progress(GEN0, "already in the ledger")
        return
    t0 = time.perf_counter()
    track = tracking.start(cfg, lin.root, GEN0)  # the MLflow view; its one warning: stderr (see run_generation)
    data_sha = ingest(lin, cfg.data.base, cfg, progress, GEN0) if cfg.data.base else ""
    if cfg.model.path is None:
        sha = build_base(cfg, lin, data_sha, progress)
    else:
        sha = register_pretrained(cfg.model.path, lin, data_sha, progress, cfg.model.dtype)
    lin.registry.add(sha, GEN0, "", "base")
    meta = lin.models.meta(sha)
    test = lin.data.parts(data_sha, split_for(cfg)).test if data_sha else []
    (res,) = evaluate_many(lin, [sha], eval_spec(cfg, {}, test, test, lin), cfg, progress)
    atomic_write_json(lin.eval_path(GEN0), {"child": res.to_json()})
    flags = base_flags_of(cfg, res)  # absolute thresholds the base itself fails: said in its row and here
    row = {
        "GEN_ID": GEN0, "parent_sha": "", "child_sha": sha, "data_delta_sha": data_sha,
        "steps": meta.get("steps", 0), "lr": meta.get("lr"), "walltime_min": (time.perf_counter() - t0) / 60,
        "loss_start": meta.get("loss_start"), "loss_end": (meta.get("best") or {}).get("train_loss"),
        "eval_recall": None, "eval_generalization": res.generalization.value,
        "eval_style_drift": res.style_drift.hits, "replay_k": 0, "decision": "promoted",
        "reason": base_reason(flags), "eval_perplexity": res.perplexity,
        "best_step": (meta.get("best") or {}).get("step"),
        "split": (lin.data.split_of(data_sha) or split_for(cfg)).scheme if data_sha else SCHEME, **general_columns(res),
    }
    lin.decisions.record(row, sha, "base")
    track.finish(lin.ledger.get(GEN0))
    progress(GEN0, f"base {sha[:12]}: test accuracy {show(res.generalization.value)}, "
             f"style drift {res.style_drift.hits}/{res.style_drift.total}, perplexity {show(res.perplexity)}")
    if g := general_line(res):
        progress(GEN0, g)
    if flags:
        progress(GEN0, f"warning: the base fails the gate's absolute thresholds: {'; '.join(flags)}")


def register_pretrained(path: str, lin: Lineage, data_sha: str, progress: Progress, dtype: str = "float32") -> str:
    """Use a user's model as generation 0: a folder by reference (it is not copied), verified by sha;
    a GGUF file (or one a package ships) converted once to a plain folder stored by sha."""

    source = gguf.resolve(path)
    if source.kind == "gguf":
        shipped = f" from the package {source.package} {source.package_version}" if source.package else ""
        progress(GEN0, f"converting {Path(source.path).name}{shipped} to a plain {dtype} model (a minute or two)")
        meta = {"gen_id": GEN0, "data_delta_sha": data_sha, **gguf.origin(source)}
        sha = lin.models.put_base(lambda folder: gguf.convert(source, folder, dtype), meta)
        progress(GEN0, f"stored the converted base as {sha[:12]} (GGUF sha256 {meta['gguf_sha256'][:12]})")
        return sha
    local = path
    if source.kind == "hub":
        from huggingface_hub import snapshot_download

        progress(GEN0, f"fetching {path} from the Hugging Face hub")
        local = snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    progress(GEN0, f"registering {path} as the base (hashing its weights)")
    return lin.models.put_reference(local, {"gen_id": GEN0, "data_delta_sha": data_sha, "model_path": path})


# ---------------------------------------------------------------- generation N


@dataclass
class Prepared:
    """A generation's data, written for the workers: what trains, what chooses, what is reported."""

    mix: ReplayMix  # the training mix (with replay_ks: the one of cfg.train.replay_k is not built)
    mixes: dict[int, tuple[str, ReplayMix]]  # a sweep's mixes: replay size -> (path, mix)
    test: list[Record]  # this delta's test part: generalization, reported and gated
    own_val: list[Record]  # this delta's val part
    ancestry: Ancestry  # the ancestors' test parts (recall) and val parts
    val: list[Record]  # val.parquet (checkpoint choice): own_val and a sample of the ancestors' val parts
    split: Optional[Split] = None  # how the delta is divided (as recorded for it)
    corrected: Optional[dict] = None  # normalized question -> the correction in force (evo.healing.corrections)
    kept_apart: Optional[dict] = None  # runs/<gen>/kept_apart.json: what was left out, retired, and trained answers

    def gate_spec(self, cfg: EvoConfig, lin: Lineage, against: Optional[str] = None) -> EvalSpec:
        """What the child is reported and gated on: test parts only. Recall is over the line of the
        model it is compared with: its parent's, or (`against`) a champion's that is not its parent;
        generalization is on the delta's own test part either way. Corrected questions are asked
        with the corrected answer (`retire_scored`)."""
        if against is None:
            recall = self.ancestry.test
        else:
            recall = {g: retire_scored(recs, self.corrected or {})[0] for g, recs in
                      lin.ancestry(against, cfg.data.val_fraction, cfg.data.test_fraction).test.items()}
        return eval_spec(cfg, recall, self.test, self.test, lin)

    def selection_spec(self, cfg: EvoConfig) -> EvalSpec:
        """What a sweep's trials are compared on: val parts only."""
        return eval_spec(cfg, self.ancestry.val, self.own_val, self.val)


def prepare_mix(cfg: EvoConfig, lin: Lineage, gid: str, index: int, delta: list[Record], champion: str,
                replay_ks: Optional[list[int]] = None, own_val: Optional[list[Record]] = None) -> Prepared:
    """Write mix.parquet (or, for a sweep, one mix-k<k>.parquet per replay size), val.parquet and
    kept_apart.json. The delta is divided as recorded when it was ingested. `own_val`: the
    generation's selection records given apart (a job's validation file); the delta is then split
    into train and test only.

    No record of the mix asks a question of a test part it is scored on, or a corrected question
    (corrections join whole); in the parts that are scored, a corrected question is asked with the
    corrected answer."""
    split = lin.data.split_of(delta_sha(delta)) or split_for(cfg, own_val is not None)
    parts = split.parts(delta)
    if own_val is not None:
        parts = DeltaParts(parts.train + parts.val, list(own_val), parts.test)
    if not parts.train or not parts.val or not parts.test:
        raise ValueError(f"{gid}: the delta has {len(delta)} records, too few to split into train, val and test")
    anc = lin.ancestry(champion, cfg.data.val_fraction, cfg.data.test_fraction)
    corrections = CorrectionStore(lin.root).all()  # every one so far, whole: never held out or sampled away
    corrected = corrected_answers(corrections)
    if corrections:
        atomic_write_json(lin.run_dir(gid) / "corrections.json", sorted(c.cid for c in corrections))
    apart = KeptApart.of([parts.test, *anc.test.values()], corrected, lin.data.deleted(lin.owner))
    retired: dict[str, list[dict]] = {}
    test, retired[gid] = retire_scored(parts.test, corrected)
    for g in list(anc.test):
        anc.test[g], retired[g] = retire_scored(anc.test[g], corrected)
    own = retire_scored(parts.val, corrected)[0]
    anc.val = {g: retire_scored(recs, corrected)[0] for g, recs in anc.val.items()}
    whole = [c.record() for c in corrections]
    rehearse = self_replay.rehearsal(lin, cfg.data.self_replay.k, cfg.train.seed + index) if cfg.data.self_replay else []
    rng = random.Random(cfg.train.seed + index)
    anc_val = [r for recs in anc.val.values() for r in recs]
    val = own + rng.sample(anc_val, min(len(anc_val), max(len(own), 32)))
    mixes = {}
    if replay_ks is not None:  # a sweep's files; a single child's are written by train.child.build_child
        write_records(lin.run_dir(gid) / "val.parquet", val)
    for k in sorted(set(replay_ks)) if replay_ks is not None else []:
        mix = build_mix(parts.train, anc.pool, k, cfg.data.curriculum, cfg.train.seed + index, rehearse,
                        preference=cfg.train.method == "dpo", apart=apart, whole=whole)
        path = lin.run_dir(gid) / f"mix-k{k}.parquet"
        write_records(path, mix.records)
        mixes[k] = (str(path), mix)
    mix = build_mix(parts.train, anc.pool, cfg.train.replay_k, cfg.data.curriculum, cfg.train.seed + index, rehearse,
                    preference=cfg.train.method == "dpo", apart=apart, whole=whole)
    n_trained, n_test = trained_answers(test, mix.records)
    report = {"scheme": split.scheme, "val_fraction": split.val_fraction, "test_fraction": split.test_fraction,
              "left_out": mix.left_out, "test_answers_trained": [n_trained, n_test],
              "retired_scored": {g: items for g, items in retired.items() if items}}
    atomic_write_json(lin.run_dir(gid) / "kept_apart.json", report)
    return Prepared(mix, mixes, test, own, anc, val, split, corrected, report)


def train_child(cfg: EvoConfig, lin: Lineage, gid: str, parent: str, data_sha: str, prep: Prepared,
                progress: Progress, extra: dict) -> str:
    """The generation's child, built on its mix (or, on resume, the registered candidate of this
    generation), registered as candidate and proposed."""
    cand = lin.registry.alias("candidate")
    if cand and lin.registry.model(cand)["gen_id"] == gid:
        progress(gid, f"resuming: child {cand[:12]} was trained before the interruption")
        return cand
    child = build_child(cfg, lin, gid, parent, prep.mix, prep.val, progress, data_sha=data_sha, **extra).sha
    lin.registry.add(child, gid, parent, "candidate", owner=lin.owner)
    lin.decisions.propose(gid, child, "trained")
    return child


def sweep_child(cfg: EvoConfig, lin: Lineage, gid: str, parent: str, data_sha: str, prep: Prepared,
                progress: Progress, extra: Optional[dict] = None) -> tuple[str, int, str]:
    """A Ray Tune sweep for this generation; its winner (chosen by the gate's evals on the val parts,
    never the test parts) is the child. Returns (child sha, replayed records, winning trial id)."""
    mixes = prep.mixes
    cand = lin.registry.alias("candidate")
    if cand and lin.registry.model(cand)["gen_id"] == gid:
        meta = lin.models.meta(cand)
        progress(gid, f"resuming: the sweep's winner {cand[:12]} was chosen before the interruption")
        return cand, mixes[meta["replay_k"]][1].n_replay, meta.get("trial_id", "")
    worker = worker_config(cfg, lin, gid, parent_sha=parent, **(extra or {}))
    records = run_sweep(cfg, lin, gid, parent, {k: (p, m.n_replay) for k, (p, m) in mixes.items()},
                        str(lin.run_dir(gid) / "val.parquet"), worker, progress)
    try:
        winner = choose_winner(cfg, lin, gid, parent, records, data_sha, prep.selection_spec(cfg), progress)
    finally:
        path = save_trials(lin, gid, records)
    progress(gid, f"winner: trial {winner.trial_id} (lr {winner.config['lr']:.3g}, {winner.config['steps']} steps, "
             f"replay k {winner.config['replay_k']}; gate {winner.gate}); every trial in {path}")
    child = winner.child_sha
    lin.registry.add(child, gid, parent, "candidate", owner=lin.owner)
    lin.decisions.propose(gid, child, f"winner of the sweep (trial {winner.trial_id})")
    return child, mixes[int(winner.config["replay_k"])][1].n_replay, winner.trial_id


def line_gens(lin: Lineage, champion: Optional[str] = None) -> list[str]:
    """The generations from `champion` (default: the champion now) back to the base, newest first."""
    return [lin.registry.model(sha)["gen_id"] for sha in lin.decisions.line(champion)]


def score_history(lin: Lineage, champion: Optional[str] = None) -> list[GenerationScores]:
    """Scores of the generations on the champion's line (`champion`: default the champion now), oldest
    first, from their eval reports. Only that chain counts: rejected siblings, generations reverted
    away, other branches and stopped generations are not on it."""
    return [GenerationScores(**sc) for g in reversed(line_gens(lin, champion))
            if g != GEN0 and (sc := lin.scores(g)) is not None]


def decide(cfg: EvoConfig, lin: Lineage, scores: GenerationScores,
           champion: Optional[str] = None) -> tuple[str, str]:
    """(decision, reason) on a child scored against `champion` (default: the champion now): stopped
    by the stop rule (over the champion's line and this child), else promoted or rejected by the gate."""
    if should_stop(score_history(lin, champion) + [scores], cfg.gate):
        return "stopped", STOP_MESSAGE.format(n=cfg.gate.patience, eps=cfg.gate.epsilon, theta=cfg.gate.theta,
                                              restored=restore_point(cfg, lin, champion))
    verdict = gate(scores, cfg.gate)
    return ("promoted" if verdict.accepted else "rejected"), verdict.reason


def restore_point(cfg: EvoConfig, lin: Lineage, champion: Optional[str] = None) -> str:
    """The generation the stop rule goes back to: the newest on the champion's line (`champion`:
    default the champion now) that did not stall while drift grew (the base if every later one did)."""
    return last_good([(g, (sc := lin.scores(g)) is not None and stalled_and_drifting(GenerationScores(**sc), cfg.gate))
                      for g in line_gens(lin, champion)])


RESCORES = 3  # how many times a child is scored again when the champion moves before its decision is written


def decide_and_record(cfg: EvoConfig, lin: Lineage, gid: str, child: str, parent: str, prep: Prepared,
                      progress: Progress, row_of, watch: Optional[Stopwatch] = None) -> tuple[dict, Evaluated]:
    """Score the child against the champion, decide, and record the decision: (its ledger row, the evals).

    The champion of the moment is the one it is compared with (its parent, unless the champion moved
    after its training began: another generation or job promoted, an operator's revert). A promotion
    or a stop applies only if that model is still the champion when it is written (a compare-and-swap
    in `evo.lineage.decisions`); when it moved meanwhile, the child is scored again against the new
    champion, with the same gate. One the champion moves away from again and again is recorded
    rejected, saying so. `row_of(evaluated, decision, reason, against)` builds the ledger row. `watch`:
    where the evals' time and the decision's are summed."""
    watch = watch or Stopwatch()
    against = lin.registry.alias("champion") or parent
    for _ in range(RESCORES + 1):
        moved = against != parent
        if moved:
            progress(gid, f"the champion is {lin.registry.model(against)['gen_id']}, not the parent "
                          f"{lin.registry.model(parent)['gen_id']}: {gid} is scored against the champion")
        with watch("evals"):
            ev = evaluate(cfg, lin, gid, child, against, prep.gate_spec(cfg, lin, against if moved else None),
                          progress)
        with watch("decide"):
            decision, reason = decide(cfg, lin, ev.scores, against)
            if moved:
                reason = (f"compared with the champion {lin.registry.model(against)['gen_id']}, not its parent "
                          f"{lin.registry.model(parent)['gen_id']} (the champion moved): {reason}")
            atomic_write_json(lin.eval_path(gid), {**ev.to_json(), "compared_with": against})
            row = row_of(ev, decision, reason, against)
            try:
                if decision == "stopped":
                    lin.decisions.stop(row, child, restore=restore_point(cfg, lin, against))
                else:
                    lin.decisions.record(row, child, decision)
                return row, ev
            except ChampionMoved as e:
                progress(gid, str(e))
                against = e.champion
    row = {**row, "decision": "rejected", "reason": f"not promoted: the champion moved {RESCORES + 1} times before "
           f"{gid}'s decision was written; it was last compared with {lin.registry.model(row['compared_with'])['gen_id']}"}
    lin.decisions.record(row, child, "rejected")
    return row, ev


def preference_columns(cfg: EvoConfig, lin: Lineage, gid: str, child: str, meta: dict, prep: Prepared,
                       progress: Progress) -> dict:
    """The ledger's method columns; for dpo also the pairs trained on and, on the delta's test pairs, the
    child's preference accuracy and mean reward margin against its parent (a Ray task)."""
    method = meta.get("method", "supervised")
    if method != "dpo":
        return {"method": method}
    beta = float(meta.get("beta", cfg.train.dpo.beta))
    pairs = sum(r.kind == "preference" for r in prep.mix.records)
    test = [r for r in prep.test if r.kind == "preference"]
    task = ray.remote(num_cpus=1, num_gpus=1 if cfg.train.use_gpu else 0)(child_pair_scores)
    s = ray_waits.get([task.remote(lin.location, child, test, beta, cfg.model.max_length, cfg.model.dtype)],
                      "the preference scores of the child on the test pairs (a Ray task)", cfg.ray,
                      lambda message: progress(gid, message))[0]
    progress(gid, f"dpo (beta {beta:g}, {pairs} pairs trained): on {s['pairs']} test pairs the child ranks the chosen "
                  f"answer first {show(s['accuracy'])} of the time, reward margin {show(s['reward_margin'], '.3f')}")
    return {"method": method, "dpo_beta": beta, "pairs": pairs, "pref_accuracy": s["accuracy"],
            "reward_margin": s["reward_margin"]}


def run_generation(cfg: EvoConfig, lin: Lineage, index: int, path: str, progress: Progress,
                   extra: Optional[dict] = None, tune: bool = False, parent: Optional[str] = None,
                   own_val: Optional[list[Record]] = None, data_sha: Optional[str] = None) -> dict:
    """One generation, step by step: corrections, data, child, evals, decision. Returns its ledger row.
    `parent`: the model it grows from (default: the champion); `own_val`: see `prepare_mix`; `data_sha`:
    a delta already stored (then `path` is only named), else the delta is ingested from `path`. With
    `train.method: dpo` its preference records train as pairs, the replayed records as ever."""
    gid, t0, watch = gen_id(index), time.perf_counter(), Stopwatch()
    parent = parent or lin.registry.alias("champion")
    # the MLflow view. Its one warning (a server that does not answer) goes to stderr, the operator's log, not
    # to `progress`: a fine-tuning job's progress lines are its events, and a tenant reads those (the warning
    # names the admin's tracking server and root, and a sync's error can name another tenant's run)
    with watch("tracking"):
        track = tracking.start(cfg, lin.root, gid)
    with watch("ingest"):
        record_arriving_corrections(cfg, lin, index, progress)
        data_sha = data_sha or ingest(lin, path, cfg, progress, gid, own_val=own_val is not None)
        delta = lin.data.get(data_sha)
    if problem := method_problem(cfg.train.method, delta, f"{gid}'s delta {path or data_sha[:12]}"):
        raise ValueError(problem)
    with watch("mix"):
        prep = prepare_mix(cfg, lin, gid, index, delta, parent, replay_ks=cfg.tune.replay_k if tune else None,
                           own_val=own_val)
    with watch("train"):
        if tune:
            child, n_replay, trial = sweep_child(cfg, lin, gid, parent, data_sha, prep, progress, extra)
        else:
            n_replay, trial = prep.mix.n_replay, ""
            progress(gid, f"mix: {prep.mix.summary()}; parent {parent[:12]}")
            child = train_child(cfg, lin, gid, parent, data_sha, prep, progress, extra or {})
    meta = lin.models.meta(child)
    with watch("evals"):
        method_columns = preference_columns(cfg, lin, gid, child, meta, prep, progress)

    def row_of(ev: Evaluated, decision: str, reason: str, against: str) -> dict:
        c = ev.child
        return {
            "GEN_ID": gid, "parent_sha": parent, "child_sha": child, "data_delta_sha": data_sha,
            "steps": meta["steps"], "lr": meta["lr"], "walltime_min": (time.perf_counter() - t0) / 60,
            "loss_start": meta["loss_start"], "loss_end": meta["best"]["train_loss"],
            "eval_recall": c.recall, "eval_generalization": c.generalization.value,
            "eval_style_drift": c.style_drift.hits, "replay_k": n_replay, "decision": decision,
            "reason": reason, "eval_perplexity": c.perplexity, "best_step": meta["best"]["step"],
            "trial": trial, "patterns_healed": f"{len(ev.healed)}/{len(c.healing)}" if c.healing else "",
            "patterns_recurred": ";".join(ev.recurred), "split": prep.split.scheme, **general_columns(c),
            "test_answers_trained": "{}/{}".format(*prep.kept_apart["test_answers_trained"]),
            "compared_with": against, **method_columns,
            "recall_items": f"{ev.scores.recall_items or 0}/{ev.recall_available or 0}" if ev.recall_available else "",
            "generalization_interval": interval_note(c.generalization.correct, c.generalization.total,
                                                     cfg.gate.min_generalization),
        }

    row, ev = decide_and_record(cfg, lin, gid, child, parent, prep, progress, row_of, watch)
    with watch("tracking"):
        track.finish(lin.ledger.get(gid))
    write_timings(lin, gid, watch, meta, ev)
    c, decision, reason = ev.child, row["decision"], row["reason"]
    other = "parent" if row["compared_with"] == parent else "champion"
    progress(gid, f"{decision}: recall {show(c.recall)}, generalization {c.generalization.value:.2f} "
             f"({other} {ev.parent.generalization.value:.2f}), style drift {c.style_drift.hits} "
             f"({other} {ev.parent.style_drift.hits}) — {reason}")
    for line in against_parent(c, ev.parent):
        progress(gid, line)
    return row


def write_timings(lin: Lineage, gid: str, watch: Stopwatch, meta: dict, ev: Evaluated) -> None:
    """runs/<gen>/timings.json: the generation's wall seconds by phase, and inside training and the evals
    what went to loading models (bench/bench_depth.py reads it; a resumed generation's training phase is
    what was left to do)."""
    train = {k: meta.get(f"{k}_seconds") for k in ("ray_startup", "load", "setup", "train", "checkpoint", "ray_teardown")}
    atomic_write_json(lin.run_dir(gid) / "timings.json", {
        "total": watch.total(), "phases": watch.seconds, "train": {**train, "wall": meta.get("train_wall_seconds")},
        "evals": {"child": ev.child.seconds, "parent": ev.parent.seconds,
                  "recall_items": ev.scores.recall_items}})


def general_columns(res: SuiteResult) -> dict:
    g = res.general
    if g is None:
        return {}
    return {"eval_general": g.accuracy, "eval_kl_base": g.kl_to_base, "eval_fake_words": g.fake_word_share,
            "eval_distinct2": g.distinct2, "eval_repetition": g.repetition}


def general_line(child: SuiteResult, parent: Optional[SuiteResult] = None) -> Optional[str]:
    """The general evals in one line, child (and parent)."""
    c = child.general
    if c is None:
        return None
    p = parent.general if parent is not None else None

    def both(x: Optional[float], y: Optional[float], spec: str = ".2f") -> str:
        return show(x, spec) if p is None else f"{show(x, spec)} / {show(y, spec)}"

    return (f"general ({'child / parent' if p else 'this model'}): questions kept {both(c.accuracy, p and p.accuracy)} "
            f"of {c.counted} the base answers, KL from base {both(c.kl_to_base, p and p.kl_to_base)}, "
            f"fake words {both(c.fake_word_share, p and p.fake_word_share, '.3f')}, "
            f"distinct-2 {both(c.distinct2, p and p.distinct2)}, repetition {both(c.repetition, p and p.repetition)}")


def record_arriving_corrections(cfg: EvoConfig, lin: Lineage, index: int, progress: Progress) -> None:
    """Scripted corrections (`data.corrections`) that arrive with this generation (idempotent on resume)."""
    if index in cfg.data.corrections:
        added = CorrectionStore(lin.root).add(read_corrections_file(cfg.data.corrections[index]))
        progress(gen_id(index), f"{len(added)} correction(s) recorded from {cfg.data.corrections[index]}")


@dataclass
class Evaluated:
    """Child and parent scored on the same suite, and what that says about the corrected patterns."""

    child: SuiteResult
    parent: SuiteResult
    scores: GenerationScores
    healed: list[str]
    recurred: list[str]
    seconds: float
    recall_available: Optional[int] = None  # the items of the line's test parts recall was sampled from

    def to_json(self) -> dict:  # evals/<gen>.json
        return {"child": self.child.to_json(), "parent": self.parent.to_json(), "scores": self.scores.__dict__,
                "seconds": self.seconds, "recall_available": self.recall_available}


def evaluate(cfg: EvoConfig, lin: Lineage, gid: str, child: str, parent: str, spec, progress: Progress) -> Evaluated:
    """The child and `parent` (the model it is compared with: its parent, or the champion) on `spec`."""
    progress(gid, f"evaluating child {child[:12]} against {parent[:12]} (Ray tasks)")
    t0 = time.perf_counter()
    res_child, res_parent = evaluate_many(lin, [child, parent], spec, cfg, progress)
    healed, recurred = healed_and_recurred(res_child.to_json()["healing"], lin.healing_history(parent))
    return Evaluated(res_child, res_parent, scores_of(res_child, res_parent, tuple(recurred)), healed, recurred,
                     time.perf_counter() - t0, spec.qa_available)


def against_parent(child: SuiteResult, parent: SuiteResult) -> list[str]:
    """Quality per category and violations per pattern, child against parent, a line each."""
    lines = [g] if (g := general_line(child, parent)) else []
    qc, qp = child.quality_by_category, parent.quality_by_category
    if qc:
        lines.append("quality by category (exact match, child / parent): " + ", ".join(
            f"{c} {q['accuracy']:.2f} / {show((qp.get(c) or {}).get('accuracy'))}" for c, q in qc.items()))
    if child.healing:
        def parent_side(p: str) -> str:
            r = parent.healing.get(p)
            return "n/a" if r is None else f"{r.violations}/{r.total} ({r.repeats_error} the error, {r.other_wrong} other)"

        lines.append("violations per pattern (child / parent): " + ", ".join(
            f"{p} {r.violations}/{r.total} / {parent_side(p)}" for p, r in sorted(child.healing.items())))
    if child.healing_excluded:
        lines.append(f"healing: {len(child.healing_excluded)} item(s) not asked, trained or chosen on in the lineage "
                     f"(e.g. {child.healing_excluded[0]!r})")
    return lines


def run(cfg: EvoConfig, root: str | Path, progress: Progress | None = None, tune: bool = False,
        max_generations: Optional[int] = None) -> RunSummary:
    """Run generation 0 (if needed) and every configured generation not yet in the ledger
    (at most `max_generations` new ones); with `tune`, each one is a Ray Tune sweep."""
    progress = progress or Silent()
    lin = Lineage(root)
    # The resolved config of the latest run, for verbs that take only --root (evo ab).
    atomic_write_json(lin.root / "run_config.json", cfg.model_dump(mode="json"))
    lin.decisions.reconcile(progress)
    generation_zero(cfg, lin, progress)
    ensure_self_replay(cfg, lin, progress, GEN0)
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


# ---------------------------------------------------------------- the base's own answers (data.self_replay)


def base_answers(root: str, sha: str, prompts: list[str], max_new_tokens: int, dtype: str = "float32") -> list[dict]:
    """The model's greedy answers to `prompts`, as chat records: a Ray task body."""
    model, tok = load_generation(root, sha, dtype)
    if torch.cuda.is_available():
        model = model.to("cuda")
    replies = greedy(model, tok, [chat_prompt(tok, p) for p in prompts], max_new_tokens, 16)
    return self_replay.as_records(prompts, replies)


def ensure_self_replay(cfg: EvoConfig, lin: Lineage, progress: Progress, gen0: str = GEN0) -> None:
    """Have the base answer the self-replay prompts once per base and prompt set (again after either changes)."""
    sc = cfg.data.self_replay
    base = lin.registry.by_gen(gen0)
    if sc is None or base is None:
        return
    prompts = read_prompts(sc.prompts)
    if self_replay.is_current(lin, base, prompts, sc.max_new_tokens):
        return
    progress(gen0, f"self-replay: the base answers {len(prompts)} prompts from {Path(sc.prompts).name}; every "
                   f"generation rehearses {sc.k} of its answers")
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=1, num_gpus=1 if cfg.train.use_gpu else 0)(base_answers)
    rows = ray_waits.get([task.remote(lin.location, base, prompts, sc.max_new_tokens, cfg.model.dtype)],
                         "the self-replay task (the base answers its prompts)", cfg.ray,
                         lambda message: progress(gen0, message))[0]
    sha, n = self_replay.store(lin, rows, base, sc.prompts, prompts, sc.max_new_tokens, time.perf_counter() - t0)
    progress(gen0, f"self-replay: {n} answers stored as {sha[:12]} ({time.perf_counter() - t0:.0f} s)")


# ---------------------------------------------------------------- the verbs that run it


def run_config(cfg: EvoConfig, root: str, address: Optional[str], tune: bool = False,
               max_generations: Optional[int] = None) -> int:
    """Every generation of `cfg` not yet in the ledger at `root` (a location), then the ledger and where it all is."""
    check_inputs(cfg, root)  # a bad line fails here, before Ray starts
    start_ray(address)
    summary = run(cfg, root, Progress(), tune=tune, max_generations=max_generations)
    print()
    print_ledger(summary.root, as_json=False)
    mirror = f" (this machine's mirror: {summary.root})" if str(summary.root) != root else ""
    print(f"\nlineage root: {root}{mirror}\n  ledger:   {summary.root / 'ledger.csv'}\n"
          f"  registry: {summary.root / 'registry.json'}\n  models:   {summary.root / 'models'}\n"
          f"  evals:    {summary.root / 'evals'}")
    if (seen := tracking.where(summary.root)) is not None:
        print(f"  MLflow:   {seen}")
    if summary.stopped:
        print(f"\n{summary.message}")
    return 0


def cmd_run(root: str, config: str, sets: list[str] | None, skip_invalid: bool, address: str | None, tune: bool) -> int:
    """`evo run CONFIG`: every generation not yet in the ledger (so it resumes)."""
    cfg = load_config(config, verb_overrides(sets, skip_invalid))
    return run_config(cfg, location(root), address, tune=tune)


def cmd_sweep(root: str, config: str, sets: list[str] | None, skip_invalid: bool, address: str | None) -> int:
    """`evo sweep CONFIG`: the next generation only, searched with Ray Tune."""
    cfg = load_config(config, verb_overrides(sets, skip_invalid))
    code = run_config(cfg, location(root), address, tune=True, max_generations=1)
    print(f"  trials:   {location(root)}/trials")
    return code


def cmd_run_job(root: str, job: str, address: str | None) -> int:
    """`evo run-job JOB` (what a fine-tuning job's Ray job runs): the job, its generation run by `run_generation`."""
    start_ray(address)
    return execute(location(root), job, run_generation)


def cmd_compare_bases(root: str, config: str, sets: list[str] | None, base: list[str], generations: int | None,
                      prompts: int, address: str | None) -> int:
    """`evo compare-bases CONFIG --base A --base B ...`: each base's lineage run by `run`, then one table."""
    start_ray(address)
    local = open_root(root)
    results = compare_bases(config, base, local, verb_overrides(sets), generations, prompts, run=run)
    print()
    print(table(results))
    print(reasons(results))
    print(f"\nwritten to {local / 'compare-bases.md'} (and .json); each base's lineage under {local}/<base>/")
    return 0
