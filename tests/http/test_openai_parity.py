"""OpenAI parity of the inference endpoints, through the official `openai` SDK against evo's real
HTTP app on 127.0.0.1 (uvicorn, no Ray: test_hostile's server and tiny model), every response shape
validated against the vendored subset of OpenAI's published OpenAPI schema (tests/http/openapi), and
docs/service.md's field table checked against what the server does."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import openai
import pytest
import torch

from evo.inference.pool import ModelPool
from evo.model.generate import Sampling
from evo.openai_api import IGNORED, ChatRequest, CompletionRequest
from tests.http import test_hostile as hostile

# test_hostile's server (uvicorn on 127.0.0.1, a real ServerState over a fresh root per test) and model
model, served_app, server, openai_shaped = hostile.model, hostile.served_app, hostile.server, hostile.openai_shaped

HERE = Path(__file__).parent
SUBSET = json.loads((HERE / "openapi" / "openai-subset.json").read_text())
CHAT = {"model": "champion", "messages": [{"role": "user", "content": "hi"}]}


def _openapi(node):
    """OpenAPI's `nullable: true` as JSON Schema: the schema, or null."""
    if isinstance(node, list):
        return [_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _openapi(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def _schemas() -> dict:
    schemas = _openapi(copy.deepcopy(SUBSET["components"]["schemas"]))
    # OpenAI's API sends null for an echoed prompt's first token (it follows nothing); the schema
    # types these as numbers and objects (tests/http/openapi/README.md).
    legacy = schemas["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"]["logprobs"]
    fields = legacy["anyOf"][0]["properties"]
    fields["token_logprobs"]["items"] = {"type": ["number", "null"]}
    fields["top_logprobs"]["items"] = {"anyOf": [fields["top_logprobs"]["items"], {"type": "null"}]}
    return schemas


SCHEMAS = _schemas()


def conforms(body: dict, name: str) -> dict:
    """`body` validated against OpenAI's schema `name` (the vendored subset); returns it."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": SCHEMAS}}
    jsonschema.Draft202012Validator(schema).validate(body)
    return body


def raw_json(server, path: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    status, _, answer = server.raw("POST", path, json.dumps(body).encode(), headers)
    return status, answer


def events(server, path: str, body: dict) -> list:
    """The JSON of each server-sent event of a streamed answer, up to [DONE] (asserted to come last)."""
    status, _, text = server.raw("POST", path, json.dumps({**body, "stream": True}).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 200, text
    data = [line.removeprefix("data: ") for line in text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


# -- response shapes -------------------------------------------------------------------------------

def test_chat_answers_have_openais_shape(server):
    status, body = raw_json(server, "/v1/chat/completions", {**CHAT, "max_tokens": 3})
    assert status == 200
    conforms(body, "CreateChatCompletionResponse")
    choice = body["choices"][0]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None  # present, and null
    answer = server.sdk().chat.completions.create(**CHAT, max_tokens=3)
    assert answer.choices[0].message.role == "assistant" and answer.usage.total_tokens > 0


def test_errors_have_openais_shape_on_every_inference_route(server):
    with pytest.raises(jsonschema.ValidationError):  # the schema catches what the issue measured on main
        conforms({"error": {"message": "x", "type": "invalid_request_error", "param": None, "code": 400}}, "ErrorResponse")
    cases = [("POST", "/v1/chat/completions", {**CHAT, "temperature": 9}, 400),
             ("POST", "/v1/chat/completions", {**CHAT, "model": "gen-99"}, 404),
             ("POST", "/v1/completions", {"model": "champion", "prompt": "hi", "logprobs": 6}, 400),
             ("POST", "/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, 400),
             ("GET", "/v1/models/gen-99", None, 404)]
    for method, path, body, expected in cases:
        status, _, answer = server.raw(method, path, json.dumps(body).encode() if body else None,
                                       {"Content-Type": "application/json"})
        assert status == expected, (path, answer)
        conforms(answer, "ErrorResponse")
        assert openai_shaped(answer)["param"] in (None, "temperature", "model", "logprobs", "tools")


def test_models_have_created_and_owned_by_and_can_be_retrieved(server):
    """Validated against the vendored schema, whose source commit is named beside it."""
    commit = SUBSET["x-evo-source"]["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and commit in (HERE / "openapi" / "README.md").read_text()
    with pytest.raises(jsonschema.ValidationError):
        conforms({"id": "evo", "object": "model", "owned_by": "evo"}, "Model")  # no created: refused
    listed = server.raw("GET", "/v1/models")[2]
    conforms(listed, "ListModelsResponse")
    client = server.sdk()
    for m in client.models.list().data:
        assert isinstance(m.created, int) and m.created > 1_600_000_000 and m.owned_by
        one = client.models.retrieve(m.id)
        assert (one.id, one.created, one.owned_by) == (m.id, m.created, m.owned_by)
        conforms(server.raw("GET", f"/v1/models/{m.id}")[2], "Model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gen-99")


def _tenant_model(root, gen: str, sha: str, owner: str, jid: str) -> str:
    """A model on `owner`'s branch, as a succeeded job leaves it (registry row, job file); its ft: name."""
    from evo.atomic import atomic_write_json
    from evo.lineage.registry import Registry

    reg = Registry(root)
    reg.add(sha, gen, reg.alias("champion"), "promoted", owner=owner)
    name = f"ft:gen-0:{gen}:{sha[:8]}"
    atomic_write_json(root / "service" / "jobs" / f"{jid}.json", {
        "id": jid, "object": "fine_tuning.job", "created_at": 1, "created_ns": 1, "owner": owner, "branch": owner,
        "status": "succeeded", "model": "gen-0", "fine_tuned_model": name, "finished_at": 1_700_000_000,
        "evo": {"gen_id": gen, "sha": sha}})
    return name


def test_a_tenants_models_are_owned_by_its_name_and_no_other_tenant_sees_it(server):
    """owned_by is the name an admin gave the key (`evo keys create --name`), not its id; a tenant's list
    and retrieve never carry another tenant's name or key id; the shared line's models are evo's."""
    from evo.http.keys import KeyStore

    keys = KeyStore(server.root)
    acme, acme_row = keys.create("fine-tune", "acme-corp")
    globex, globex_row = keys.create("fine-tune", "globex")
    admin, _ = keys.create("admin", "ops")
    (server.root / "service" / "jobs").mkdir(parents=True, exist_ok=True)
    mine = _tenant_model(server.root, "gen-1", "a" * 64, acme_row["id"], "ftjob-acme")
    theirs = _tenant_model(server.root, "gen-2", "b" * 64, globex_row["id"], "ftjob-globex")
    server.state.gw.reload()
    listed = server.raw("GET", "/v1/models", headers={"Authorization": f"Bearer {acme}"})[2]
    conforms(listed, "ListModelsResponse")
    owners = {m["id"]: m["owned_by"] for m in listed["data"]}
    assert owners["gen-1"] == owners[mine] == "acme-corp" and owners["champion"] == owners["gen-0"] == "evo"
    assert theirs not in owners and "gen-2" not in owners
    text = json.dumps(listed)
    assert "globex" not in text and globex_row["id"] not in text and acme_row["id"] not in text
    assert server.sdk(acme).models.retrieve(mine).owned_by == "acme-corp"
    with pytest.raises(openai.NotFoundError) as hidden:
        server.sdk(acme).models.retrieve(theirs)
    assert "globex" not in json.dumps(hidden.value.body)
    everyone = {m.id: m.owned_by for m in server.sdk(admin).models.list().data}  # an admin sees every tenant
    assert everyone[mine] == "acme-corp" and everyone[theirs] == "globex"
    keys.revoke("globex")  # a revoked key's models keep their owner's name
    assert {m.id: m.owned_by for m in server.sdk(admin).models.list().data}[theirs] == "globex"


def _adapter(root, base_sha: str, seed: int) -> str:
    """A LoRA adapter on the base, stored by sha as a job's checkpoint is (no Ray: peft, then the model store)."""
    import tempfile

    from peft import LoraConfig, get_peft_model

    from evo.model.artifacts import ModelStore
    from evo.model.loading import load_causal_lm

    store = ModelStore(root)
    torch.manual_seed(seed)
    peft = get_peft_model(load_causal_lm(str(store.weights_dir(base_sha)), "float32"),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with tempfile.TemporaryDirectory() as folder:
        peft.save_pretrained(folder)
        return store.put_adapter(Path(folder), base_sha, {"gen_id": "gen-1", "checkpoint_step": seed})


def test_a_kept_checkpoint_is_a_model_of_its_jobs_owner_only(server):
    """A checkpoint a job kept (`evo.job.checkpoints`: its fine_tuned_model_checkpoint name -> sha) answers
    chat for the job's owner (and admin) and is listed beside the job's model; another tenant gets 404 on
    it, as on the model. It goes with the job's model: DELETE on it is a 400 naming that model, and once
    the model is deleted it is a 404 too. A checkpoint the job did not keep is a 404 that says which are."""
    from evo.atomic import atomic_write_json, read_json
    from evo.http.keys import KeyStore

    keys = KeyStore(server.root)
    acme, acme_row = keys.create("fine-tune", "acme-corp")
    globex, _ = keys.create("fine-tune", "globex")
    (server.root / "service" / "jobs").mkdir(parents=True, exist_ok=True)
    base = server.state.gw.aliases["champion"]
    final, early = _adapter(server.root, base, 10), _adapter(server.root, base, 5)
    model = _tenant_model(server.root, "gen-1", final, acme_row["id"], "ftjob-acme")
    path = server.root / "service" / "jobs" / "ftjob-acme.json"
    job = read_json(path)
    ckpt = "ft:gen-0:gen-1:ftjob-acme:ckpt-step-5"
    job["evo"]["checkpoints"] = {ckpt: early, "ft:gen-0:gen-1:ftjob-acme:ckpt-step-10": final}
    atomic_write_json(path, job)
    server.state.gw.reload()
    msg = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answer = server.sdk(acme).chat.completions.create(model=ckpt, **msg)
    assert answer.model == ckpt and answer.model_extra["evo"]["sha"] == early
    listed = {m.id: m for m in server.sdk(acme).models.list().data}
    assert listed[ckpt].model_extra["checkpoint_of"] == model and listed[ckpt].owned_by == "acme-corp"
    for name in (ckpt, model):
        with pytest.raises(openai.NotFoundError):
            server.sdk(globex).chat.completions.create(model=name, **msg)
        with pytest.raises(openai.NotFoundError):
            server.sdk(globex).models.retrieve(name)
    assert ckpt not in {m.id for m in server.sdk(globex).models.list().data}
    with pytest.raises(openai.NotFoundError) as unkept:
        server.sdk(acme).chat.completions.create(model="ft:gen-0:gen-1:ftjob-acme:ckpt-step-1", **msg)
    assert "jobs.keep_checkpoints" in unkept.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        server.sdk(acme).models.delete(ckpt)
    assert refused.value.body["param"] == "model" and model in refused.value.body["message"]
    assert server.sdk(acme).models.delete(model).deleted
    with pytest.raises(openai.NotFoundError):
        server.sdk(acme).chat.completions.create(model=ckpt, **msg)


# -- chat fields -----------------------------------------------------------------------------------

def test_max_completion_tokens_takes_precedence_over_max_tokens(server):
    client = server.sdk()
    answer = client.chat.completions.create(**CHAT, max_tokens=12, max_completion_tokens=2, temperature=0)
    assert answer.usage.completion_tokens <= 2
    with pytest.raises(openai.BadRequestError) as refused:  # its own limit, named as itself
        client.chat.completions.create(**CHAT, max_tokens=4, max_completion_tokens=100_000)
    assert refused.value.body["param"] == "max_completion_tokens"


def test_a_developer_message_is_the_system_message(server):
    client = server.sdk()
    ask = [{"role": "user", "content": "hello"}]
    as_system = client.chat.completions.create(model="champion", messages=[{"role": "system", "content": "hi"}] + ask,
                                               max_tokens=6, temperature=0)
    as_developer = client.chat.completions.create(
        model="champion", messages=[{"role": "developer", "content": "hi"}] + ask, max_tokens=6, temperature=0)
    assert as_developer.choices[0].message.content == as_system.choices[0].message.content
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens


def test_stream_options_include_usage_exactly_as_specified(server):
    for body in (CHAT, {**CHAT, "n": 2}):  # token by token, and n > 1 (each choice whole)
        plain = events(server, "/v1/chat/completions", {**body, "max_tokens": 3})
        assert all(e["choices"] for e in plain) and not any("usage" in e for e in plain)
        counted = events(server, "/v1/chat/completions", {**body, "max_tokens": 3,
                                                          "stream_options": {"include_usage": True}})
        *chunks, last = counted
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
        assert all(e["choices"] and e["usage"] is None for e in chunks)
        for e in counted:
            conforms(e, "CreateChatCompletionStreamResponse")
            assert e["model"] == "champion" and isinstance(e["created"], int)
    stream = server.sdk().chat.completions.create(**CHAT, max_tokens=3, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content) or \
        chunks[-1].usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError) as refused:
        server.sdk().chat.completions.create(**CHAT, stream_options={"include_usage": True})
    assert refused.value.body["param"] == "stream_options"


def _model_logprobs(server, ids: list[int]) -> torch.Tensor:
    """log p(ids[p] | ids[:p]) for p >= 1, straight from the served model's forward pass."""
    sha = server.state.gw.aliases["champion"]
    m, _ = server.state.pool.get(sha)
    with torch.no_grad():
        logits = m(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def test_chat_logprobs_and_top_logprobs(server):
    client = server.sdk()
    answer = client.chat.completions.create(**CHAT, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    choice = answer.choices[0]
    content = choice.logprobs.content
    assert content and "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0 and t.bytes == list(t.token.encode())
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob, abs=1e-5)  # greedy: the likeliest token
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
    conforms(server.raw("POST", "/v1/chat/completions", json.dumps(
        {**CHAT, "max_tokens": 5, "logprobs": True, "top_logprobs": 2}).encode(),
        {"Content-Type": "application/json"})[2], "CreateChatCompletionResponse")
    for bad, param in (({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
                       ({"logprobs": True, "stream": True}, "logprobs")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**CHAT, **bad)
        assert refused.value.body["param"] == param


# -- completions: logprobs, echo, lists and token ids (log-likelihood scoring) -------------------------

def test_completions_score_token_id_prompts_as_lm_eval_asks(server):
    """lm-eval's local-completions: echo, logprobs 1, max_tokens 1, a batch of token-id prompts; it reads
    token_logprobs[ctxlen:-1] and top_logprobs, which must be the model's own."""
    tok = server.state.pool.get(server.state.gw.aliases["champion"])[1]
    prompts = [tok("hello hi")["input_ids"], tok("assistant hello user")["input_ids"]]
    answer = server.sdk().completions.create(model="champion", prompt=prompts, echo=True, logprobs=1, max_tokens=1,
                                             temperature=0, seed=1234)
    assert [c.index for c in answer.choices] == [0, 1]
    for ids, choice in zip(prompts, answer.choices):
        lp = choice.logprobs
        assert len(lp.tokens) == len(ids) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        expected = _model_logprobs(server, ids)
        assert lp.token_logprobs[1:len(ids)] == pytest.approx(expected.tolist(), abs=1e-4)
        assert all(len(t) == 1 and max(t.values()) >= v - 1e-6 for t, v in zip(lp.top_logprobs[1:], lp.token_logprobs[1:]))
        assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
        assert choice.text.startswith(tok.decode(ids))
    body = raw_json(server, "/v1/completions", {"model": "champion", "prompt": prompts, "echo": True, "logprobs": 1,
                                                "max_tokens": 1})[1]
    conforms(body, "CreateCompletionResponse")
    scored = raw_json(server, "/v1/completions", {"model": "champion", "prompt": prompts[0], "echo": True,
                                                  "logprobs": 0, "max_tokens": 0})[1]["choices"][0]
    assert len(scored["logprobs"]["tokens"]) == len(prompts[0]) and scored["text"] == tok.decode(prompts[0])


def test_completions_take_a_list_of_text_prompts_with_n_each(server):
    answer = server.sdk().completions.create(model="champion", prompt=["hello", "hi user"], n=2, max_tokens=3,
                                             temperature=0, logprobs=2)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert answer.choices[0].text == answer.choices[1].text  # greedy: n equal answers per prompt
    alone = server.sdk().completions.create(model="champion", prompt="hi user", max_tokens=3, temperature=0)
    assert answer.choices[2].text == alone.choices[0].text
    for c in answer.choices:
        assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) and all(len(t) == 2 for t in c.logprobs.top_logprobs)
    with pytest.raises(openai.BadRequestError) as refused:
        server.sdk().completions.create(model="champion", prompt=[[1, 10**6]], max_tokens=1)
    assert refused.value.body["param"] == "prompt" and "vocabulary" in refused.value.body["message"]


# -- n and seed ------------------------------------------------------------------------------------------

def test_n_samples_are_distinct_draws_and_a_seed_repeats_them(server):
    client = server.sdk()
    first = client.chat.completions.create(**CHAT, n=4, temperature=1.5, max_tokens=8, seed=7)
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1
    again = client.chat.completions.create(**CHAT, n=4, temperature=1.5, max_tokens=8, seed=7)
    assert [c.message.content for c in again.choices] == texts
    streamed = events(server, "/v1/chat/completions", {**CHAT, "temperature": 1.5, "max_tokens": 8, "seed": 7})
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed) == texts[0]  # a stream: choice 0


def test_batched_requests_keep_each_ones_seed(server):
    """What @serve.batch hands the pool: several requests at once. A seeded request answers the same
    alone, beside a copy of itself and beside unseeded requests for the same model and settings."""
    sha = server.state.gw.aliases["champion"]
    pool = ModelPool(str(server.root), max_models=1)

    def req(seed):
        return {"sha": sha, "sampling": Sampling(8, 1.5, 1.0, 2, seed), "stops": [], "prompts": ["hello hi"]}

    def texts(result):
        return [o["text"] for o in result["outputs"]]

    alone = texts(pool.run([req(11)])[0])
    together = pool.run([req(11), req(None), req(11), req(5)])
    assert texts(together[0]) == alone and texts(together[2]) == alone
    assert texts(together[3]) == texts(pool.run([req(5)])[0])


# -- refused fields ----------------------------------------------------------------------------------------

def test_response_format_and_tools_are_refused_naming_the_param(server):
    client = server.sdk()
    for kw, param in (({"response_format": {"type": "json_object"}}, "response_format"),
                      ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                      ({"tool_choice": "auto"}, "tool_choice")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**CHAT, **kw)
        assert refused.value.body["param"] == param and "evo does not support" in refused.value.body["message"]
    assert client.chat.completions.create(**CHAT, max_tokens=1, response_format={"type": "text"}).choices


def test_an_unknown_field_is_refused_naming_it(server):
    with pytest.raises(openai.BadRequestError) as refused:
        server.sdk().chat.completions.create(**CHAT, extra_body={"mirostat": 2})
    assert refused.value.body["param"] == "mirostat" and "Unrecognized request argument" in refused.value.body["message"]


# -- the field table in docs/service.md ---------------------------------------------------------------------

def _field_tables() -> dict[str, list[dict]]:
    """docs/service.md's "API fields: inference" tables, by endpoint: one row per field."""
    text = (Path(__file__).parents[2] / "docs" / "service.md").read_text()
    section = text.split("## API fields: inference", 1)[1].split("\n## ", 1)[0]
    tables, endpoint = {}, None
    for line in section.splitlines():
        heading = re.match(r"`POST (/v1/\S+)`:", line)
        if heading:
            endpoint = heading.group(1)
            tables[endpoint] = []
        elif line.startswith("| `") and endpoint:
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[endpoint].append({"field": cells[0].strip("`"), "state": cells[1],
                                     "value": cells[2].strip("`"), "notes": cells[3]})
    return tables


TABLES = _field_tables()
REFUSED_ROWS = [(path, row) for path, rows in TABLES.items() for row in rows if row["state"] == "refused"]


def test_the_field_table_lists_every_field_with_one_of_three_states(server):
    """Every field of evo's request models is in the table, in one of the three states; each ignored
    one is taken (a 200)."""
    for path, kind in (("/v1/chat/completions", ChatRequest), ("/v1/completions", CompletionRequest)):
        rows = TABLES[path]
        assert sorted(r["field"] for r in rows) == sorted(kind.model_fields), path
        assert {r["state"] for r in rows} <= {"honoured", "refused", "ignored"}
        base = CHAT if path == "/v1/chat/completions" else {"model": "champion", "prompt": "hi"}
        for r in rows:
            assert r["state"] != "refused" or r["value"], r
            if r["state"] == "ignored":
                assert r["notes"] and r["field"] in IGNORED, r
                status, body = raw_json(server, path, {**base, "max_tokens": 1,
                                                       r["field"]: {"metadata": {"k": "v"}}.get(r["field"], "x")})
                assert status == 200, body


def _row_id(case) -> str:
    path, row = case
    return ("chat-" if "chat" in path else "completions-") + row["field"]


@pytest.mark.parametrize("path,row", REFUSED_ROWS, ids=[_row_id(c) for c in REFUSED_ROWS])
def test_each_refused_field_of_the_table_is_a_400_naming_it(server, path, row):
    base = CHAT if path == "/v1/chat/completions" else {"model": "champion", "prompt": "hi"}
    status, body = raw_json(server, path, {**base, "max_tokens": 1, row["field"]: json.loads(row["value"])})
    assert status == 400, body
    error = openai_shaped(body)
    assert error["param"] == row["field"] and "evo" in error["message"], error
    assert server.batched == []


def _service_tables() -> dict[str, list[dict]]:
    """docs/service.md's "API fields: files, fine-tuning jobs and models" tables, by "METHOD path"."""
    text = (Path(__file__).parents[2] / "docs" / "service.md").read_text()
    section = text.split("## API fields: files, fine-tuning jobs and models", 1)[1].split("\n## ", 1)[0]
    tables, route = {}, None
    for line in section.splitlines():
        heading = re.match(r"`(GET|POST|DELETE) (/v1/\S+)`( \(.*\))?:$", line)
        if heading:
            route = f"{heading.group(1)} {heading.group(2)}"
            tables[route] = []
        elif line.startswith("| `") and route:
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[route].append({"field": cells[0].strip("`"), "state": cells[1], "value": cells[2].strip("`"),
                                  "notes": cells[3]})
    return tables


SERVICE_TABLES = _service_tables()
SERVICE_REFUSED = [(route, row) for route, rows in SERVICE_TABLES.items() for row in rows if row["state"] == "refused"]


def test_the_service_field_tables_are_the_routes_fields():
    """The body fields of the job and file POSTs and the query parameters of each GET route are exactly
    their table's rows, each in one of the three states."""
    from evo.finetune.jobs import JOB_FIELDS
    from evo.http import files_jobs_routes

    assert sorted(r["field"] for r in SERVICE_TABLES["POST /v1/fine_tuning/jobs"]) == sorted(JOB_FIELDS)
    assert {r["field"] for r in SERVICE_TABLES["POST /v1/files"]} == {"file", "purpose", "expires_after"}
    gets = {r.path.replace("{job_id}", "{fine_tuning_job_id}"): r for r in files_jobs_routes.router.routes
            if "GET" in r.methods}
    for route, rows in SERVICE_TABLES.items():
        assert {r["state"] for r in rows} <= {"honoured", "refused", "ignored"}, route
        assert all(r["state"] != "refused" or r["value"] for r in rows), route
        if route.startswith("GET "):
            query = {p.name for p in gets[route[4:]].dependant.query_params}
            read_directly = {"metadata"} if route == "GET /v1/fine_tuning/jobs" else set()  # `_metadata_filter`
            assert {r["field"] for r in rows} == query | read_directly, route


@pytest.mark.parametrize("route,row", SERVICE_REFUSED, ids=[f"{r.split()[1]}-{row['field']}" for r, row in SERVICE_REFUSED])
def test_each_refused_service_field_is_a_400_naming_it(server, route, row):
    """One request per refused row, as the SDK sends it; nothing is kept of it."""
    client, value = server.sdk(), json.loads(row["value"])
    if route == "POST /v1/files":
        with pytest.raises(openai.BadRequestError) as refused:
            client.files.create(file=("t.jsonl", hostile.TRAIN), purpose="fine-tune", **{row["field"]: value})
        assert client.files.list().data == []
        body = refused.value.body
    else:
        train = client.files.create(file=("t.jsonl", hostile.TRAIN), purpose="fine-tune")
        status, body = raw_json(server, "/v1/fine_tuning/jobs", {"model": "champion", "training_file": train.id,
                                                                 row["field"]: value})
        assert status == 400, body
        body = body["error"]
        assert client.fine_tuning.jobs.list().data == []
    assert body["param"] == row["field"] and "evo" in body["message"], body


def test_an_unknown_field_of_a_job_or_an_upload_is_refused_naming_it(server):
    client = server.sdk()
    train = client.files.create(file=("t.jsonl", hostile.TRAIN), purpose="fine-tune")
    status, body = raw_json(server, "/v1/fine_tuning/jobs", {"model": "champion", "training_file": train.id,
                                                             "training_epochs": 2})
    assert status == 400 and openai_shaped(body)["param"] == "training_epochs", body
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("t.jsonl", hostile.TRAIN), purpose="fine-tune", extra_body={"label": "x"})
    assert refused.value.body["param"] == "label"


def test_jobs_list_filters_by_metadata_as_the_sdk_sends_it(server):
    """`client.fine_tuning.jobs.list(metadata={...})` (the SDK's `metadata[k]=v` query): only the jobs
    with every pair; `metadata=null`: the jobs without metadata; batch_size "auto" is accepted as the
    lineage config's."""
    from evo.atomic import atomic_write_json
    from evo.finetune.jobs import parse_hyperparameters

    folder = server.root / "service" / "jobs"
    for i, meta in enumerate(({"team": "search", "run": "a"}, {"team": "search", "run": "b"}, {"team": "ads"}, None)):
        atomic_write_json(folder / f"ftjob-{i}.json", {
            "id": f"ftjob-{i}", "object": "fine_tuning.job", "created_at": i, "created_ns": i, "owner": "",
            "status": "succeeded", "model": "gen-0", "fine_tuned_model": None, "training_file": "file-x",
            "validation_file": None, "hyperparameters": {}, "organization_id": "evo", "result_files": [],
            "seed": 0, "trained_tokens": None, "error": None, "finished_at": i, "metadata": meta, "evo": {}})
    sdk = server.sdk()
    ids = lambda **kw: [j.id for j in sdk.fine_tuning.jobs.list(**kw)]  # noqa: E731
    assert ids(metadata={"team": "search"}) == ["ftjob-1", "ftjob-0"]
    assert ids(metadata={"team": "search", "run": "a"}) == ["ftjob-0"]
    assert ids() == ["ftjob-3", "ftjob-2", "ftjob-1", "ftjob-0"]
    status, _, body = server.raw("GET", "/v1/fine_tuning/jobs?metadata=null")
    assert status == 200 and [j["id"] for j in body["data"]] == ["ftjob-3"]
    status, _, body = server.raw("GET", "/v1/fine_tuning/jobs?metadata=team")
    assert status == 400 and hostile.openai_shaped(body)["param"] == "metadata"
    assert parse_hyperparameters({"batch_size": "auto", "n_epochs": "auto"}) == {"n_epochs": "auto"}
