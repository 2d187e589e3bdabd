"""What an A/B round's feedback log adds up to: per-arm counts, the votes that count, the pairs
skipped, and the round's verdict so far (`evo.ab.verdict`).

What is counted. One vote per distinct prompt per round: the first side-by-side vote on a prompt
counts, later votes on the same prompt are kept in the log but not counted (at temperature 0 a
repeated prompt gets the same two answers, so its repeats are not independent evidence), and a
second vote on the same pair is refused before it is written. Ties use up the prompt and are not
decisive. A prompt is what the model is given (`prompt_key`), so two requests that reach the model
as the same input are one prompt however they were spelled.
"""

from __future__ import annotations

import hashlib

from evo.ab.router import ARMS
from evo.ab.verdict import TestPlan, verdict_of, wilson


def prompt_key(rendered: str) -> str:
    """What makes two side-by-side requests the same prompt: the text the model is given (a chat
    rendered through its chat template, `ModelPool.render`; a completion's prompt as it is), with
    case folded and whitespace left out (so spacing alone never makes a prompt new, not even a space
    or newline at a message's edge, beside the template's own tokens). Chat content sent as a list
    of text parts, a system message the template writes anyway, or fields the server ignores do not
    make a prompt new either, and neither do sampling settings. Not the split's question key
    (`evo.data.store.question_key`) on purpose: a vote is on what the model was given, so a system
    message or an earlier turn that changes the input makes another prompt here, where the split
    asks only which question a record asks."""
    return hashlib.sha256("".join(rendered.lower().split()).encode()).hexdigest()[:24]


MAX_UNPLACED = 10_000  # thumbs waiting for their response event (an old log's): the oldest go first


class Tally:
    """Every number `/ab/stats` reports for one round, kept up to date one event at a time (`add`,
    O(1) each), so a vote and a stats read cost the same with 100 votes in the log as with 100,000.

    What counts: the first vote of each distinct prompt (a log without prompt keys: each
    pair is its own prompt), never a second vote on one pair; thumbs count for the arm whose
    response they rate, whenever in the log that response's event comes. A pair skipped (shown,
    then passed over without a vote) is counted by the arm that was shown as "a", beside the pairs
    shown that way, so a skip rate that depends on the position or the arm shows."""

    def __init__(self):
        self.arm_of: dict[str, str] = {}  # response id -> arm
        self.unplaced: dict[str, list[str]] = {}  # thumbs on a response not seen yet: response id -> values
        self.thumbed: set[tuple[str, str]] = set()  # (response id, voter) with thumbs: one per voter counts
        self.arms = {a: {"requests": 0, "thumbs_up": 0, "thumbs_down": 0, "pairwise_wins": 0} for a in ARMS}
        self.pairs: dict[str, dict] = {}  # pair id -> the "pair" event that showed it
        self.voted: set[str] = set()  # pair ids with a vote
        self.skipped: dict[str, str] = {}  # pair ids skipped and (still) without a vote -> the arm shown as "a"
        self.shown_at_a = dict.fromkeys(ARMS, 0)  # pairs shown, by the arm labelled "a"
        self.skipped_at_a = dict.fromkeys(ARMS, 0)  # of those, skipped without a vote
        self.prompts: set[str] = set()
        self.counted = self.ties = self.all_votes = 0
        self.cum_wins: list[int] = []  # candidate wins among the first i+1 decisive counted votes
        self.sha_wins: dict[tuple[str, str], int] = {}  # (winner's sha, loser's sha) -> counted decisive votes
        self.shas: dict[str, str] = {}  # arm -> the sha that answered for it (pair and response events)
        self.model_pairs: set[tuple[str, str]] = set()  # (champion, candidate) shas of the pairs shown
        self.first_time = self.last_time = None
        self.events = 0

    def add(self, e: dict) -> None:
        self.events += 1
        if isinstance(e.get("time"), (int, float)):
            self.first_time = e["time"] if self.first_time is None else self.first_time
            self.last_time = e["time"]
        kind = e["kind"]
        if kind == "response":
            self.arm_of[e["response_id"]] = e["arm"]
            self.arms[e["arm"]]["requests"] += 1
            if e.get("sha"):
                self.shas.setdefault(e["arm"], e["sha"])
            for value in self.unplaced.pop(e["response_id"], []):
                self.arms[e["arm"]]["thumbs_" + value] += 1
        elif kind == "thumbs":
            who = (e["response_id"], e.get("voter") or "")
            if "voter" in e and who in self.thumbed:  # a second thumbs of one key on one response: not counted
                return
            self.thumbed.add(who)
            arm = self.arm_of.get(e["response_id"])
            if arm is None:  # an old log's thumbs before their response; the server now refuses those
                if len(self.unplaced) >= MAX_UNPLACED:
                    self.unplaced.pop(next(iter(self.unplaced)))
                self.unplaced.setdefault(e["response_id"], []).append(e["value"])
            else:
                self.arms[arm]["thumbs_" + e["value"]] += 1
        elif kind == "pair":
            self._shown(e)
        elif kind == "skip":
            self._skip(e["pair_id"])
        elif kind == "pairwise":
            self._vote(e)

    def _shown(self, e: dict) -> None:
        self.pairs[e["pair_id"]] = e
        self.shown_at_a[e["a"]] += 1
        shas = e.get("shas") or {}
        for arm in ARMS:
            if shas.get(arm):
                self.shas.setdefault(arm, shas[arm])
        if shas.get("champion") and shas.get("candidate"):
            self.model_pairs.add((shas["champion"], shas["candidate"]))

    def _skip(self, pair_id: str) -> None:
        shown = self.pairs.get(pair_id)
        if pair_id in self.voted or pair_id in self.skipped or shown is None:
            return
        self.skipped[pair_id] = shown["a"]
        self.skipped_at_a[shown["a"]] += 1

    @property
    def skipped_prompts(self) -> set[str]:
        """The prompt keys of the pairs skipped without a vote."""
        return {self.pairs[p].get("prompt_key") or p for p in self.skipped}

    def _vote(self, e: dict) -> None:
        self.all_votes += 1
        if e["pair_id"] in self.voted:
            return
        self.voted.add(e["pair_id"])
        if e["pair_id"] in self.skipped:  # passed over, then voted after all: a vote, not a skip
            self.skipped_at_a[self.skipped.pop(e["pair_id"])] -= 1
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
        """Per-arm counts and rates, the skips, and the round's verdict so far: O(looks), not O(events)."""
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
            "skipped": {"pairs": len(self.skipped), "pairs_shown": len(self.pairs),
                        "by_arm_shown_as_a": {a: {"shown": self.shown_at_a[a], "skipped": self.skipped_at_a[a]}
                                              for a in ARMS}},
            "verdict": verdict_of(self.cum_wins, plan).to_json(),
            "plan": plan.to_json(),
        }


def summarize(events: list[dict], plan: TestPlan) -> dict:
    """Per-arm counts and rates from one round's events, and the round's verdict so far."""
    tally = Tally()
    for e in events:
        tally.add(e)
    return tally.summary(plan)
