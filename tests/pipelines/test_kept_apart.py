"""What the export of an A/B round, a fine-tuning job's validation file and targeted data keep apart
from the lineage's test parts (issue 28 items 3 and 7): the test parts as each delta was divided when
it was ingested, whatever the run config's fractions are now; the export by the one near-copy measure
(`evo.nearcopy`) over every user turn; the validation file by the split's own question key. On the
shop domain's data, in a real lineage root with stand-in weights (`tests/base/test_leaks.shop_line`);
no Ray, no model is read."""

from __future__ import annotations

import json

import pytest

from evo.ab.export import kept_apart
from evo.atomic import atomic_write_json
from evo.curation.targeted import scored_prompts
from evo.data.records import Record
from evo.data.store import Split
from evo.finetune.validation import job_validation, validation_apart
from evo.nearcopy import NearIndex, questions
from tests.base.test_leaks import shop_line


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A shop line whose deltas were ingested with test_fraction 0.3, and a run config that now says
    0.1 (`--set data.test_fraction=0.1` on a later run): (cfg now, lineage, gen-1's recorded test part,
    the records of it a 0.1 split would call train or val and that are no near-copy of its 0.1 test part)."""
    tmp = tmp_path_factory.mktemp("wide")
    cfg, lin, _, _ = shop_line(tmp, 0, ["data.test_fraction=0.3"])
    now = cfg.model_copy(update={"data": cfg.data.model_copy(update={"test_fraction": 0.1})})
    atomic_write_json(lin.root / "run_config.json", now.model_dump(mode="json"))
    row = lin.ledger.get("gen-1")
    recorded = lin.data.parts(row["data_delta_sha"], Split("v3", 0.1, 0.1)).test  # the recorded split wins
    narrow = Split("v3", 0.1, 0.1).parts(lin.data.get(row["data_delta_sha"])).test
    assert lin.data.split_of(row["data_delta_sha"]).test_fraction == 0.3 and len(recorded) > len(narrow)
    index = NearIndex(q for r in narrow for q in questions(r))
    moved = [r for r in recorded if r not in narrow and not any(q in index for q in questions(r))]
    assert moved  # the test then needs the recorded split, not the near-copy measure
    return now, lin, recorded, moved, narrow


def test_the_export_leaves_out_a_rewording_of_a_test_question(wide):
    """A voted prompt that asks a test item's question in other words (its end punctuation changed and
    a word added) is a near-copy of it: left out, as the same string is. A question of no test part is kept."""
    _, lin, recorded, _, narrow = wide
    apart, checked = kept_apart(lin.root)
    asked = next(r.prompt for r in narrow if r.kind == "completion" and r.prompt.endswith("?"))
    assert apart(asked)
    reworded = asked.rstrip("?").lower() + ", please."
    assert apart(reworded) and apart([{"role": "user", "content": reworded}])
    assert not apart("Do you ship to the islands?") and not apart([{"role": "user", "content": "Where is the shop?"}])
    assert checked["measure"].startswith("near-copy") and checked["test_records"] >= len(recorded)


def test_the_export_leaves_out_a_conversation_that_asked_a_test_question_earlier(wide):
    """The test question in the first turn (with the answer it was given) and another in the last: the
    pair would train on the test item's answer as context, so it is left out."""
    _, lin, _, _, narrow = wide
    apart, _ = kept_apart(lin.root)
    test = next(r for r in narrow if r.kind == "completion")
    chat = [{"role": "user", "content": test.prompt}, {"role": "assistant", "content": test.completion},
            {"role": "user", "content": "Thanks. Do you ship to the islands?"}]
    assert apart(chat)
    assert not apart(chat[-1:])


def test_what_is_kept_apart_is_each_deltas_recorded_test_part(wide):
    """gen-1's delta was ingested with test_fraction 0.3; the run config says 0.1 now. The questions
    of the recorded test part that a 0.1 split would put in train or val (and that are no near-copy of
    a 0.1 test question) are still test: the export leaves them out, targeted data keeps apart from
    them, and a job's validation file may not choose on them."""
    now, lin, _, moved, _ = wide
    apart, _ = kept_apart(lin.root)
    assert all(apart(r.prompt) for r in moved if r.kind == "completion")
    scored = set(scored_prompts(lin, now))
    assert all(set(questions(r)) <= scored for r in moved)
    said: list[str] = []
    val = [*moved, Record("completion", "Do you ship to the islands?", " Yes, by boat.")]
    kept = job_validation(lin.root, now, [], val, said.append)
    assert kept == val[-1:] and f"{len(moved)} in a test part of the lineage" in said[0]


def test_a_validation_record_is_the_training_question_by_the_splits_key():
    """The validation file is kept apart from the training file by the key the split divides by
    (case, spacing and end punctuation folded): "what does the Zora lamp cost" without its question
    mark is the training file's question, and so is one asked in a chat's earlier turn."""
    train = [Record("completion", "What does the Zora lamp cost?", " 12 florins.")]
    same = Record("completion", "what does the  Zora lamp cost", " 12 florins.")
    chat = Record("chat", "", "9 florins.", json.dumps([{"role": "user", "content": "What does the Zora lamp cost!"},
                                                {"role": "assistant", "content": "12 florins."},
                                                {"role": "user", "content": "And the Bove lamp?"},
                                                {"role": "assistant", "content": "9 florins."}]))
    other = Record("completion", "What does the Bove lamp cost?", " 9 florins.")
    apart = validation_apart([same, chat, other], train)
    assert (apart.in_training, apart.kept) == (2, [other])
