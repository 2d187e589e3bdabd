"""Preference pairs as records: OpenAI's DPO file format and TRL's preference forms ingest into
kind 'preference' (hashed, stored), every bad line is named file:line with its reason, and the
supervised path refuses a preference record by name instead of training its prompt alone."""

import json

import pytest

from evo.data.ingest import IngestError, ingest_bytes, ingest_jsonl
from evo.data.mix import build_mix
from evo.data.records import Record, RecordError, render_chat
from evo.data.store import DataStore
from evo.finetune.files import FileStore
from evo.openai_api import APIError

ASK = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "How cold is it today?"}]
GOOD_ANSWER, BAD_ANSWER = "About 12 degrees.", "I cannot know that."


def assistant(text):
    return [{"role": "assistant", "content": text}]


OPENAI = {"input": {"messages": ASK, "tools": [], "parallel_tool_calls": True},
          "preferred_output": assistant(GOOD_ANSWER), "non_preferred_output": assistant(BAD_ANSWER)}
TRL_CONVERSATIONAL = {"prompt": ASK, "chosen": assistant(GOOD_ANSWER), "rejected": assistant(BAD_ANSWER)}
TRL_IMPLICIT = {"chosen": ASK + assistant(GOOD_ANSWER), "rejected": ASK + assistant(BAD_ANSWER)}
TRL_STANDARD = {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "category": "sky", "id": 3}


def write(tmp_path, lines, name="pairs.jsonl"):
    p = tmp_path / name
    p.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return p


def test_openai_and_trl_forms_ingest_as_one_preference_record(tmp_path):
    rep = ingest_jsonl(write(tmp_path, [OPENAI, TRL_CONVERSATIONAL, TRL_IMPLICIT, TRL_STANDARD]))
    # the three conversational spellings of one pair are one record: the last two are duplicates
    assert len(rep.records) == 2 and [d.line for d in rep.duplicates] == [2, 3]
    chat, plain = rep.records
    assert chat.kind == plain.kind == "preference"
    assert json.loads(chat.messages) == ASK and chat.chat() == ASK  # the prompt's turns, ending in the user's
    assert chat.prompt == render_chat(ASK + assistant(""))[0] and chat.prompt.endswith("user: How cold is it today?\nassistant:")
    assert (chat.completion, chat.rejected) == (GOOD_ANSWER, BAD_ANSWER)
    assert (plain.prompt, plain.completion, plain.rejected, plain.messages) == ("The sky is", " blue.", " green.", "")
    assert (plain.category, plain.rid) == ("sky", "3")
    cased = ingest_jsonl(write(tmp_path, [{**TRL_STANDARD, "rejected": " Blue."}], "c.jsonl")).records[0]
    assert cased.rejected == " Blue."  # case can be what is preferred: not the same answer
    swapped = ingest_jsonl(write(tmp_path, [{**TRL_STANDARD, "chosen": " green.", "rejected": " blue."}], "s.jsonl"))
    assert swapped.records[0].sha != plain.sha  # which answer is preferred is part of what it says
    store = DataStore(tmp_path / "root")
    back = store.get(store.put(rep.records))
    assert sorted(back, key=lambda r: r.sha) == sorted(rep.records, key=lambda r: r.sha)


BAD = [
    ({**TRL_STANDARD, "rejected": " blue."}, "'chosen' and 'rejected' are the same answer"),
    ({**TRL_STANDARD, "rejected": "\tblue.\n"}, "are the same answer"),  # up to spacing
    ({**OPENAI, "non_preferred_output": assistant(GOOD_ANSWER)}, "'preferred_output' and 'non_preferred_output' are the same"),
    ({**TRL_STANDARD, "chosen": "  "}, "'chosen' is empty"),
    ({**TRL_CONVERSATIONAL, "rejected": assistant("")}, "'rejected[0].content' is empty"),
    ({**TRL_STANDARD, "prompt": ""}, "'prompt' is empty"),
    ({**TRL_CONVERSATIONAL, "prompt": ASK + assistant("hi")}, "'prompt' ends with the assistant's turn"),
    ({**OPENAI, "input": {"messages": ASK + assistant("hi")}}, "'input.messages' ends with the assistant's turn"),
    ({**TRL_CONVERSATIONAL, "prompt": [{"role": "bot", "content": "x"}]}, "prompt[0].role must be one of"),
    ({**OPENAI, "input": {"messages": [{"role": "tool", "content": "x"}]}}, "input.messages[0].role must be one of"),
    ({**TRL_CONVERSATIONAL, "chosen": [{"role": "user", "content": "x"}]}, "'chosen'[0].role must be 'assistant'"),
    ({**TRL_CONVERSATIONAL, "chosen": assistant("a") + assistant("b")}, "'chosen' must hold exactly one"),
    ({**TRL_CONVERSATIONAL, "prompt": []}, "'prompt' must be a non-empty list"),
    ({"prompt": "p", "chosen": "a"}, "has no 'rejected'"),
    ({"input": {"messages": ASK}, "preferred_output": assistant("a")}, "has no 'non_preferred_output'"),
    ({**OPENAI, "input": {"messages": ASK, "tools": [{"type": "function"}]}}, "'input.tools' is not empty"),
    ({**OPENAI, "input": ASK}, "'input' must be an object with 'messages'"),
    ({"prompt": "p", "chosen": assistant("a"), "rejected": assistant("b")}, "use one form for all three"),
    ({"chosen": ASK + assistant("a"), "rejected": [ASK[1]] + assistant("b")}, "differ before their last turn"),
    ({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "has no 'prompt'"),
    ({"prompt": "p", "completion": "c", "label": False}, "an unpaired preference (KTO's form) is not taken"),
]


@pytest.mark.parametrize("line,reason", BAD, ids=[r for _, r in BAD])
def test_a_bad_pair_is_named_by_file_line_and_reason(tmp_path, line, reason):
    p = write(tmp_path, [TRL_STANDARD, line])
    with pytest.raises(IngestError) as e:
        ingest_jsonl(p)
    msg = str(e.value)
    assert f"{p}:2: " in msg and reason in msg and "nothing ingested" in msg


PREFERENCE = Record("preference", "user: q\nassistant:", "good", json.dumps([{"role": "user", "content": "q"}]),
                    "votes", "pair-1", "bad")
SUPERVISED = Record("completion", "tr red cat =", " a b")


def test_the_supervised_path_refuses_a_preference_record_by_name():
    """A supervised mix refuses a preference delta, naming the record, instead of training it as a
    chat with no answer turn; a preference mix takes it, and replay rehearses supervised records only.
    (Evals read a preference record as its prompt and chosen answer: `prompt_and_completion`.)"""
    with pytest.raises(RecordError, match=r"record 1 \(id 'pair-1', category 'votes'\) is a preference pair"):
        build_mix([SUPERVISED, PREFERENCE], [], 0, [], seed=0)
    mix = build_mix([PREFERENCE], [SUPERVISED, PREFERENCE], 5, [], seed=0, preference=True)
    assert sorted(r.kind for r in mix.records) == ["completion", "preference"] and mix.n_replay == 1
    assert build_mix([SUPERVISED], [PREFERENCE], 5, [], seed=0).n_replay == 0


def test_an_upload_says_which_kinds_it_holds_and_a_method_that_cannot_train_them_is_refused(tmp_path):
    from evo.finetune.files import check_method  # here: the other tests of this module run without it

    files = FileStore(tmp_path)
    dpo = files.create(write(tmp_path, [OPENAI, TRL_STANDARD]).read_bytes(), "pairs.jsonl", "fine-tune")
    sft = files.create(json.dumps({"prompt": "p", "completion": "c"}).encode() + b"\n", "sft.jsonl", "fine-tune")
    assert (dpo["records"], dpo["record_kinds"], sft["record_kinds"]) == (2, ["preference"], ["completion"])
    assert files.kinds(dpo["id"]) == ["preference"]
    with pytest.raises(APIError) as e:
        check_method(files.kinds(dpo["id"]), "supervised", dpo["id"])
    assert e.value.status == 400 and "holds preference pairs" in e.value.message and e.value.param == "training_file"
    with pytest.raises(APIError, match="a dpo job trains on preference pairs only"):
        check_method(files.kinds(sft["id"]), "dpo", sft["id"])
    check_method(["preference"], "dpo", dpo["id"])
    check_method(["chat", "completion"], "supervised", sft["id"])
    with pytest.raises(APIError) as bad:
        files.create(json.dumps({**TRL_STANDARD, "rejected": " blue."}).encode(), "same.jsonl", "fine-tune")
    assert bad.value.status == 400 and "same.jsonl:1: 'chosen' and 'rejected' are the same answer" in bad.value.message


def test_a_preference_line_with_bom_and_crlf_ingests_as_uploads_do():
    data = b"\xef\xbb\xbf" + json.dumps(OPENAI).encode() + b"\r\n"
    assert ingest_bytes(data, "win.jsonl").records[0].kind == "preference"
