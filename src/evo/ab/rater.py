"""A scripted rater: a test double for the people who vote on side-by-side pairs.

It prefers answers by one fixed rule that appears in no training file, so a model can learn the rule
only from its votes: that is what makes it a fair test of the serve -> vote -> train -> A/B loop
(`bench/bench_preference.py`, `evo demo --loop`). It is not a judge of quality and stands in for no
real user's taste; it lets a test or a demo say exactly what the votes asked for and measure whether
the next generation learned it.

The demo's rule (`MARKER`): a translation answer ends with a full stop. Every translation in the demo
domain's files ends without one (its chats do end with one, so the token is known to the model, but
never after a translation).

It votes the way a person does, through the server's rating endpoints: `POST /v1/side_by_side` for a
pair of blind answers, then `POST /v1/feedback/pairwise` with a, b, tie (both follow the rule) or
both_bad (neither does); `vote_through` takes any client with `.post(url, json=..., headers=...)`
(httpx's, or FastAPI's TestClient on the real app).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MARKER = "."


@dataclass(frozen=True)
class ScriptedRater:
    """Prefers the answer whose text, stripped of surrounding whitespace, ends with `marker`."""

    marker: str = MARKER

    def __post_init__(self):
        if not self.marker or self.marker != self.marker.strip():
            raise ValueError(f"a rater's marker must be non-empty text without surrounding spaces, not {self.marker!r}")

    @property
    def rule(self) -> str:
        return f"prefers the answer that ends with {self.marker!r}"

    def follows(self, answer: str) -> bool:
        return answer.strip().endswith(self.marker)

    def preferred(self, a: str, b: str) -> str:
        """'a' or 'b' when exactly one follows the rule; 'tie' when both do, 'both_bad' when neither
        (neither gives a training pair: `evo feedback export` takes only votes with a winner)."""
        fa, fb = self.follows(a), self.follows(b)
        if fa != fb:
            return "a" if fa else "b"
        return "tie" if fa else "both_bad"

    def with_rule(self, answer: str) -> str:
        """`answer` made to follow the rule (unchanged when it does): the rule-following side of a
        constructed pair."""
        return answer if self.follows(answer) else answer.rstrip() + self.marker


@dataclass
class Votes:
    """What `vote_through` did: every vote as the server recorded it, and how many of each kind."""

    recorded: list[dict] = field(default_factory=list)  # {"pair_id", "preferred", "prompt", "a", "b"}
    counts: Counter = field(default_factory=Counter)


def _ok(resp, what: str) -> dict:
    if resp.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def _text(answer: dict) -> str:
    choice = answer["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def vote_through(client, prompts: list, rater: ScriptedRater, headers: dict | None = None,
                 max_tokens: int = 16, temperature: float = 0.0, seed: int | None = 0) -> Votes:
    """For each prompt (a plain prompt string, or a list of chat messages ending in a user turn): ask
    the server for a blind pair (`/v1/side_by_side`) and vote on it by the rule
    (`/v1/feedback/pairwise`). A non-200 reply raises, naming the step and the server's message."""
    out = Votes()
    for i, p in enumerate(prompts):
        body = {"messages": p} if isinstance(p, list) else {"prompt": p}
        body.update(max_tokens=max_tokens, temperature=temperature)
        if seed is not None:
            body["seed"] = seed + i
        pair = _ok(client.post("/v1/side_by_side", json=body, headers=headers), f"side_by_side for prompt {i}")
        a, b = _text(pair["a"]), _text(pair["b"])
        choice = rater.preferred(a, b)
        _ok(client.post("/v1/feedback/pairwise", json={"pair_id": pair["pair_id"], "preferred": choice},
                        headers=headers), f"vote on pair {pair['pair_id']}")
        out.recorded.append({"pair_id": pair["pair_id"], "preferred": choice, "prompt": p, "a": a, "b": b})
        out.counts[choice] += 1
    return out
