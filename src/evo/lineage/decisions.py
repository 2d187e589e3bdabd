"""Every decision about a lineage's models, and the only code that carries one out.

What a decision can be (each a method of `Decisions`):

- `propose(gid, sha)`: a freshly trained (or sweep-chosen) child becomes the candidate. Undecided.
- `record(row, child, verdict)`: the gate's verdict on an evaluated generation, its ledger row.
  `promoted`: the child becomes champion. `rejected`: it is set aside, the champion stays.
  `base`: generation 0 becomes champion.
- `stop(row, child, restore)`: the stop rule fired on this generation. Its child is set aside
  (status `stopped`), and the champion goes back to `restore`, the last good generation on its line
  (the driver names it: see `last_good`); every generation reverted away is marked so.
- `promote(gid)`: a generation's model becomes champion (an operator, or an A/B round that found
  the candidate no worse).
- `reject(gid)`: a generation's model is set aside; the champion stays. A champion cannot be
  rejected: revert it.
- `revert(to)`: the champion goes back to `to`, an earlier generation on its line. The generations
  after it on that line are marked `reverted`, and their ledger rows name the one restored.
- `stage_ab(gid)`: an A/B round: the generation's parent serves as champion, its child as candidate.
- `withdraw(gid, reason)`: a generation whose run failed or was cancelled is set aside (forgotten
  before its verdict, status `withdrawn` after it), and the aliases go back to what they were before it.

A tenant's generation (its registry owner is an API key id: `evo.lineage.registry`) is on that
tenant's branch: its decisions never move a shared alias. Proposed, it is not the candidate;
recorded `promoted` (it passed the gate), it is the tenant's to use but not the champion; stopped, the
champion stays. It joins the shared line only by `promote`, an admin's decision, and only if the gate
passed it against the champion of the moment (the compare-and-swap below, on the champion its row
names); then it and the tenant's models it grew from become the shared line's (owner "").

A promotion and a stop are compare-and-swaps: the row names the champion the child was compared
with (`compared_with`, by default its parent), and the decision applies only if that model is still
the champion when the decision is written, under the root's lock. If the champion moved meanwhile
(another generation or job promoted, an operator's revert), nothing is written and `ChampionMoved`
names the champion now: the caller scores the child against it and decides again, or records it
as not promoted. A child never replaces a champion it was not compared with.

Each one is planned into a list of effects (statuses, ledger rows, alias moves, in that order, so
that an alias only ever points at a model whose decision is on record), and the plan is written to
`decisions/<seq>-<op>-<gen>.json` before any effect. Then the effects are applied, then the file is
marked applied. Every effect is idempotent, so a process killed half way is finished by `reconcile`
(run by the driver when it starts, and before every new decision), and applying a decision twice
changes nothing. Decisions are serialized by one lock per root, so one planned on stale state
cannot undo a later one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from evo.atomic import atomic_write_json, locked, read_json
from evo.errors import EvoError
from evo.lineage.ledger import Ledger
from evo.lineage.registry import SHARED, Registry, owner_of
from evo.storage import open_root
from evo.tracking.live import after_decision

VERDICTS = ("promoted", "rejected", "base")


class DecisionError(EvoError):
    """A decision that cannot be made (no such generation, nothing to promote); the message says why."""


class ChampionMoved(DecisionError):
    """A promotion or a stop planned against one champion, refused because the champion is now
    another: nothing was written. `champion` and `champion_gen` name the champion now."""

    def __init__(self, gid: str, compared: str, compared_gen: str, champion: str, champion_gen: str):
        self.champion, self.champion_gen = champion, champion_gen
        super().__init__(f"{gid} was compared with {compared_gen} ({compared[:12]}), but the champion is now "
                         f"{champion_gen} ({champion[:12]}): it must be scored against {champion_gen} before "
                         f"it may replace it")


@dataclass(frozen=True)
class Decision:
    seq: int
    op: str
    gen_id: str
    reason: str
    effects: list
    applied: bool
    path: Path


class Decisions:
    def __init__(self, root: str | Path, registry: Optional[Registry] = None, ledger: Optional[Ledger] = None):
        self.registry = registry or Registry(root)
        self.ledger = ledger or Ledger(root)
        self.root = self.registry.path.parent
        self.folder = self.root / "decisions"

    # ------------------------------------------------------------ the journal

    def log(self) -> list[Decision]:
        """Every decision made on this root, oldest first."""
        out = []
        for path in sorted(self.folder.glob("*.json")):
            d = read_json(path)
            out.append(Decision(d["seq"], d["op"], d["gen_id"], d["reason"], d["effects"], bool(d.get("applied")), path))
        return out

    def pending(self) -> list[Decision]:
        return [d for d in self.log() if not d.applied]

    def reconcile(self, progress: Callable[[str, str], None] = lambda gid, msg: None) -> list[Decision]:
        """Finish every decision a killed process left half applied, in the order they were made."""
        with locked(self.folder / "journal"):
            done = self._apply_pending(progress)
            self._import_legacy(progress)
            self._settle_candidate(progress)
        return done

    def _settle_candidate(self, progress) -> None:
        """A candidate that already has a ledger row, staged by an A/B round (`stage_ab`) that never
        finished: the gate's verdict on it stands (a promoted child is champion again), and it stops
        being the candidate. Only that: the last decision that moved an alias is this round's stage,
        and both aliases still point where it put them. A candidate set any other way (an operator's
        move, to rate two models) is left where it is, and so is the champion: settling never makes
        a model champion that no decision compared with the champion it replaces."""
        cand = self.registry.alias("candidate")
        m = self.registry.model(cand) if cand else None
        row = self.ledger.get(m["gen_id"]) if m else None
        if row is None or row["decision"] == "pending":  # pending: an A/B round ended undecided (`hold`)
            return
        moved = [d for d in self.log() if any(e[0] == "move" for e in d.effects)]
        staged = bool(moved) and moved[-1].op == "stage_ab" and moved[-1].gen_id == row["GEN_ID"]
        if not (staged and cand == row["child_sha"] and self.registry.alias("champion") == row["parent_sha"]):
            return
        why = f"{row['GEN_ID']}: an A/B round that did not finish; the recorded verdict ({row['decision']}) stands"
        progress(row["GEN_ID"], why)
        effects = [["move", "candidate", None, why]]
        if row["decision"] == "promoted":
            effects.insert(0, ["move", "champion", cand, why])
        self._commit("settle", row["GEN_ID"], why, effects)

    def _apply_pending(self, progress) -> list[Decision]:
        done = []
        for d in self.pending():
            progress(d.gen_id, f"finishing a decision made before an interruption: {d.op} ({d.path.name})")
            self._apply(d)
            done.append(d)
        return done

    def _import_legacy(self, progress) -> None:
        """Roots written before this module kept one `runs/<gen>/decision.json` per generation; one
        without its ledger row is replayed as a `record`."""
        for path in sorted((self.root / "runs").glob("*/decision.json")):
            gid = path.parent.name
            if self.ledger.get(gid) is None:
                d = read_json(path)
                progress(gid, "finishing a decision made before an interruption (older layout)")
                verdict = "base" if d["status"] == "base" else d["row"]["decision"]
                self._commit("record", gid, d["row"].get("reason", ""),
                             self._plan_record(d["row"], d["child"], verdict, swap=False))

    def _commit(self, op: str, gid: str, reason: str, effects: list) -> Decision:
        """Write the plan, apply it, mark it applied. Called with the journal lock held."""
        seq = max((d.seq for d in self.log()), default=0) + 1
        path = self.folder / f"{seq:06d}-{op}-{gid}.json"
        body = {"seq": seq, "op": op, "gen_id": gid, "reason": reason, "effects": effects,
                "time": time.time(), "applied": False}
        atomic_write_json(path, body)
        d = Decision(seq, op, gid, reason, effects, False, path)
        self._apply(d)
        return d

    def _apply(self, d: Decision) -> None:
        for kind, *args in d.effects:
            EFFECTS[kind](self, *args)
        body = read_json(d.path)
        if not body.get("applied"):
            atomic_write_json(d.path, {**body, "applied": True, "applied_time": time.time()})
        after_decision(self, d.effects)  # the MLflow view follows evo's registry (evo.tracking; no-op when off)

    def _decide(self, op: str, gid: str, reason: str, plan: Callable[[], list]) -> Decision:
        with locked(self.folder / "journal"):
            self._apply_pending(lambda g, m: None)
            return self._commit(op, gid, reason, plan())

    # ------------------------------------------------------------ effects (each idempotent)

    def _set_status(self, sha: str, status: str) -> None:
        self.registry.set_status(sha, status)

    def _move(self, alias: str, sha: Optional[str], reason: str) -> None:
        self.registry.move(alias, sha, reason=reason)

    def _append_row(self, row: dict) -> None:
        self.ledger.append(row)

    def _update_row(self, gid: str, fields: dict) -> None:
        self.ledger.update(gid, **fields)

    # ------------------------------------------------------------ what the lineage looks like

    def _gen_of(self, sha: str) -> str:
        m = self.registry.model(sha)
        if m is None:
            raise DecisionError(f"{self.registry.path}: model {sha[:12]} is not registered")
        return m["gen_id"]

    def _sha_of(self, gid: str) -> str:
        sha = self.registry.by_gen(gid)
        if sha is None:
            raise DecisionError(f"{self.registry.path}: no model of generation {gid!r}")
        return sha

    def _check_champion(self, gid: str, compared: str) -> None:
        """The compare of the compare-and-swap: called while planning, under the journal lock."""
        champion = self.registry.alias("champion")
        if champion != compared:
            raise ChampionMoved(gid, compared or "", self._gen_of(compared) if compared else "none",
                                champion or "", self._gen_of(champion) if champion else "none")

    def line(self, sha: Optional[str] = None) -> list[str]:
        """The models from `sha` (default: the champion) back to the base, newest first."""
        out, seen = [], set()
        sha = sha or self.registry.alias("champion")
        while sha and sha not in seen:
            seen.add(sha)
            out.append(sha)
            m = self.registry.model(sha)
            sha = m["parent_sha"] if m else None
        return out

    def _revert_effects(self, to_sha: str, restored: str, reason: str) -> Iterator[list]:
        """Statuses and rows of every generation on the champion's line after `to_sha`."""
        for sha in self.line():
            if sha == to_sha:
                return
            gid = self._gen_of(sha)
            yield ["set_status", sha, "reverted"]
            if self.ledger.get(gid) is not None:
                yield ["update_row", gid, {"decision": "reverted", "reason": reason, "restored": restored}]
        raise DecisionError(f"{self._gen_of(to_sha)} is not on the champion's line "
                            f"({' <- '.join(self._gen_of(s) for s in self.line())})")

    # ------------------------------------------------------------ the operations

    def propose(self, gid: str, sha: str, reason: str) -> Decision:
        """A generation's child, trained and registered, is the candidate until it is decided."""
        def plan():
            self._gen_of(sha)
            if self._owner(sha) != SHARED:  # a tenant's child: undecided on its branch, never the shared candidate
                return [["set_status", sha, "candidate"]]
            return [["move", "candidate", sha, f"{gid}: {reason}"]]
        return self._decide("propose", gid, reason, plan)

    def record(self, row: dict[str, Any], child: str, verdict: str) -> Decision:
        """The gate's verdict on generation row["GEN_ID"]: `promoted`, `rejected`, or `base`.
        `promoted` applies only while row["compared_with"] (default: its parent) is the champion;
        else `ChampionMoved`, and nothing is written."""
        if verdict not in VERDICTS:
            raise DecisionError(f"a recorded verdict is one of {VERDICTS}, not {verdict!r}")
        gid, row = row["GEN_ID"], _with_compared(row)
        return self._decide("record", gid, row.get("reason", ""), lambda: self._plan_record(row, child, verdict))

    def _plan_record(self, row: dict, child: str, verdict: str, swap: bool = True) -> list:
        """`swap` False: a decision of the older layout, planned and checked before this module."""
        gid, owner = row["GEN_ID"], self._owner(child)
        row = {**row, "owner": owner}
        if owner != SHARED:  # a tenant's branch: the verdict is the tenant's to use; no shared alias moves
            return [["set_status", child, verdict], ["append_row", row]]
        if verdict == "promoted" and swap:
            self._check_champion(gid, row["compared_with"])
        effects = [["set_status", child, verdict], ["append_row", row]]
        if verdict in ("promoted", "base"):
            over = f" over {self._gen_of(row['compared_with'])}" if row.get("compared_with") else ""
            effects.append(["move", "champion", child, f"{gid}: {row['decision']}{over}"])
        if self.registry.alias("candidate") == child or verdict == "base":
            effects.append(["move", "candidate", None, f"{gid} decided"])
        return effects

    def stop(self, row: dict[str, Any], child: str, restore: str) -> Decision:
        """The stop rule fired on generation row["GEN_ID"]: its child is set aside and the champion
        goes back to generation `restore` (an ancestor of the champion, or the champion itself).
        Like a promotion, it applies only while row["compared_with"] is the champion."""
        gid, row = row["GEN_ID"], _with_compared(row)

        def plan():
            owner = self._owner(child)
            if owner != SHARED:  # a tenant's branch: the child is set aside, the shared champion stays
                return [["set_status", child, "stopped"], ["append_row", {**row, "decision": "stopped", "owner": owner,
                        "reason": f"{row.get('reason', '')} (on {owner}'s branch: the shared champion stays)"}]]
            self._check_champion(gid, row["compared_with"])
            to_sha = self._sha_of(restore)
            why = f"{gid}: the stop rule fired; {restore} restored"
            effects = [["set_status", child, "stopped"], *self._revert_effects(to_sha, restore, why),
                       ["append_row", {**row, "decision": "stopped", "restored": restore}],
                       ["move", "champion", to_sha, why]]
            if self.registry.alias("candidate") == child:
                effects.append(["move", "candidate", None, f"{gid} stopped"])
            return effects
        return self._decide("stop", gid, row.get("reason", ""), plan)

    def promote(self, gid: Optional[str] = None, reason: str = "", ab_result: Optional[str] = None,
                compared_with: Optional[str] = None) -> Decision:
        """Generation `gid` (default: the candidate's) becomes champion. `compared_with`: the champion
        it was compared with (an A/B round's staged parent); given, the promotion applies only while
        that model is still the champion (`ChampionMoved` otherwise). An operator's promote names none."""
        def plan():
            sha, g = self._target(gid, "promote")
            if compared_with is not None:
                self._check_champion(g, compared_with)
            if sha == self.registry.alias("champion"):
                raise DecisionError(f"{g} is already the champion")
            return [*self._adopt(sha, g), ["set_status", sha, "promoted"],
                    *self._row_effects(g, "promoted", reason, ab_result),
                    ["move", "champion", sha, f"{g}: promoted ({reason})"],
                    *self._clear_candidate(sha, f"{g} promoted")]
        return self._decide("promote", gid or "candidate", reason, plan)

    def _adopt(self, sha: str, gid: str) -> list:
        """A tenant's model promoted onto the shared line: only one the gate passed (its row `promoted`)
        against the model that is the champion now (its row's `compared_with`; `ChampionMoved`
        otherwise). It and the tenant's models it grew from become the shared line's. Nothing for a
        shared model."""
        owner = self._owner(sha)
        if owner == SHARED:
            return []
        row = self.ledger.get(gid)
        if row is None or row["decision"] != "promoted":
            got = row["decision"] if row else "no verdict"
            raise DecisionError(f"{gid} is {owner}'s and the gate's verdict on it is {got}: a tenant's model joins the "
                                "shared line only once the gate passed it against the champion")
        self._check_champion(gid, row["compared_with"] or row["parent_sha"])
        effects = []
        for s in self.line(sha):
            if self._owner(s) != SHARED:
                g = self._gen_of(s)
                effects.append(["set_owner", s, SHARED])
                if self.ledger.get(g) is not None:
                    effects.append(["update_row", g, {"owner": SHARED}])
        return effects

    def reject(self, gid: Optional[str] = None, reason: str = "", ab_result: Optional[str] = None) -> Decision:
        """Generation `gid` (default: the candidate's) is set aside; the champion stays."""
        def plan():
            sha, g = self._target(gid, "reject")
            if sha == self.registry.alias("champion"):
                raise DecisionError(f"{g} is the champion: revert to an earlier generation instead of rejecting it")
            return [["set_status", sha, "rejected"], *self._row_effects(g, "rejected", reason, ab_result),
                    *self._clear_candidate(sha, f"{g} rejected")]
        return self._decide("reject", gid or "candidate", reason, plan)

    def revert(self, to: str, reason: str = "") -> Decision:
        """The champion goes back to generation `to`, an earlier generation on its line."""
        def plan():
            to_sha = self._sha_of(to)
            if to_sha == self.registry.alias("champion"):
                raise DecisionError(f"{to} is already the champion")
            why = f"reverted to {to}" + (f": {reason}" if reason else "")
            effects = [*self._revert_effects(to_sha, to, why), ["move", "champion", to_sha, why]]
            cand = self.registry.alias("candidate")
            if cand and to_sha not in self.line(cand)[1:]:  # a candidate not trained on the restored model
                effects.append(["move", "candidate", None, why])
            return effects
        return self._decide("revert", to, reason, plan)

    def withdraw(self, gid: str, reason: str, live_ok: bool = True) -> Optional[Decision]:
        """A generation whose run failed or was cancelled (a fine-tuning job) is set aside, and the
        aliases go back to what they were before it. Before its verdict it leaves the registry and the
        ledger never gets its row; after it, its status and its row's decision are `withdrawn` (the
        row's reason keeps the gate's). A champion it became goes back to the one it replaced, a
        candidate it became to the one before it (if that one is still undecided). Nothing to do (None)
        when the run registered nothing or it is withdrawn already; refused once a later generation
        was promoted on top of it (the champion's line runs through it: revert first). `live_ok` False
        (a model deleted by its owner): refused while it is the champion or the candidate, decided under
        the journal's lock with the aliases of that moment."""
        def plan():
            sha = self.registry.by_gen(gid)
            if sha is None:  # withdrawn by another process just now
                return []
            live = [a for a in ("champion", "candidate") if self.registry.alias(a) == sha]
            if live and not live_ok:
                raise DecisionError(f"{gid} is the {live[0]} now: revert or reject it first")
            why = f"{gid}: {reason}"
            effects = self._restore_aliases(gid, sha, why)
            row = self.ledger.get(gid)
            if row is None:
                return effects + [["forget", sha, why]]
            fields = {"decision": "withdrawn", "reason": f"withdrawn: {reason} (the gate had it {row['decision']}: "
                                                          f"{row['reason']})"}
            return effects + [["set_status", sha, "withdrawn"], ["update_row", gid, fields]]
        sha = self.registry.by_gen(gid)
        if sha is None or self.registry.model(sha)["status"] == "withdrawn":
            return None
        return self._decide("withdraw", gid, reason, plan)

    def _restore_aliases(self, gid: str, sha: str, why: str) -> list:
        """The alias moves that take `sha` out of service: each alias back to the model it pointed at
        before `sha` (the registry's history); the champion, failing that, to the one `sha` was compared with."""
        champion, effects = self.registry.alias("champion"), []
        if champion == sha:
            row = self.ledger.get(gid) or {}
            before = self._before("champion", sha) or row.get("compared_with") or row.get("parent_sha")
            if not before or self.registry.model(before) is None:
                raise DecisionError(f"{gid} is the champion and the registry does not say which model it replaced")
            effects.append(["move", "champion", before, why])
        elif sha in self.line():
            raise DecisionError(f"{gid} is on the champion's line ({self._gen_of(champion)} was trained from it): "
                                f"revert to an earlier generation before withdrawing it")
        moves = [h for h in self.registry.load()["history"] if h["alias"] == "candidate"]
        now = self.registry.alias("candidate")
        # the candidate is `sha`, or nothing since `sha`'s verdict cleared it: the one before `sha` comes back
        if now == sha or (now is None and moves and moves[-1]["from"] == sha):
            before = self._before("candidate", sha)
            undecided = before and (self.registry.model(before) or {}).get("status") == "candidate"
            if now == sha or undecided:
                effects.append(["move", "candidate", before if undecided else None, why])
        return effects

    def _before(self, alias: str, sha: str) -> Optional[str]:
        """The model `alias` pointed at before it last moved to `sha`, if that one is still registered."""
        data = self.registry.load()
        prev = next((h["from"] for h in reversed(data["history"]) if h["alias"] == alias and h["to"] == sha), None)
        return prev if prev in data["models"] else None

    def _forget(self, sha: str, reason: str) -> None:
        self.registry.forget(sha, reason)

    def _set_owner(self, sha: str, owner: str) -> None:
        self.registry.set_owner(sha, owner)

    def _owner(self, sha: str) -> str:
        m = self.registry.model(sha)
        return owner_of(m) if m else SHARED

    def stage_ab(self, gid: str) -> tuple[str, str]:
        """An A/B round of a promoted generation: its parent serves as champion, its child as candidate."""
        row = self.ledger.get(gid)
        if row is None or row["decision"] not in ("promoted", "pending") or not row["parent_sha"]:
            raise DecisionError(f"{gid}: an A/B round needs a promoted (or pending) generation with a parent")
        if row["owner"] or self._owner(row["child_sha"]) != SHARED:
            raise DecisionError(f"{gid} is on {row['owner'] or 'a tenant'}'s branch, never shown to everyone: promote it "
                                "onto the shared line first")
        why = f"A/B round of {gid}"
        self._decide("stage_ab", gid, why, lambda: [
            ["move", "champion", row["parent_sha"], f"{why}: the parent serves as champion"],
            ["move", "candidate", row["child_sha"], f"{why}: the child serves as candidate"]])
        return row["parent_sha"], row["child_sha"]

    def hold(self, gid: str, reason: str, ab_result: Optional[str] = None) -> Decision:
        """An A/B round of generation `gid` ended undecided: its parent stays champion, its child stays
        the candidate (status `candidate`, ledger decision `pending`) until a later round or an
        operator decides; `reconcile` leaves a pending candidate where it is."""
        def plan():
            sha = self._sha_of(gid)
            if self.registry.alias("candidate") != sha:
                raise DecisionError(f"{gid} is not the candidate: only a staged A/B round's candidate can be held")
            return [["set_status", sha, "candidate"], *self._row_effects(gid, "pending", reason, ab_result)]
        return self._decide("hold", gid, reason, plan)

    def _target(self, gid: Optional[str], verb: str) -> tuple[str, str]:
        if gid is None:
            sha = self.registry.alias("candidate")
            if not sha:
                raise DecisionError(f"there is no candidate to {verb}")
            return sha, self._gen_of(sha)
        return self._sha_of(gid), gid

    def _row_effects(self, gid: str, decision: str, reason: str, ab_result: Optional[str]) -> list:
        row = self.ledger.get(gid)
        if row is None:
            return []
        fields = {"ab_result": ab_result} if ab_result else {}
        if row["decision"] != decision:
            fields.update(decision=decision, reason=reason, restored="")
        return [["update_row", gid, fields]] if fields else []

    def _clear_candidate(self, sha: str, why: str) -> list:
        return [["move", "candidate", None, why]] if self.registry.alias("candidate") == sha else []


EFFECTS = {"set_status": Decisions._set_status, "move": Decisions._move, "forget": Decisions._forget,
           "append_row": Decisions._append_row, "update_row": Decisions._update_row, "set_owner": Decisions._set_owner}


def _with_compared(row: dict[str, Any]) -> dict[str, Any]:
    """A row names the champion its child was compared with; a caller that names none compared it with its parent."""
    return row if row.get("compared_with") else {**row, "compared_with": row.get("parent_sha") or ""}


def last_good(line: list[tuple[str, bool]]) -> str:
    """The newest generation of a line (newest first: (gen_id, stalled while drifting)) that was not
    stalled while drifting; the base if every later one was."""
    for gid, bad in line:
        if not bad:
            return gid
    return line[-1][0]


# `evo promote`, `evo reject`, `evo revert`: one decision by hand, printed as recorded.

def _by_hand(reason: str | None) -> str:
    return f"by hand: {reason}" if reason else "by hand (evo CLI)"


def _print_decision(decisions: Decisions, d: Decision) -> int:
    print(f"{d.op} {d.gen_id}: recorded in {d.path}")
    print(f"  champion:  {decisions.registry.alias('champion')}")
    print(f"  candidate: {decisions.registry.alias('candidate') or '-'}")
    return 0


def cmd_promote(root: str, gen: str | None, reason: str | None) -> int:
    decisions = Decisions(open_root(root))
    return _print_decision(decisions, decisions.promote(gen, _by_hand(reason)))


def cmd_reject(root: str, gen: str | None, reason: str | None) -> int:
    decisions = Decisions(open_root(root))
    return _print_decision(decisions, decisions.reject(gen, _by_hand(reason)))


def cmd_revert(root: str, to: str, reason: str | None) -> int:
    decisions = Decisions(open_root(root))
    return _print_decision(decisions, decisions.revert(to, _by_hand(reason)))
