"""What an A/B round's feedback log adds up to: per-arm counts, the votes that count, and the
round's verdict so far (`evo.ab.verdict`).

What is counted. One vote per distinct prompt per round: the first side-by-side vote on a prompt
counts, later votes on the same prompt are kept in the log but not counted (at temperature 0 a
repeated prompt gets the same two answers, so its repeats are not independent evidence), and a
second vote on the same pair is refused before it is written. Ties use up the prompt and are not
decisive.
"""

from __future__ import annotations

import hashlib
import json

from evo.ab.router import ARMS
from evo.ab.verdict import TestPlan, verdict_of, wilson


def prompt_key(body: dict) -> str:
    """What makes two side-by-side requests the same prompt: the prompt text or the messages, with
    whitespace and case folded (sampling settings do not make a prompt new)."""
    what = body.get("messages") if body.get("messages") is not None else body.get("prompt")
    canon = json.dumps(what, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(" ".join(canon.lower().split()).encode()).hexdigest()[:24]


class Tally:
    """Every number `/ab/stats` reports, kept up to date one event at a time (`add`, O(1) each), so
    a vote and a stats read cost the same with 100 votes in the log as with 100,000.

    What counts: the first vote of each distinct prompt (a log without prompt keys: each
    pair is its own prompt), never a second vote on one pair; thumbs count for the arm whose
    response they rate, whenever in the log that response's event comes."""

    def __init__(self):
        self.arm_of: dict[str, str] = {}  # response id -> arm
        self.unplaced: dict[str, list[str]] = {}  # thumbs on a response not seen yet: response id -> values
        self.arms = {a: {"requests": 0, "thumbs_up": 0, "thumbs_down": 0, "pairwise_wins": 0} for a in ARMS}
        self.pairs: dict[str, dict] = {}  # pair id -> the "pair" event that showed it
        self.voted: set[str] = set()  # pair ids with a vote
        self.prompts: set[str] = set()
        self.counted = self.ties = self.all_votes = 0
        self.cum_wins: list[int] = []  # candidate wins among the first i+1 decisive counted votes
        self.sha_wins: dict[tuple[str, str], int] = {}  # (winner's sha, loser's sha) -> counted decisive votes
        self.events = 0

    def add(self, e: dict) -> None:
        self.events += 1
        kind = e["kind"]
        if kind == "response":
            self.arm_of[e["response_id"]] = e["arm"]
            self.arms[e["arm"]]["requests"] += 1
            for value in self.unplaced.pop(e["response_id"], []):
                self.arms[e["arm"]]["thumbs_" + value] += 1
        elif kind == "thumbs":
            arm = self.arm_of.get(e["response_id"])
            if arm is None:
                self.unplaced.setdefault(e["response_id"], []).append(e["value"])
            else:
                self.arms[arm]["thumbs_" + e["value"]] += 1
        elif kind == "pair":
            self.pairs[e["pair_id"]] = e
        elif kind == "pairwise":
            self.all_votes += 1
            if e["pair_id"] in self.voted:
                return
            self.voted.add(e["pair_id"])
            key = e.get("prompt_key") or e["pair_id"]
            if key in self.prompts:
                return
            self.prompts.add(key)
            self.counted += 1
            if e["winner"] == "tie":
                self.ties += 1
                return
            self.arms[e["winner"]]["pairwise_wins"] += 1
            shas = (self.pairs.get(e["pair_id"]) or {}).get("shas") or {}
            loser = "champion" if e["winner"] == "candidate" else "candidate"
            if shas.get(e["winner"]) and shas.get(loser) and shas[e["winner"]] != shas[loser]:
                key = (shas[e["winner"]], shas[loser])
                self.sha_wins[key] = self.sha_wins.get(key, 0) + 1
            self.cum_wins.append((self.cum_wins[-1] if self.cum_wins else 0) + (e["winner"] == "candidate"))

    def summary(self, plan: TestPlan) -> dict:
        """Per-arm counts and rates, and the round's verdict so far: O(looks), not O(events)."""
        arms = {a: dict(v) for a, v in self.arms.items()}
        for a in arms.values():
            rated = a["thumbs_up"] + a["thumbs_down"]
            a["thumbs_up_rate"] = a["thumbs_up"] / rated if rated else None
            a["thumbs_up_ci"] = wilson(a["thumbs_up"], rated, plan.alpha)
        cw, hw = arms["candidate"]["pairwise_wins"], arms["champion"]["pairwise_wins"]
        return {
            "arms": arms,
            "pairwise": {"candidate_wins": cw, "champion_wins": hw, "ties": self.ties,
                         "distinct_prompts": self.counted, "votes_not_counted": self.all_votes - self.counted,
                         "candidate_win_rate": cw / (cw + hw) if cw + hw else None,
                         "candidate_win_ci": wilson(cw, cw + hw, plan.alpha)},
            "verdict": verdict_of(self.cum_wins, plan).to_json(),
            "plan": plan.to_json(),
        }


def summarize(events: list[dict], plan: TestPlan) -> dict:
    """Per-arm counts and rates from the event log, and the round's verdict so far."""
    tally = Tally()
    for e in events:
        tally.add(e)
    return tally.summary(plan)
