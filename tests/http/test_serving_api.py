"""OpenAI-compatible request validation and the serving generator, on a tiny real model."""

import pytest

from evo.config import TinyModelConfig
from evo.model.generate import Sampling, cut_at_stop, generate_batch, stream_one
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer
from evo.openai_api import APIError, ChatRequest, CompletionRequest, Limits, chat_response, parse_request

LIMITS = Limits(max_prompt_chars=100, max_tokens=32, max_n=3)
CHAT = {"model": "evo", "messages": [{"role": "user", "content": "hi"}]}


def test_a_valid_chat_request_with_the_usual_fields():
    req = parse_request(ChatRequest, {**CHAT, "max_tokens": 8, "temperature": 0, "top_p": 0.9, "stop": "\n",
                                      "user": "u1", "n": 2, "logprobs": None}, LIMITS)
    assert req.stops() == ["\n"] and req.n == 2 and req.user == "u1"


@pytest.mark.parametrize("body,where", [
    ([1, 2], "JSON object"),
    ({"messages": CHAT["messages"]}, "'model'"),
    ({"model": "evo"}, "'messages'"),
    ({**CHAT, "messages": []}, "'messages'"),
    ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "'messages.0.role'"),
    ({**CHAT, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "nothing to answer"),
    ({**CHAT, "temperature": 3}, "'temperature'"),
    ({**CHAT, "top_p": 0}, "'top_p'"),
    ({**CHAT, "max_tokens": 0}, "'max_tokens'"),
    ({**CHAT, "max_tokens": 33}, "over the limit of 32"),
    ({**CHAT, "n": 4}, "'n' is 4, over the limit of 3"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "up to 4"),
    ({**CHAT, "messages": [{"role": "user", "content": "x" * 101}]}, "101 characters, over the limit of 100"),
])
def test_bad_requests_get_a_400_that_names_the_field(body, where):
    with pytest.raises(APIError) as e:
        parse_request(ChatRequest, body, LIMITS)
    assert e.value.status == 400 and where in e.value.message
    assert e.value.body()["error"]["message"] == e.value.message


def test_chat_content_as_text_parts_is_answered_like_a_string():
    parts = [{"type": "text", "text": "tr red"}, {"type": "text", "text": "fox runs ="}]
    req = parse_request(ChatRequest, {**CHAT, "messages": [{"role": "user", "content": parts}]}, LIMITS)
    assert req.messages[0].content == "tr red\nfox runs ="
    assert req.prompt_chars() == len("tr red\nfox runs =")


@pytest.mark.parametrize("content,why", [
    ([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}],
     "content part 1 is of type 'image_url': this server answers text only"),
    ([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}], "of type 'input_audio'"),
    (["just a string in a list"], "content part 0 is not a {'type': 'text'"),
    ([{"type": "text"}], "needs a string 'text'"),
    ([], "empty list of parts"),
])
def test_chat_content_parts_evo_cannot_answer_get_a_400_that_says_so(content, why):
    with pytest.raises(APIError) as e:
        parse_request(ChatRequest, {**CHAT, "messages": [{"role": "user", "content": content}]}, LIMITS)
    assert e.value.status == 400 and why in e.value.message and "'messages.0.content'" in e.value.message


def test_completion_request_and_response_shape():
    req = parse_request(CompletionRequest, {"model": "champion", "prompt": "tr red cat runs ="}, LIMITS)
    assert req.max_tokens == 32  # the server default (64), capped at the limit
    body = chat_response("id-1", "evo", [("hello", "stop", 2), ("hey", "length", 4)], 5, "candidate")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert [c["message"]["content"] for c in body["choices"]] == ["hello", "hey"]
    assert body["object"] == "chat.completion" and body["evo"]["arm"] == "candidate"


def test_cut_at_stop():
    assert cut_at_stop("abc. def\nxyz", [".", "\n"]) == ("abc", True)
    assert cut_at_stop("abc", ["z"]) == ("abc", False)


@pytest.fixture(scope="module")
def tiny():
    tok = train_bpe_tokenizer(["tr red cat runs = zora zova bove"] * 30, 300)
    model = build_tiny_llama(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tok)
    return model.eval(), tok


def test_generation_counts_n_and_finish_reasons(tiny):
    model, tok = tiny
    out = generate_batch(model, tok, ["tr red", "tr red cat runs ="], Sampling(max_tokens=5, temperature=0.8, n=3, seed=1), [])
    assert [len(o) for o in out] == [3, 3]
    for o in out[0] + out[1]:
        assert 1 <= o.completion_tokens <= 5 and o.finish_reason in ("stop", "length")
        assert o.finish_reason == "stop" or o.completion_tokens == 5
    again = generate_batch(model, tok, ["tr red", "tr red cat runs ="], Sampling(max_tokens=5, temperature=0.8, n=3, seed=1), [])
    assert [[o.text for o in r] for r in again] == [[o.text for o in r] for r in out]  # seeded


def test_greedy_is_deterministic_and_batch_independent(tiny):
    model, tok = tiny
    alone = generate_batch(model, tok, ["tr red cat runs ="], Sampling(max_tokens=6, temperature=0), [])
    batched = generate_batch(model, tok, ["tr", "tr red cat runs ="], Sampling(max_tokens=6, temperature=0), [])
    assert alone[0][0].text == batched[1][0].text


def test_streaming_yields_the_same_text_as_one_answer(tiny):
    model, tok = tiny
    whole = generate_batch(model, tok, ["tr red cat runs ="], Sampling(max_tokens=8, temperature=0), [])[0][0]
    deltas = list(stream_one(model, tok, "tr red cat runs =", Sampling(max_tokens=8, temperature=0), []))
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].finish_reason == whole.finish_reason and deltas[-1].completion_tokens == whole.completion_tokens
    assert all(d.finish_reason is None for d in deltas[:-1]) and len([d for d in deltas if d.text]) > 1


def test_streaming_never_shows_a_stop_string(tiny):
    model, tok = tiny
    whole = generate_batch(model, tok, ["tr red cat runs ="], Sampling(max_tokens=12, temperature=0), [])[0][0].text
    stop = whole.strip()[2:5]  # some text from the middle of the answer
    assert stop and stop in whole
    cut = generate_batch(model, tok, ["tr red cat runs ="], Sampling(max_tokens=12, temperature=0), [stop])[0][0]
    deltas = list(stream_one(model, tok, "tr red cat runs =", Sampling(max_tokens=12, temperature=0), [stop]))
    streamed = "".join(d.text for d in deltas)
    assert streamed == cut.text and stop not in streamed and deltas[-1].finish_reason == "stop"


def test_greedy_with_n_gives_n_equal_answers(tiny):
    model, tok = tiny
    out = generate_batch(model, tok, ["tr red", "tr red cat runs ="], Sampling(max_tokens=5, temperature=0, n=3), [])
    assert [len(o) for o in out] == [3, 3] and all(len({x.text for x in o}) == 1 for o in out)
