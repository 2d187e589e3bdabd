"""Gate thresholds and the stop rule, as tables."""

import pytest

from evo.config import GateConfig
from evo.gate import GenerationScores, base_flags, base_reason, gate, should_stop, smallest_rejected

CFG = GateConfig()  # recall > .9, generalization > .85 (absolute); style drift: no rise beyond noise (relative)


def S(recall, gen, drift, pgen=0.0, pdrift=0.0, probes=None):
    return GenerationScores(recall, gen, drift, pgen, pdrift, style_probes=probes)


ROSE_TO_8 = "style drift rose from 0 (parent) to 8 of 10 probes: more than 0 probe(s) beyond noise at 95% confidence"


@pytest.mark.parametrize("scores,accepted,why", [
    (S(0.95, 0.90, 0), True, []),
    (S(None, 0.90, 1, pdrift=1), True, []),              # nothing to recall yet
    (S(0.90, 0.90, 0), False, ["recall 0.900 <= 0.9"]),  # thresholds are strict
    (S(0.95, 0.85, 0), False, ["generalization 0.850 <= 0.85"]),
    (S(0.95, 0.90, 8, probes=10), False, [ROSE_TO_8]),
    (S(0.10, 0.10, 8, probes=10), False, ["recall 0.100 <= 0.9", "generalization 0.100 <= 0.85", ROSE_TO_8]),
])
def test_gate_table(scores, accepted, why):
    d = gate(scores, CFG)
    assert d.accepted is accepted and d.reasons == why


def test_gate_thresholds_come_from_config():
    loose = GateConfig(min_recall=0.5, min_generalization=0.5, max_style_drift_rise=None)
    assert gate(S(0.6, 0.6, 4), loose).accepted
    assert not gate(S(0.6, 0.6, 4), CFG).accepted


def test_a_style_drift_inherited_unchanged_is_not_held_against_the_child():
    """The demo's case (issue 26): the base hits 2 of 10 probes, and so does its child."""
    assert gate(S(0.95, 0.9, 2, pdrift=2, probes=10), CFG).accepted
    assert gate(S(0.95, 0.9, 2, pdrift=2), CFG).accepted  # an old eval report, without the probe count
    capped = gate(S(0.95, 0.9, 2, pdrift=2, probes=10), GateConfig(max_style_drift=2))  # the old absolute cap
    assert capped.accepted and capped.reason == ("passed all thresholds (inherited from the parent, unchanged: "
                                                 "style drift 2 >= 2 (parent: style drift 2 >= 2))")


def test_a_real_jump_in_style_drift_is_rejected():
    assert not gate(S(0.95, 0.9, 8, pdrift=2, probes=10), CFG).accepted
    assert not gate(S(0.95, 0.9, 10, pdrift=1, probes=10), CFG).accepted  # the demo's drifting deltas
    # an absolute cap the parent fails too still rejects a child that is worse beyond noise
    d = gate(S(0.95, 0.9, 9, pdrift=2, probes=10), GateConfig(max_style_drift=2, max_style_drift_rise=None))
    assert d.reasons == ["style drift 9 >= 2, worse than its parent beyond noise (parent: style drift 2 >= 2)"]
    # and one the parent passes rejects as before
    assert gate(S(0.95, 0.9, 2, pdrift=1, probes=10), GateConfig(max_style_drift=2)).reasons == ["style drift 2 >= 2"]


def test_a_rise_that_the_probe_count_explains_passes():
    """On 10 probes, 1 -> 3 hits is within noise; on 100 probes, 10 -> 30 is not."""
    assert gate(S(0.95, 0.9, 3, pdrift=1, probes=10), CFG).accepted
    assert not gate(S(0.95, 0.9, 30, pdrift=10, probes=100), CFG).accepted
    assert not gate(S(0.95, 0.9, 3, pdrift=1), CFG).accepted  # without the count, no allowance for noise


def test_the_noise_allowance_on_ten_probes():
    """The fewest hits of 10 that reject a child, by its parent's hits (documented in evo.gate and README)."""
    assert [smallest_rejected(p, 10) for p in range(6)] == [3, 5, 6, 7, 8, 9]
    assert [smallest_rejected(p, 10, rise=1) for p in range(3)] == [4, 6, 7]
    assert smallest_rejected(8, 10) is None  # nothing above 8 of 10 is sure to be worse


def test_a_base_below_an_absolute_threshold_is_flagged_at_generation_0():
    base = GenerationScores(None, 0.8, 2, 0.8, 2, style_probes=10)  # the base beside itself
    flags = base_flags(base, GateConfig(max_style_drift=2))
    assert flags == ["test accuracy 0.800 <= 0.85 (gate.min_generalization)", "style drift 2 >= 2 (gate.max_style_drift)"]
    assert base_reason(flags).startswith("generation 0 (base model); below the gate's absolute thresholds: test accuracy")
    assert base_flags(GenerationScores(None, 1.0, 2, 1.0, 2, style_probes=10), CFG) == []  # relative ones: not at gen 0
    assert base_reason([]) == "generation 0 (base model)"


STALL = S(0.95, 0.50, 3, pgen=0.48, pdrift=1)   # Δgen .02 < .05 and Δdrift 2 > .1
LEARN = S(0.95, 0.90, 3, pgen=0.10, pdrift=1)   # Δgen .8: learning
CALM = S(0.95, 0.50, 1, pgen=0.48, pdrift=1)    # stalled but drift did not grow


@pytest.mark.parametrize("history,stop", [
    ([], False),
    ([STALL], False),                 # one bad generation is not enough
    ([STALL, STALL], True),
    ([LEARN, STALL, STALL], True),
    ([STALL, LEARN], False),
    ([STALL, STALL, LEARN], False),   # only the latest two count
    ([STALL, CALM], False),
    ([CALM, CALM], False),
    ([S(.9, .5, 1.2, .46, 1.0), S(.9, .5, 1.3, .5, 1.2)], False),  # Δdrift .2 then .1 (not > θ)
])
def test_stop_rule_table(history, stop):
    assert should_stop(history, CFG) is stop


def test_a_null_threshold_is_not_checked():
    off = GateConfig(min_recall=None, min_generalization=None, max_style_drift=None, max_style_drift_rise=None)
    assert gate(S(0.0, 0.0, 10), off).accepted
    assert gate(S(0.0, 0.9, 0), GateConfig(min_recall=None)).accepted


def test_stop_rule_patience_is_config():
    assert should_stop([STALL], GateConfig(patience=1))
    assert not should_stop([STALL, STALL], GateConfig(patience=3))


GENERAL = GateConfig(min_general_accuracy=0.8, max_kl_to_base=0.5, max_fake_words=0.02, max_distinct2_drop=0.1,
                     max_repetition_rise=0.1, max_fake_words_rise=0.0, max_general_drop=0.0)


def G(acc=1.0, kl=0.1, fake=0.0, d2=0.9, pd2=0.9, rep=0.02, prep=0.02, pacc=1.0, pkl=0.1, pfake=0.0, n=None):
    """General scores; with `n`, every rate's count (questions, words, bigrams, trigrams) is n."""
    return GenerationScores(0.95, 0.9, 0, 0.0, 0.0, (), acc, kl, fake, d2, pd2, rep, prep,
                            parent_general_accuracy=pacc, parent_kl_to_base=pkl, parent_fake_words=pfake,
                            general_counted=n, words=n, parent_words=n, bigrams=n, parent_bigrams=n,
                            trigrams=n, parent_trigrams=n)


@pytest.mark.parametrize("scores,why", [
    (G(), []),
    (G(acc=0.8, pacc=0.9), ["general questions 0.800 <= 0.8", "general questions kept fell from 0.900 (parent) to "
                                                               "0.800: more than 0"]),
    (G(kl=0.5), ["KL from the base 0.500 >= 0.5"]),
    (G(fake=0.05), ["fake words 0.050 >= 0.02", "fake words rose from 0.000 (parent) to 0.050: more than 0"]),
    (G(d2=0.7), ["distinct-2 fell from 0.900 (parent) to 0.700: more than 0.1"]),
    (G(d2=0.95, pd2=0.9), []),  # more varied than the parent: fine
    (G(rep=0.5), ["repetition rose from 0.020 (parent) to 0.500: more than 0.1"]),
    (G(acc=None, pacc=None), []),  # the base answered none of the questions: nothing to keep
    # with the counts: a change the counts explain passes, a real one is rejected beyond noise
    (G(d2=0.7, n=30), []),
    (G(d2=0.5, n=400), ["distinct-2 fell from 0.900 (parent) to 0.500: more than 0.1 beyond noise at 95% confidence"]),
    (G(acc=0.85, pacc=0.9, n=40), []),  # 34 of 40 kept against the parent's 36
    # the absolute caps, failed by the parent too: inherited unless worse beyond noise
    (G(acc=0.75, pacc=0.75, n=40), []),
    (G(fake=0.03, pfake=0.03, n=1000), []),
    (G(kl=0.6, pkl=0.7), []),
    (G(kl=0.8, pkl=0.7), ["KL from the base 0.800 >= 0.5 (parent: KL from the base 0.700 >= 0.5)"]),
])
def test_general_thresholds(scores, why):
    assert gate(scores, GENERAL).reasons == why


def test_general_thresholds_are_off_by_default_and_without_general_evals():
    assert gate(G(acc=0.0, kl=9.0, fake=0.5, d2=0.0, rep=1.0), CFG).accepted
    assert gate(S(0.95, 0.90, 0), GENERAL).accepted  # eval.general off: no scores, nothing checked


def test_recall_below_the_floor_is_judged_against_what_the_parent_recalled_of_the_same_items():
    """Recall measures forgetting: a child under min_recall that recalls as much of the same items as
    its parent, within noise (the demo's gen-1 under split v3: 32 of 36 where gen-0 had 34), is not
    rejected for it, and the reason says so; one that recalls less beyond noise is, and an old report
    without the parent's recall keeps the absolute rule."""
    cfg = GateConfig(min_recall=0.9, min_generalization=0.5)
    near = GenerationScores(32 / 36, 0.9, 0, 0.0, 0, parent_recall=34 / 36, recall_items=36)
    d = gate(near, cfg)
    assert d.accepted and "within noise of its parent's 0.944 on the same 36 items" in d.reason
    far = GenerationScores(20 / 36, 0.9, 0, 0.0, 0, parent_recall=34 / 36, recall_items=36)
    d = gate(far, cfg)
    assert not d.accepted and "below its parent's 0.944 beyond noise" in d.reason
    assert not gate(GenerationScores(32 / 36, 0.9, 0, 0.0, 0), cfg).accepted


def test_the_ledger_says_whether_a_test_part_decides_its_threshold():
    """issue 28: a test part decides gate.min_generalization with a 95% interval no wider than ±0.1, or
    the ledger says it does not (and whether the threshold falls inside the interval)."""
    from evo.gate import DECIDED_HALFWIDTH, interval_note, wilson

    small = interval_note(20, 25, 0.85)  # the demo's gen-2, 2026-12-03
    assert small.startswith("20/25, 95% 0.61-0.91 (±0.15, wider than ±0.1: too few test items)")
    assert small.endswith("threshold 0.85 inside it: within noise")
    big = interval_note(380, 400, 0.85)
    lo, hi = wilson(380, 400, 1.959964)
    assert (hi - lo) / 2 <= DECIDED_HALFWIDTH and "too few" not in big and big.endswith("threshold 0.85 outside it")
    assert interval_note(0, 0, 0.85) == "" and "threshold" not in interval_note(5, 10, None)
    # the width, not the point estimate, decides "too few": 96 items at one half is just within ±0.1
    assert "too few" not in interval_note(48, 96, None) and "too few" in interval_note(45, 90, None)


def test_recall_is_judged_item_by_item_against_the_parent_on_the_same_items():
    """Child and parent are asked the same recall items, so what says whether the child forgot is the
    items one got right and the other wrong (an exact sign test), not the two shares as if they came from
    different samples: 33 of 36 for the parent, 28 for the child, all 5 lost items ones the parent
    knew, is forgetting (p = 1/32), though the independent comparison calls it noise."""
    from evo.gate import sign_test_p, worse_beyond_noise

    cfg = GateConfig(min_generalization=None, max_style_drift=None)
    base = dict(style_probes=10, parent_recall=33 / 36, recall_items=36)
    assert not worse_beyond_noise(1 - 28 / 36, 36, 1 - 33 / 36, 36, 0.0, cfg.drift_confidence)
    forgot = gate(GenerationScores(28 / 36, None, 0, None, 0, **base, recall_lost=5, recall_gained=0), cfg)
    assert not forgot.accepted and "below its parent's 0.917 beyond noise" in forgot.reason
    # the same shares with items that moved both ways (7 lost, 2 gained): p = 0.09, noise, inherited
    swapped = gate(GenerationScores(28 / 36, None, 0, None, 0, **base, recall_lost=7, recall_gained=2), cfg)
    assert swapped.accepted and "(lost 7, gained 2)" in swapped.reason
    assert sign_test_p(5, 0) == 1 / 32 and sign_test_p(0, 0) == 1.0 and round(sign_test_p(7, 2), 3) == 0.09
    # an older report without the counts: the independent comparison, as before
    old = gate(GenerationScores(28 / 36, None, 0, None, 0, **base), cfg)
    assert old.accepted and "lost" not in old.reason


def test_the_evals_count_the_recall_items_lost_and_gained():
    from evo.evals.lineage_evals import paired_recall
    from evo.evals.suite import Accuracy, StyleDrift, SuiteResult

    def result(missed: dict[str, list[str]]) -> SuiteResult:
        by_gen = {g: Accuracy(10 - len(m), 10, missed=m) for g, m in missed.items()}
        return SuiteResult(0.9, by_gen, Accuracy(9, 10), StyleDrift(0, 10), None)

    child = result({"gen-1": ["a", "b", "c"], "gen-2": ["x"]})
    parent = result({"gen-1": ["a", "d"], "gen-2": []})
    assert paired_recall(child, parent) == {"recall_lost": 3, "recall_gained": 1}  # b, c, gen-2's x; d
    assert paired_recall(child, result({"gen-1": ["a"]})) == {}  # not the same items
    assert paired_recall(child, SuiteResult(0.9, {"gen-1": Accuracy(8, 10), "gen-2": Accuracy(10, 10)},
                                            Accuracy(9, 10), StyleDrift(0, 10), None)) == {}  # no miss lists
