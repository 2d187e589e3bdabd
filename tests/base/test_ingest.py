"""Every data-validation path: the user sees file:line: reason, and a bad file ingests nothing."""

import json

import pytest

from evo.data.ingest import IngestError, ingest_jsonl

GOOD = [
    {"prompt": "tr red cat runs =", "completion": " a b c"},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}], "category": "chat", "id": 7},
    {"text": "raw text record"},
]


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    def raw(line) -> bytes:
        return line if isinstance(line, bytes) else line.encode() if isinstance(line, str) else json.dumps(line).encode()

    p.write_bytes(b"\n".join(raw(line) for line in lines) + b"\n")
    return p


def test_three_shapes_ingest(tmp_path):
    rep = ingest_jsonl(write(tmp_path, GOOD))
    assert [r.kind for r in rep.records] == ["completion", "chat", "text"]
    chat = rep.records[1]
    assert chat.category == "chat" and chat.rid == "7"
    assert chat.prompt.endswith("assistant:") and chat.completion == " hello"
    assert rep.records[2].prompt == "" and rep.records[2].completion == "raw text record"


BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ({"prompt": "x"}, "has no 'completion'"),
    ({"completion": "x"}, "has no 'prompt'"),
    ({"prompt": 3, "completion": "x"}, "'prompt' must be a string"),
    ({"prompt": "p", "completion": "  "}, "'completion' is empty"),
    ({"text": ""}, "'text' is empty"),
    ({"foo": "bar"}, "unknown shape"),
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({"messages": ["hi"]}, "messages[0] must be an object"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role must be one of"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content must be a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "a system message may only come first"),
    ({"messages": [{"role": "user", "content": "q"}]}, "the last message must be the assistant's"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "last assistant message is empty"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "has no user message"),
    ({"prompt": "p", "completion": "c", "category": 5}, "'category' must be a string"),
    (b'{"text": "caf\xe9"}', "not valid UTF-8 (byte 0xe9"),
]


@pytest.mark.parametrize("line,reason", BAD, ids=[r for _, r in BAD])
def test_bad_line_names_file_line_and_reason(tmp_path, line, reason):
    p = write(tmp_path, [GOOD[0], line])
    with pytest.raises(IngestError) as e:
        ingest_jsonl(p)
    msg = str(e.value)
    assert f"{p}:2: " in msg and reason in msg
    assert "nothing ingested" in msg


def test_skip_invalid_ingests_the_rest_and_reports(tmp_path):
    p = write(tmp_path, [GOOD[0], "{oops", GOOD[2], {"foo": 1}])
    rep = ingest_jsonl(p, skip_invalid=True)
    assert len(rep.records) == 2
    assert [(x.line, x.reason.split(" ")[0]) for x in rep.invalid] == [(2, "not"), (4, "unknown")]
    assert "2 invalid skipped" in rep.summary()


def test_empty_file_is_an_error(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n \n")
    with pytest.raises(IngestError, match="file is empty"):
        ingest_jsonl(p)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        ingest_jsonl(tmp_path / "nope.jsonl")


def test_duplicates_are_counted_skips(tmp_path):
    dup = dict(GOOD[0], id="other-id")  # same content, different id: still a duplicate
    rep = ingest_jsonl(write(tmp_path, [GOOD[0], GOOD[1], dup]))
    assert len(rep.records) == 2
    assert [(d.line, d.reason) for d in rep.duplicates] == [(3, "duplicate of line 1")]
    assert "1 duplicates skipped" in rep.summary()


def test_over_long_record(tmp_path):
    p = write(tmp_path, [{"prompt": "p", "completion": "x" * 50}])
    with pytest.raises(IngestError, match=r":1: record has 51 characters, over the limit of 20"):
        ingest_jsonl(p, max_chars=20)


def test_all_invalid_with_skip_is_still_an_error(tmp_path):
    with pytest.raises(IngestError, match="no valid records"):
        ingest_jsonl(write(tmp_path, ["{x", "[]"]), skip_invalid=True)


def test_many_problems_are_listed_then_counted(tmp_path):
    p = write(tmp_path, ["{x"] * 30)
    with pytest.raises(IngestError) as e:
        ingest_jsonl(p)
    assert "30 invalid line(s)" in str(e.value) and "... and 10 more" in str(e.value)


def test_a_file_saved_with_a_utf8_byte_order_mark_ingests(tmp_path):
    """Notepad and Excel write a BOM first; line 1 is still a record, not 'invalid JSON'."""
    p = tmp_path / "win.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + '{"prompt": "caf\u00e9?", "completion": "oui"}\r\n{"text": "two"}\r\n'.encode())
    rep = ingest_jsonl(p)
    assert [r.prompt for r in rep.records] == ["caf\u00e9?", ""] and not rep.invalid
    # a BOM anywhere but first is still an error, on its line
    p.write_bytes(b'{"text": "one"}\n\xef\xbb\xbf{"text": "two"}\n')
    with pytest.raises(IngestError, match=r"win.jsonl:2: not valid JSON"):
        ingest_jsonl(p)
