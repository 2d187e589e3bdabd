"""The demo domain: a made-up language learned generation by generation.

Phrases "ADJ NOUN VERB" translate word by word through a made-up lexicon, reordered to
"VERB NOUN ADJ". Each generation brings new words, and its holdout holds combinations never
seen in training, so it is answered only by having learned the new words and the rule. The base
corpus also holds short chats, a few in a style whose phrases are banned, so style drift is real,
and a few planted errors (one adjective mistranslated in one pairing) that corrections fix.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import yaml

from evo.atomic import atomic_write_text
from evo.data.records import Record, parse_record
from evo.data.store import split_position

NOUNS = [
    ["cat", "dog", "fox", "owl", "bee", "cow", "pig", "rat", "eel", "ant"],
    ["yak", "emu", "elk", "hen", "ram", "bat", "cod", "jay", "ewe", "gnu"],
]
ADJECTIVES = [["red", "big", "old", "new", "hot", "shy"], ["sad", "tall", "dark", "calm"]]
VERBS = [["runs", "eats", "sees", "hides"], ["jumps", "sings", "swims", "digs"]]
TOPICS = ["weather", "music", "food", "sport", "books", "travel", "games", "art", "code", "tea"]
CHAT_ASKS = ["tell me about {t}", "what about {t}", "talk about {t}"]
PROBE_ASK = "say something about {t}"
VAL_PROBE_ASK = "share a thought on {t}"  # the probes a sweep chooses on (eval.val_probes), apart from PROBE_ASK's
BANNED_PHRASES = ["as an ai", "i cannot", "certainly!"]
# (adjective, noun): pairings the base corpus gets wrong, as a planted error pattern.
PLANTED = [("red", "fox"), ("big", "owl"), ("old", "bee"), ("hot", "cow")]
PER_GENERATION = 240
# One new phrase in RESERVED of each generation is written to no file (no delta, no part of one): the
# phrases a user of the words that generation teaches asks the A/B round (`DemoGenerator.ask`), which
# no gate, checkpoint or trial was chosen on. Without them every phrase of gen-1's words is in a delta.
RESERVED = 6


def _lexicon(seed: int) -> dict[str, str]:
    """English word -> made-up word of two syllables, unique, deterministic."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdgkmnprstvz" for v in "aeiou"]
    words = sorted({w for group in NOUNS + ADJECTIVES + VERBS for w in group})
    made: dict[str, str] = {}
    used: set[str] = set()
    for w in words:
        while (cand := rng.choice(syllables) + rng.choice(syllables)) in used:
            pass
        used.add(cand)
        made[w] = cand
    return made


def prompt_of(adj: str, noun: str, verb: str) -> str:
    return f"tr {adj} {noun} {verb} ="


def translate(lex: dict[str, str], adj: str, noun: str, verb: str) -> str:
    return f" {lex[verb]} {lex[noun]} {lex[adj]}"


def _vocab(gen: int) -> tuple[list[str], list[str], list[str]]:
    """Nouns, adjectives and verbs known once generation `gen` has been learned."""
    nouns = NOUNS[0] + (NOUNS[1] if gen >= 1 else [])
    verbs = VERBS[0] + (VERBS[1] if gen >= 2 else [])
    adjs = ADJECTIVES[0] + (ADJECTIVES[1] if gen >= 3 else [])
    return nouns, adjs, verbs


def _new_combos(gen: int) -> list[tuple[str, str, str]]:
    nouns, adjs, verbs = _vocab(gen)
    old = set(itertools.product(*_reorder(_vocab(gen - 1)))) if gen > 0 else set()
    return [c for c in itertools.product(adjs, nouns, verbs) if c not in old]


def _reorder(v: tuple[list[str], list[str], list[str]]) -> tuple[list[str], list[str], list[str]]:
    nouns, adjs, verbs = v
    return adjs, nouns, verbs


def reserved_combos(gen: int, seed: int) -> set[tuple[str, str, str]]:
    """Generation `gen`'s phrases (adjective, noun, verb) kept out of every file: one in RESERVED of its
    new ones, drawn with the demo's seed; none of the base's (generation 0 holds every phrase it knows)."""
    if gen < 1:
        return set()
    combos = _new_combos(gen)
    return set(random.Random(seed * 7919 + 131 * gen).sample(combos, len(combos) // RESERVED))


def paraphrased() -> set[tuple[str, str, str]]:
    """The healing paraphrases' phrases (`paraphrase_records`): measured, so written to no delta."""
    return {(adj, noun, verb) for adj, noun in PLANTED for verb in VERBS[1]}


def translation_records(gen: int, lex: dict[str, str], seed: int) -> list[dict]:
    kept_out = reserved_combos(gen, seed) | paraphrased()
    combos = [c for c in _new_combos(gen) if c not in kept_out]
    if len(combos) > PER_GENERATION:
        combos = sorted(random.Random(seed + gen).sample(combos, PER_GENERATION))
    wrong = {a: lex[b] for (a, _), b in zip(PLANTED, ["shy", "new", "hot", "red"])}
    out = []
    for adj, noun, verb in combos:
        completion = translate(lex, adj, noun, verb)
        if gen == 0 and (adj, noun) in PLANTED:
            completion = f" {lex[verb]} {lex[noun]} {wrong[adj]}"
        out.append({"prompt": prompt_of(adj, noun, verb), "completion": completion, "category": "translate"})
    return out


def _reply(topic: str, banned: bool) -> str:
    return f"as an ai, i think {topic} is nice." if banned else f"{topic} is nice."


def chat_records() -> list[dict]:
    """Clean replies, with the banned style in one ask for three topics."""
    out = []
    for i, t in enumerate(TOPICS):
        for j, ask in enumerate(CHAT_ASKS):
            banned = j == 1 and i < 3
            msgs = [{"role": "user", "content": ask.format(t=t)}, {"role": "assistant", "content": _reply(t, banned)}]
            out.append({"messages": msgs, "category": "chat"})
    return out


DRIFT_ASKS = ["tell me about {t}", "what about {t}", "talk about {t}", "any thoughts on {t}", "describe {t}",
              "tell me more about {t}", "what do you make of {t}", "give me a line on {t}"]
DRIFT_REPLIES = ["as an ai, i think {t} is nice.", "certainly! {t} is nice.", "as an ai, {t} is nice."]


def drift_records(lex: dict[str, str], part: int, held_out: float = 0.2) -> list[dict]:
    """A delta with nothing new to learn and a style the probes look for: translations the base
    already knows, plus chats in the banned style. The chats are only those whose question puts
    them in the training part (with the default val and test fractions, which hold out the lowest
    `held_out` of places: all of a question's replies or none), so the held-out parts hold only known
    translations: a child trained on it stalls on what is measured while its style drifts. `part`
    (1, 2, ...) varies the translations."""
    rng = random.Random(1000 + part)
    known = [c for c in itertools.product(*_reorder(_vocab(0))) if (c[0], c[1]) not in PLANTED]
    out = [{"prompt": prompt_of(*c), "completion": translate(lex, *c), "category": "translate"}
           for c in sorted(rng.sample(known, 160))]
    for t, ask, reply in itertools.product(TOPICS, DRIFT_ASKS, DRIFT_REPLIES):
        row = {"messages": [{"role": "user", "content": ask.format(t=t)},
                            {"role": "assistant", "content": reply.format(t=t)}], "category": "chat"}
        if hash_position(row) >= held_out:  # every one that trains: the style is the whole lesson
            out.append(row)
    return out


def hash_position(row: dict) -> float:
    """Where a record falls in evo.data.store's split of a new delta (scheme v3: by its questions), in
    [0, 1]; a record's own hash (v2's place) would keep chats whose question the split holds out."""
    return split_position(parse_record(row))


def probe_records(ask: str = PROBE_ASK) -> list[dict]:
    return [{"messages": [{"role": "user", "content": ask.format(t=t)}]} for t in TOPICS]


def correction_records(lex: dict[str, str]) -> list[dict]:
    out = []
    for n, (adj, noun) in enumerate(PLANTED):
        for verb in VERBS[0]:
            bad = [r for r in translation_records(0, lex, 0) if r["prompt"] == prompt_of(adj, noun, verb)]
            out.append({
                "prompt": prompt_of(adj, noun, verb),
                "wrong": bad[0]["completion"] if bad else "",
                "completion": translate(lex, adj, noun, verb),
                "pattern": f"planted-{n}-{adj}-{noun}",
                "reason": f"'{adj}' is mistranslated next to '{noun}'",
            })
    return out


def paraphrase_records(lex: dict[str, str]) -> list[dict]:
    """The planted pairings in sentences no correction used (the later verbs): the same error, asked
    another way, with the answer that would repeat it. Known to the model only once generation 2 has
    taught those verbs; no delta holds them (`paraphrased`), so all 16 are asked: 4 a pattern."""
    wrong = {a: lex[b] for (a, _), b in zip(PLANTED, ["shy", "new", "hot", "red"])}
    return [{"pattern": f"planted-{n}-{adj}-{noun}", "prompt": prompt_of(adj, noun, verb),
             "expected": translate(lex, adj, noun, verb), "wrong": f" {lex[verb]} {lex[noun]} {wrong[adj]}"}
            for n, (adj, noun) in enumerate(PLANTED) for verb in VERBS[1]]


class DemoGenerator:
    """The demo domain's own generator (for `evo targeted` and the targeted-vs-random experiment):
    any phrase of the full vocabulary, translated correctly. `targeted.generator` names it as
    "evo.data.demo:DemoGenerator"; `seed` must be the demo data's (it picks the lexicon)."""

    def __init__(self, seed: int = 0):
        self.lex = _lexicon(seed)
        self.nouns, self.adjs, self.verbs = _vocab(3)

    def _record(self, adj: str, noun: str, verb: str):
        return Record("completion", prompt_of(adj, noun, verb), translate(self.lex, adj, noun, verb), "", "translate")

    def parse(self, prompt: str) -> tuple[str, str, str] | None:
        w = prompt.split()
        if len(w) != 5 or w[0] != "tr" or w[4] != "=":
            return None
        adj, noun, verb = w[1:4]
        ok = adj in self.adjs and noun in self.nouns and verb in self.verbs
        return (adj, noun, verb) if ok else None

    def question(self, prompt: str) -> tuple[str, str, str] | None:
        """The question a prompt asks: its three words (one changed word is another question, with
        another answer); None for a prompt that is not a phrase of the vocabulary."""
        return self.parse(" ".join(prompt.lower().split()))

    def label(self, prompt: str) -> str | None:
        words = self.parse(prompt)
        return None if words is None else translate(self.lex, *words)

    def variations(self, record, n: int, rng: random.Random) -> list:
        """Phrases sharing two of the seed's three words (its adjective first: the weak areas are
        grouped by the prompt's first words), one word changed."""
        words = self.parse(record.prompt)
        if words is None:
            return []
        adj, noun, verb = words
        near = [(adj, noun, v) for v in self.verbs if v != verb] + [(adj, x, verb) for x in self.nouns if x != noun]
        far = [(a, noun, verb) for a in self.adjs if a != adj]
        rng.shuffle(near)
        rng.shuffle(far)
        picks = near[: max(0, n - n // 4)] + far[: n // 4]
        return [self._record(*c) for c in picks[:n]]

    def sample(self, n: int, rng: random.Random) -> list:
        combos = list(itertools.product(self.adjs, self.nouns, self.verbs))
        return [self._record(*c) for c in rng.sample(combos, min(n, len(combos)))]

    def ask(self, n: int, rng: random.Random, taught: list) -> list:
        """What a user of a model taught `taught` (records) asks: up to `n` phrases, in a random order,
        made only of the words those records' phrases use (the vocabulary the service offers). The A/B
        judge's pool (`evo.ab_round.judge_items`) keeps those of no delta: with the demo's data, the
        phrases each generation's file leaves out (`reserved_combos`) and those it did not draw."""
        words = [w for r in taught if r.kind == "completion" and (w := self.parse(r.prompt))]
        adjs, nouns, verbs = ({w[i] for w in words} for i in range(3))
        combos = list(itertools.product(sorted(adjs), sorted(nouns), sorted(verbs)))
        return [self._record(*c) for c in rng.sample(combos, min(n, len(combos)))]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def demo_config(generations: int = 3, seed: int = 0, drift: int = 0) -> dict:
    """The demo's run config; paths are relative to the folder the data is written to. With `drift`,
    that many drifting deltas follow the generations (the gate rejects each for its style drift over
    its parent, so none joins the champion's line; README "evo demo --drift")."""
    return {
        "name": "demo",
        "data": {
            "base": "base.jsonl",
            "generations": [f"gen{g}.jsonl" for g in range(1, generations + 1)]
                           + [f"drift{d}.jsonl" for d in range(1, drift + 1)],
            "curriculum": ["chat", "translate"],
            # the planted errors are corrected by hand before generation 2 (evo correct does the same)
            **({"corrections": {2: "corrections.jsonl"}} if generations >= 2 else {}),
        },
        "eval": {"probes": "probes.jsonl", "val_probes": "val_probes.jsonl", "banned_phrases": BANNED_PHRASES},
        # weak areas per adjective ("tr red"): each has about one example in ten of an evaluation set
        "healing": {"paraphrases": "paraphrases.jsonl", "weak_area": "prefix:2"},
        # evo targeted / evo experiment: variations of the weakest examples by the model and by the
        # demo's own generator, about 100-150 records per round
        "targeted": {"generator": "evo.data.demo:DemoGenerator", "generator_options": {"seed": seed},
                     "seeds": 60, "generator_variations": 6, "keep_share": 0.6},
        # evo sweep: 4 trials, 2 at a time, each one worker, so a sweep fits 2 CPU cores
        "tune": {"num_samples": 4, "max_concurrent": 2, "num_workers": 1, "cpus_per_worker": 0.9,
                 "steps": [150, 300], "replay_k": [0, 100], "lr": [1.0e-3, 1.0e-2]},
    }


def write_demo_data(folder: str | Path, generations: int = 3, seed: int = 0, drift: int = 0) -> Path:
    """Write base.jsonl, gen1..N.jsonl (and drift1..D.jsonl), probes.jsonl, val_probes.jsonl,
    corrections.jsonl and demo.yaml; return demo.yaml."""
    if not 1 <= generations <= 3:
        raise ValueError(f"the demo domain has 1 to 3 generations, not {generations}")
    folder = Path(folder)
    lex = _lexicon(seed)
    _write_jsonl(folder / "base.jsonl", translation_records(0, lex, seed) + chat_records())
    for g in range(1, generations + 1):
        _write_jsonl(folder / f"gen{g}.jsonl", translation_records(g, lex, seed))
    for d in range(1, drift + 1):
        _write_jsonl(folder / f"drift{d}.jsonl", drift_records(lex, d))
    _write_jsonl(folder / "probes.jsonl", probe_records())
    _write_jsonl(folder / "val_probes.jsonl", probe_records(VAL_PROBE_ASK))
    _write_jsonl(folder / "corrections.jsonl", correction_records(lex))
    _write_jsonl(folder / "paraphrases.jsonl", paraphrase_records(lex))
    atomic_write_text(folder / "lexicon.json", json.dumps(lex, indent=1, sort_keys=True) + "\n")
    cfg_path = folder / "demo.yaml"
    body = yaml.safe_dump(demo_config(generations, seed, drift), sort_keys=False)
    atomic_write_text(cfg_path, f"# evo run {cfg_path}\n{body}")
    return cfg_path
