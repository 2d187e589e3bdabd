"""Prompts waiting for a person to rate them side by side (`service/rating_queue.jsonl`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from evo.atomic import locked
from evo.openai_api import APIError


class RatingQueue:
    def __init__(self, root: str | Path):
        self.path = Path(root) / "service" / "rating_queue.jsonl"

    def add(self, body: object) -> dict:
        """{"prompts": ["...", ...]}: appended in order; a prompt already queued is not queued again."""
        prompts = body.get("prompts") if isinstance(body, dict) else None
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise APIError(400, "'prompts' must be a non-empty list of non-empty strings", "prompts")
        with locked(self.path):
            have = {json.loads(x)["prompt"] for x in self.path.read_text().splitlines()} if self.path.exists() else set()
            new = [p for p in dict.fromkeys(prompts) if p not in have]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps({"prompt": p}) + "\n" for p in new)
        return {"queued": len(new), "already_queued": len(prompts) - len(new)}

    def next(self, done: set[str], key: Callable[[str], str]) -> Optional[str]:
        """The first queued prompt whose key (`key(prompt)`: the `prompt_key` of the prompt asked as a
        user's message) is not in `done` (the round's prompts with a counted vote or a skip)."""
        if not self.path.exists():
            return None
        for line in self.path.read_text(encoding="utf-8").splitlines():
            p = json.loads(line)["prompt"]
            if key(p) not in done:
                return p
        return None
