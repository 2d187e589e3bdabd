"""EleutherAI's lm-evaluation-harness (`lm-eval`) against evo's real HTTP app on 127.0.0.1: its
`local-completions` model on a log-likelihood task and its `local-chat-completions` model on a
generation task, both defined in a local YAML over a local JSONL file (no hub). The app is served by
uvicorn without Ray Serve (test_hostile's server); the lineage is the session's tiny generation 0
(`base_root`, built on Ray once per session), hence the integration mark."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from evo.data.ingest import json_lines
from evo.data.records import parse_record
from evo.evals.suite import EvalSpec, accuracy, answer_budget
from evo.finetune.files import FileStore
from evo.finetune.submit import JobService, RayJobs
from evo.http.keys import Authenticator
from evo.http.state import ServerState
from evo.inference.gateway import Gateway, GatewaySettings
from evo.inference.pool import ModelPool
from evo.model.generate import greedy
from evo.model.prompts import prompt_and_completion
from tests.http import test_hostile as hostile

pytestmark = pytest.mark.integration
served_app = hostile.served_app

UTILS = '''
from evo.answers import normalize


def process_results(doc, results):
    """evo's exact match: the answer and the reference, each normalized as evo's evals do."""
    return {"exact_match": float(normalize(results[0]) == normalize(doc["answer"]))}
'''


@pytest.fixture(scope="module")
def lineage(base_root, served_app, tmp_path_factory):
    """The app answering from a copy of the session's generation 0 (the champion)."""
    root = tmp_path_factory.mktemp("lm-eval") / "lineage"
    shutil.copytree(base_root, root)
    pool = ModelPool(str(root), max_models=1)

    async def answer_batch(request: dict) -> dict:  # stands for the deployment's @serve.batch
        return (await asyncio.to_thread(pool.run, [request]))[0]

    gw = Gateway(GatewaySettings(str(root), 0.5, "lm-eval"))
    served_app.state = ServerState(gw=gw, files=FileStore(root), auth=Authenticator(root),
                                   jobs=JobService(root, RayJobs(root)), pool=pool, answer_batch=answer_batch)
    model, tok = pool.get(gw.aliases["champion"])
    return {"url": served_app.url, "model": model, "tok": tok, "root": root}


def _task(folder: Path, name: str, items: list[dict], body: str) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n" + body)


def _evaluate(model: str, model_args: dict, task: str, folder: Path, **kw) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task], log_samples=True,
                                  task_manager=TaskManager(include_path=str(folder)), **kw)
    return {"score": out["results"][task], "samples": out["samples"][task]}


def test_lm_eval_scores_log_likelihoods_over_local_completions(lineage, demo_dir, tmp_path, monkeypatch):
    """A two-choice task (the right translation against another item's) scored from the served
    `token_logprobs`: each choice's log-likelihood is the model's own, and so is the accuracy."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    base = [r for _, r in json_lines(demo_dir / "base.jsonl") if "prompt" in r][:12]
    items = [{"prompt": r["prompt"], "choices": [r["completion"], base[(i + 1) % len(base)]["completion"]], "label": 0}
             for i, r in enumerate(base)]
    _task(tmp_path, "evo_ll", items, "output_type: multiple_choice\ndoc_to_text: '{{prompt}}'\n"
          "doc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n")
    tok, model = lineage["tok"], lineage["model"]
    tok_dir = tmp_path / "tokenizer"
    tok.save_pretrained(tok_dir)
    got = _evaluate("local-completions", {"base_url": f"{lineage['url']}/v1/completions", "model": "champion",
                                          "tokenizer_backend": "huggingface", "tokenizer": str(tok_dir),
                                          "tokenized_requests": True, "batch_size": 6, "max_retries": 1},
                    "evo_ll", tmp_path)

    def loglik(context: str, continuation: str) -> float:  # as lm-eval splits the pair, from the model itself
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]  # lm-eval adds no BOS
        n = len(tok(context, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), dim=-1)
        return sum(float(logp[p - 1, whole[p]]) for p in range(n, len(whole)))

    expected = [[loglik(i["prompt"], c) for c in i["choices"]] for i in items]
    by_doc = {s["doc_id"]: s for s in got["samples"]}
    for doc_id, want in enumerate(expected):
        served = [r[0] for r in by_doc[doc_id]["filtered_resps"]]
        assert served == pytest.approx(want, abs=1e-3), items[doc_id]
    acc = sum(max(range(2), key=lambda k: w[k]) == 0 for w in expected) / len(items)
    assert got["score"]["acc,none"] == pytest.approx(acc) and not math.isnan(acc)


def test_lm_eval_generation_score_matches_evos_own_eval(lineage, demo_dir, tmp_path, monkeypatch):
    """A generation task over local-chat-completions: the harness's exact match on the served answers
    equals evo's own eval (`evo.evals.suite.accuracy`) of the same generation on the same items."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    chats = [r for _, r in json_lines(demo_dir / "base.jsonl") if "messages" in r][:10]
    records = [parse_record(r) for r in chats]
    tok, model = lineage["tok"], lineage["model"]
    spec = EvalSpec(qa_sets={}, holdout=records, probes=[], banned_phrases=[], val=[], max_new_tokens=12)
    budget = answer_budget(tok, [prompt_and_completion(r, tok)[1] for r in records], spec.max_new_tokens)
    items = [{"question": r["messages"][0]["content"], "answer": r["messages"][1]["content"]} for r in chats]
    _task(tmp_path, "evo_gen", items, "output_type: generate_until\ndoc_to_text: '{{question}}'\n"
          f"doc_to_target: '{{{{answer}}}}'\ngeneration_kwargs:\n  until: []\n  max_gen_toks: {budget}\n"
          "  do_sample: false\n  temperature: 0\nprocess_results: !function evo_utils.process_results\n"
          "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    (tmp_path / "evo_utils.py").write_text(UTILS)
    got = _evaluate("local-chat-completions", {"base_url": f"{lineage['url']}/v1/chat/completions",
                                               "model": "champion", "max_retries": 1},
                    "evo_gen", tmp_path, apply_chat_template=True)
    own = accuracy(model, tok, records, spec)
    assert own.total == len(items)
    assert got["score"]["exact_match,none"] == pytest.approx(own.value)
    served = {s["doc_id"]: s["filtered_resps"][0] for s in got["samples"]}
    evos = greedy(model, tok, [prompt_and_completion(r, tok)[0] for r in records], budget, spec.batch_size)
    assert [served[i] for i in range(len(items))] == evos  # the same answers, item by item
