"""The A/B gateway on real Ray Serve, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evo.lineage.root import Lineage
from tests.helpers import copy_root

pytestmark = pytest.mark.integration
PORT = 18743
URL = f"http://127.0.0.1:{PORT}"
TOKEN = "test-admin-token"


def call(method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if "json" in r.headers.get("content-type", "") else text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


@pytest.fixture(scope="module")
def served(ray_cluster, two_generations_root, tmp_path_factory):
    from ray import serve

    from evo.http.app import build_app

    root = copy_root(two_generations_root, tmp_path_factory.mktemp("serve"))
    lin = Lineage(root)
    base, champion = lin.ledger.get("gen-0")["child_sha"], lin.registry.alias("champion")
    lin.registry.move("candidate", base, reason="test: serve the base as the candidate")
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    # two replicas: the split and promotions must reach both, through the lineage root
    serve.run(build_app(str(root), 0.5, admin_token=TOKEN, num_replicas=2, ray_actor_options={"num_cpus": 0.25},
                        max_upload_bytes=4096), name="evo", route_prefix="/")
    yield {"root": root, "champion": champion, "candidate": base}
    serve.shutdown()


def eventually(check, timeout: float = 20.0, every: float = 0.25) -> None:
    """Poll `check` until it holds (bounded); fail with the bound if it never does."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"did not hold within {timeout:.0f} s"
        time.sleep(every)


def chat(model="evo", user=None, **kw):
    return call("POST", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "tell me about tea"}],
                                                  "max_tokens": 8, "temperature": 0, **({"user": user} if user else {}), **kw})


def test_chat_content_given_as_text_parts_over_http(served):
    """What OpenAI clients send today: a list of text parts is answered as the same text as a string;
    an image part gets a 400 that says why."""
    plain = chat("champion")[1]["choices"][0]["message"]["content"]
    status, body = chat("champion", messages=[{"role": "user", "content": [{"type": "text", "text": "tell me about tea"}]}])
    assert status == 200 and body["choices"][0]["message"]["content"] == plain
    status, body = chat("champion", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}])
    assert status == 400 and "type 'image_url': this server answers text only" in body["error"]["message"]


def test_training_files_over_http_with_the_openai_sdk(served):
    """/v1/files as the official SDK drives it: upload (multipart), retrieve, content, list, delete;
    a bad line, a file over the limit and a wrong purpose get their 4xx and leave nothing behind."""
    import openai

    client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)
    good = b'\xef\xbb\xbf{"prompt": "tr red cat", "completion": "zora"}\r\n{"text": "zova bove"}\r\n'
    f = client.files.create(file=("train.jsonl", good), purpose="fine-tune")
    assert f.bytes == len(good) and f.filename == "train.jsonl" and f.purpose == "fine-tune"
    assert client.files.retrieve(f.id).id == f.id and client.files.content(f.id).content == good
    assert [x.id for x in client.files.list(purpose="fine-tune")] == [f.id]
    with pytest.raises(openai.BadRequestError, match=r"bad.jsonl:2: .*completion"):
        client.files.create(file=("bad.jsonl", b'{"text": "a"}\n{"prompt": "no completion"}\n'), purpose="fine-tune")
    with pytest.raises(openai.APIStatusError, match="over this server's limit") as e:
        client.files.create(file=("big.jsonl", b'{"text": "aaaa"}\n' * 400), purpose="fine-tune")
    assert e.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="purpose 'assistants' is not supported"):
        client.files.create(file=("t.jsonl", good), purpose="assistants")
    assert [x.id for x in client.files.list()] == [f.id]  # nothing of the refused uploads
    status, body = call("POST", "/v1/files", raw=b"not multipart")
    assert status == 400 and "multipart/form-data" in body["error"]["message"]
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError, match="no file"):
        client.files.retrieve(f.id)
    assert not list((served["root"] / "service" / "blobs").iterdir())


def test_api_keys_over_http_isolate_tenants(served):
    """Once keys exist every endpoint but health needs one; a key sees only its own files (another's
    answer 404), a missing scope is 403. Revoking every key closes the server (401), never opens it;
    only a root without a key store (deleted here, for the next tests) is open again."""
    import openai

    from evo.http.keys import KeyStore

    store = KeyStore(served["root"])
    made = {n: store.create(scope, n)[0] for n, scope in (("alice", "fine-tune"), ("bob", "fine-tune"),
                                                          ("reader", "inference"))}
    try:
        alice, bob = (openai.OpenAI(base_url=URL + "/v1", api_key=made[n], max_retries=0) for n in ("alice", "bob"))
        f = alice.files.create(file=("a.jsonl", b'{"text": "zora zova"}\n'), purpose="fine-tune")
        assert [x.id for x in alice.files.list()] == [f.id] and list(bob.files.list()) == []
        with pytest.raises(openai.NotFoundError):
            bob.files.retrieve(f.id)
        with pytest.raises(openai.NotFoundError):
            bob.files.delete(f.id)
        assert call("GET", "/v1/models")[0] == 401
        assert call("GET", "/v1/models", headers={"authorization": f"Bearer {made['reader']}"})[0] == 200
        status, body = call("GET", "/v1/files", headers={"authorization": f"Bearer {made['reader']}"})
        assert status == 403 and "needs 'fine-tune'" in body["error"]["message"]
        assert call("GET", "/health")[0] == 200
        assert alice.files.delete(f.id).deleted
    finally:
        for n in made:
            store.revoke(n)
    status, body = call("GET", "/v1/models")
    assert status == 401 and body["error"]["type"] == "authentication_error", body
    store.path.unlink()
    assert call("GET", "/v1/models")[0] == 200


def test_models_lists_aliases_and_every_generation(served):
    status, body = call("GET", "/v1/models")
    ids = [m["id"] for m in body["data"]]
    assert status == 200 and ids[:3] == ["evo", "champion", "candidate"] and {"gen-0", "gen-1"} <= set(ids)


def test_chat_completion_names_the_arm_and_counts_usage(served):
    status, body = chat("champion")
    assert status == 200 and body["object"] == "chat.completion"
    assert body["evo"] == {"arm": "champion", "sha": served["champion"]}
    u = body["usage"]
    assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 8
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    status, pinned = chat("gen-0")
    assert status == 200 and pinned["evo"]["sha"] == served["candidate"]


def test_completions_and_n(served):
    status, body = call("POST", "/v1/completions", {"model": "candidate", "prompt": "tr red cat runs =",
                                                     "max_tokens": 6, "n": 2, "temperature": 0.7, "seed": 3})
    assert status == 200 and len(body["choices"]) == 2 and body["evo"]["arm"] == "candidate"


def test_plain_transformers_and_peft_give_the_answer_evo_serves(served):
    """A user loads a generation with plain tools from the lineage folder (the base, then each
    adapter merged) and prompts it as the saved tokenizer says, `tokenizer(prompt)`: the greedy
    answer is the one evo serves (the tokenizer carries its own BOS rule; nothing is prepended by hand)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evo.model.artifacts import ModelStore

    store = ModelStore(served["root"])
    base, *adapters = store.chain(served["champion"])
    assert adapters  # a LoRA generation, not the base
    tok = AutoTokenizer.from_pretrained(store.weights_dir(base))
    model = AutoModelForCausalLM.from_pretrained(store.weights_dir(base), dtype=torch.float32)
    for a in adapters:
        model = PeftModel.from_pretrained(model, str(store.path(a))).merge_and_unload()
    model.eval()
    for prompt in ("tr red cat runs =", "tr big dog eats =", "tr old owl sees =", "tr hot bee hides =", "hello"):
        ids = tok(prompt, return_tensors="pt")
        assert ids["input_ids"][0, 0] == tok.bos_token_id  # the saved tokenizer's own rule
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        plain = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        status, body = call("POST", "/v1/completions", {"model": "champion", "prompt": prompt, "max_tokens": 8,
                                                         "temperature": 0})
        assert status == 200 and body["choices"][0]["text"] == plain, prompt
        assert body["usage"]["prompt_tokens"] == ids["input_ids"].shape[1]


def test_exported_generations_load_with_plain_tools_and_answer_the_same(served, tmp_path):
    """`evo export champion` as a merged folder and as an f16 GGUF: plain AutoModelForCausalLM
    loads each (the GGUF through its gguf_file loader), and the greedy answers are evo's."""
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for fmt, out in (("merged", tmp_path / "merged"), ("gguf", tmp_path / "gen.f16.gguf")):
        done = subprocess.run([sys.executable, "-m", "evo.cli", "export", "champion", "--root", str(served["root"]),
                               "--format", fmt, "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        folder, extra = (out, {}) if fmt == "merged" else (out.parent, {"gguf_file": out.name})
        meta = json.loads((out / "meta.json" if fmt == "merged" else out.with_suffix(".json")).read_text())
        assert meta["sha"] == served["champion"] and meta["line"][-1] == served["champion"]
        tok = AutoTokenizer.from_pretrained(str(folder), **extra)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **extra).eval()
        for prompt in ("tr red cat runs =", "tr big dog eats ="):
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                got = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(got[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            status, body = call("POST", "/v1/completions", {"model": "champion", "prompt": prompt, "max_tokens": 8,
                                                             "temperature": 0})
            assert body["choices"][0]["text"] == text, (fmt, prompt)


def test_routing_is_sticky_per_user(served):
    arms = {u: chat(user=u)[1]["evo"]["arm"] for u in ("alice", "bob", "carol", "dave", "erin", "frank")}
    assert set(arms.values()) == {"champion", "candidate"}  # both arms get traffic at a 50% share
    assert all(chat(user=u)[1]["evo"]["arm"] == a for u, a in arms.items())


def events(text: str) -> list[dict]:
    assert text.rstrip().endswith("data: [DONE]")
    return [json.loads(e.removeprefix("data: ")) for e in text.strip().split("\n\n")[:-1]]


def test_streaming_sends_tokens_as_server_sent_events(served):
    body = {"model": "champion", "prompt": "tr red cat runs =", "max_tokens": 12, "temperature": 0}
    status, whole = call("POST", "/v1/completions", body)
    status_s, text = call("POST", "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert status == status_s == 200 and whole["choices"][0]["text"]
    evs = events(text)
    chunks, tail = evs[:-1], evs[-1]
    assert all(c["object"] == "text_completion" and c["evo"]["arm"] == "champion" for c in chunks)
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    assert streamed == whole["choices"][0]["text"]  # the same answer, arriving in pieces
    assert len([c for c in chunks if c["choices"][0]["text"]]) > 1
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert tail["usage"] == whole["usage"]
    status, text = chat("champion", stream=True)
    first = events(text)[0]
    assert status == 200 and first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    status, text = call("POST", "/v1/completions", {**body, "n": 2, "stream": True})  # no usage chunk: not asked
    assert status == 200 and sorted(e["choices"][0]["index"] for e in events(text)) == [0, 1]


@pytest.mark.parametrize("body,status,fragment", [
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "'nope' is not a model"),
    ({"model": "evo"}, 400, "'messages'"),
    ({"model": "evo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": "evo", "messages": [{"role": "user", "content": "x"}], "n": 99}, 400, "'n'"),
])
def test_bad_requests_are_4xx_with_a_message(served, body, status, fragment):
    code, err = call("POST", "/v1/chat/completions", body)
    assert code == status and fragment in err["error"]["message"]


def test_malformed_json_is_a_400(served):
    code, err = call("POST", "/v1/chat/completions", raw=b"{not json")
    assert code == 400 and "not valid JSON" in err["error"]["message"]


def test_feedback_reaches_the_stats(served):
    _, answer = chat("candidate")
    assert call("POST", "/v1/feedback", {"response_id": answer["id"], "value": "up"})[0] == 200
    code, err = call("POST", "/v1/feedback", {"response_id": answer["id"], "value": "great"})
    assert code == 400 and "'value'" in err["error"]["message"]
    status, stats = call("GET", "/ab/stats")
    assert status == 200 and stats["arms"]["candidate"]["thumbs_up"] >= 1
    assert stats["verdict"]["verdict"] == "undecided" and stats["plan"]["alpha"] == 0.05
    lines = (Path(served["root"]) / "ab" / "live.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("value") == "up" for line in lines)  # durable, in the lineage root


def test_admin_needs_the_token_and_split_changes_live(served):
    assert call("POST", "/admin/split", {"candidate_share": 0.0})[0] == 401
    assert call("POST", "/admin/split", {"candidate_share": 0.0}, {"authorization": "Bearer wrong"})[0] == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    code, err = call("POST", "/admin/split", {"candidate_share": 2}, auth)
    assert code == 400 and "from 0 to 1" in err["error"]["message"]
    assert call("POST", "/admin/split", {"candidate_share": 0.0}, auth) == (200, {"candidate_share": 0.0})
    # the other replica follows the shared split within about 0.5 s (a generous bound here)
    eventually(lambda: {chat(user=f"u{i}")[1]["evo"]["arm"] for i in range(8)} == {"champion"})
    call("POST", "/admin/split", {"candidate_share": 0.5}, auth)


def test_side_by_side_is_blind_and_votes_count_for_the_right_arm(served):
    status, pair = call("POST", "/v1/side_by_side", {"messages": [{"role": "user", "content": "say something about tea"}],
                                                      "max_tokens": 6, "temperature": 0})
    assert status == 200 and {"pair_id", "a", "b"} <= set(pair)
    assert "evo" not in pair["a"] and pair["a"]["model"] == pair["b"]["model"] == "evo"  # nothing gives the arm away
    before = call("GET", "/ab/stats")[1]["pairwise"]
    assert call("POST", "/v1/feedback/pairwise", {"pair_id": pair["pair_id"], "preferred": "a"})[0] == 200
    after = call("GET", "/ab/stats")[1]["pairwise"]
    events = [json.loads(line) for line in (Path(served["root"]) / "ab" / "live.jsonl").read_text().splitlines()]
    shown = [e for e in events if e.get("pair_id") == pair["pair_id"] and e["kind"] == "pair"][0]
    key = f"{shown['a']}_wins"
    assert after[key] == before[key] + 1
    code, err = call("POST", "/v1/feedback/pairwise", {"pair_id": "pair-nope", "preferred": "b"})
    assert code == 404 and "no side-by-side pair" in err["error"]["message"]
    assert call("POST", "/v1/feedback/pairwise", {"pair_id": pair["pair_id"], "preferred": "c"})[0] == 400
    code, err = call("POST", "/v1/feedback/pairwise", {"pair_id": pair["pair_id"], "preferred": "b"})
    assert code == 409 and "first one stands" in err["error"]["message"]  # a second vote on the pair
    assert call("GET", "/ab/stats")[1]["pairwise"] == after


def test_promotion_under_load_drops_nothing(served):
    """Concurrent clients for a bounded time; a promotion mid-way; every request answered by a live model."""
    import threading
    import time as _time

    from evo.lineage.registry import Registry

    auth = {"authorization": f"Bearer {TOKEN}"}
    old_champion, old_candidate = served["champion"], served["candidate"]
    results, stop = [], threading.Event()

    def client(n: int):
        i = 0
        while not stop.is_set() and i < 600:  # bounded in count and in time
            code, body = chat(user=f"load-{n}-{i % 7}")
            results.append((_time.perf_counter(), code, body.get("evo", {}).get("sha") if code == 200 else body))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    eventually(lambda: len(results) >= 20, timeout=120)  # traffic flowing before the promotion
    t_promote = _time.perf_counter()
    code, body = call("POST", "/admin/promote", {}, auth)
    t_live = _time.perf_counter()
    assert code == 200 and body["aliases"] == {"champion": old_candidate, "candidate": None}
    eventually(lambda: sum(t > t_live + 1 for t, _, _ in results) >= 20, timeout=120)  # and well after it
    stop.set()
    for t in threads:
        t.join(120)
    assert len(results) > 20
    assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:3]
    assert {sha for _, _, sha in results} <= {old_champion, old_candidate}
    # The other replica follows within about 0.5 s; on a loaded machine allow 5 s. After the last
    # answer of the old champion, only the new one answers, and it answers.
    last_old = max((t for t, _, sha in results if sha == old_champion), default=t_promote)
    assert last_old < t_live + 5, f"the old champion still answered {last_old - t_live:.1f} s after the promotion"
    assert any(sha == old_candidate for t, _, sha in results if t > last_old)
    assert {chat(user=f"after-{i}")[1]["evo"]["sha"] for i in range(20)} == {old_candidate}  # every replica
    # put the fixture back as it was
    reg = Registry(served["root"])
    reg.move("champion", old_champion, reason="test: restore")
    reg.move("candidate", old_candidate, reason="test: restore")
    assert call("POST", "/admin/reload", {}, auth)[0] == 200


def test_promote_and_revert_need_a_candidate_and_the_token(served):
    assert call("POST", "/admin/promote", {})[0] == 401
    assert call("POST", "/admin/revert", {}, {"authorization": "Bearer nope"})[0] == 401


def test_split_reaches_every_replica(served):
    """Many requests, so both replicas answer; after a split change all of them route by it."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert call("POST", "/admin/split", {"candidate_share": 1.0}, auth)[0] == 200
    try:
        eventually(lambda: {chat(user=f"s-{i}")[1]["evo"]["arm"] for i in range(30)} == {"candidate"})
    finally:
        call("POST", "/admin/split", {"candidate_share": 0.5}, auth)


def test_an_a_a_round_is_not_called_better(served):
    """The same generation on both arms, asked 40 distinct prompts side by side the way `evo ab` asks
    them: the verdict must not be "better" (or "worse")."""
    import random

    from evo.ab_round import Judged, exact_match, play
    from evo.data.demo import DemoGenerator
    from evo.lineage.registry import Registry

    auth = {"authorization": f"Bearer {TOKEN}"}
    reg = Registry(served["root"])
    reg.move("candidate", served["champion"], reason="test: an A/A round")
    try:
        assert call("POST", "/admin/reload", {}, auth)[0] == 200
        items = [Judged({"prompt": r.prompt}, exact_match(r.completion))
                 for r in DemoGenerator(0).sample(40, random.Random(11))]
        stats = play(URL, items, 40, 10, 12, lambda *a: None)
        assert stats["verdict"]["verdict"] in ("undecided", "no difference found"), stats["verdict"]
        assert stats["pairwise"]["distinct_prompts"] >= 40
    finally:
        reg.move("candidate", served["candidate"], reason="test: restore")
        call("POST", "/admin/reload", {}, auth)


def test_serve_app_runs_the_way_its_docs_say(served, ray_cluster):
    """`EVO_ROOT=... serve run serve.app:app` (serve/app.py's docstring), on this cluster, as a second
    application beside the fixture's: it comes up and answers a chat completion over HTTP."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ray import serve

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "EVO_ROOT": str(served["root"]), "EVO_ADMIN_TOKEN": "smoke", "RAY_ADDRESS": ray_cluster}
    cmd = [str(Path(sys.executable).parent / "serve"), "run", "--name", "evo-smoke", "--route-prefix", "/smoke",
           "serve.app:app"]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"serve run exited with {proc.returncode}: {proc.stdout.read()[-3000:]}"
            try:
                if call("GET", "/smoke/v1/models")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            assert time.monotonic() < deadline, "serve run did not bring the app up within 240 s"
            time.sleep(1)
        code, body = call("POST", "/smoke/v1/chat/completions",
                          {"model": "champion", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]})
        assert code == 200 and body["choices"][0]["message"]["role"] == "assistant"
        assert body["evo"]["sha"] == served["champion"]
    finally:
        proc.send_signal(signal.SIGTERM)  # not Ctrl-C: serve run answers that with serve.shutdown(), the fixture's too
        proc.wait(60)
        serve.delete("evo-smoke")
