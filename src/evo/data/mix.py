"""A generation's training mix: the delta in curriculum order plus a seeded replay sample."""

from __future__ import annotations

import random
from dataclasses import dataclass

from evo.data.records import Record, is_preference, refuse_preference


@dataclass
class ReplayMix:
    records: list[Record]
    n_delta: int
    n_replay: int


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
              rehearse: list[Record] = (), preference: bool = False) -> ReplayMix:
    """Delta in curriculum order, with replay records (k from the ancestors, and every record of
    `rehearse`: a pretrained base's own answers) spread evenly through it. A supervised mix
    (`preference` False) refuses a preference record in the delta (RecordError naming it). Replay
    rehearses earlier supervised data in every mix: an ancestor's preference pairs are not in its
    pool (a later generation trains on them again only as a delta of its own)."""
    if not preference:
        refuse_preference(delta, "a supervised training mix (the delta)")
    ancestors = [r for r in ancestors if not is_preference(r)]
    refuse_preference(rehearse, "a training mix's rehearsal")
    rng = random.Random(seed)
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
    return ReplayMix(mixed, len(ordered), len(replay))
