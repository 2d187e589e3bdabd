"""The general-ability evals' measures on known text (the model-facing part is in test_real_model.py)."""

import json

import pytest

from evo.evals.general import Question, distinct, fake_words, read_prompts, read_questions, repetition, vocabulary


@pytest.mark.parametrize("reply,ok", [
    ("The capital of France is Paris.", True),
    ("paris, of course", True),
    ("Parisian food is good.", False),  # a whole word, not a prefix
])
def test_an_answer_counts_as_a_whole_word(reply, ok):
    assert Question("What is the capital of France?", ("Paris",)).correct(reply) is ok


@pytest.mark.parametrize("reply,ok", [
    ("Water freezes at 0 degrees Celsius.", True),
    ("Water freezes at 0°C.", True),
    ("The freezing point of water is -18.0°C.", False),  # "0" inside a number is not the answer
    ("There are 240 minutes.", False),
    ("It is 0.5 degrees.", False),
])
def test_a_number_answer_is_not_found_inside_another_number(reply, ok):
    assert Question("At what temperature does water freeze?", ("0", "zero")).correct(reply) is ok


def test_fake_words_are_neither_dictionary_nor_domain_words():
    domain = vocabulary(["The Wynvek saw costs 42 florins.", "Designed by Ilsa Tovanrik."])
    n, fake = fake_words(["The wynvek saw is fine.", "Blorptastic zindrelux of the sea."], domain)
    assert n == 10 and sorted(fake) == ["blorptastic", "zindrelux"]


def test_distinct_and_repetition():
    varied = ["the sea is wide and deep", "a cat sat on the mat"]
    looped = ["the the the the the the", "the the the the the the"]
    assert distinct(varied, 1) == pytest.approx(11 / 12) and distinct(varied, 2) == 1.0
    assert distinct(looped, 1) == pytest.approx(1 / 12) and distinct(looped, 2) == pytest.approx(1 / 10)
    assert repetition(varied) == 0.0
    assert repetition(looped) == pytest.approx(6 / 8)  # per reply: 4 trigrams, the first new, 3 repeats
    assert repetition(["one two three one two three"]) == pytest.approx(1 / 4)
    assert distinct([], 2) == 0.0 and repetition([]) == 0.0


def test_question_and_prompt_files_name_the_bad_line(tmp_path):
    good = tmp_path / "q.jsonl"
    good.write_text(json.dumps({"prompt": "2+2?", "answers": ["4", "four"]}) + "\n"
                    + json.dumps({"prompt": "x?", "answer": "y"}) + "\n")
    assert read_questions(good) == [Question("2+2?", ("4", "four")), Question("x?", ("y",))]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "2+2?", "answers": ["4"]}) + "\n" + json.dumps({"prompt": "x?", "answers": []}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: a general question needs 'prompt'"):
        read_questions(bad)
    open_bad = tmp_path / "o.jsonl"
    open_bad.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ValueError, match=r"o.jsonl:1: an open prompt needs 'prompt'"):
        read_prompts(open_bad)


def test_the_counts_behind_distinct_2_and_repetition():
    """The n the gate's noise allowance uses: every word bigram and trigram, none across two replies."""
    from evo.evals.general import ngrams

    replies = ["the sea is wide", "a cat"]
    assert len(ngrams(replies, 2)) == 4 and len(ngrams(replies, 3)) == 2
    assert ngrams(["one two"], 3) == []
