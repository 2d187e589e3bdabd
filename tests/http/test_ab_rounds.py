"""A/B rounds over the app's real routes, without Ray: a round is one pair of models, one prompt is
one model input, a pair passed over is a skip, and a vote's reply keeps the arms hidden while the
round is open. Real tiny models (three bases of one tokenizer, carrying SmolLM2's chat template),
real files, FastAPI's TestClient on the app (`tests/http/test_serving.py` has the same app on Ray
Serve)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from evo.ab.feedback import FeedbackStore
from evo.ab.rating_queue import RatingQueue
from evo.ab.verdict import TestPlan
from evo.config import TinyModelConfig
from evo.finetune.files import FileStore
from evo.finetune.submit import JobService, RayJobs
from evo.http.app import api
from evo.http.keys import Authenticator
from evo.http.state import ServerState, server_state
from evo.inference.gateway import Gateway, GatewaySettings
from evo.inference.pool import ModelPool, render_prompt
from evo.lineage.registry import Registry
from evo.model.artifacts import ModelStore
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer
from evo.openai_api import ChatRequest, Limits, parse_request

# SmolLM2-135M-Instruct's chat template, as its GGUF ships it: a system turn is written when the
# messages have none, so a request that sends that same system message gives the model the same input.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ASK = "What is the price of the Zora lamp?"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three tiny bases (different weights, one tokenizer): the champion and two candidates."""
    root = tmp_path_factory.mktemp("ab-models")
    tok = train_bpe_tokenizer([ASK.lower(), "user assistant system"] * 20, 300)
    tok.chat_template = SMOLLM2_TEMPLATE
    shas = []
    for seed in range(3):
        m = build_tiny_llama(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok, seed)
        shas.append(ModelStore(root).put_base(lambda d, m=m: (m.save_pretrained(d), tok.save_pretrained(d)), {}))
    return root, shas


def lineage_state(models, root) -> ServerState:
    """A replica's state on a lineage root whose champion is gen-0 and candidate gen-1."""
    import shutil

    store, shas = models
    shutil.copytree(store / "models", root / "models")
    reg = Registry(root)
    for i, sha in enumerate(shas):
        reg.add(sha, f"gen-{i}", shas[0] if i else "", "base" if i == 0 else "candidate")
    reg.move("champion", shas[0])
    reg.move("candidate", shas[1])
    pool = ModelPool(str(root), max_models=3)

    async def answer_batch(request: dict) -> dict:
        return (await asyncio.to_thread(pool.run, [request]))[0]

    # five decisive votes make one look; after it the round is decided whatever the votes were
    gw = Gateway(GatewaySettings(str(root), 0.5, "tok", plan=TestPlan(look_every=5, max_looks=1)))
    return ServerState(gw=gw, files=FileStore(root), auth=Authenticator(root), jobs=JobService(root, RayJobs(root)),
                       pool=pool, answer_batch=answer_batch, follow_s=0.05)


@pytest.fixture
def served(models, tmp_path):
    """The app's routes (TestClient) on `lineage_state`'s root."""
    state = lineage_state(models, tmp_path / "root")
    api.dependency_overrides[server_state] = lambda: state
    with TestClient(api, base_url="http://127.0.0.1") as http:  # an open server answers loopback names only
        yield http, tmp_path / "root", models[1], state
    api.dependency_overrides.clear()


def ask(http, body: dict) -> dict:
    r = http.post("/v1/side_by_side", json={"max_tokens": 2, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def chat(content, **extra) -> dict:
    return {"messages": [{"role": "user", "content": content, **extra}]}


def vote(http, pair: dict, preferred: str = "a"):
    return http.post("/v1/feedback/pairwise", json={"pair_id": pair["pair_id"], "preferred": preferred})


def go_live(state, **aliases) -> None:
    """An alias move made elsewhere (the driver, another replica), taken as the follower takes it."""
    reg = Registry(state.gw.settings.root)
    for name, sha in aliases.items():
        reg.move(name, sha, reason="test")
    state.gw.reload()


def test_a_new_candidate_starts_a_new_round_and_the_old_one_stays_readable(served):
    http, root, (a, b, c), state = served
    first = http.get("/ab/stats").json()["round"]
    assert (first["champion"], first["candidate"], first["current"]) == (a, b, True)
    assert (first["champion_gen"], first["candidate_gen"]) == ("gen-0", "gen-1")
    assert vote(http, ask(http, chat(ASK)), "b").status_code == 200
    stale = ask(http, chat("and the price of the bove lamp?"))  # shown in the first round, not voted yet
    go_live(state, candidate=c)  # gen-2 becomes the candidate: a new round, from no votes
    now = http.get("/ab/stats").json()
    assert (now["round"]["champion"], now["round"]["candidate"]) == (a, c) and now["round"]["id"] != first["id"]
    assert now["pairwise"]["distinct_prompts"] == 0 and now["verdict"]["verdict"] == "undecided"
    refused = vote(http, stale)  # its round has ended: the vote is not taken, into either round
    assert refused.status_code == 409 and first["id"] in refused.json()["error"]["message"]
    assert vote(http, ask(http, chat(ASK)), "a").status_code == 200  # the same prompt counts again, for gen-2
    now = http.get("/ab/stats").json()["pairwise"]
    assert now["distinct_prompts"] == 1 and now["votes_not_counted"] == 0
    old = http.get("/ab/stats", params={"round": first["id"]}).json()
    assert old["round"]["candidate"] == b and not old["round"]["current"] and old["round"]["decided"]
    assert old["pairwise"]["distinct_prompts"] == 1 and old["skipped"]["pairs_shown"] == 2
    go_live(state, champion=c, candidate=b)  # a new champion: a new round again
    assert http.get("/ab/stats").json()["round"]["champion"] == c
    listed = http.get("/ab/rounds").json()["data"]
    assert [(r["champion"], r["candidate"], r["current"]) for r in listed if r["distinct_prompts"]] == [
        (a, b, False), (a, c, False)]
    missing = http.get("/ab/stats", params={"round": "nope"})
    assert missing.status_code == 404 and "/ab/rounds" in missing.json()["error"]["message"]


def test_votes_written_before_rounds_were_keyed_are_a_round_of_their_own(served):
    """A log from before (no `round` on its events) stays readable as the round `legacy`: its votes
    are its own, counted by the leaderboard (that round is over), never by the current round."""
    http, root, (a, b, _), state = served
    old = FeedbackStore(root)
    for i in range(3):
        old.append({"kind": "pair", "pair_id": f"old-{i}", "a": "champion", "prompt_key": "k",
                    "shas": {"champion": a, "candidate": b}})
        old.append({"kind": "pairwise", "pair_id": f"old-{i}", "prompt_key": f"k{i}", "winner": "candidate"})
    assert http.get("/ab/stats").json()["pairwise"]["distinct_prompts"] == 0
    legacy = http.get("/ab/stats", params={"round": "legacy"}).json()
    assert legacy["pairwise"]["candidate_wins"] == 3
    assert (legacy["round"]["champion"], legacy["round"]["candidate"], legacy["round"]["decided"]) == (a, b, True)
    board = http.get("/evo/leaderboard").json()
    assert board["votes"] == 3 and board["data"][0]["sha"] == b
    assert vote(http, {"pair_id": "old-0"}).status_code == 409  # a pair of an ended round


def test_one_model_input_is_one_prompt_however_it_is_spelled(served):
    """Six spellings of one question that reach the model as the same input (checked: the pool
    renders them alike) are one prompt: the first vote counts, the other five are kept, not counted.
    A different question, or the same words sent as a plain completion prompt, is another input."""
    http, root, _, state = served
    spellings = [
        chat(ASK),
        chat("  what is THE price of the zora   lamp?\n"),
        chat([{"type": "text", "text": "What is the price"}, {"type": "text", "text": "of the Zora lamp?"}]),
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}]},
        chat(ASK, name="alice"),  # a field the server does not give the model
        {**chat(ASK), "temperature": 0.7, "seed": 3, "user": "bob"},  # sampling does not make a prompt new
    ]
    champion = state.gw.aliases["champion"]
    parsed = [parse_request(ChatRequest, {"model": "evo", **s}, Limits()) for s in spellings]
    given = [render_prompt(state.pool.get(champion)[1], {"messages": [m.model_dump() for m in r.messages]}) for r in parsed]
    assert len({"".join(g.lower().split()) for g in given}) == 1  # one model input, as the template renders it
    assert len(set(given)) == 3  # apart only in case and spacing before the folding
    for body in spellings:
        assert vote(http, ask(http, body), "a").status_code == 200
    p = http.get("/ab/stats").json()["pairwise"]
    assert p["distinct_prompts"] == 1 and p["votes_not_counted"] == 5
    assert vote(http, ask(http, chat("What is the price of the Bove lamp?"))).status_code == 200
    assert vote(http, ask(http, {"prompt": ASK})).status_code == 200
    assert http.get("/ab/stats").json()["pairwise"]["distinct_prompts"] == 3


def test_a_pair_passed_over_is_recorded_as_skipped_by_the_arm_shown_as_a(served):
    http, root, _, state = served
    pairs = [ask(http, chat(f"what is the price of lamp {i}?")) for i in range(4)]
    for pair in pairs[:3]:
        r = http.post("/v1/feedback/skip", json={"pair_id": pair["pair_id"]})
        assert r.status_code == 200 and r.json()["skipped"]["pair_id"] == pair["pair_id"]
    assert http.post("/v1/feedback/skip", json={"pair_id": pairs[0]["pair_id"]}).status_code == 200  # once is enough
    assert vote(http, pairs[2]).status_code == 200  # passed over, then voted after all: a vote, not a skip
    assert vote(http, pairs[3]).status_code == 200
    refused = http.post("/v1/feedback/skip", json={"pair_id": pairs[3]["pair_id"]})
    assert refused.status_code == 409 and "already has a vote" in refused.json()["error"]["message"]
    assert http.post("/v1/feedback/skip", json={"pair_id": "pair-nope"}).status_code == 404
    skipped = http.get("/ab/stats").json()["skipped"]
    shown_as_a = [e["a"] for e in FeedbackStore(root).read().events if e["kind"] == "pair"]
    assert skipped["pairs"] == 2 and skipped["pairs_shown"] == 4
    by = skipped["by_arm_shown_as_a"]
    assert {arm: by[arm]["shown"] for arm in by} == {arm: shown_as_a.count(arm) for arm in ("champion", "candidate")}
    assert {arm: by[arm]["skipped"] for arm in by} == {arm: shown_as_a[:2].count(arm) for arm in ("champion", "candidate")}
    RatingQueue(root).add({"prompts": ["what is the price of lamp 0?", "what is the price of lamp 3?",
                                       "What is the price of lamp 9?"]})
    assert http.get("/evo/rate/next").json()["prompt"] == "What is the price of lamp 9?"  # 0 skipped, 3 voted


def test_a_vote_names_no_arm_until_the_round_is_decided(served):
    """While the round is open neither the vote's reply nor the leaderboard says which arm was which
    (the board would move with the vote); once its one look is taken (five decisive votes), both do."""
    http, root, (a, b, _), state = served
    replies = []
    for i in range(5):
        r = vote(http, ask(http, chat(f"what is the price of lamp {i}?")), "a")
        assert r.status_code == 200
        replies.append(r.json())
    for reply in replies[:4]:
        assert reply["revealed"] is None and "champion" not in json.dumps(reply) and "candidate" not in json.dumps(reply)
        assert "once the round is decided" in reply["reveal"]
    assert replies[4]["revealed"]["a"]["arm"] in ("champion", "candidate")  # the vote that decided it
    assert http.get("/ab/stats").json()["round"]["decided"]
    board = http.get("/evo/leaderboard").json()
    assert board["votes"] == 5 and {r["sha"] for r in board["data"]} == {a, b}
    later = vote(http, ask(http, chat("what is the price of lamp 7?")), "b").json()
    assert later["revealed"]["b"]["sha"] in (a, b)


def test_the_leaderboard_waits_for_the_open_round(served):
    http, root, (a, b, c), state = served
    for i in range(3):
        assert vote(http, ask(http, chat(f"what is the price of lamp {i}?")), "a").status_code == 200
    board = http.get("/evo/leaderboard").json()
    assert board["votes"] == 0 and board["data"] == [] and board["open_round_votes"] == 3
    go_live(state, candidate=c)  # the round ends undecided: its votes are shown now
    board = http.get("/evo/leaderboard").json()
    assert board["votes"] == 3 and {r["sha"] for r in board["data"]} == {a, b}
    rounds = http.get("/ab/rounds").json()["data"]
    ended = next(r for r in rounds if r["candidate"] == b)
    assert ended["decided"] and ended["pairwise"]["champion_wins"] + ended["pairwise"]["candidate_wins"] == 3


def test_thumbs_count_in_the_round_their_answer_was_served_in(served):
    """A thumbs-up that arrives after the candidate changed rates an answer of the round before: it
    counts there, for the arm that gave it, not in the new round."""
    http, root, (a, b, c), state = served
    r = http.post("/v1/chat/completions", json={"model": "candidate", "messages": [{"role": "user", "content": ASK}],
                                                "max_tokens": 2})
    assert r.status_code == 200
    first = http.get("/ab/stats").json()["round"]["id"]
    go_live(state, candidate=c)
    assert http.post("/v1/feedback", json={"response_id": r.json()["id"], "value": "up"}).status_code == 200
    assert http.get("/ab/stats").json()["arms"]["candidate"]["thumbs_up"] == 0
    old = http.get("/ab/stats", params={"round": first}).json()["arms"]["candidate"]
    assert (old["requests"], old["thumbs_up"]) == (1, 1)


def test_thumbs_count_once_per_key_and_only_on_a_served_response(served):
    """One key's thumbs on one response count once (a second: 409, the stats unchanged), another key's
    count too; thumbs on a response id no arm served are a 404 and leave nothing in the log."""
    http, root, _, state = served
    one, _ = state.auth.store.create("inference", "one")
    two, _ = state.auth.store.create("inference", "two")
    h1, h2 = ({"Authorization": f"Bearer {k}"} for k in (one, two))
    r = http.post("/v1/chat/completions", headers=h1, json={"model": "candidate", "max_tokens": 2,
                                                            "messages": [{"role": "user", "content": ASK}]})
    rid = r.json()["id"]
    assert http.post("/v1/feedback", headers=h1, json={"response_id": rid, "value": "up"}).status_code == 200
    again = http.post("/v1/feedback", headers=h1, json={"response_id": rid, "value": "up"})
    assert again.status_code == 409 and again.json()["error"]["param"] == "response_id"
    assert http.post("/v1/feedback", headers=h2, json={"response_id": rid, "value": "down"}).status_code == 200
    lead, _ = state.auth.store.create("admin", "lead")
    arms = http.get("/ab/stats", headers={"Authorization": f"Bearer {lead}"}).json()["arms"]["candidate"]
    assert (arms["thumbs_up"], arms["thumbs_down"]) == (1, 1)
    pair = http.post("/v1/side_by_side", headers=h1, json={"max_tokens": 2, **chat(ASK)}).json()["pair_id"]
    size = (root / "ab" / "live.jsonl").stat().st_size
    for rid in [pair] + [f"chatcmpl-made-up-{i}" for i in range(20)]:  # a pair's id is no response either
        nothing = http.post("/v1/feedback", headers=h1, json={"response_id": rid, "value": "up"})
        assert nothing.status_code == 404, nothing.text
    assert (root / "ab" / "live.jsonl").stat().st_size == size


@pytest.fixture
def browser_on_app(models, tmp_path):
    """The app on a real HTTP server on 127.0.0.1 (uvicorn, in a thread; no Ray) and Debian's chromium
    driven by selenium, as tests/http/test_service_jobs.py drives it."""
    import socket
    import threading

    import uvicorn

    from tests.helpers import headless_chromium

    state = lineage_state(models, tmp_path / "root")
    api.dependency_overrides[server_state] = lambda: state
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    driver = headless_chromium()
    try:
        yield driver, f"http://127.0.0.1:{port}", state
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)
        api.dependency_overrides.clear()


def page_until(driver, check, timeout: float = 30):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: check(d))


@pytest.mark.integration  # a browser (a few seconds), though no Ray
def test_the_pages_name_the_round_keep_it_blind_and_record_skips(browser_on_app):
    """The rating page: a pair passed over for the next prompt is recorded as skipped, and a vote
    names no arm while the round is open. The console: the round's two shas, the arms' wins only once
    the round is decided, and the ended round listed with them."""
    from selenium.webdriver.common.by import By

    driver, url, state = browser_on_app
    champion, candidate = state.gw.aliases["champion"], state.gw.aliases["candidate"]
    driver.get(url + "/rate")
    for prompt in ("what is the price of the zora lamp?", "and of the bove lamp?"):
        driver.find_element(By.ID, "prompt").clear()
        driver.find_element(By.ID, "prompt").send_keys(prompt)
        driver.find_element(By.ID, "ask").click()
        page_until(driver, lambda d: d.find_element(By.ID, "vote-a").is_enabled())
    driver.find_element(By.TAG_NAME, "body").send_keys("1")  # "A is better", on the second pair
    reveal = page_until(driver, lambda d: d.find_element(By.ID, "reveal").text)
    assert reveal.startswith("Vote recorded") and "champion" not in reveal and "candidate" not in reveal
    stats = state.gw.stats()
    assert stats["skipped"]["pairs"] == 1 and stats["pairwise"]["distinct_prompts"] == 1  # the first pair: skipped
    driver.get(url + "/")
    ab = page_until(driver, lambda d: d.find_element(By.ID, "ab").text if "verdict" in d.find_element(By.ID, "ab").text
                    else None)
    assert champion[:12] in ab and candidate[:12] in ab and "1 of 2 pairs skipped" in ab
    assert "shown once the round is decided" in ab and "candidate preferred on" not in ab
    go_live(state, candidate=next(s for s, m in state.gw.models.items() if m["gen_id"] == "gen-2"))
    ended = page_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#ab-rounds li[data-round='{stats['round']['id']}']"))
    assert "champion on" in ended[0].text and candidate[:12] in ended[0].text



def test_an_open_rounds_results_are_shown_to_an_admin_only_until_it_is_decided(served):
    """A rater with an inference key sees how many prompts an open round has counted, not which arm
    won them, the thumbs per arm, or the verdict's reason; an admin sees everything; once the round
    is decided (here: five decisive votes make its one look) everyone sees its results."""
    http, root, _, state = served
    rater, _ = state.auth.store.create("inference", "rater")
    lead, _ = state.auth.store.create("admin", "lead")
    as_rater, as_lead = {"Authorization": f"Bearer {rater}"}, {"Authorization": f"Bearer {lead}"}

    def rate(i: int) -> None:
        pair = http.post("/v1/side_by_side", json={"max_tokens": 2, "temperature": 0, **chat(f"price of lamp {i}?")},
                         headers=as_rater)
        assert pair.status_code == 200, pair.text
        voted = http.post("/v1/feedback/pairwise", json={"pair_id": pair.json()["pair_id"], "preferred": "a"},
                          headers=as_rater)
        assert voted.status_code == 200, voted.text

    rate(0)
    seen = http.get("/ab/stats", headers=as_rater).json()
    assert seen["per_arm_hidden"] and not seen["round"]["decided"] and seen["pairwise"] == {
        "distinct_prompts": 1, "votes_not_counted": 0}
    assert seen["arms"]["candidate"] == {"requests": 1} and seen["verdict"]["verdict"] == "undecided"
    assert set(seen["verdict"]) == {"verdict", "looks", "reason"}  # no wins, interval or p-value
    full = http.get("/ab/stats", headers=as_lead).json()
    assert "per_arm_hidden" not in full and full["pairwise"]["candidate_wins"] + full["pairwise"]["champion_wins"] == 1
    assert http.get("/ab/stats").status_code == 401  # keys exist: no key, no stats
    for i in range(1, 5):
        rate(i)
    decided = http.get("/ab/stats", headers=as_rater).json()
    assert decided["round"]["decided"] and "per_arm_hidden" not in decided
    assert decided["pairwise"]["candidate_wins"] + decided["pairwise"]["champion_wins"] == 5


def test_evo_serve_decides_rounds_with_the_lineage_configs_plan(tmp_path):
    """`evo serve` (cmd_serve) builds its app with `root_plan`: the `ab:` section of the root's run
    config, as `evo ab` reads it, and evo's default plan for a root without a run config."""
    from evo.atomic import atomic_write_json
    from evo.http.app import root_plan

    assert root_plan(str(tmp_path)) == TestPlan()
    atomic_write_json(tmp_path / "run_config.json", {"ab": {"min_share": 0.4, "look_every": 7, "alpha": 0.1}})
    plan = root_plan(str(tmp_path))
    assert (plan.min_share, plan.look_every, plan.alpha) == (0.4, 7, 0.1) and plan != TestPlan()


def test_a_rate_limited_request_gets_retry_after_over_http(served):
    """The 429 of a key over its rate carries Retry-After (seconds), as OpenAI's does, in OpenAI's body."""
    from evo.http.keys import Authenticator

    http, root, _, state = served
    key, _ = state.auth.store.create("inference", "busy")
    state.auth = Authenticator(root, rate_per_minute=2)
    auth = {"Authorization": f"Bearer {key}"}
    assert [http.get("/v1/models", headers=auth).status_code for _ in range(2)] == [200, 200]
    r = http.get("/v1/models", headers=auth)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 30


def test_wrong_admin_tokens_are_counted_and_refused_with_retry_after(served):
    """On a server with an admin token and rate limits, wrong tokens count against the address that
    sent them: past the rate it gets 429 with Retry-After before its next token is compared (the right
    one too: a guess costs a minute); with keys as well, the 429 still comes through as a 429."""
    from evo.http.keys import Authenticator

    http, root, _, state = served
    state.auth = Authenticator(root, rate_per_minute=2)
    assert http.post("/admin/reload", headers={"Authorization": "Bearer tok"}).status_code == 200
    wrong = [http.post("/admin/reload", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(3)]
    assert wrong == [401, 401, 429]
    r = http.post("/admin/reload", headers={"Authorization": "Bearer tok"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    state.auth.store.create("admin", "lead")  # a server with keys: the wrong token is also tried as a key
    state.auth = Authenticator(root, rate_per_minute=2)
    codes = [http.post("/admin/reload", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(3)]
    assert codes == [401, 401, 429]
