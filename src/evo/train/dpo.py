"""Direct preference optimization (`train.method: dpo`): the loss inside evo's own training loop, and
how a trained child ranks preference pairs against its parent.

The reference model is the parent, and it costs no memory: it is the child being trained with its
new LoRA adapter switched off (`peft_model.disable_adapter()`). The parent's ancestors are merged
into the base weights when the parent is loaded (`evo.model.lineage_model.load_generation`), so the
adapter switched off gives the parent's outputs exactly (tests/train/test_dpo.py).

The loss is DPO's sigmoid loss as TRL 1.16 computes it (`DPOTrainer._compute_loss`, loss_type
"sigmoid", and "sft" with its weight for the SFT term on the chosen answers); TRL keeps it inside its
trainer, so evo computes the same few lines here, and the test checks them against TRL's on the same
batch. Pairs are laid out as TRL lays them out: the chosen sequences, then the rejected ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evo.model.artifacts import ModelStore
from evo.model.lineage_model import load_generation
from evo.train.examples import IGNORE, collate_pairs, encode_pair, mean_token_loss


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's summed log-probability of its labelled tokens: logits [B, T, V], labels [B, T] -> [B]."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


@dataclass
class PairStats:
    """Sums over pairs (so workers can add theirs): DPO loss, pairs the child ranks right (its implicit
    reward beta * log(child / parent) higher on the chosen answer), reward margins, chosen log-ratios."""

    loss: float = 0.0
    correct: int = 0
    margin: float = 0.0
    chosen_logratio: float = 0.0
    pairs: int = 0

    def add(self, other: PairStats) -> None:
        for k in ("loss", "correct", "margin", "chosen_logratio", "pairs"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def pair_terms(logps: torch.Tensor, ref_logps: torch.Tensor, n_pairs: int, beta: float):
    """(per-pair DPO loss, chosen rewards, rejected rewards, chosen log-ratios) of the first 2 x n_pairs rows
    (chosen, then rejected)."""
    chosen, rejected = logps[:n_pairs], logps[n_pairs:2 * n_pairs]
    ref_chosen, ref_rejected = ref_logps[:n_pairs], ref_logps[n_pairs:2 * n_pairs]
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach(), chosen_ratio.detach()


def stats_of(losses, chosen_rewards, rejected_rewards, chosen_ratio) -> PairStats:
    return PairStats(float(losses.detach().sum()), int((chosen_rewards > rejected_rewards).sum()),
                     float((chosen_rewards - rejected_rewards).sum()), float(chosen_ratio.sum()), int(losses.numel()))


def reference_logps(peft_model, batch: dict, n_pairs: int) -> torch.Tensor:
    """The parent's log-probabilities of the pairs' rows: the model with its new adapter switched off."""
    rows = slice(0, 2 * n_pairs)
    with torch.no_grad(), peft_model.disable_adapter():
        ref = peft_model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]).logits
    return sequence_logps(ref, batch["labels"][rows])


def dpo_loss(model, peft_model, batch: dict, n_pairs: int, beta: float, sft_weight: float) -> tuple[torch.Tensor, PairStats]:
    """The mean DPO loss of the batch's pairs, plus `sft_weight` times the mean token loss of their chosen
    answers, plus the mean token loss of its other rows (replay); each term 0 where it has no rows.
    `model` is what trains (maybe wrapped by DDP or DeepSpeed: one forward over every row), `peft_model`
    the PeftModel inside it."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"]
    loss = mean_token_loss(logits[2 * n_pairs:], labels[2 * n_pairs:])
    if n_pairs == 0:
        return loss, PairStats()
    ref = reference_logps(peft_model, batch, n_pairs)
    terms = pair_terms(sequence_logps(logits[: 2 * n_pairs], labels[: 2 * n_pairs]), ref, n_pairs, beta)
    loss = loss + terms[0].mean()
    if sft_weight > 0:
        loss = loss + sft_weight * mean_token_loss(logits[:n_pairs], labels[:n_pairs])
    return loss, stats_of(*terms)


@torch.no_grad()
def score_pairs(peft_model, pairs: list, pad_id: int, beta: float, batch_size: int = 16,
                device: str = "cpu") -> PairStats:
    """How the model (a PeftModel whose adapter is the child's own) ranks `pairs` against its parent."""
    peft_model.eval()
    total = PairStats()
    for i in range(0, len(pairs), batch_size):
        batch, n = collate_pairs(pairs[i : i + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        terms = pair_terms(sequence_logps(logits, batch["labels"]), reference_logps(peft_model, batch, n), n, beta)
        total.add(stats_of(*terms))
    return total


def child_pair_scores(root: str, child: str, records: list, beta: float, max_length: int,
                      dtype: str = "float32") -> dict:
    """A trained child's ranking of preference `records` (a Ray task body): its parent loaded (each link's
    sha checked), the child's adapter on it unmerged, the parent being that adapter switched off.
    {pairs, accuracy, reward_margin, chosen_logratio} (means over the pairs; None without pairs)."""
    from peft import PeftModel

    store = ModelStore(root)
    chain = store.chain(child)
    store.verify(child)
    model, tok = load_generation(root, chain[-2], dtype)
    model = PeftModel.from_pretrained(model, str(store.path(child)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    pairs = [encode_pair(r, tok, max_length) for r in records if r.kind == "preference"]
    s = score_pairs(model, pairs, tok.pad_token_id, beta, device=device)
    if not s.pairs:
        return {"pairs": 0, "accuracy": None, "reward_margin": None, "chosen_logratio": None}
    return {"pairs": s.pairs, "accuracy": s.correct / s.pairs, "reward_margin": s.margin / s.pairs,
            "chosen_logratio": s.chosen_logratio / s.pairs}

