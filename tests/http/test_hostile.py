"""Hostile clients against evo's real HTTP app, served by uvicorn on 127.0.0.1 (one server for the
module; no Ray: the replica's state is a real `ServerState` on a real lineage root with one tiny
model, swapped per test through the app's `server_state` dependency). Requests are real HTTP, made
with the official `openai` SDK where it can express them and with `http.client` where an attacker's
request is not one the SDK would send (a forged Host, a text/plain POST, a body nested 100 000 deep)."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import threading
import time

import openai
import pytest

from evo.config import TinyModelConfig
from evo.finetune.files import FileStore
from evo.finetune.submit import JobService, RayJobs
from evo.http.app import api
from evo.http.keys import Authenticator, KeyStore
from evo.http.state import MAX_JSON_BYTES, ServerState, server_state
from evo.inference.gateway import Gateway, GatewaySettings
from evo.inference.pool import ModelPool
from evo.lineage.registry import Registry
from evo.model.artifacts import ModelStore
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer
from evo.openai_api import OPENAI_TYPES, APIError, check_metadata

TRAIN = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n' * 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """One tiny base model (the champion of every test's root)."""
    store = tmp_path_factory.mktemp("hostile-model")
    tok = train_bpe_tokenizer(["user assistant system hello hi"] * 20, 300)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    m = build_tiny_llama(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok, 0)
    return store, ModelStore(store).put_base(lambda d: (m.save_pretrained(d), tok.save_pretrained(d)), {})


class Served:
    """The module's server, and the state its requests reach (set per test by `server`)."""

    def __init__(self, port: int):
        self.port, self.state, self.batched = port, None, []
        self.url = f"http://127.0.0.1:{port}"

    def sdk(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30)

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body as JSON or text) of one request exactly as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Length", str(len(body)))
            for k, v in sent.items():
                if v is not None:  # None: a header left out
                    conn.putheader(k, v)
            conn.endheaders(body)
            r = conn.getresponse()
            text = r.read().decode()
            try:
                return r.status, dict(r.getheaders()), json.loads(text)
            except json.JSONDecodeError:
                return r.status, dict(r.getheaders()), text
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served_app():
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    served = Served(port)
    api.dependency_overrides[server_state] = lambda: served.state
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield served
    server.should_exit = True
    thread.join(10)
    api.dependency_overrides.pop(server_state, None)


@pytest.fixture
def server(served_app, model, tmp_path):
    """The module's server, now answering from a fresh root (no key ever made; gen-0 the champion)."""
    store, sha = model
    root = tmp_path / "root"
    shutil.copytree(store / "models", root / "models")
    reg = Registry(root)
    reg.add(sha, "gen-0", "", "base")
    reg.move("champion", sha)
    pool = ModelPool(str(root), max_models=1)
    served_app.batched = []

    async def answer_batch(request: dict) -> dict:  # stands for the deployment's @serve.batch
        served_app.batched.append(request)
        return (await asyncio.to_thread(pool.run, [request]))[0]

    served_app.state = ServerState(gw=Gateway(GatewaySettings(str(root), 0.5, "hostile")), files=FileStore(root),
                                   auth=Authenticator(root),
                                   jobs=JobService(root, RayJobs(root)), pool=pool, answer_batch=answer_batch)
    served_app.root = root
    return served_app


def openai_shaped(body) -> dict:
    """The error of an OpenAI-shaped error body (asserted to be one)."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] in OPENAI_TYPES and isinstance(error["message"], str) and error["message"], error
    assert error["code"] is None or isinstance(error["code"], str), error
    return error


CHAT = {"model": "champion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


# -- 2. revoking keys never opens the server; an open server takes no forged request -------------

def test_revoking_the_last_key_closes_the_server_rather_than_opening_it(server):
    store = KeyStore(server.root)
    key, _ = store.create("fine-tune", "alice")
    uploaded = server.sdk(key).files.create(file=("train.jsonl", TRAIN), purpose="fine-tune")
    store.revoke("alice")
    for path in ("/v1/files", f"/v1/files/{uploaded.id}/content", "/v1/fine_tuning/jobs", "/v1/models"):
        status, _, body = server.raw("GET", path)
        assert status == 401, (path, body)
        assert openai_shaped(body)["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        server.sdk(key).files.list()  # the revoked key itself
    with pytest.raises(openai.AuthenticationError):
        server.sdk().chat.completions.create(**CHAT)


def test_an_open_server_answers_only_requests_addressed_to_loopback(server):
    """No DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends Host: evil.example."""
    assert server.raw("GET", "/v1/files")[0] == 200  # a root that never had a key, on loopback: open
    assert server.raw("GET", "/v1/files", headers={"Host": f"localhost:{server.port}"})[0] == 200
    for host in (f"evil.example:{server.port}", "evil.example", f"127.0.0.1.evil.example:{server.port}"):
        status, _, body = server.raw("GET", "/v1/files", headers={"Host": host})
        assert status == 403 and openai_shaped(body)["code"] == "host_not_allowed", (host, body)
    status, _, body = server.raw("POST", "/v1/chat/completions", json.dumps(CHAT).encode(),
                                 {"Host": "evil.example", "Content-Type": "application/json"})
    assert status == 403 and server.batched == []


def test_an_open_server_takes_no_post_a_cross_site_form_could_send(server):
    """A form or a no-cors fetch on another site posts text/plain, urlencoded or nothing, with no preflight."""
    body = json.dumps(CHAT).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        status, _, err = server.raw("POST", "/v1/chat/completions", body, {"Content-Type": ctype} if ctype else {})
        assert status == 415 and openai_shaped(err)["code"] == "unsupported_media_type", (ctype, err)
    status, _, err = server.raw("POST", "/v1/feedback", b"", {"Content-Type": "text/plain"})
    assert status == 415, err
    assert server.batched == []  # nothing of them reached the model
    answer = server.sdk().chat.completions.create(**CHAT)  # the SDK sends JSON: served
    assert answer.choices[0].finish_reason in ("stop", "length")


# -- 5. every bad request is an OpenAI-shaped 4xx ------------------------------------------------

def test_a_seed_past_torchs_range_is_a_400_before_it_joins_a_batch(server):
    """A seed of 2**64 would overflow torch.manual_seed inside @serve.batch and fail every request
    batched with it, other tenants' too; it is refused before the batch."""
    for seed in (1 << 64, -(1 << 63) - 1):
        with pytest.raises(openai.BadRequestError) as refused:
            server.sdk().chat.completions.create(**CHAT, seed=seed)
        assert openai_shaped(refused.value.response.json())["param"] == "seed"
    assert server.batched == []
    assert server.sdk().chat.completions.create(**CHAT, seed=(1 << 64) - 1).choices  # the largest torch takes


@pytest.mark.parametrize("attack", ["deep JSON", "job side file", "limit=abc", "unknown route", "wrong method",
                                    "oversize JSON", "oversize JSON, chunked", "metadata"])
def test_a_hostile_request_gets_an_openai_shaped_4xx(server, attack):
    key, _ = KeyStore(server.root).create("fine-tune", "mallory")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    big = json.dumps({**CHAT, "user": "x" * MAX_JSON_BYTES}).encode()
    metadata = {f"k{i}": "v" for i in range(17)}
    server.state.jobs.store.add_checkpoint("ftjob-0123", 1, {}, "ckpt")  # the side file `ftjob-0123.checkpoints.json`
    status, _, body = {
        "deep JSON": lambda: server.raw("POST", "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, auth),
        "job side file": lambda: server.raw("GET", "/v1/fine_tuning/jobs/ftjob-0123.checkpoints", headers=auth),
        "limit=abc": lambda: server.raw("GET", "/v1/fine_tuning/jobs?limit=abc", headers=auth),
        "unknown route": lambda: server.raw("GET", "/v1/engines", headers=auth),
        "wrong method": lambda: server.raw("PUT", "/v1/models", b"{}", auth),
        "oversize JSON": lambda: server.raw("POST", "/v1/chat/completions", big, auth),
        "oversize JSON, chunked": lambda: server.raw(
            "POST", "/v1/chat/completions", b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big),
            {**auth, "Transfer-Encoding": "chunked", "Content-Length": None}),
        "metadata": lambda: server.raw("POST", "/v1/fine_tuning/jobs", json.dumps(
            {"model": "champion", "training_file": "file-x", "metadata": metadata}).encode(), auth),
    }[attack]()
    expected = {"deep JSON": 400, "job side file": 404, "limit=abc": 400, "unknown route": 404, "wrong method": 405,
                "oversize JSON": 413, "oversize JSON, chunked": 413, "metadata": 400}[attack]
    assert status == expected, body
    error = openai_shaped(body)
    if attack == "limit=abc":
        assert error["param"] == "limit" and "abc" in error["message"]
    if attack == "metadata":
        assert error["param"] == "metadata" and "17 pairs" in error["message"]
    assert server.batched == []


def test_the_sdk_sees_metadata_refused_as_openai_refuses_it(server):
    """Through the SDK: 17 pairs, a 65-character key, a 513-character value are each a 400 naming metadata."""
    key, _ = KeyStore(server.root).create("fine-tune", "mallory")
    client = server.sdk(key)
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}, {"k": 1}):
        with pytest.raises(openai.BadRequestError, match="metadata"):
            client.fine_tuning.jobs.create(model="champion", training_file="file-x", metadata=metadata)


def test_metadata_at_openais_limits_passes():
    check_metadata(None)
    check_metadata({f"{i:064d}": "v" * 512 for i in range(16)})
    with pytest.raises(APIError, match="must be an object"):
        check_metadata(["k", "v"])


def test_an_error_without_a_type_of_openais_gets_one_and_keeps_its_code():
    e = APIError(413, "too big", "file", "request_too_large")
    assert e.body()["error"] == {"message": "too big", "type": "invalid_request_error", "param": "file",
                                 "code": "request_too_large"}
    assert APIError(409, "taken", kind="conflict").body()["error"]["code"] == "conflict"
    assert APIError(404, "none").body()["error"] == {"message": "none", "type": "not_found_error", "param": None,
                                                     "code": None}


# -- 7. smaller hardening -----------------------------------------------------------------------

def test_the_api_docs_are_off_unless_the_admin_turns_them_on(server):
    for path in ("/docs", "/redoc", "/openapi.json"):
        status, _, body = server.raw("GET", path)
        assert status == 404, (path, body)
        assert "--api-docs" in openai_shaped(body)["message"]
    server.state.api_docs = True
    assert server.raw("GET", "/openapi.json")[2]["info"]["title"] == "evo"
    assert server.raw("GET", "/docs")[0] == 200


def test_pages_cannot_be_framed_and_load_nothing_from_elsewhere(server):
    """The rating page votes on key presses: framed by another site, its keys could be clickjacked."""
    for path in ("/", "/rate"):
        status, headers, page = server.raw("GET", path)
        assert status == 200 and "<script>" in page
        assert headers["x-frame-options"] == "DENY"
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy and "http" not in policy
    assert server.raw("GET", "/health")[1]["x-frame-options"] == "DENY"


def test_health_shows_the_aliases_shas_only_to_a_caller_with_a_key(server):
    open_health = server.raw("GET", "/health")[2]
    sha = open_health["aliases"]["champion"]
    assert sha  # an open server's local user sees them
    key, _ = KeyStore(server.root).create("inference", "reader")
    for headers in ({}, {"Authorization": "Bearer evo-not-a-key"}):
        status, _, body = server.raw("GET", "/health", headers=headers)
        assert status == 200 and body == {"status": "ok"}, body
    assert server.raw("GET", "/health", headers={"Authorization": f"Bearer {key}"})[2]["aliases"]["champion"] == sha


# -- 1. a tenant's fine-tune is its own: never another tenant's model, never moving a shared alias ---

@pytest.fixture(scope="module")
def second(model):
    """A second tiny model in the module's store: the child a tenant's job makes (copied into each root)."""
    store, _ = model
    tok_dir = ModelStore(store).path(model[1])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    m = build_tiny_llama(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok, 1)
    return ModelStore(store).put_base(lambda d: (m.save_pretrained(d), tok.save_pretrained(d)), {"tokens": 9})


def test_a_tenants_fine_tuned_model_is_served_to_it_alone_and_moves_no_shared_alias(second, server):
    """The issue's attack: alice runs a job from the champion; bob's `evo` and `champion` are still the
    shared champion, his /v1/models does not list alice's model, and by sha, generation id or `ft:` name
    it is a 404 for him (chat and job); alice uses it. The job is run by the real runner
    (`run_job.execute`) on the server's root, its training stood in by the driver's steps (register the
    child on the lineage the runner opened, propose it, record the gate's verdict: promoted)."""
    from evo.atomic import atomic_write_json
    from evo.config import EvoConfig
    from evo.finetune.run_job import execute

    root, keys = server.root, KeyStore(server.root)
    alice_key, alice_row = keys.create("fine-tune", "alice")
    bob_key, _ = keys.create("fine-tune", "bob")
    alice, bob = server.sdk(alice_key), server.sdk(bob_key)
    champion = Registry(root).alias("champion")
    atomic_write_json(root / "run_config.json", EvoConfig(data={"base": "b.jsonl"}).model_dump(mode="json"))
    f = alice.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune")
    job = server.state.jobs.store.create({"model": "champion", "training_file": f.id, "suffix": "mine"},
                                         alice_row["id"], alice_row["id"], server.state.files,
                                         lambda name: ("gen-0", champion))  # as POST /v1/fine_tuning/jobs keeps it

    def trained(cfg, lin, index, path, progress, extra=None, tune=False, parent=None, own_val=None):
        gid = f"gen-{index}"
        lin.registry.add(second, gid, parent, "candidate", owner=lin.owner)  # evo.driver.train_child's steps
        lin.decisions.propose(gid, second, "trained")
        row = {"GEN_ID": gid, "parent_sha": parent, "child_sha": second, "decision": "promoted",
               "reason": "passed the gate", "compared_with": parent}
        lin.decisions.record(row, second, "promoted")
        return row

    assert execute(root, job["id"], trained) == 0
    done = server.state.jobs.store.raw(job["id"])
    assert done["status"] == "succeeded", done["error"]
    name, gid = done["fine_tuned_model"], done["evo"]["gen_id"]
    assert Registry(root).load()["aliases"] == {"champion": champion, "candidate": None}
    server.state.gw.reload()  # what the replica's follower does when the registry changes
    msg = [{"role": "user", "content": "hi"}]
    for model in ("evo", "champion"):
        assert bob.chat.completions.create(model=model, messages=msg, max_tokens=1).model_extra["evo"]["sha"] == champion
    listed = bob.models.list()
    assert not {second, gid, name} & ({m.id for m in listed} | {m.model_extra.get("sha") for m in listed})
    for model in (second[:12], gid, name):
        with pytest.raises(openai.NotFoundError):
            bob.chat.completions.create(model=model, messages=msg, max_tokens=1)
        with pytest.raises(openai.NotFoundError):
            bob.fine_tuning.jobs.create(model=model, training_file=bob.files.create(
                file=("t.jsonl", TRAIN), purpose="fine-tune").id)
        assert alice.chat.completions.create(model=model, messages=msg, max_tokens=1).model_extra["evo"]["sha"] == second
    assert {name, gid} <= {m.id for m in alice.models.list()}
    # the item 6 and OpenAI's models.delete, over real HTTP: bob can delete none of it, alice her own
    with pytest.raises(openai.NotFoundError):
        bob.models.delete(name)
    assert alice.models.delete(name).deleted
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model=name, messages=msg, max_tokens=1)
    assert Registry(root).load()["aliases"] == {"champion": champion, "candidate": None}


def test_thumbs_count_once_per_key_and_guessed_keys_are_slowed_with_retry_after(server):
    """Item 6 over real HTTP, with the SDK where it can say it: one key's second thumbs on a response is
    a 409 and thumbs on an id no arm served a 404; past the rate, an address that sent keys that are not
    valid gets 429 with Retry-After before its next key is compared, a valid key too, in OpenAI's shape."""
    keys = KeyStore(server.root)
    key, _ = keys.create("fine-tune", "rater")
    server.state.gw.reload()
    Registry(server.root).move("candidate", Registry(server.root).alias("champion"))  # an A/B arm to rate
    server.state.gw.reload()
    answer = server.sdk(key).chat.completions.create(model="candidate", messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=1)
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    thumbs = [server.raw("POST", "/v1/feedback", json.dumps({"response_id": rid, "value": "up"}).encode(), auth)
              for rid in (answer.id, answer.id, "chatcmpl-never-served")]
    assert [t[0] for t in thumbs] == [200, 409, 404]
    assert openai_shaped(thumbs[1][2])["param"] == "response_id"
    server.state.auth = Authenticator(server.root, rate_per_minute=2)
    codes = []
    for i in range(3):
        try:
            server.sdk(f"evo-guess-{i}").models.list()
            codes.append(200)
        except openai.APIStatusError as e:
            codes.append(e.status_code)
    assert codes == [401, 401, 429]
    status, headers, body = server.raw("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert status == 429 and int(headers["retry-after"]) >= 1 and openai_shaped(body)["type"] == "rate_limit_error"


# -- issue 30, item 4: OpenAI's pause and resume, over real HTTP ---------------------------------

class AcceptingJobs(RayJobs):
    """A cluster's Jobs API that takes every submission (its runner is run by the test: `execute`)."""

    def __init__(self, root):
        super().__init__(root, "http://127.0.0.1:1")
        self.submitted: list[str] = []

    def client(self):
        outer = self

        class Client:
            def submit_job(self, entrypoint, submission_id, metadata):
                outer.submitted.append(submission_id)
                return submission_id

            def list_jobs(self):
                return []

            def stop_job(self, sid):
                return False
        return Client()


def test_pause_and_resume_reach_only_the_callers_job_refuse_a_wrong_status_and_continue_its_generation(second, server):
    """Through the SDK's `jobs.pause` / `jobs.resume`: another tenant gets a 404, a wrong status an
    OpenAI-shaped 409 naming the job and its status, an admin reaches any job. The real runner
    (`run_job.execute`) records the pause its training run reports (`TrainingPaused`, what
    `run_training` raises), frees the queue and ends; resumed, a new Ray job's runner continues the
    same generation with the same pause file, and the job succeeds. A resume without a cluster is a
    503 that leaves the job paused; a paused job is cancelled at once, with no warning."""
    from pathlib import Path

    from evo.atomic import atomic_write_json
    from evo.config import EvoConfig
    from evo.finetune.run_job import execute, run_lock
    from evo.train.worker_config import TrainingPaused

    root, keys = server.root, KeyStore(server.root)
    alice_key, alice_row = keys.create("fine-tune", "alice")
    alice, bob, boss = (server.sdk(k) for k in (alice_key, keys.create("fine-tune", "bob")[0],
                                                keys.create("admin", "boss")[0]))
    champion, store = Registry(root).alias("champion"), server.state.jobs.store
    atomic_write_json(root / "run_config.json", EvoConfig(data={"base": "b.jsonl"}).model_dump(mode="json"))
    f = alice.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune")
    jid, other = (store.create({"model": "champion", "training_file": f.id}, alice_row["id"], alice_row["id"],
                               server.state.files, lambda name: ("gen-0", champion))["id"] for _ in range(2))
    with pytest.raises(openai.ConflictError) as refused:
        alice.fine_tuning.jobs.pause(jid)
    error = openai_shaped(refused.value.response.json())
    assert error["param"] == "fine_tuning_job_id" and f"{jid} cannot be paused: it is validating_files" in error["message"]
    for call in (bob.fine_tuning.jobs.pause, bob.fine_tuning.jobs.resume):
        with pytest.raises(openai.NotFoundError) as hidden:
            call(jid)
        assert openai_shaped(hidden.value.response.json())["type"] == "not_found_error"
    runs: list[tuple] = []  # (generation index, pause file) of each run the runner started
    training = [jid]  # the job the stand-in below trains

    def paused_at_3(cfg, lin, index, path, progress, extra=None, **kw):  # the pause arrives as it trains
        assert alice.fine_tuning.jobs.pause(training[0]).status == "paused"
        runs.append((index, extra["pause_file"]))
        assert Path(extra["pause_file"]).exists()
        raise TrainingPaused(f"run-gen-{index}", 3, 10)

    def finished(cfg, lin, index, path, progress, extra=None, parent=None, **kw):
        runs.append((index, extra["pause_file"]))
        gid = f"gen-{index}"
        lin.registry.add(second, gid, parent, "candidate", owner=lin.owner)
        lin.decisions.propose(gid, second, "trained")
        row = {"GEN_ID": gid, "parent_sha": parent, "child_sha": second, "decision": "promoted",
               "reason": "passed the gate", "compared_with": parent}
        lin.decisions.record(row, second, "promoted")
        return row

    assert execute(root, jid, paused_at_3) == 0
    job = alice.fine_tuning.jobs.retrieve(jid)
    assert job.status == "paused" and job.model_extra["evo"]["gen_id"] == f"gen-{runs[0][0]}"
    said = [e.message for e in alice.fine_tuning.jobs.list_events(jid, limit=50)]
    assert said[0].startswith("paused at step 3 of 10: the Ray Train checkpoint of step 3 is kept")
    assert any(m.startswith("pause requested") for m in said)
    with run_lock(root):  # freed: the next job can take its turn
        pass
    with pytest.raises(openai.ConflictError, match=f"{jid} cannot be paused: it is paused"):
        alice.fine_tuning.jobs.pause(jid)
    with pytest.raises(openai.InternalServerError) as down:  # no cluster at 127.0.0.1:8265: it stays paused
        alice.fine_tuning.jobs.resume(jid)
    assert down.value.status_code == 503 and "the job stays paused" in openai_shaped(down.value.response.json())["message"]
    assert alice.fine_tuning.jobs.retrieve(jid).status == "paused"
    server.state.jobs.ray = jobs = AcceptingJobs(root)
    resumed = boss.fine_tuning.jobs.resume(jid)  # an admin reaches any tenant's job
    assert resumed.status == "validating_files" and jobs.submitted == [f"evo-{jid}-resume2"]  # resume1 may have reached Ray
    with pytest.raises(openai.ConflictError, match="cannot be resumed: it is validating_files"):
        alice.fine_tuning.jobs.resume(jid)
    assert execute(root, jid, finished) == 0
    done = alice.fine_tuning.jobs.retrieve(jid)
    assert done.status == "succeeded", done.error
    assert runs[1] == runs[0]  # the same generation, the same pause file: Ray Train's run of the same name resumes
    said = [e.message for e in alice.fine_tuning.jobs.list_events(jid, limit=50)]
    assert any("resuming after the pause at step 3" in m for m in said) and said[0].startswith("succeeded")
    # a paused job is cancelled at once: no Ray job to stop, no runner to wait for
    training[0] = other
    assert execute(root, other, paused_at_3) == 0
    assert alice.fine_tuning.jobs.cancel(other).status == "cancelled"
    events = list(alice.fine_tuning.jobs.list_events(other, limit=50))
    assert events[0].message == "cancelled" and not [e.message for e in events if e.level != "info"]
    assert not store.pause_path(other).exists() and runs[2][0] != runs[0][0]  # a generation of its own
