"""A generation's training mix: the delta in curriculum order plus a seeded replay sample."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from evo.data.records import Record, is_preference, refuse_preference
from evo.data.store import questions


@dataclass(frozen=True)
class KeptApart:
    """What no training record may ask: the questions of every test part a generation is scored on
    (its own and its line's), and the questions corrections have retired (a correction's record
    alone teaches those). Compared by the split's question key (`evo.data.store.questions`), not by
    near-copies (`evo.nearcopy`): a delta's parts come from the same templates, so its train and test
    questions are one word apart by design ("Who designed the Ostira saw?", "... the Ndletov saw?"),
    and that word is what generalization measures."""

    test: frozenset[str] = frozenset()
    retired: frozenset[str] = frozenset()
    deleted: frozenset[str] = frozenset()  # content hashes of records whose upload was deleted: out of replay only

    @classmethod
    def of(cls, test_parts: list[list[Record]], corrected: Iterable[str] = (), deleted: Iterable[str] = ()) -> KeptApart:
        """Every question of `test_parts` (each record's every turn), the corrected questions, and the
        records taken out of replay with their deleted upload (`DataStore.deleted`)."""
        return cls(frozenset(q for part in test_parts for r in part for q in questions(r)), frozenset(corrected),
                   frozenset(deleted))

    def why_out(self, record: Record) -> str:
        """"test" or "retired" when `record` asks such a question in any turn, else ""."""
        asked = questions(record)
        if any(q in self.test for q in asked):
            return "test"
        if any(q in self.retired for q in asked):
            return "retired"
        return ""

    def filter(self, records: list[Record], counts: dict[str, int]) -> list[Record]:
        kept = []
        for r in records:
            why = self.why_out(r)
            if why:
                counts[why] = counts.get(why, 0) + 1
            else:
                kept.append(r)
        return kept


@dataclass
class ReplayMix:
    records: list[Record]
    n_delta: int
    n_replay: int
    # records left out because they ask a test question / a corrected question (delta, replay pool and
    # rehearsal together): {"test": n, "retired": n}
    left_out: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        out = f"{self.n_delta} new + {self.n_replay} replayed records"
        if self.left_out:  # built with `apart`
            out += (f"; left out {self.left_out.get('test', 0)} that ask a test-part question and "
                    f"{self.left_out.get('retired', 0)} that ask a corrected question")
            if self.left_out.get("deleted"):
                out += f", and {self.left_out['deleted']} of deleted uploads"
        return out


def curriculum_order(records: list[Record], order: list[str], rng: random.Random) -> list[Record]:
    """Categories in the configured order (unlisted ones after, by name), shuffled within each."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.category, []).append(r)
    rank = {c: i for i, c in enumerate(order)}
    out = []
    for cat in sorted(groups, key=lambda c: (rank.get(c, len(rank)), c)):
        group = groups[cat][:]
        rng.shuffle(group)
        out.extend(group)
    return out


def sample_replay(pool: list[Record], k: int, rng: random.Random) -> list[Record]:
    """k records from the ancestors' data, without replacement (all of them if fewer)."""
    if k <= 0 or not pool:
        return []
    pool = sorted(pool, key=lambda r: r.sha)  # independent of the order ancestors were listed
    return rng.sample(pool, min(k, len(pool)))


def build_mix(delta: list[Record], ancestors: list[Record], k: int, order: list[str], seed: int,
              rehearse: list[Record] = (), preference: bool = False, apart: KeptApart | None = None,
              whole: list[Record] = ()) -> ReplayMix:
    """Delta in curriculum order, with replay records (k from the ancestors, and every record of
    `rehearse`: a pretrained base's own answers) spread evenly through it. A supervised mix
    (`preference` False) refuses a preference record in the delta (RecordError naming it). Replay
    rehearses earlier supervised data in every mix: an ancestor's preference pairs are not in its
    pool (a later generation trains on them again only as a delta of its own). With `apart`, a record
    of the delta, the ancestors or `rehearse` that asks one of its questions is left out (before replay
    is sampled) and counted; `whole` (corrections) joins the delta as it is."""
    if not preference:
        refuse_preference(delta, "a supervised training mix (the delta)")
    ancestors = [r for r in ancestors if not is_preference(r)]
    refuse_preference(rehearse, "a training mix's rehearsal")
    rng = random.Random(seed)
    left_out = {"test": 0, "retired": 0}
    if apart is not None:
        delta, ancestors, rehearse = (apart.filter(list(x), left_out) for x in (delta, ancestors, rehearse))
        if apart.deleted:  # the replay pool only: a generation's own delta is what its job was given
            kept = [r for r in ancestors if r.sha not in apart.deleted]
            left_out["deleted"] = len(ancestors) - len(kept)
            ancestors = kept
    delta = list(delta) + list(whole)
    ordered = curriculum_order(delta, order, rng)
    replay = sample_replay(ancestors, k, rng)
    if rehearse:
        replay += rehearse
        rng.shuffle(replay)
    mixed: list[Record] = []
    if replay:
        stride = (len(ordered) + len(replay)) / len(replay)
        slots = {int(i * stride) for i in range(len(replay))}
        it_d, it_r = iter(ordered), iter(replay)
        for pos in range(len(ordered) + len(replay)):
            mixed.append(next(it_r) if pos in slots else next(it_d, None) or next(it_r))
    else:
        mixed = ordered
    return ReplayMix(mixed, len(ordered), len(replay), left_out if apart is not None else {})


def trained_answers(test: list[Record], trained: list[Record]) -> tuple[int, int]:
    """(test items whose answer is also a training completion, test items): where it is most of
    them, generalization measures recall of a trained answer to a reworded question, not a fact learned."""
    answers = {" ".join(r.completion.split()) for r in trained}
    return sum(" ".join(r.completion.split()) in answers for r in test), len(test)
