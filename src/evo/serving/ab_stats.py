"""Per-arm numbers and the verdict, computed from the event log."""

from __future__ import annotations

from evo.serving.router import ARMS
from evo.serving.stats import UNDECIDED, TestPlan, pairwise_verdict, thumbs_verdict, wilson


def summarize(events: list[dict], plan: TestPlan) -> dict:
    arm_of = {e["response_id"]: e["arm"] for e in events if e["kind"] == "response"}
    arms = {a: {"requests": 0, "thumbs_up": 0, "thumbs_down": 0, "pairwise_wins": 0} for a in ARMS}
    ties = 0
    for e in events:
        if e["kind"] == "response":
            arms[e["arm"]]["requests"] += 1
        elif e["kind"] == "thumbs" and e["response_id"] in arm_of:
            arms[arm_of[e["response_id"]]]["thumbs_" + e["value"]] += 1
        elif e["kind"] == "pairwise":
            if e["winner"] == "tie":
                ties += 1
            else:
                arms[e["winner"]]["pairwise_wins"] += 1
    for a in arms.values():
        rated = a["thumbs_up"] + a["thumbs_down"]
        a["thumbs_up_rate"] = a["thumbs_up"] / rated if rated else None
        a["thumbs_up_ci"] = wilson(a["thumbs_up"], rated, plan.alpha)
    cw, hw = arms["candidate"]["pairwise_wins"], arms["champion"]["pairwise_wins"]
    pair = pairwise_verdict(cw, hw, plan)
    c, h = arms["candidate"], arms["champion"]
    thumbs = thumbs_verdict(c["thumbs_up"], c["thumbs_up"] + c["thumbs_down"],
                            h["thumbs_up"], h["thumbs_up"] + h["thumbs_down"], plan)
    if pair.verdict != UNDECIDED:
        verdict = pair
    elif thumbs.verdict != UNDECIDED:
        verdict = thumbs
    else:  # undecided: explain with whichever kind of feedback is coming in
        verdict = pair if pair.n > 0 or thumbs.n == 0 else thumbs
    return {
        "arms": arms,
        "pairwise": {"candidate_wins": cw, "champion_wins": hw, "ties": ties,
                     "candidate_win_rate": cw / (cw + hw) if cw + hw else None,
                     "candidate_win_ci": wilson(cw, cw + hw, plan.alpha)},
        "verdict": verdict.to_json(),
        "plan": {"alpha": plan.alpha, "min_samples": plan.min_samples, "max_looks": plan.max_looks,
                 "alpha_per_look": plan.alpha_per_look},
    }
