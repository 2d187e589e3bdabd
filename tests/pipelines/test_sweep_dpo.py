"""A sweep of a dpo generation (no Ray): beta is searched beside lr and steps, and checkpoints and
trials are ranked by val preference accuracy (val pairs only), val loss after."""

from __future__ import annotations

from evo.config import EvoConfig
from evo.tune.sweep import TRIAL_COLUMNS, TrialRecord, _checkpoint_rank, param_space


def cfg(method: str) -> EvoConfig:
    return EvoConfig(data={"base": "b.jsonl"}, train={"method": method}, tune={"beta": [0.05, 0.5]})


def test_beta_is_searched_only_for_dpo():
    space = param_space(cfg("dpo"))
    assert set(space) == {"lr", "steps", "replay_k", "beta"} and sorted(space["beta"].categories) == [0.05, 0.5]
    assert "beta" not in param_space(cfg("supervised"))


def test_checkpoints_rank_by_val_preference_accuracy_then_val_loss():
    reports = [{"val_loss": 0.3, "val_pref_accuracy": 0.6}, {"val_loss": 0.5, "val_pref_accuracy": 0.9},
               {"val_loss": 0.4, "val_pref_accuracy": 0.9}]
    assert min(reports, key=_checkpoint_rank) == reports[2]
    supervised = [{"val_loss": 0.3}, {"val_loss": 0.2}]
    assert min(supervised, key=_checkpoint_rank) == supervised[1]  # no accuracy: val loss alone, as before
    nan = [{"val_loss": 0.3, "val_pref_accuracy": float("nan")}, {"val_loss": 0.2, "val_pref_accuracy": float("nan")}]
    assert min(nan, key=_checkpoint_rank) == nan[1]


def test_the_trials_csv_has_beta_and_the_best_accuracy():
    row = TrialRecord("t1", {"lr": 1e-3, "steps": 10, "replay_k": 0, "beta": 0.05}, "completed", "ran all its steps",
                      best={"step": 10, "val_loss": 0.4, "val_pref_accuracy": 0.75}).row()
    assert list(row) == TRIAL_COLUMNS and row["beta"] == "0.05" and row["best_val_pref_accuracy"] == "0.75"
    plain = TrialRecord("t2", {"lr": 1e-3, "steps": 10, "replay_k": 0}, "completed", "", best={"step": 10,
                                                                                          "val_loss": 0.4}).row()
    assert plain["beta"] == "" and plain["best_val_pref_accuracy"] == ""
