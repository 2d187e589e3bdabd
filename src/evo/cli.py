"""`evo ...`: one table of verbs, the parser built from it, and `main`.

Each verb names the function that runs it, in the room it belongs to ("module:function"), and its
arguments. The function is imported only when its verb runs, so `evo --help` and the light verbs
(ledger, check, keys, promote, ...) never pay for torch, transformers and Ray (about 6 s). Each
function takes the verb's arguments as keywords, named as argparse stores them (`--skip-invalid`:
`skip_invalid`), `--root` first.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evo.config import ConfigError
from evo.data.ingest import IngestError
from evo.data.records import RecordError
from evo.errors import EvoError
from evo.lineage.decisions import DecisionError
from evo.ray_start import choose_auth_mode

DEFAULT_ROOT = "lineage"


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """One `add_argument` call: its flags (or positional name) and options."""
    return Arg(flags, options)


@dataclass(frozen=True)
class Verb:
    run: str  # "module:function", imported when the verb runs
    help: str
    args: tuple[Arg, ...] = ()


# Every verb's first argument.
ROOT = arg("--root", default=DEFAULT_ROOT, help=f"lineage root: a folder (default: ./{DEFAULT_ROOT}) or a URI every "
                                                 "node reaches (s3://, gs://, file://)")
# Arguments several verbs share.
CONFIG = arg("config", help="YAML run config")
SET = arg("--set", dest="sets", action="append", metavar="KEY=VALUE",
          help="override a config field, e.g. train.steps=100")
SKIP_INVALID = arg("--skip-invalid", action="store_true",
                   help="ingest the valid lines of a file with bad ones (reported), instead of none")
ADDRESS = arg("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
GEN_OR_CANDIDATE = arg("gen", nargs="?", help="generation, e.g. gen-2 (default: the candidate)")
DECISION_REASON = arg("--reason", help="why, for the ledger and the decision log")


def saved_set(example: str) -> Arg:
    return arg("--set", dest="sets", action="append", metavar="KEY=VALUE",
               help=f"override a field of the root's saved run config, e.g. {example}")


WEAK = (saved_set("targeted.seeds=20"),
        arg("--gen", help="generation to score (default: the champion)"),
        arg("--data", help="JSONL to score (default: every generation's val part)"),
        arg("--threshold", type=float, help="perplexity above which an example is weak (default: healing.weak_threshold)"))

VERBS: dict[str, Verb] = {
    "demo": Verb("evo.ab_round:cmd_demo", "generate the demo data, build generation 0 and run 3 generations locally", (
        SET, SKIP_INVALID,
        arg("--generations", type=int, help="demo generations after the base, 1-3 (default: 3; --base smollm2: 2)"),
        arg("--base", choices=["tiny", "smollm2"], default="tiny",
            help="tiny: a 0.5M-parameter Llama pretrained here on a made-up language (minutes); smollm2: "
                 "SmolLM2-135M-Instruct from its package's GGUF, on an invented tool catalogue in English (about 18 "
                 "minutes on 2 CPU cores)"),
        arg("--drift", action="store_true",
            help="then two drifting generations (the banned style, nothing new to learn): the gate rejects each for "
                 "its style drift over its parent, and the champion stays (the stop rule, for drift the gate lets "
                 "through, is shown by the test suite)"),
        arg("--ab-budget", type=int, default=100, help="pairs in the closing A/B round (0: none)"),
        arg("--port", type=int, default=8000, help="port of the A/B round's server on 127.0.0.1"))),
    "run": Verb("evo.driver:cmd_run", "run every generation of CONFIG not yet in the ledger (resumes)", (
        CONFIG, SET, SKIP_INVALID, ADDRESS,
        arg("--tune", action="store_true", help="search each generation with Ray Tune (config: tune)"))),
    "sweep": Verb("evo.driver:cmd_sweep",
                  "search the next generation with Ray Tune (lr, steps, replay k); the gate's evals pick the child",
                  (CONFIG, SET, SKIP_INVALID, ADDRESS)),
    "ledger": Verb("evo.lineage.ledger:cmd_ledger", "print the lineage ledger", (
        arg("--json", dest="as_json", action="store_true", help="print rows as JSON"),)),
    "report": Verb("evo.report:cmd_report",
                   "write ROOT/report.html: evals, loss curves, the lineage tree, healing, sweeps"),
    "weak": Verb("evo.curation.weak:cmd_weak", "rank examples by the model's perplexity and report the weak areas", WEAK),
    "targeted": Verb("evo.curation.targeted:cmd_targeted",
                     "write targeted variations of the weak areas' examples as the next delta", (
        *WEAK,
        arg("--out", help="JSONL to write (default: ROOT/targeted/<gen>.jsonl)"),
        arg("--seed", type=int, default=0, help="sampling seed"))),
    "experiment": Verb("evo.experiment:cmd_experiment",
                       "train on targeted and on random data of the same size, round after round, and compare", (
        saved_set("train.steps=100"),
        arg("--gen", help="start model (default: the champion)"),
        arg("--rounds", type=int, default=2, help="rounds; each trains one child per line"),
        arg("--seeds", type=int, default=3,
            help="independent replications, for a mean lead with a 95%% interval (default: 3)"),
        arg("--eval-size", type=int, default=40,
            help="evaluation examples drawn from the generator per seed (default: 40; no training record may be "
                 "a near-copy of one, so a larger set leaves less to train on)"),
        arg("--probe-size", type=int, default=120,
            help="probe examples (where weak areas are found) drawn per seed (default: 120)"),
        arg("--data", help="JSONL evaluation set (default: drawn from targeted.generator)"),
        arg("--probe", help="JSONL probe set, disjoint from the evaluation set (default: drawn)"),
        arg("--pool", help="JSONL to draw the random arm from (default: targeted.generator)"),
        arg("--steps", type=int, help="training steps per child (default: train.steps)"),
        arg("--seed", type=int, default=0),
        arg("--fresh", action="store_true", help="replace an earlier experiment instead of continuing it"),
        arg("--min-records", type=int, default=16,
            help="stop when the filter keeps fewer targeted records than this (default: 16)"),
        ADDRESS)),
    "correct": Verb("evo.healing.corrections:cmd_correct",
                    "record corrections (prompt, wrong, corrected, pattern, reason) for the next generation", (
        arg("--file", help="JSONL of corrections, one per line (all or none are recorded)"),
        arg("--prompt", help="the prompt that got a wrong answer"),
        arg("--wrong", help="the wrong output"),
        arg("--corrected", help="what the output should have been"),
        arg("--pattern", help="an id for the kind of error (e.g. date-format)"),
        arg("--reason", help="why it was wrong"))),
    "feedback": Verb("evo.ab.export:cmd_feedback",
                     "export an A/B round's votes, thumbs and the corrections as preference pairs (a JSONL delta)", (
        arg("action", choices=["export"]),
        arg("round_id", metavar="ROUND", help="the round's id, <champion sha[:12]>-<candidate sha[:12]> "
                                              "(GET /ab/rounds lists them)"),
        arg("--log", default="live", help="the feedback log, ROOT/ab/<log>.jsonl (default: live)"),
        arg("--out", help="JSONL to write (default: ROOT/feedback/<ROUND>.preference.jsonl); its summary goes "
                          "beside it"),
        arg("--no-corrections", action="store_true", help="leave the recorded corrections out"),
        arg("--tenant", action="append", metavar="KEY_ID",
            help="also use the prompts this tenant key asked (left out by default: a tenant's data stays on its "
                 "branch); repeatable; 'unrecorded': those logged before the server recorded who asked"))),
    "check": Verb("evo.config:cmd_check", "validate CONFIG and list every problem", (CONFIG, SET)),
    "ab": Verb("evo.ab_round:cmd_ab", "run an A/B round on the latest promoted generation, then promote or revert it", (
        arg("--budget", type=int, default=300, help="most distinct prompts asked side by side"),
        arg("--port", type=int, default=8000, help="port of the round's server on 127.0.0.1"),
        ADDRESS)),
    "promote": Verb("evo.lineage.decisions:cmd_promote", "make a generation (default: the candidate) the champion",
                    (GEN_OR_CANDIDATE, DECISION_REASON)),
    "reject": Verb("evo.lineage.decisions:cmd_reject",
                   "set a generation (default: the candidate) aside; the champion stays",
                   (GEN_OR_CANDIDATE, DECISION_REASON)),
    "revert": Verb("evo.lineage.decisions:cmd_revert",
                   "make an earlier generation on the champion's line the champion again", (
        arg("--to", required=True, help="the generation to restore, e.g. gen-1"), DECISION_REASON)),
    "serve": Verb("evo.http.app:cmd_serve",
                  "serve champion and candidate side by side over OpenAI-compatible HTTP (Ray Serve)", (
        arg("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"),
        arg("--port", type=int, default=8000),
        arg("--candidate-share", type=float, default=0.5, help="share of 'evo' traffic to the candidate"),
        arg("--replicas", type=int, default=1, help="server replicas; each holds both arms (default: 1)"),
        arg("--rate-limit", type=float, default=0,
            help="requests a minute per API key, per replica (default: 0, no limit); over it: 429"),
        arg("--max-upload-mb", type=float, default=16,
            help="largest training file POST /v1/files takes, in MiB (default: 16); larger gets 413"),
        arg("--num-gpus", type=float, default=0, help="GPUs per replica (0: CPU, half a core each); 1 on a GPU cluster"),
        arg("--api-docs", action="store_true",
            help="also serve FastAPI's /docs, /redoc and /openapi.json (off: Swagger's page loads CDN scripts)"),
        arg("--export-feedback-every", type=float, default=0, metavar="MIN",
            help="every MIN minutes, export each A/B round's votes and thumbs as preference pairs, as "
                 "`evo feedback export ROUND --no-corrections` does (default: 0, never; a folder root only)"),
        ADDRESS)),
    "run-job": Verb("evo.driver:cmd_run_job", "run one fine-tuning job of `evo serve`'s API (what its Ray job runs)", (
        arg("job", help="the job's id (ftjob-...)"), ADDRESS)),
    "keys": Verb("evo.http.keys:cmd_keys", "API keys of `evo serve`: create (printed once), list, revoke", (
        arg("action", choices=["create", "list", "revoke"]),
        arg("which", nargs="?", help="revoke: the key's id or name"),
        arg("--scope", choices=["inference", "fine-tune", "admin"], default="inference",
            help="create: inference (ask the models), fine-tune (also files and jobs), admin (also promote, revert, "
                 "split; sees every tenant)"),
        arg("--name", help="create: a name to list and revoke it by"))),
    "export": Verb("evo.lineage.export:cmd_export",
                   "write a generation as a merged Hugging Face folder or a llama.cpp GGUF file", (
        arg("gen", help="generation id (gen-2), sha or 8+ character prefix, champion or candidate"),
        arg("--format", dest="fmt", choices=["merged", "gguf"], default="merged",
            help="merged: safetensors + tokenizer + meta.json; gguf: one llama.cpp file"),
        arg("--outtype", choices=["f16", "q8_0"], default="f16", help="GGUF weights (default: f16)"),
        arg("--out", help="folder (merged) or .gguf file (default: ROOT/exports/GEN...)"))),
    "tracking": Verb("evo.tracking.live:cmd_sync", "the lineage in MLflow: `sync` rebuilds the root's whole view "
                     "from its files (idempotent; after a server was down, or for a root made before tracking)", (
        arg("action", choices=["sync"]),
        arg("--uri", help="send it to this MLflow tracking URI from now on (default: the root's, else its config's "
                          "tracking section: the embedded store)"))),
    "compare-bases": Verb("evo.driver:cmd_compare_bases",
                          "run CONFIG's generations on each --base and compare quality, training time and answer "
                          "latency", (
        CONFIG, SET,
        arg("--base", action="append", required=True,
            help="a base: tiny (built from data.base), smollm2, or any model.path (give two or more)"),
        arg("--generations", type=int, help="generations after the base (default: all of CONFIG's)"),
        arg("--prompts", type=int, default=16, help="test prompts timed per champion (default: 16)"),
        ADDRESS)),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evo", description="Improve a language model in small, audited generations, on Ray.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        s = sub.add_parser(name, help=verb.help, description=verb.help)
        for a in (ROOT, *verb.args):
            s.add_argument(*a.flags, **a.options)
    return p


def function(verb: Verb) -> Callable[..., int]:
    """The function that runs `verb`, imported now."""
    module, name = verb.run.split(":")
    return getattr(importlib.import_module(module), name)  # lazy: one verb's room, only when that verb runs


def main(argv: list[str] | None = None) -> int:
    choose_auth_mode()
    args = vars(parser().parse_args(argv))
    verb = args.pop("verb")
    try:
        return function(VERBS[verb])(**args)
    except ConfigError as e:
        print(f"evo: config error: {e}", file=sys.stderr)
        return 2
    except (IngestError, RecordError) as e:  # RecordError: a record where it cannot be used (a preference pair in SFT)
        print(f"evo: data error: {e}", file=sys.stderr)
        return 2
    except DecisionError as e:
        print(f"evo: decision refused: {e}", file=sys.stderr)
        return 2
    except EvoError as e:
        if verb in ("keys", "tracking"):
            print(f"evo: {e}", file=sys.stderr)
            return 2
        print(f"evo: {e}\nevo: nothing was recorded for the failed generation; fix the cause and "
              "run the same command again to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nevo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
