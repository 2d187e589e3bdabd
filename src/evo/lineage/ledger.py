"""`ledger.csv`: one row per generation, rewritten atomically, never with a duplicate GEN_ID."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from evo.atomic import atomic_write_text, locked
from evo.numbers import cell
from evo.storage import open_root, resolve

COLUMNS = [
    "GEN_ID", "parent_sha", "child_sha", "data_delta_sha", "steps", "lr", "walltime_min",
    "loss_start", "loss_end", "eval_recall", "eval_generalization", "eval_style_drift",
    "replay_k", "decision", "reason", "eval_perplexity", "best_step", "ab_result", "trial",
    "patterns_healed", "patterns_recurred", "restored",
    "split",  # how the delta was divided (evo.data.store.SCHEME); empty on rows of older roots: v1
    # eval.general (empty when it is off): general questions kept, KL from the base, fake-word share,
    # distinct-2 and repetition rate on open prompts
    "eval_general", "eval_kl_base", "eval_fake_words", "eval_distinct2", "eval_repetition",
    # the champion (sha) the child was scored against and its decision applied to: the parent, unless
    # the champion moved while the generation ran (evo.lineage.decisions); empty on rows of older roots
    "compared_with",
    # whose branch the generation is on: a tenant's API key id, or empty for the shared line (and on rows
    # of older roots); the registry holds the same owner (evo.lineage.registry)
    "owner",
    # "n/m": n of the m test items of the delta have their answer as a training completion of the mix
    # (the question is new, the answer was trained: generalization there measures rewording, not a fact
    # learned); empty on rows of older roots
    "test_answers_trained",
    # train.method (supervised or dpo; empty on rows of older roots) and, for dpo, its beta, the
    # preference pairs trained on, and on the delta's test pairs the share the child ranks right (its
    # implicit reward higher on the chosen answer) and the mean reward margin
    "method", "dpo_beta", "pairs", "pref_accuracy", "reward_margin",
    # "n/m": recall was asked on n of the m items of the line's test parts (a stratified sample once m
    # is over eval.recall_halfwidth's budget, so a generation's evals cost the same at any depth)
    "recall_items",
    # the test part's generalization as k/n with its 95% interval, whether that is within ±0.1
    # (`evo.gate.DECIDED_HALFWIDTH`; "too few test items" otherwise) and whether gate.min_generalization
    # falls inside it; empty on rows of older roots
    "generalization_interval",
]
# `reverted`: promoted once, then the champion went back to an earlier generation (`restored`).
# `pending`: promoted by the gate, then an A/B round against its parent ended undecided (it waits as candidate).
# `withdrawn`: decided, then its fine-tuning job failed or was cancelled (`evo.lineage.decisions.withdraw`).
DECISIONS = ("promoted", "rejected", "stopped", "reverted", "pending", "withdrawn")


class LedgerError(ValueError):
    pass


class Ledger:
    def __init__(self, root: str | Path):
        self.path = resolve(root) / "ledger.csv"

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:  # ledgers written by older versions lack later columns
            for c in COLUMNS:
                r.setdefault(c, "")
        return rows

    def get(self, gen_id: str) -> dict[str, str] | None:
        return next((r for r in self.rows() if r["GEN_ID"] == gen_id), None)

    def append(self, row: dict[str, Any]) -> bool:
        """Add a generation's row; False (and no write) if the identical row is already there."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise LedgerError(f"ledger row has unknown columns: {sorted(unknown)}")
        if row.get("decision") not in DECISIONS:
            raise LedgerError(f"ledger row decision must be one of {DECISIONS}, got {row.get('decision')!r}")
        new = {c: cell(row.get(c)) for c in COLUMNS}
        with locked(self.path):
            return self._append(new)

    def _append(self, new: dict[str, str]) -> bool:
        rows = self.rows()
        existing = next((r for r in rows if r["GEN_ID"] == new["GEN_ID"]), None)
        if existing is not None:
            if existing == new:
                return False
            raise LedgerError(f"{self.path}: generation {new['GEN_ID']} already has a different row")
        self._write(rows + [new])
        return True

    def update(self, gen_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise LedgerError(f"ledger update has unknown columns: {sorted(unknown)}")
        with locked(self.path):
            rows = self.rows()
            for r in rows:
                if r["GEN_ID"] == gen_id:
                    r.update({k: cell(v) for k, v in fields.items()})
                    self._write(rows)
                    return
        raise LedgerError(f"{self.path}: no row for generation {gen_id}")

    def _write(self, rows: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())


def print_ledger(root: Path, as_json: bool) -> None:
    """The ledger of a local root as a table (the columns a reader compares), each row's reason, A/B results."""
    rows = Ledger(root).rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"{root}/ledger.csv: no generations yet")
        return
    cols = ["GEN_ID", "child_sha", "steps", "walltime_min", "loss_start", "loss_end", "eval_recall",
            "eval_generalization", "eval_style_drift", "replay_k", "patterns_healed", "decision", "split",
            "test_answers_trained"]
    table = [cols] + [[(r[c][:12] if c.endswith("sha") else r[c] or ("v1" if c == "split" else "")) for c in cols]
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print("split: v1 = one holdout, used both to choose checkpoints and to report; v2 = train / val (choosing "
          "only) / test (reported and gated), by record; v3 = the same parts by question (every user turn), and no "
          "training record asks a test-part question")
    print("test_answers_trained: test items whose answer is also a training completion (asked in another wording): "
          "where that is most of them, generalization measures rewording of trained answers, not facts learned")
    print("\nreasons: " + "; ".join(f"{r['GEN_ID']}: {r['reason']}" for r in rows))
    ab = [f"{r['GEN_ID']}: {r['ab_result']}" for r in rows if r["ab_result"]]
    if ab:
        print("A/B: " + "; ".join(ab))


def cmd_ledger(root: str, as_json: bool) -> int:
    """`evo ledger`."""
    print_ledger(open_root(root), as_json)
    return 0
