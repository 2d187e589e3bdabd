"""Gate thresholds and the stop rule, as tables."""

import pytest

from evo.config import GateConfig
from evo.gate import GenerationScores, gate, should_stop

CFG = GateConfig()  # recall > .9, generalization > .85, drift < 2, eps .05, theta .1


def S(recall, gen, drift, pgen=0.0, pdrift=0.0):
    return GenerationScores(recall, gen, drift, pgen, pdrift)


@pytest.mark.parametrize("scores,accepted,why", [
    (S(0.95, 0.90, 0), True, []),
    (S(None, 0.90, 1), True, []),                      # nothing to recall yet
    (S(0.90, 0.90, 0), False, ["recall 0.900 <= 0.9"]),  # thresholds are strict
    (S(0.95, 0.85, 0), False, ["generalization 0.850 <= 0.85"]),
    (S(0.95, 0.90, 2), False, ["style drift 2 >= 2"]),
    (S(0.10, 0.10, 5), False, ["recall 0.100 <= 0.9", "generalization 0.100 <= 0.85", "style drift 5 >= 2"]),
])
def test_gate_table(scores, accepted, why):
    d = gate(scores, CFG)
    assert d.accepted is accepted and d.reasons == why


def test_gate_thresholds_come_from_config():
    loose = GateConfig(min_recall=0.5, min_generalization=0.5, max_style_drift=5)
    assert gate(S(0.6, 0.6, 4), loose).accepted
    assert not gate(S(0.6, 0.6, 4), CFG).accepted


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
    off = GateConfig(min_recall=None, min_generalization=None, max_style_drift=None)
    assert gate(S(0.0, 0.0, 10), off).accepted
    assert gate(S(0.0, 0.9, 0), GateConfig(min_recall=None)).accepted


def test_stop_rule_patience_is_config():
    assert should_stop([STALL], GateConfig(patience=1))
    assert not should_stop([STALL, STALL], GateConfig(patience=3))


GENERAL = GateConfig(min_general_accuracy=0.8, max_kl_to_base=0.5, max_fake_words=0.02, max_distinct2_drop=0.1,
                     max_repetition_rise=0.1)


def G(acc=1.0, kl=0.1, fake=0.0, d2=0.9, pd2=0.9, rep=0.02, prep=0.02):
    return GenerationScores(0.95, 0.9, 0, 0.0, 0.0, (), acc, kl, fake, d2, pd2, rep, prep)


@pytest.mark.parametrize("scores,why", [
    (G(), []),
    (G(acc=0.8), ["general questions 0.800 <= 0.8"]),
    (G(kl=0.5), ["KL from the base 0.500 >= 0.5"]),
    (G(fake=0.05), ["fake words 0.050 >= 0.02"]),
    (G(d2=0.7), ["distinct-2 fell 0.200 (to 0.700) >= 0.1"]),
    (G(d2=0.95, pd2=0.9), []),  # more varied than the parent: fine
    (G(rep=0.5), ["repetition rose 0.480 (to 0.500) >= 0.1"]),
    (G(acc=None), []),  # the base answered none of the questions: nothing to keep
])
def test_general_thresholds(scores, why):
    assert gate(scores, GENERAL).reasons == why


def test_general_thresholds_are_off_by_default_and_without_general_evals():
    assert gate(G(acc=0.0, kl=9.0, fake=0.5, d2=0.0, rep=1.0), CFG).accepted
    assert gate(S(0.95, 0.90, 0), GENERAL).accepted  # eval.general off: no scores, nothing checked
