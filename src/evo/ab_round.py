"""One A/B round: serve parent (champion) and child (candidate) side by side, let a traffic
generator play users and judge answers with the eval suite, stop at a verdict or the budget,
then decide and record the result in the generation's ledger row. The candidate is promoted only on
"candidate better" or "candidate not worse" (its share of decisive votes above `ab.min_share` with
confidence 1 - `ab.alpha`); "undecided" keeps the champion and leaves the candidate pending; every
other verdict rejects it (`evo.ab.verdict.ACTIONS`). A budget whose plan could never promote is
refused before anything is served.

Its verbs: `evo ab`, and `evo demo`, which ends with a round (the demo's generations are the driver's,
imported when the demo runs)."""

from __future__ import annotations

import json
import random
import secrets
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from evo.ab.feedback import FeedbackStore, Round
from evo.ab.verdict import (
    ACTIONS,
    HOLD,
    PROMOTE,
    REJECT,
    UNDECIDED,
    PlanTooSmall,
    TestPlan,
    plan_for,
    prompts_needed,
)
from evo.answers import normalize
from evo.atomic import atomic_write_json, read_json
from evo.config import load_config, saved_config, verb_overrides
from evo.curation.targeted import known_prompts, load_generator, scored_prompts
from evo.data.demo import write_demo_data
from evo.data.records import Record
from evo.data.shop import write_shop_data
from evo.data.store import DataStore
from evo.errors import EvoError
from evo.evals.suite import answer_budget, load_probes
from evo.healing.corrections import CorrectionStore
from evo.http.app import SERVE_LOGGING, build_app
from evo.lineage.decisions import ChampionMoved, Decisions
from evo.lineage.ledger import Ledger
from evo.lineage.root import Lineage
from evo.model.artifacts import ModelStore
from evo.model.loading import load_tokenizer
from evo.nearcopy import NearIndex, SameQuestion, apart_from, questions
from evo.numbers import show
from evo.progress import Progress
from evo.ray_start import start_ray
from evo.ray_waits import serve_up
from evo.storage import location, open_root
from evo.tracking.live import after_ab_round


class NothingToTest(EvoError):
    pass


@dataclass
class Judged:
    prompt: dict  # a side-by-side request body
    judge: Callable[[str], float]  # answer text -> score (higher is better)
    reference: str = ""  # the right answer, where there is one: the answer may run to its length
    max_tokens: Optional[int] = None  # set by `budgets`; None: eval.max_new_tokens


@dataclass
class ABOutcome:
    gen_id: str
    verdict: str
    votes: int
    action: str  # promoted, rejected or pending (undecided: the champion stays, the candidate waits)
    stats: dict
    seconds: float
    judge: str = ""  # what the automated judge asked


def exact_match(want: str) -> Callable[[str], float]:
    """A judge: 1.0 for an answer equal to `want` up to spacing, else 0.0. Case counts, as in the gate's
    exact match (`evo.answers.normalize`)."""
    return lambda answer: float(normalize(answer) == normalize(want))


def kept_apart(cfg, root, gen=None) -> NearIndex | SameQuestion:
    """What the judge's prompts must be no near-copy of (`evo.nearcopy`): every question of every delta
    of the lineage (whatever its part), every correction, and every prompt a score is measured on (the
    healing paraphrases, eval.general's sets: `evo.curation.targeted.scored_prompts`). Where the domain's
    generator `gen` says which question a prompt asks (`question`), its prompts are compared by that."""
    lin = Lineage(root)
    texts = [q for p in sorted(lin.data.dir.glob("*.parquet")) for r in lin.data.get(p.stem) for q in questions(r)]
    texts += [c.prompt for c in CorrectionStore(lin.root).all()] + scored_prompts(lin, cfg) + asked_in_rounds(root)
    return apart_from(texts, gen)


def asked_in_rounds(root) -> list[str]:
    """Every prompt (each user turn of a chat) asked side by side in any A/B log of the root: earlier
    rounds decided promotions on them, and a prompt asked before never counts again in its round."""
    out: list[str] = []
    for path in sorted(FeedbackStore(root).path.parent.glob("*.jsonl")):
        for e in FeedbackStore(root, path.stem).read().events:
            given = e.get("input") if e.get("kind") == "answers" else None
            if isinstance(given, dict):
                out += ([m.get("content", "") for m in given.get("messages") or [] if m.get("role") == "user"]
                        if "messages" in given else [str(given.get("prompt", ""))])
    return [t for t in out if isinstance(t, str) and t]


def judge_items(cfg, root, holdout: list[Record], budget: int, seed: int,
                taught: list[Record] = ()) -> tuple[list[Judged], str]:
    """Distinct prompts for the automated judge, and where they came from. With the domain's
    generator (`targeted.generator`): new examples that are no near-copy of any delta of the lineage,
    correction or scored prompt (`kept_apart`), so no gate, checkpoint or trial was chosen on them,
    judged by the generator's `score` (the fact asked for) where it has one, else by exact match.
    They are what a user asks (the generator's `ask`, given `taught`: the records of the candidate's
    line) where the generator has that, else any example it makes (`sample`). Without a generator:
    the generation's holdout and the style probes, which the gate has already scored (said so in the
    result: not independent evidence)."""
    gen = load_generator(cfg.targeted.generator, cfg.targeted.generator_options)
    if gen is None:
        items = traffic(holdout, load_probes(cfg.eval.probes), cfg.eval.banned_phrases, seed)
        return items, f"{len(items)} prompts of the holdout and the style probes (also scored by the gate)"
    score = getattr(gen, "score", None)
    known, apart, items, near = known_prompts(Lineage(root)), kept_apart(cfg, root, gen), [], 0
    rng = random.Random(seed + 104729)
    asks = callable(getattr(gen, "ask", None)) and bool(taught)
    # most of what a user of the line's words asks is in its deltas: draw many, keep `budget` of the rest
    drawn = gen.ask(20 * budget, rng, list(taught)) if asks else gen.sample(4 * budget, rng)
    for r in drawn:
        key = normalize(r.prompt)
        if key in known or r.kind != "completion":
            continue
        known.add(key)
        if r.prompt in apart:
            near += 1
            continue
        judge = (lambda a, p=r.prompt: score(p, a) or 0.0) if callable(score) else exact_match(r.completion)
        items.append(Judged({"prompt": r.prompt}, judge, r.completion))
    how = "the fact each asks for (the generator's score)" if callable(score) else "exact match"
    what = "asked of the candidate line's words" if asks else "new prompts"
    return items[:budget], (f"{len(items[:budget])} {what} from {cfg.targeted.generator}, in no delta of the "
                            f"lineage and no near-copy of its data or scored prompts ({near} such left out), judged "
                            f"by {how}")


def line_records(root, child: str) -> list[Record]:
    """Every record of every delta on `child`'s line (it and its ancestors back to the base): what the
    candidate was taught, in any part."""
    lin, ledger = Lineage(root), Ledger(root)
    out: list[Record] = []
    for sha in lin.decisions.line(child):
        row = ledger.get((lin.registry.model(sha) or {}).get("gen_id", ""))  # a job's model has no ledger row
        if row and row.get("data_delta_sha"):
            out += lin.data.get(row["data_delta_sha"])
    return out


def budgets(items: list[Judged], tok, floor: int) -> None:
    """Each item's `max_tokens`: `floor` (eval.max_new_tokens), or enough for its reference and an end
    token where that is more, as the gate's exact match has (`evo.evals.suite.answer_budget`): an
    answer cut off before its reference ends can never match."""
    for item in items:
        item.max_tokens = answer_budget(tok, [item.reference] if item.reference else [], floor)


def traffic(holdout: list[Record], probes: list[Record], banned: list[str], seed: int) -> list[Judged]:
    """Users asking the new generation's holdout (scored by exact match) and the style probes
    (scored by the absence of banned phrases), in a seeded random order."""
    items = [Judged({"prompt": r.prompt}, exact_match(r.completion), r.completion) for r in holdout
             if r.kind == "completion"]
    items += [Judged({"messages": json.loads(p.messages)[:-1]} if p.messages else {"prompt": p.prompt},
                     lambda a: float(not any(b.lower() in a.lower() for b in banned))) for p in probes]
    random.Random(seed).shuffle(items)
    return items


def _post(url: str, body: dict, token: Optional[str] = None) -> dict:
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def play(base_url: str, items: list[Judged], budget: int, look_every: int, max_tokens: int, progress) -> dict:
    """Each prompt asked once, side by side, judged and voted, until a verdict, `budget` pairs, or
    the prompts run out (a repeated prompt would not count: see evo.ab.tally). An item's answer may
    run to its own `max_tokens` (`budgets`), else to `max_tokens`."""
    stats = _get(f"{base_url}/ab/stats")
    for n, item in enumerate(items[:budget]):
        pair = _post(f"{base_url}/v1/side_by_side", {**item.prompt, "max_tokens": item.max_tokens or max_tokens,
                                                     "temperature": 0})
        sa = item.judge(_text(pair["a"]))
        sb = item.judge(_text(pair["b"]))
        _post(f"{base_url}/v1/feedback/pairwise",
              {"pair_id": pair["pair_id"], "preferred": "a" if sa > sb else "b" if sb > sa else "tie"})
        if (n + 1) % look_every == 0:
            stats = _get(f"{base_url}/ab/stats")
            progress("ab", f"{n + 1} pairs: {stats['verdict']['verdict']} ({stats['verdict']['reason']})")
            if stats["verdict"]["verdict"] != UNDECIDED:
                return stats
    return _get(f"{base_url}/ab/stats")


def _text(answer: dict) -> str:
    choice = answer["choices"][0]
    return choice.get("text", choice.get("message", {}).get("content", ""))


def earlier_votes(root, log: str, parent: str, child: str) -> str:
    """What a rerun of `evo ab` on a generation continues, said before it plays: the round is keyed by
    its two shas (`evo.ab.feedback.Round`), so the same champion and candidate in the same log are the
    same round, and its earlier sessions' votes count toward the verdict. "" for a round with none."""
    rnd = Round(parent, child)
    tally, _ = FeedbackStore(root, log).tally(rnd.id)
    if not tally.counted:
        return ""
    wins = tally.cum_wins[-1] if tally.cum_wins else 0
    return (f"continuing A/B round {rnd.id} (champion {parent[:12]}, candidate {child[:12]}) in ab/{log}.jsonl: a round "
            f"is one pair of shas, so its {tally.counted} earlier votes on {len(tally.prompts)} distinct prompts count "
            f"(candidate {wins}, champion {len(tally.cum_wins) - wins}, ties {tally.ties}) and this session's votes are "
            "added to them; a prompt asked before does not count again")


def start_round(root, gen_id: str) -> tuple[str, str]:
    """Put the generation's parent back as champion and the child up as candidate."""
    return Decisions(root).stage_ab(gen_id)


def ab_plan(cfg, prompts: int) -> TestPlan:
    """The test plan of a round of at most `prompts` distinct prompts, from the config's `ab` section;
    `PlanTooSmall` (with the prompts it would need) when no look of it could promote."""
    return plan_for(prompts, TestPlan(**cfg.ab.model_dump()))


def finish_round(root, gen_id: str, parent: str, child: str, stats: dict, plan: Optional[TestPlan] = None) -> str:
    """Promote on "better" or "not worse", hold on "undecided" (the champion stays, the candidate
    stays pending), reject on anything else; the ledger row gets the A/B result either way."""
    verdict, pw = stats["verdict"], stats["pairwise"]
    action = ACTIONS.get(verdict["verdict"], HOLD)  # a verdict this code does not know promotes nothing
    margin = stats["plan"].get("min_share")
    result = (f"{verdict['verdict']}: candidate {pw['candidate_wins']} / champion {pw['champion_wins']} / "
              f"ties {pw['ties']} on {pw['distinct_prompts']} distinct prompts, look {verdict['looks']} of "
              f"{stats['plan']['max_looks']} (sequential sign test, alpha {stats['plan']['alpha']:g}"
              + (f", not worse above {margin:g}" if margin is not None else "")
              + f"; nominal p={show(verdict['p_value'], '.3g')})")
    after_ab_round(root, gen_id, verdict["verdict"], pw)  # counts and verdict to the candidate's MLflow run
    decisions = Decisions(root)
    if action == PROMOTE:
        try:  # a swap: the round compared the candidate with `parent`, so only `parent` may give way to it
            decisions.promote(gen_id, f"A/B: {verdict['verdict']}", ab_result=result, compared_with=parent)
            return "promoted"
        except ChampionMoved as e:
            why = f"A/B: {verdict['verdict']} against {parent[:12]}, not promoted: {e}"
            decisions.hold(gen_id, why, ab_result=f"{result}; {why}")
            return "pending"
    if action == REJECT:
        decisions.reject(gen_id, f"A/B: {verdict['reason']}", ab_result=result)
        return "rejected"
    decided = pw["candidate_wins"] + pw["champion_wins"]
    more, tie_rate = prompts_needed(plan or TestPlan(**{k: v for k, v in stats["plan"].items() if k in _PLAN_FIELDS}),
                                    decided, pw["distinct_prompts"])
    why = (f"A/B undecided: the champion stays and {gen_id} waits as candidate; a decision needs about {more} more "
           f"distinct prompts (at the {tie_rate:.0%} tie rate seen so far)")
    decisions.hold(gen_id, why, ab_result=f"{result}; {why}")
    return "pending"


_PLAN_FIELDS = ("alpha", "look_every", "max_looks", "min_share", "tie_rate")


def saved_plan(root, round_id: str) -> tuple[Optional[TestPlan], int]:
    """The plan a round's first session fixed, and how many sessions have played it (None, 0: a new
    round). A pending round's later session continues under that plan, not one of its own: a plan
    changed after some of its looks would not hold its error rate."""
    path = open_root(root) / "ab" / f"{round_id}.plan.json"
    if not path.exists():
        return None, 0
    saved = read_json(path)
    return TestPlan(**{k: saved[k] for k in _PLAN_FIELDS}), saved["sessions"]


def save_plan(root, round_id: str, plan: TestPlan, sessions: int) -> None:
    atomic_write_json(open_root(root) / "ab" / f"{round_id}.plan.json", {**plan.to_json(), "sessions": sessions})


def run_ab_round(cfg, root, budget: int = 300, look_every: int = 10, port: int = 8000, progress=print) -> ABOutcome:
    """Serve both arms on 127.0.0.1:`port`, play traffic, decide, hot-swap, record. Ray must be up."""
    from ray import serve

    t0 = time.perf_counter()
    ab_plan(cfg, budget)  # a budget too small for any look that could promote: refused before anything else
    ledger = Ledger(root)
    gen_id = next((r["GEN_ID"] for r in reversed(ledger.rows())
                   if r["decision"] in ("promoted", "pending") and r["parent_sha"]), None)
    if gen_id is None:
        raise NothingToTest(f"{ledger.path}: no promoted or pending generation with a parent, so nothing to A/B test")

    row = ledger.get(gen_id)  # its delta divided as recorded when it was ingested
    holdout = DataStore(root).parts_of(row, cfg.data.val_fraction, cfg.data.test_fraction).test
    round_id = f"round-{gen_id}"
    plan, sessions = saved_plan(root, round_id)
    # a later session asks other prompts (another seed); a prompt asked before would not count again
    gen = load_generator(cfg.targeted.generator, cfg.targeted.generator_options)
    taught = line_records(root, row["child_sha"]) if callable(getattr(gen, "ask", None)) else []
    items, source = judge_items(cfg, root, holdout, budget, cfg.train.seed + 7919 * sessions, taught)
    if plan is None:
        try:  # fixed before the first vote: from the pool's size and the stated tie rate
            plan = ab_plan(cfg, min(len(items), budget))
        except PlanTooSmall as e:
            raise PlanTooSmall(f"{gen_id}: the judge has only {len(items)} prompts ({source}). {e}") from None
    save_plan(root, round_id, plan, sessions + 1)
    parent, child = start_round(root, gen_id)
    budgets(items, load_tokenizer(str(ModelStore(root).weights_dir(ModelStore(root).chain(child)[0]))),
            cfg.eval.max_new_tokens)
    note = earlier_votes(root, round_id, parent, child)
    if note:
        progress("ab", note)
    token = secrets.token_hex(16)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=SERVE_LOGGING)
    app = build_app(str(root), 0.5, admin_token=token, dtype=cfg.model.dtype, round_id=round_id, plan=plan)
    serve_up(app, "evo-ab", "/", cfg.ray, lambda m: progress("ab", m))  # fails, not hangs, if replicas never start
    base = f"http://127.0.0.1:{port}"
    try:
        progress("ab", f"{gen_id}: candidate {child[:12]} against champion {parent[:12]} at {base}, round "
                       f"{Round(parent, child).id} of ab/{round_id}.jsonl"
                       + (f" (session {sessions + 1} of a pending round, under its first plan)" if sessions else "") + "; "
                       f"the judge asks {source}; the test looks every {plan.look_every} decisive votes, "
                       f"{plan.max_looks} looks at most (sized for a {plan.tie_rate:.0%} tie rate); it promotes on "
                       f"'better'" + (f" or a share above {plan.min_share:g}" if plan.min_share is not None else ""))
        stats = play(base, items, budget, look_every, cfg.eval.max_new_tokens, progress)
        action = finish_round(root, gen_id, parent, child, stats, plan)
        _post(f"{base}/admin/reload", {}, token)  # the served champion is now the decided one
    finally:
        serve.delete("evo-ab")
    return ABOutcome(gen_id, stats["verdict"]["verdict"], stats["pairwise"]["distinct_prompts"],
                     action, stats, time.perf_counter() - t0, source)


def ab_and_print(cfg, root: str, budget: int, port: int) -> None:
    """An A/B round (Ray up) with progress on the terminal, then its outcome and the ledger row's result."""
    out = run_ab_round(cfg, root, budget=budget, port=port, progress=Progress())
    print(f"A/B {out.gen_id}: {out.verdict} after {out.votes} distinct prompts in {out.seconds:.0f}s -> {out.action}")
    print(f"  ledger row {out.gen_id}: ab_result = {Ledger(root).get(out.gen_id)['ab_result']}")


def cmd_ab(root: str, budget: int, port: int, address: str | None) -> int:
    """`evo ab`: one round on the latest promoted generation, with the root's saved run config."""
    cfg = saved_config(open_root(root))
    ab_plan(cfg, budget)  # refused here, before Ray starts, when the budget is too small
    start_ray(address)
    ab_and_print(cfg, location(root), budget, port)  # a URI: the replicas follow it themselves
    return 0


def cmd_demo(root: str, sets: list[str] | None, skip_invalid: bool, generations: int | None, base: str, drift: bool,
             ab_budget: int, port: int) -> int:
    """`evo demo`: the demo data and config, its generations, an A/B round on the last one, and the report.

    Here, on the top floor, because it ends with an A/B round, which the driver (below) cannot import."""
    from evo.driver import run_config  # lazy: the generation loop (Ray Train, Tune), which `evo ab` does not need
    from evo.report import build_report  # lazy: the report, which `evo ab` does not need

    local = open_root(root)
    write = {"tiny": write_demo_data, "smollm2": write_shop_data}[base]
    # the real model's demo: two LoRA generations fit 2 CPU cores in minutes
    generations = generations or (2 if base == "smollm2" else 3)
    cfg_path = write(local / "demo_data", generations=generations, drift=2 if drift else 0)
    print(f"demo data and config written to {cfg_path.parent}")
    cfg = load_config(cfg_path, verb_overrides(sets, skip_invalid))
    if ab_budget > 0:
        ab_plan(cfg, ab_budget)  # refused before the generations train, not after
    run_config(cfg, location(root), None)
    if ab_budget > 0:
        print("\nA/B round on the last generation: its parent and it, side by side on Ray Serve")
        try:
            ab_and_print(cfg, location(root), ab_budget, port)
        except (NothingToTest, PlanTooSmall) as e:
            print(f"no A/B round: {e}")
    print(f"\nreport: {build_report(local, lambda msg: None)} (evo report --root {root} writes it again)")
    return 0
