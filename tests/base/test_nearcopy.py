"""The one near-copy measure (evo.nearcopy): what it calls a copy, and its index agreeing with it."""

from __future__ import annotations

import random

import pytest

from evo.data.records import Record, parse_record
from evo.nearcopy import THRESHOLD, NearIndex, near, near_copies, questions, similarity


@pytest.mark.parametrize("a, b", [
    ("What is 3 plus 5?", "What is 5 plus 3?"),  # word order: the same words
    ("What is 3 plus 5?", "what is three plus five"),  # case, punctuation, number words
    ("What is the capital of Spain?", "What is the capital of France?"),  # one slot of a template
    ("What is the capital of Australia?", "What is the capital of Portugal?"),
    ("Tell me a fun fact about octopuses.", "Tell me a fun fact about octopus."),
    ("tr big owl hides =", "tr big owl digs ="),
])
def test_near_copies(a, b):
    assert near(a, b) and near(b, a) and similarity(a, b) >= THRESHOLD


@pytest.mark.parametrize("a, b", [
    ("What is the capital of South Korea?", "What is the capital of Australia?"),  # two words differ
    ("How much does the Ostira saw cost?", "How much does the Wynvek lamp cost?"),  # another product
    ("How much does the Ostira saw cost?", "Tell me what the Ostira saw costs."),  # a rewording
    ("What is 2 plus 2?", "What is 3 plus 5?"),
    ("Describe a sunny day.", "Describe a city at night."),
    ("Paris", "London"),
    ("", ""),
])
def test_not_near_copies(a, b):
    assert not near(a, b)


def test_the_index_finds_exactly_the_pairs_the_measure_calls_near():
    """The prefix filter loses nothing: on random short texts over a small vocabulary (many pairs
    near, many not), the index answers as comparing every pair does."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(12)]
    texts = [" ".join(rng.sample(vocab, rng.randint(1, 7))) for _ in range(300)]
    index = NearIndex(texts[:150])
    for t in texts[150:]:
        want = max((similarity(t, o) for o in texts[:150]), default=0.0)
        hit = index.nearest(t)
        assert (hit is not None) == (want >= THRESHOLD), t
        if hit is not None:
            assert hit[1] == pytest.approx(want) and t in index
    found = near_copies(texts[150:], texts[:150])
    assert len(found) == sum(1 for t in texts[150:] if t in index) > 10


def test_what_a_record_asks():
    chat = parse_record({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Who designed the Ndletov saw?"},
                                      {"role": "assistant", "content": "Ilsa Brima."},
                                      {"role": "user", "content": "And the Wynvek lamp?"},
                                      {"role": "assistant", "content": "Doran Tov."}]})
    assert questions(chat) == ["Who designed the Ndletov saw?", "And the Wynvek lamp?"]
    assert questions(Record("completion", "What is 5 plus 3?", " 8")) == ["What is 5 plus 3?"]
    assert questions(Record("text", "", "a whole text")) == ["a whole text"]
