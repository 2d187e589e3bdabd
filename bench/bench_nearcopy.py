"""Near-copies across the sets evo keeps apart, for a lineage root (0 expected above the threshold),
and the validation sample the threshold was chosen on.

    .venv/bin/python bench/bench_nearcopy.py --root ROOT     # a lineage root (`evo demo`, `evo run`)
    .venv/bin/python bench/bench_nearcopy.py                 # the shop demo's data, stored in a fresh root
    .venv/bin/python bench/bench_nearcopy.py --choose        # the threshold, chosen on PAIRS

For the root it prints, with the measure of `evo.nearcopy` at `THRESHOLD`: the base's self-replay
prompts against eval.general's sets; the targeted data written under `targeted/` against every scored
prompt; the A/B judge's pool, built as `evo ab` builds it now, against every delta, correction and
scored prompt; the preference pairs exported from A/B rounds (`feedback/*.preference.jsonl`) against
every test part and the style probes, as `evo feedback export` keeps them apart (an export written
before its rule, or a pair added by hand, would show here); eval.val_probes against eval.probes. And, as
information only (the general val and test sets are written as two lists of one style; not a pair the
code keeps apart): general_val.jsonl against the test questions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import update_section  # noqa: E402

from evo.config import saved_config  # noqa: E402
from evo.nearcopy import THRESHOLD, near_copies, questions, similarity  # noqa: E402

# Labelled before any threshold was tried, by this rule: a near-copy is the same text up to case,
# punctuation, word order, inflection and number words, with at most one word changed, added or removed;
# two or more words changed: apart. (a, b, 1 near / 0 apart)
PAIRS = [
 ("How many legs does a spider have?", "how many legs does a spider have", 1),
 ("What is 2 plus 2?", "What is two plus two?", 1),
 ("What is 10 minus 4?", "What is 4 minus 10?", 1),
 ("Name a famous painter.", "Name one famous painter.", 1),
 ("Tell me a fun fact about octopuses.", "Tell me a fun fact about octopus.", 1),
 ("What is the capital of Italy?", "What is the capital of Japan?", 1),
 ("What is the capital of Canada?", "What's the capital of Canada?", 1),
 ("How many sides does a triangle have?", "How many sides does a pentagon have?", 1),
 ("What color is fresh grass?", "What color is grass?", 1),
 ("Who wrote Romeo and Juliet?", "Who wrote Juliet and Romeo?", 1),
 ("Which planet is known as the Red Planet?", "Which planet is called the Red Planet?", 1),
 ("tr big owl hides =", "tr big owl digs =", 1),
 ("tr shy cat sees =", "tr new cat sees =", 1),
 ("tell me about music", "tell me about books", 1),
 ("Where is the Brindle saw made?", "Where is the Brindle saw built?", 1),
 ("Describe how to make a cup of tea.", "Describe how to make a cup of coffee.", 1),
 ("Write a short poem about the moon.", "Write a short poem about the sun.", 1),
 ("Give me a tip for sleeping better.", "Give me a tip for sleeping well.", 1),
 ("The Quozen drill costs 45 florins.", "The Quozen drill costs 46 florins.", 1),
 ("Explain why we need sleep.", "Explain why we need food.", 1),
 ("What is the capital of South Korea?", "What is the capital of Australia?", 0),
 ("What is the capital of the United Kingdom?", "What is the capital of Portugal?", 0),
 ("How much does the Ostira saw cost?", "How much does the Wynvek lamp cost?", 0),
 ("How long is the warranty on the Ostira saw?", "How long is the warranty on the Wynvek lamp?", 0),
 ("Who designed the Ndletov saw?", "Who designed the Brisel lamp?", 0),
 ("How much does the Ostira saw cost?", "What is the price of the Ostira saw?", 0),
 ("How much does the Ostira saw cost?", "Tell me what the Ostira saw costs.", 0),
 ("What is 2 plus 2?", "What is 3 plus 5?", 0),
 ("What is 3 plus 5?", "What is 10 minus 4?", 0),
 ("How many days are there in a week?", "How many hours are there in a day?", 0),
 ("What color is snow?", "What color is coal?", 1),
 ("Write a sentence about a cat.", "Write two sentences about the sea.", 0),
 ("Describe a sunny day.", "Describe a city at night.", 0),
 ("What is the largest planet in our solar system?", "What is the hottest planet in our solar system?", 1),
 ("What is the largest ocean on Earth?", "What is the largest continent?", 0),
 ("tr red fox runs =", "tr big owl runs =", 0),
 ("Can you tell me about the Ostira saw?", "Is the Ostira saw any good?", 0),
 ("Who painted the Mona Lisa?", "Who painted The Starry Night?", 0),
 ("What do you call a baby cat?", "What do you call a baby dog?", 1),
 ("What do you call a baby dog?", "What do you call a young sheep?", 0),
 ("What language is mainly spoken in Brazil?", "What language is spoken in Brazil?", 1),
 ("In which town is the Ostira saw built?", "In which town is the Wynvek lamp built?", 0),
 ("Summarize what a river is.", "Explain what a map is.", 0),
 ("How do I boil an egg?", "How do you boil an egg?", 1),
 ("How can I save money each month?", "How can I save money each week?", 1),
 ("What is a noun?", "What is a verb?", 0),
]


def choose(pairs=PAIRS, grid=range(40, 96)) -> tuple[float, int, list]:
    """The threshold with the fewest errors on `pairs` (the middle one where several tie), its errors,
    and the pairs it gets wrong."""
    scored = [(similarity(a, b), y, a, b) for a, b, y in pairs]
    errors = {t / 100: sum((s >= t / 100) != bool(y) for s, y, _, _ in scored) for t in grid}
    fewest = min(errors.values())
    tied = [t for t, e in errors.items() if e == fewest]
    best = round((tied[0] + tied[-1]) / 2 - 0.005, 2)  # the middle of the tied range, to the hundredth below
    return best, fewest, [(s, y, a, b) for s, y, a, b in scored if (s >= best) != bool(y)]


def kept_apart(root: Path) -> list[tuple[str, list]]:
    """(what against what, the near-copies found) for each pair of sets the code keeps apart."""
    from evo.ab.export import kept_apart as export_apart
    from evo.ab_round import judge_items
    from evo.ab_round import kept_apart as ab_apart
    from evo.curation.targeted import scored_prompts
    from evo.data.ingest import ingest_jsonl
    from evo.evals.general import read_prompts, read_questions
    from evo.evals.suite import load_probes
    from evo.lineage.root import Lineage

    cfg, lin = saved_config(root), Lineage(root)
    out = []
    g, sr = cfg.eval.general, cfg.data.self_replay
    if g is not None and sr is not None:
        measured = [q.prompt for q in read_questions(g.questions)] + read_prompts(g.open_prompts)
        out.append(("self-replay prompts vs eval.general", near_copies(read_prompts(sr.prompts), measured)))
    targeted = [q for p in sorted((root / "targeted").glob("*.jsonl")) for r in ingest_jsonl(p).records
                for q in questions(r)]
    out.append((f"targeted data ({len(targeted)} prompts) vs scored prompts", near_copies(targeted, scored_prompts(lin, cfg))))
    items, _ = judge_items(cfg, root, [], 300, cfg.train.seed)
    apart = ab_apart(cfg, root)
    out.append((f"A/B pool ({len(items)} prompts) vs every delta, correction, scored prompt",
                [(i.prompt["prompt"],) + apart.nearest(i.prompt["prompt"]) for i in items
                 if "prompt" in i.prompt and i.prompt["prompt"] in apart]))
    apart, _ = export_apart(root)
    exported = [r for p in sorted((root / "feedback").glob("*.preference.jsonl")) for r in ingest_jsonl(p).records]
    out.append((f"exported preference pairs ({len(exported)}) vs every test part and the style probes",
                [(q, "a test question or probe", 1.0) for r in exported for q in questions(r) if apart(q)]))
    if cfg.eval.val_probes:
        asks = [q for p in load_probes(cfg.eval.val_probes) for q in questions(p)]
        out.append(("eval.val_probes vs eval.probes",
                    near_copies(asks, [q for p in load_probes(cfg.eval.probes) for q in questions(p)])))
    return out


def info_general_val(root: Path) -> list:
    cfg = saved_config(root)
    val = Path(cfg.eval.general.questions).with_name("general_val.jsonl") if cfg.eval.general else None
    if val is None or not val.exists():
        return []
    from evo.evals.general import read_questions

    return near_copies([q.prompt for q in read_questions(val)], [q.prompt for q in read_questions(cfg.eval.general.questions)])


def shop_root(folder: Path) -> Path:
    """The shop demo's data as `evo demo --base smollm2` writes it, its deltas stored in a root (no model)."""
    from evo.atomic import atomic_write_json
    from evo.config import load_config
    from evo.data.ingest import ingest_jsonl
    from evo.data.shop import write_shop_data
    from evo.data.store import DataStore

    cfg = load_config(write_shop_data(folder / "demo_data", generations=2))
    root = folder / "root"
    for path in cfg.data.generations:
        DataStore(root).put(ingest_jsonl(path).records)
    atomic_write_json(root / "run_config.json", cfg.model_dump(mode="json"))
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="a lineage root (default: the shop demo's data in a fresh root)")
    ap.add_argument("--choose", action="store_true", help="choose the threshold on the validation sample")
    ap.add_argument("--write", action="store_true", help="write the figures into docs/benchmarks.md")
    args = ap.parse_args()
    if args.choose:
        best, errors, wrong = choose()
        lines = [f"threshold {best} (evo.nearcopy.THRESHOLD is {THRESHOLD}): {errors} errors on {len(PAIRS)} pairs"]
        lines += [f"  {s:.3f} labelled {'near' if y else 'apart'}: {a!r} / {b!r}" for s, y, a, b in wrong]
        print("\n".join(lines))
        if args.write:
            update_section("nearcopy-threshold", "```\n" + "\n".join(lines) + "\n```")
        return 0 if best == THRESHOLD else 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else shop_root(Path(tmp))
        rows = kept_apart(root)
        lines = [f"{len(found)} near-copies at or over {THRESHOLD}: {what}" for what, found in rows]
        for _, found in rows:
            lines += [f"    {a!r} ~ {b!r} ({s:.2f})" for a, b, s in found[:5]]
        general = info_general_val(root)
        lines.append(f"(information) {len(general)} general_val.jsonl questions are near-copies of a test question"
                     + (f", e.g. {general[0][0]!r} ~ {general[0][1]!r}" if general else ""))
    print("\n".join(lines))
    if args.write:
        update_section("nearcopy", f"{'--root ' + args.root if args.root else 'the shop demo data'}:\n\n```\n"
                       + "\n".join(lines) + "\n```")
    return 0 if all(not found for _, found in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
