"""The leaderboard's fit: Bradley-Terry strengths of the generations from their counted pairwise
votes (`Tally.sha_wins`), with intervals."""

from __future__ import annotations

import math


def bradley_terry(wins: dict[tuple[str, str], int], iters: int = 500) -> list[dict]:
    """Strengths of the models in `wins` ((winner, loser) -> votes): the Bradley-Terry maximum
    likelihood fit by Hunter's MM updates, with half a win and half a loss against the average added
    to every model so that an unbeaten one stays finite. Log-scale strengths, centred on 0, and 95%
    intervals from the inverse observed information (the mean held at 0); best first."""
    models = sorted({m for pair in wins for m in pair})
    if not models:
        return []
    k = len(models)
    idx = {m: i for i, m in enumerate(models)}
    n = [[0.0] * k for _ in range(k)]  # n[i][j]: votes between i and j
    w = [0.5] * k  # wins, with the half-win prior
    for (a, b), c in wins.items():
        n[idx[a]][idx[b]] += c
        n[idx[b]][idx[a]] += c
        w[idx[a]] += c
    p = [1.0] * k
    for _ in range(iters):
        new = []
        for i in range(k):
            denom = 1.0 / (p[i] + 1.0)  # the prior's game against an average (strength 1) model
            denom += sum(n[i][j] / (p[i] + p[j]) for j in range(k) if j != i and n[i][j])
            new.append(w[i] / denom)
        g = math.exp(sum(math.log(x) for x in new) / k)
        p = [x / g for x in new]
    theta = [math.log(x) for x in p]
    info = [[0.0] * k for _ in range(k)]  # observed information of the log strengths
    for i in range(k):
        info[i][i] += p[i] / (p[i] + 1.0) ** 2  # the prior's game
        for j in range(k):
            if j != i and n[i][j]:
                v = n[i][j] * p[i] * p[j] / (p[i] + p[j]) ** 2
                info[i][i] += v
                info[i][j] -= v
    # the strengths are centred (they sum to 0): invert the information with that direction pinned,
    # then project onto the centred space
    inv = _inverse([[info[i][j] + 1.0 for j in range(k)] for i in range(k)])
    cov = [[inv[i][j] - sum(inv[i]) / k - sum(inv[r][j] for r in range(k)) / k
            + sum(map(sum, inv)) / k / k for j in range(k)] for i in range(k)]
    rows = []
    for m in models:
        i = idx[m]
        se = math.sqrt(max(cov[i][i], 0.0))
        games = int(sum(n[i]))
        rows.append({"sha": m, "strength": theta[i], "interval": (theta[i] - 1.96 * se, theta[i] + 1.96 * se),
                     "votes": games, "wins": int(w[i] - 0.5)})
    return sorted(rows, key=lambda r: -r["strength"])


def _inverse(a: list[list[float]]) -> list[list[float]]:
    """Gauss-Jordan inverse of a small positive definite matrix."""
    k = len(a)
    m = [row[:] + [1.0 if i == j else 0.0 for j in range(k)] for i, row in enumerate(a)]
    for c in range(k):
        piv = max(range(c, k), key=lambda r: abs(m[r][c]))
        m[c], m[piv] = m[piv], m[c]
        d = m[c][c]
        m[c] = [x / d for x in m[c]]
        for r in range(k):
            if r != c and m[r][c]:
                f = m[r][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [row[k:] for row in m]
