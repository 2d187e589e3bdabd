"""Typed configuration of a whole evo run, loaded from YAML and validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evo.atomic import read_json


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem found, one per line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModelConfig(_Strict):
    """Shape of the Llama-architecture base built offline when no model path is given."""

    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(3, gt=0, description="Decoder layers.")
    num_heads: int = Field(4, gt=0, description="Attention heads (must divide hidden_size).")
    intermediate_size: int = Field(256, gt=0, description="MLP width.")
    vocab_size: int = Field(384, ge=64, description="Byte-level BPE vocabulary trained on the base corpus.")
    max_position_embeddings: int = Field(128, gt=8, description="Longest sequence the model sees.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


class PretrainConfig(_Strict):
    """How generation 0 is trained from scratch when evo builds the tiny base."""

    steps: int = Field(900, gt=0, description="Optimizer steps of full-model pretraining.")
    batch_size: int = Field(32, gt=0, description="Global batch size (split across workers).")
    lr: float = Field(3e-3, gt=0, description="Peak AdamW learning rate.")


class ModelConfig(_Strict):
    path: Optional[str] = Field(
        None,
        description="The base: a Hugging Face causal LM (local folder or hub id), a .gguf file, or a GGUF file an "
                    "installed package ships (package:NAME/FILE). None builds the tiny base offline.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    max_length: int = Field(96, gt=8, description="Tokens per training example; longer ones are cut.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weights dtype for training.")


class SelfReplayConfig(_Strict):
    """A pretrained base rehearses its own words: at generation 0 it answers these prompts (greedy),
    and every later training mix replays `k` of its answers, so a fine-tune keeps what the base could
    say. Keep the prompts apart from eval.general's sets (checked), which must stay unseen."""

    prompts: str = Field(description="JSONL of {prompt}: what the base is asked at generation 0.")
    k: int = Field(24, ge=0, description="The base's answers replayed in each generation's mix.")
    max_new_tokens: int = Field(48, gt=0, description="Longest answer kept.")


class DataConfig(_Strict):
    base: Optional[str] = Field(
        None, description="JSONL corpus of generation 0 (tokenizer and pretraining when building the base)."
    )
    generations: list[str] = Field(
        default_factory=list, description="One JSONL delta per generation, in arrival order."
    )
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of each delta, by record hash, used only to "
                                "choose: checkpoints, ASHA, sweep winners. Never reported.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="Share of each delta, by record hash, held out for "
                                 "what is reported and gated on (and recalled by later generations). Never "
                                 "used to choose anything.")
    curriculum: list[str] = Field(
        default_factory=list,
        description="Category order within a delta; unlisted categories follow, in name order.",
    )
    skip_invalid: bool = Field(False, description="Ingest the valid lines of a file that has bad ones.")
    max_chars: int = Field(4000, gt=0, description="Longest record accepted (prompt + completion).")
    self_replay: Optional[SelfReplayConfig] = Field(
        None, description="A pretrained base's own answers, replayed in every mix (needs model.path).")
    corrections: dict[int, str] = Field(
        default_factory=dict,
        description="Generation number -> JSONL of corrections recorded just before that generation runs "
                    "(what `evo correct --file` does by hand).",
    )


class LoraSettings(_Strict):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters (all linear layers of attention and MLP by default).",
    )


class DPOSettings(_Strict):
    """Direct preference optimization (`train.method: dpo`, evo.train.dpo): the child learns to rank each
    preference record's chosen answer above its rejected one, relative to its parent (the reference:
    the child with its new adapter switched off)."""

    beta: float = Field(0.1, gt=0, description="DPO's beta: how far the child may move from its parent "
                                                "(larger keeps it closer).")
    sft_weight: float = Field(0.0, ge=0, description="Weight of an SFT term (mean token loss) on the chosen answers, "
                                                    "added to the DPO loss (0: off).")


class TrainConfig(_Strict):
    method: Literal["supervised", "dpo"] = Field(
        "supervised", description="supervised: token loss on completions; dpo: direct preference optimization on the "
        "delta's preference records (train.dpo), the replayed non-preference records keeping their token loss.")
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    strategy: Literal["ddp", "deepspeed"] = Field("ddp", description="Data parallelism under Ray Train.")
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (strategy=deepspeed).")
    num_workers: int = Field(2, gt=0, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0)
    steps: int = Field(300, gt=0, description="Optimizer steps per generation.")
    batch_size: int = Field(16, gt=0, description="Global batch size (split across workers).")
    lr: float = Field(3e-3, gt=0, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(10, ge=0)
    checkpoint_every: int = Field(50, gt=0, description="Steps between checkpoints; each is evaluated.")
    replay_k: int = Field(100, ge=0, description="Records replayed from ancestors' data.")
    rehearsal_kl: float = Field(
        0.0, ge=0, description="Weight of KL(parent ‖ child) on data.self_replay's rows: with it > 0 they learn the "
        "parent's whole next-token distribution at every position instead of its greedy answer tokens (0: off).")
    packing: bool = Field(
        False, description="Several examples in one row of a training batch (evo.train.examples.pack: first-fit, "
        "attention kept within each example) instead of right-padding every row to the batch's longest: the same "
        "labelled tokens and loss per record, fewer token positions computed. On the shop mix on SmolLM2 (batch 8, "
        "max_length 128) 40% of the padded batches' positions were padding, 16% packed, and a plain PEFT loop took "
        "1.22x the useful tokens/s (bench/bench_packing.py, docs/benchmarks.md). Off by default until the Ray "
        "Train, DeepSpeed and sweep paths have run with it (2026-12-02: one DDP run on SmolLM2 only). DPO batches "
        "are never packed.")
    max_failures: int = Field(2, ge=0, description="Worker failures retried from the last checkpoint.")
    poll_interval_s: float = Field(
        0.25, gt=0, description="How often Ray Train's controller polls its workers "
        "(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; one set in the environment wins). A checkpoint report and the end of a "
        "run wait for a poll, but every poll also costs the workers some step time on few cores: 0.25 s suits "
        "short runs (Ray's 2 s default cost a 17 s tiny generation 6 s), about 2 s long ones (0.25 s cost "
        "SmolLM2 on 2 cores 7% of its tokens/s). See docs/benchmarks.md.")
    seed: int = 0
    lora: LoraSettings = Field(default_factory=LoraSettings)


class GeneralEvalConfig(_Strict):
    """General ability a real base brings (evo.evals.general): off unless set."""

    questions: str = Field(description="JSONL of {prompt, answers}: general questions; only those the base answers "
                                       "correctly count, and the KL from the base runs along its answers.")
    open_prompts: str = Field(description="JSONL of {prompt}: open prompts for the fake-word share and diversity.")
    language: str = Field("en", min_length=2, description="wordfreq language of the dictionary (fake words).")
    max_new_tokens: int = Field(40, gt=0, description="Tokens generated per question and open prompt.")


class EvalConfig(_Strict):
    probes: Optional[str] = Field(None, description="JSONL of style probe prompts (10 by default): what the gate and "
                                  "the report measure.")
    val_probes: Optional[str] = Field(
        None, description="JSONL of style probes for selection only (a sweep's winner), in the form of `probes`, none a "
                          "near-copy of one of them; null: selection scores no style probes, so it never sees the "
                          "reported ones.")
    banned_phrases: list[str] = Field(default_factory=list, description="Phrases that count as style drift.")
    max_new_tokens: int = Field(24, gt=0)
    batch_size: int = Field(64, gt=0)
    max_items: int = Field(200, gt=0, description="Cap on items per QA set, for speed.")
    recall_halfwidth: Optional[float] = Field(
        0.05, gt=0, lt=0.5, description="Recall (and a sweep's recall on the val parts) is asked on a stratified "
        "sample of the line's parts, each generation's share in proportion to its size: as many items as make the "
        "two-sided interval at gate.drift_confidence on a recall of 0.5 at most this wide either side (385 at "
        "0.05 and 0.95), so a generation's evals cost the same at any depth. Fewer items than that: all of them. "
        "null: every item (the cost grows with the lineage). The ledger's recall_items says n/m.")
    general: Optional[GeneralEvalConfig] = Field(
        None, description="General questions, KL from the base, fake words and diversity (for real pretrained bases).")


class GateConfig(_Strict):
    """The gate's thresholds. Each says whether it is absolute (a level the child must reach on its own;
    a base below one is flagged at generation 0) or relative to the parent (the child's change from its
    parent on the same probes, beyond the tolerance and beyond noise: see `evo.gate`)."""

    min_recall: Optional[float] = Field(
        0.90, ge=0, le=1, description="Absolute floor on recall of the line's earlier test parts (null: not "
                                      "checked). A child under it that recalls as much of the same items as its "
                                      "parent, within noise (a paired sign test on the items one of them missed, "
                                      "at gate.drift_confidence), is not rejected for it: recall measures "
                                      "forgetting, and the reason says so.")
    min_generalization: Optional[float] = Field(
        0.85, ge=0, le=1, description="Absolute: ...and exact match on the child's own delta's test part above "
                                      "this (null: not checked).")
    max_style_drift: Optional[float] = Field(
        None, ge=0, description="Absolute cap: style probes hit must be below this (null: no cap). A parent over "
                                "the cap too makes it relative: the child is then rejected only if worse beyond noise.")
    max_style_drift_rise: Optional[int] = Field(
        0, ge=0, description="Relative: style probes the child may hit beyond its parent's count, beyond noise "
                             "(0: any rise the probe count cannot explain rejects; null: not checked).")
    drift_confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Noise on the relative thresholds: a child is rejected when the one-sided "
        "lower confidence bound, at this level, of its rate minus its parent's (k of n probes, words, questions) is "
        "above the tolerance.")
    epsilon: float = Field(0.05, ge=0, description="Stop rule: learning stalls when Δgeneralization < ε.")
    theta: float = Field(0.1, ge=0, description="Stop rule: drift grows when Δstyle drift > θ.")
    patience: int = Field(2, gt=0, description="Consecutive stalled-and-drifting generations before stop.")
    no_recurrence: bool = Field(False, description="Reject a child on which a healed error pattern recurs.")
    # eval.general's thresholds: each is checked when set and eval.general is on
    min_general_accuracy: Optional[float] = Field(
        None, ge=0, le=1, description="Absolute cap: of the general questions the base answers, the child must keep "
                                      "more than this share (a parent below it too: relative, as max_style_drift).")
    max_general_drop: Optional[float] = Field(
        None, ge=0, le=1, description="Relative: how far the share of general questions kept may fall below the "
                                      "parent's, beyond noise.")
    max_kl_to_base: Optional[float] = Field(
        None, ge=0, description="Absolute cap: mean per-token KL (nats) from the base along its general answers "
                                "must be below this (a parent over it too: the child's may not be larger).")
    max_fake_words: Optional[float] = Field(
        None, ge=0, le=1, description="Absolute cap: share of generated words neither in the dictionary nor in the "
                                      "lineage's data (a parent over it too: relative, as max_style_drift).")
    max_fake_words_rise: Optional[float] = Field(
        None, ge=0, le=1, description="Relative: how far the fake-word share may rise above the parent's, beyond noise.")
    max_distinct2_drop: Optional[float] = Field(
        None, ge=0, le=1, description="Relative: how far distinct-2 on open prompts may fall below the parent's, "
                                      "beyond noise.")
    max_repetition_rise: Optional[float] = Field(
        None, ge=0, le=1, description="Relative: how far the repetition rate on open prompts may rise above the "
                                      "parent's, beyond noise.")


class PatternRuleConfig(_Strict):
    forbid: list[str] = Field(default_factory=list, description="Regexes no output may match.")
    require: list[str] = Field(default_factory=list, description="Regexes every output must match.")
    check: Optional[str] = Field(None, description="A check registered with evo.healing.validators.register_check.")

    @model_validator(mode="after")
    def _compiles(self) -> PatternRuleConfig:
        import re

        for rx in self.forbid + self.require:
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"regex /{rx}/ does not compile: {e}") from None
        return self


class HealingConfig(_Strict):
    """Self-healing: past corrections asked again every generation (see evo.healing)."""

    paraphrases: Optional[str] = Field(None, description="JSONL of {pattern, prompt, expected?}: other ways to ask.")
    patterns: dict[str, PatternRuleConfig] = Field(default_factory=dict, description="Per pattern id: its rule.")
    max_items_per_pattern: int = Field(20, gt=0, description="Prompts asked per pattern and generation.")
    weak_threshold: float = Field(4.0, gt=1, description="evo weak: an example is weak above this perplexity.")
    weak_thresholds: list[float] = Field(default_factory=lambda: [1.5, 2.0, 4.0, 8.0, 16.0],
                                         description="evo weak: how many examples fall above each, to choose from.")
    weak_share: float = Field(0.5, gt=0, le=1, description="evo weak: an area is weak when at least this share "
                                                           "of its examples are above the threshold.")
    weak_area: str = Field("category", pattern=r"^(category|prefix:[1-9][0-9]*)$",
                           description="evo weak: group examples by 'category' or 'prefix:N' (category + first N words).")


class TargetedConfig(_Strict):
    """`evo targeted` and the targeted-vs-random experiment (see evo.curation.targeted)."""

    generator: Optional[str] = Field(
        None,
        description="The domain's own example generator, 'package.module:factory' (None: the model alone).")
    generator_options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the factory.")
    seeds: int = Field(40, gt=0, description="Weakest examples (highest perplexity in the weak areas) to vary.")
    model_variations: int = Field(4, ge=0, description="Variations per seed sampled from the model.")
    generator_variations: int = Field(4, ge=0, description="Variations per seed from the generator.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the model's variations.")
    top_p: float = Field(0.95, gt=0, le=1)
    prefix_share: float = Field(0.5, gt=0, lt=1, description="Share of a seed prompt's words the model continues from.")
    min_quality: float = Field(0.5, ge=0, le=1, description="Drop candidates of lower quality (1 for generator-labelled; "
                                                            "the model's mean token probability for self-labelled).")
    near_duplicate: float = Field(0.9, gt=0, le=1, description="Prompt similarity (3-gram Jaccard) at which a candidate "
                                                               "is a near-duplicate of a kept one.")
    keep_share: float = Field(0.5, gt=0, le=1, description="Share of the candidates that pass the filter to keep, best first.")
    max_records: int = Field(200, gt=0, description="Most records written.")

    @model_validator(mode="after")
    def _spec(self) -> TargetedConfig:
        import re

        if self.generator is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.generator):
            raise ValueError(f"generator {self.generator!r} must name 'package.module:factory'")
        return self


class SweepConfig(_Strict):
    """Per-generation search with Ray Tune (`evo sweep`, `evo run --tune`)."""

    num_samples: int = Field(4, gt=0, description="Trials per generation.")
    max_concurrent: int = Field(2, gt=0, description="Trials running at once (each is a Ray Train run).")
    scheduler: Literal["asha", "pbt", "none"] = Field(
        "asha", description="asha: stop poor trials early on val loss; pbt: population based training.")
    lr: tuple[float, float] = Field((3e-4, 1e-2), description="Learning rate bounds, sampled log-uniform.")
    steps: list[int] = Field(default_factory=lambda: [150, 300], description="Step counts to choose from.")
    replay_k: list[int] = Field(default_factory=lambda: [0, 100], description="Replay sizes to choose from.")
    beta: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.3],
                              description="train.method dpo: DPO betas to choose from (trials are then chosen on val "
                                          "preference accuracy).")
    grace_period: int = Field(1, gt=0, description="ASHA: checkpoints a trial runs before it may be stopped.")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor at each rung.")
    perturbation_interval: int = Field(1, gt=0, description="PBT: checkpoints between exploit/explore steps.")
    pbt_synch: bool = Field(False, description="PBT: wait for every trial at each step (slower, but every "
                                               "step compares the whole population).")
    evaluate_top: int = Field(3, gt=0, description="Trials (lowest val loss first) whose best checkpoints the "
                                                  "gate's evals score to choose the winner.")
    num_workers: Optional[int] = Field(None, gt=0, description="Ray Train workers per trial (default: train's).")
    cpus_per_worker: Optional[float] = Field(None, gt=0, description="CPUs per trial worker (default: train's).")
    driver_cpus: float = Field(0.1, ge=0, description="CPUs for each trial's driver function.")
    max_failures: int = Field(0, ge=0, description="Worker-failure retries inside a trial (a NaN loss is final).")
    reuse_actors: bool = Field(True, description="Run later trials in earlier trials' driver processes "
                                                 "(saves their imports; the Train workers are new either way).")
    seed: int = 0

    @model_validator(mode="after")
    def _space(self) -> SweepConfig:
        problems = []
        if not 0 < self.lr[0] <= self.lr[1]:
            problems.append("lr: needs 0 < low <= high")
        if not self.steps or min(self.steps) <= 0:
            problems.append("steps: needs at least one positive step count")
        if not self.replay_k or min(self.replay_k) < 0:
            problems.append("replay_k: needs at least one count >= 0")
        if not self.beta or min(self.beta) <= 0:
            problems.append("beta: needs at least one positive beta")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RayWaitsConfig(_Strict):
    """How long evo lets a wait on Ray go without progress (trials, Train worker groups, eval and
    self-replay tasks, fine-tuning jobs, Serve deployments). Progress is a report, a checkpoint or a
    finished task; a wait with nothing of its cluster's left pending (every task placed, computing) is
    not stalled."""

    warn_after_s: float = Field(
        120.0, gt=0, description="Seconds without progress, while resource demands are pending, after which evo "
                                 "prints (and records as a job event) what it waits for: the pending demands and "
                                 "what holds the cluster's resources.")
    fail_after_s: float = Field(
        900.0, gt=0, description="Seconds without progress after which evo fails the step with that message "
                                 "(nothing of the step is recorded; the same command resumes). Larger than "
                                 "warn_after_s.")
    poll_s: float = Field(5.0, gt=0, description="How often the watchdog asks Ray what is pending.")

    @model_validator(mode="after")
    def _order(self) -> RayWaitsConfig:
        if self.fail_after_s <= self.warn_after_s:
            raise ValueError(f"fail_after_s ({self.fail_after_s:g}) must be larger than warn_after_s "
                             f"({self.warn_after_s:g})")
        return self


class ABConfig(_Strict):
    """The A/B round's test plan (`evo ab`, the end of `evo demo`; `evo.ab.verdict`). A round promotes
    the candidate only on "better" or "not worse"; the chance it promotes one whose share of decisive
    votes is `min_share` or less is at most `alpha`."""

    alpha: float = Field(0.05, gt=0, lt=1, description="Chance of a false 'better' or 'worse' over a round (two-sided), "
                                                      "and of promoting a candidate at min_share (one-sided).")
    min_share: Optional[float] = Field(
        0.45, gt=0, lt=0.5, description="'Not worse': the candidate's share of decisive votes is above this with "
                                        "confidence 1 - alpha, and it is promoted. null: only 'better' promotes.")
    tie_rate: float = Field(0.5, ge=0, lt=1, description="Share of prompts expected to be ties (both arms judged "
                                                         "equal); sizes the plan in decisive votes.")
    look_every: int = Field(10, gt=0, description="Decisive votes between the test's looks.")
    max_looks: int = Field(12, gt=0, description="Most looks; fewer when the budget cannot fill them.")


class JobsConfig(_Strict):
    """Fine-tuning jobs of `evo serve` (`/v1/fine_tuning/jobs`, `evo.finetune`): what one job may ask for."""

    max_steps: int = Field(
        5000, gt=0, description="Most optimizer steps one job trains: `steps` above it is refused when the job is "
                                "created (400), and `n_epochs` x records / batch above it fails the job at "
                                "validating_files, naming both numbers.")
    min_workers: int = Field(
        1, gt=0, description="Fewest Ray Train workers a job fits itself to when the cluster can never give what "
                             "train.num_workers x train.cpus_per_worker asks (its CPUs less what Serve's replicas "
                             "hold, on a cluster without an autoscaler); below it the job fails at once, naming "
                             "both numbers.")
    keep_checkpoints: int = Field(
        3, ge=0, description="How many of a job's last checkpoints are kept as models once it succeeds (OpenAI "
                             "keeps 3): each is served under its `fine_tuned_model_checkpoint` name to the job's "
                             "owner (and admin), for as long as the job's model is. A sweep job (\"auto\") keeps "
                             "only its model: the checkpoints it lists are the winning trial's, not kept.")


class TrackingConfig(_Strict):
    """Where evo shows a lineage in MLflow (`evo.tracking`): an experiment per root, a run per
    generation, nested runs per sweep trial, registered versions with the aliases champion and
    candidate. evo's own files stay the record; MLflow is a view of them (`evo tracking sync`)."""

    backend: Literal["embedded", "mlflow", "off"] = Field(
        "embedded", description="embedded: a SQLite store under the lineage root (tracking/mlflow.db; see it with "
                                "the `mlflow ui` command a run prints); mlflow: the server at `uri`; off: none.")
    uri: Optional[str] = Field(None, description="mlflow: the tracking URI, e.g. http://127.0.0.1:5000.")
    experiment: Optional[str] = Field(None, description="Experiment name (default: 'evo ' + the root's location).")
    model_name: Optional[str] = Field(None, description="Registered model name (default: the run name and 8 hex "
                                                        "digits of the root's location).")
    timeout_s: float = Field(5.0, gt=0, description="Each request to a server; one that fails is not retried: evo "
                                                    "warns once and the next sync sends what is missing.")

    @field_validator("backend", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare `off` as false

    @model_validator(mode="after")
    def _uri(self) -> TrackingConfig:
        if self.backend == "mlflow" and not self.uri:
            raise ValueError("uri: required when backend is mlflow (e.g. http://127.0.0.1:5000)")
        if self.backend != "mlflow" and self.uri:
            raise ValueError(f"uri: only for backend mlflow (backend is {self.backend})")
        return self


class EvoConfig(_Strict):
    name: str = Field("evo", min_length=1, description="Run name, used in logs and Ray run names.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tune: SweepConfig = Field(default_factory=SweepConfig)
    healing: HealingConfig = Field(default_factory=HealingConfig)
    targeted: TargetedConfig = Field(default_factory=TargetedConfig)
    ray: RayWaitsConfig = Field(default_factory=RayWaitsConfig, description="Watching every wait on Ray.")
    ab: ABConfig = Field(default_factory=ABConfig, description="The A/B round's test plan.")
    jobs: JobsConfig = Field(default_factory=JobsConfig, description="Fine-tuning jobs' limits.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="The MLflow view of the lineage.")

    @model_validator(mode="after")
    def _consistent(self) -> EvoConfig:
        problems = []
        if self.model.path is None and not self.data.base:
            problems.append("data.base: required when model.path is empty (the tiny base is pretrained on it)")
        if self.data.self_replay is not None and self.model.path is None:
            problems.append("data.self_replay: for a pretrained base (model.path), as the tiny base replays its corpus")
        if self.train.rehearsal_kl > 0 and self.data.self_replay is None:
            problems.append("train.rehearsal_kl: distils data.self_replay's rows, and there is no data.self_replay")
        if self.train.checkpoint_every > self.train.steps:
            problems.append("train.checkpoint_every: larger than train.steps, so no checkpoint would be kept")
        if self.train.batch_size < self.train.num_workers:
            problems.append("train.batch_size: smaller than train.num_workers")
        if self.data.val_fraction + self.data.test_fraction >= 0.9:
            problems.append(f"data.val_fraction + data.test_fraction: {self.data.val_fraction + self.data.test_fraction:g} "
                            "leaves less than 10% of each delta to train on")
        if self.tune.steps and self.train.checkpoint_every > min(self.tune.steps):
            problems.append(f"tune.steps: {min(self.tune.steps)} is fewer than train.checkpoint_every "
                            f"({self.train.checkpoint_every}), so a sweep trial of that length would keep no checkpoint")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} problem(s):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        for part in msg.split("; "):
            lines.append(f"  - {where}: {part}" if where != "(top level)" else f"  - {part}")
    return "\n".join(lines)


def _set_dotted(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}={raw}: {k} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Set each `a.b=value` (value parsed as YAML) in a config tree, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        k, v = item.split("=", 1)
        _set_dotted(tree, k.strip(), v)
    return tree


def resolve_paths(cfg: EvoConfig, base_dir: Path) -> EvoConfig:
    """Make data/probe paths absolute, relative to the config file's folder."""

    def fix(p: Optional[str]) -> Optional[str]:
        return None if p is None else str((base_dir / p).resolve()) if not Path(p).is_absolute() else p

    cfg.data.base = fix(cfg.data.base)
    cfg.data.generations = [fix(p) for p in cfg.data.generations]
    cfg.data.corrections = {g: fix(p) for g, p in cfg.data.corrections.items()}
    cfg.eval.probes = fix(cfg.eval.probes)
    cfg.eval.val_probes = fix(cfg.eval.val_probes)
    if cfg.data.self_replay is not None:
        cfg.data.self_replay.prompts = fix(cfg.data.self_replay.prompts)
    if cfg.eval.general is not None:
        cfg.eval.general.questions = fix(cfg.eval.general.questions)
        cfg.eval.general.open_prompts = fix(cfg.eval.general.open_prompts)
    cfg.healing.paraphrases = fix(cfg.healing.paraphrases)
    if cfg.model.path and (base_dir / cfg.model.path).exists():
        cfg.model.path = str((base_dir / cfg.model.path).resolve())
    return cfg


def from_dict(tree: dict[str, Any], source: str = "config") -> EvoConfig:
    try:
        return EvoConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> EvoConfig:
    """Load a YAML config (or defaults when `path` is None) with `a.b=value` overrides."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    apply_overrides(tree, overrides)
    cfg = from_dict(tree, source)
    return resolve_paths(cfg, path.parent if path is not None else Path.cwd())


def saved_config(root: Path, overrides: list[str] = ()) -> EvoConfig:
    """The resolved config of the latest run under a local lineage root, with `a.b=value` overrides."""
    path = Path(root) / "run_config.json"
    if not path.exists():
        raise ConfigError(f"{path}: no run config here; run `evo run` or `evo demo` with this --root first")
    return from_dict(apply_overrides(read_json(path), list(overrides)), str(path))


def verb_overrides(sets: list[str] | None, skip_invalid: bool = False) -> list[str]:
    """The overrides a verb's `--set KEY=VALUE` and `--skip-invalid` give, in that order."""
    return (sets or []) + (["data.skip_invalid=true"] if skip_invalid else [])


def cmd_check(root: str, config: str, sets: list[str] | None) -> int:
    """`evo check CONFIG`: load it (every problem listed in the ConfigError) and say it is valid."""
    cfg = load_config(config, sets or [])
    print(f"{config}: valid ({len(cfg.data.generations)} generations)")
    return 0
