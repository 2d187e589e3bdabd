"""Which arm answers a request: a live-adjustable candidate share, sticky per user."""

from __future__ import annotations

import hashlib
import uuid
from typing import Optional

ARMS = ("champion", "candidate")


class ABRouter:
    """Users hash to a fixed point in [0, 1); those below the share get the candidate.

    So a user always sees the same arm while the share holds, and raising the share only moves
    users from champion to candidate (never back), which keeps their experience consistent.
    """

    def __init__(self, candidate_share: float = 0.5, salt: str = "evo"):
        self.salt = salt
        self.candidate_share = 0.0
        self.set_share(candidate_share)

    def set_share(self, share: float) -> None:
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 <= share <= 1.0:
            raise ValueError(f"candidate share must be a number from 0 to 1, got {share!r}")
        self.candidate_share = float(share)

    def point(self, user: str) -> float:
        digest = hashlib.sha256(f"{self.salt}|{user}".encode()).hexdigest()
        return int(digest[:12], 16) / float(1 << 48)

    def assign(self, user: Optional[str]) -> str:
        """The arm for `user`; a request with no user gets a random one (not sticky)."""
        key = user if user else uuid.uuid4().hex
        return "candidate" if self.point(key) < self.candidate_share else "champion"
