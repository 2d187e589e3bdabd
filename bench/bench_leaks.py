"""What crosses the line between training and test (issue 28): for a lineage root, or for the shop
domain's data over many catalogue seeds.

    python bench/bench_leaks.py --root ROOT          # the stored mixes and test parts of a lineage
    python bench/bench_leaks.py --shop-seeds 40      # the shop data, split and mixed without Ray

For every training mix and every test part: test items whose question (any user turn) a training
record asks (0 expected; correction records, which are trained on purpose and retire the test item
to their answer, are counted apart), and records that ask a corrected question still in a mix or a
replay pool beside the correction (0 expected). Also: test items whose answer is a training completion
under another question (the shop's generalization measures rewording: said, not 0), and the near-copy
column, left to `NEAR_COPY` (issue 28 item 3: one near-duplicate measure; `None` prints "n/a").

`--shop-seeds` builds each seed's lines twice with the library's own pieces (`Split`, `KeptApart`,
`build_mix`, `retire_scored`): as main did before (v2, record hash, nothing kept apart, nothing
retired) and as it does now (v3, by question), and counts the seeds with each leak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from evo.atomic import read_json  # noqa: E402
from evo.data.ingest import ingest_jsonl  # noqa: E402
from evo.data.mix import KeptApart, build_mix, trained_answers  # noqa: E402
from evo.data.records import Record  # noqa: E402
from evo.data.shop import write_shop_data  # noqa: E402
from evo.data.store import SCHEME, SCHEME_V2, Split, questions, read_records, scheme_of  # noqa: E402
from evo.healing.corrections import CorrectionStore, corrected_answers, read_corrections_file, retire_scored  # noqa: E402,E501
from evo.lineage.root import Lineage  # noqa: E402

# Issue 28 item 3 ("nearcopy"): f(training records, test records) -> test items with a near-copy in
# training, above the stated threshold. None until that measure exists.
NEAR_COPY: Callable[[list[Record], list[Record]], int] | None = None


def overlaps(mix: list[Record], test: list[Record], whole: set[str]) -> tuple[int, int, int]:
    """(test items that ask, in any turn, a question a training record asks in any turn; those whose
    own (last) question is so asked, the issue's measure; test items whose question only a correction
    record of the mix asks)."""
    asked = {q for r in mix if r.sha not in whole for q in questions(r)}
    by_correction = {q for r in mix if r.sha in whole for q in questions(r)}
    leak = sum(any(q in asked for q in questions(t)) for t in test)
    last = sum(questions(t)[-1] in asked for t in test)
    corr = sum(not any(q in asked for q in questions(t)) and any(q in by_correction for q in questions(t))
               for t in test)
    return leak, last, corr


def stale(records: list[Record], corrected: dict, whole: set[str]) -> int:
    """Records that ask a corrected question and are not the correction's own record."""
    return sum(r.sha not in whole and any(q in corrected for q in questions(r)) for r in records)


def wrong_scored(test: list[Record], corrected: dict) -> int:
    """Scored test items whose question a correction answers, still scored against another answer."""
    def same(a: str, b: str) -> bool:
        return a.split() == b.split()

    return sum(q in corrected and not same(t.completion, corrected[q].corrected) for t in test
               for q in [questions(t)[-1]])


def near(mix: list[Record], test: list[Record]) -> str:
    return "n/a" if NEAR_COPY is None else str(NEAR_COPY(mix, test))


# ---------------------------------------------------------------- a lineage root


def check_root(root: Path) -> dict:
    """Every stored mix (runs/<gen>/mix*.parquet) against every generation's test part; the
    corrections a generation had (runs/<gen>/corrections.json) against its mix and against the test
    items it retired (kept_apart.json)."""
    cfg = read_json(root / "run_config.json")
    val_f, test_f = cfg["data"]["val_fraction"], cfg["data"]["test_fraction"]
    lin = Lineage(root)
    store = lin.data
    corrections = CorrectionStore(root).all()
    rows = {row["GEN_ID"]: row for row in lin.ledger.rows()}
    tests = {}
    for gid, row in rows.items():
        if row["data_delta_sha"]:
            split = store.split_of(row["data_delta_sha"]) or Split(scheme_of(row.get("split", "")), val_f, test_f)
            tests[gid] = (split, split.parts(store.get(row["data_delta_sha"])).test)

    def had(gen: str) -> list:  # the corrections recorded before this generation's mix was built
        path = root / "runs" / gen / "corrections.json"
        ids = set(read_json(path)) if path.exists() else set()
        return [c for c in corrections if c.cid in ids]

    out = {"leaks": 0, "by_correction": 0, "stale": 0, "retired": 0, "to_retire": 0, "lines": []}
    for mix_path in sorted((root / "runs").glob("*/mix*.parquet")):
        mix = read_records(mix_path)
        gen = mix_path.parent.name
        mine = had(gen)
        corrected, whole = corrected_answers(mine), {c.record().sha for c in mine}
        out["stale"] += (s := stale(mix, corrected, whole))
        for tgen, (split, test) in tests.items():
            leak, _, corr = overlaps(mix, retire_scored(test, corrected)[0], whole)
            out["leaks"] += leak
            out["by_correction"] += corr
            if leak or corr or tgen == gen:
                n, m = trained_answers(test, mix)
                out["lines"].append(f"  {gen}/{mix_path.name} x {tgen} test ({split.scheme}, {m} items): "
                                    f"{leak} question overlaps, {corr} asked only by a correction, "
                                    f"{n}/{m} answers trained, near-copies {near(mix, test)}; "
                                    f"{s} records beside the {len(mine)} corrections that ask a corrected question")
    for path in sorted((root / "runs").glob("*/kept_apart.json")):
        gen, k = path.parent.name, read_json(path)
        corrected = corrected_answers(had(gen))
        line = [g for g, _ in lin.accepted_ancestors(rows[gen]["parent_sha"])] + [gen]
        expected = sum(wrong_scored(tests[g][1], corrected) for g in line if g in tests)
        reported = sum(len(k["retired_scored"].get(g, [])) for g in line)
        out["to_retire"] += expected
        out["retired"] += reported
        out["lines"].append(f"  {gen}: left out {k['left_out']}; test items retired {reported} of {expected} that "
                            f"ask a corrected question with another answer; test answers trained "
                            f"{k['test_answers_trained'][0]}/{k['test_answers_trained'][1]}")
    return out


# ---------------------------------------------------------------- the shop data, without Ray


def shop_line(seed: int, now: bool, generations: int = 2, replay_k: int = 24, fractions=(0.1, 0.1)) -> dict:
    """One shop lineage's mixes and test parts as the driver builds them (`now`) or as main did."""
    with tempfile.TemporaryDirectory() as tmp:
        write_shop_data(tmp, generations=generations, seed=seed)
        deltas = [ingest_jsonl(Path(tmp) / f"gen{g}.jsonl").records for g in range(1, generations + 1)]
        arriving = {2: read_corrections_file(Path(tmp) / "corrections.jsonl")} if generations >= 2 else {}
    split = Split(SCHEME if now else SCHEME_V2, *fractions)
    pool: list[Record] = []
    tests: dict[int, list[Record]] = {}
    corrections: list = []
    mixes, pools = [], []
    for g, delta in enumerate(deltas, start=1):
        corrections += arriving.get(g, [])
        corrected = corrected_answers(corrections) if now else {}
        whole = [c.record() for c in corrections]
        parts = split.parts(delta)
        tests[g] = parts.test
        if now:
            tests = {h: retire_scored(t, corrected)[0] for h, t in tests.items()}
            apart = KeptApart.of(list(tests.values()), corrected)
            mix = build_mix(parts.train, pool, replay_k, [], seed + g, (), apart, whole)
            pools.append(apart.filter(pool, {}))
        else:
            mix = build_mix(parts.train + whole, pool, replay_k, [], seed + g)
            pools.append(list(pool))
        mixes.append(mix.records)
        pool = pool + parts.train
    whole_shas = {c.record().sha for c in corrections}
    final = corrected_answers(corrections)
    crossed = [overlaps(m, t, whole_shas) for m in mixes for t in tests.values()]
    return {"leaks": sum(c[0] for c in crossed), "last": sum(c[1] for c in crossed),
            "stale": sum(stale(m, final, whole_shas) for m in mixes[1:]) + sum(stale(p, final, whole_shas) for p in pools[1:]),
            "planted_in_test": wrong_scored(tests[1], final),
            "answers_trained": [trained_answers(tests[g], mixes[g - 1]) for g in tests]}


def shop_seeds(n: int) -> list[str]:
    lines = []
    for now in (False, True):
        runs = [shop_line(s, now) for s in range(n)]
        label = "now (v3: by question, kept apart, retired)" if now else "before (v2: by record hash)"
        trained = [sum(x) for x in zip(*(a for r in runs for a in r["answers_trained"]))]
        lines.append(f"{label}: of {n} catalogue seeds, {sum(r['leaks'] > 0 for r in runs)} have a test question asked "
              f"in some turn by a training record ({sum(r['leaks'] for r in runs)} item-mix pairs; "
              f"{sum(r['last'] > 0 for r in runs)} seeds, {sum(r['last'] for r in runs)} pairs by the test item's "
              f"own question), "
              f"{sum(r['planted_in_test'] > 0 for r in runs)} score a planted error in gen-1's test part, "
              f"{sum(r['stale'] > 0 for r in runs)} keep a corrected record in a later mix or pool "
              f"({sum(r['stale'] for r in runs)} records); test answers that are training completions: "
              f"{trained[0]}/{trained[1]}; near-copies {'n/a' if NEAR_COPY is None else 'see NEAR_COPY'}")
    return lines


def root_lines(root: str) -> list[str]:
    out = check_root(Path(root))
    return [f"{root}: {out['leaks']} question overlaps between training mixes and test parts (0 expected), "
            f"{out['by_correction']} test items asked only by a correction (scored against it), "
            f"{out['stale']} records that ask a corrected question still in a mix built after the correction "
            f"(0 expected), {out['retired']} of {out['to_retire']} test items that ask a corrected question "
            f"with another answer retired to the corrected one (all expected)", *out["lines"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", action="append", default=[], help="a lineage root (local folder); repeatable")
    ap.add_argument("--shop-seeds", type=int, default=0, help="catalogue seeds 0..N-1 of the shop domain")
    ap.add_argument("--write", action="store_true", help="write the figures into docs/benchmarks.md (section leaks)")
    a = ap.parse_args()
    if not a.root and not a.shop_seeds:
        ap.error("give --root and/or --shop-seeds")
    blocks = []
    if a.shop_seeds:
        blocks.append(["The shop domain's data (2 generations, corrections before gen-2, replay k 24), split and "
                       f"mixed without Ray (`--shop-seeds {a.shop_seeds}`):", *shop_seeds(a.shop_seeds)])
    for root in a.root:
        blocks.append(root_lines(root))
    for b in blocks:
        print("\n".join(b))
    if a.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from report import update_section  # bench/report.py: the sections of docs/benchmarks.md

        update_section("leaks", "\n\n".join("```\n" + "\n".join(b) + "\n```" for b in blocks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
