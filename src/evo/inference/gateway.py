"""What the A/B gateway does with a request, independent of Ray Serve: resolve the model name to
an arm and a sha, record responses and feedback in the A/B round they belong to, report each round's
statistics, guard admin actions."""

from __future__ import annotations

import hmac
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from evo.ab.feedback import LEGACY, DuplicateVote, FeedbackError, FeedbackStore, Round
from evo.ab.leaderboard import bradley_terry
from evo.ab.router import ABRouter
from evo.ab.tally import Tally
from evo.ab.verdict import UNDECIDED, TestPlan, verdict_of
from evo.atomic import atomic_write_json, read_json
from evo.finetune.jobs import JobStore
from evo.lineage.decisions import DecisionError, Decisions
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry, owner_of, visible
from evo.openai_api import APIError, Limits, new_id
from evo.storage import refresh


@dataclass
class GatewaySettings:
    root: str
    candidate_share: float = 0.5
    admin_token: Optional[str] = None  # without one, admin actions are refused
    log: str = "live"  # the feedback log (ab/<log>.jsonl); each (champion, candidate) pair is a round in it
    state_id: str = "default"  # replicas of one app share serving/<state_id>.json (the live split)
    limits: Limits = field(default_factory=Limits)
    plan: TestPlan = field(default_factory=TestPlan)


def _matches(models: dict, name: str, owner: Optional[str]) -> list[str]:
    """The shas of `models` that `name` names (a generation id, else a sha prefix of 8+ characters) and
    `owner` may use: not withdrawn, and `visible` to it."""
    live = {s: m for s, m in models.items() if m["status"] != "withdrawn" and visible(m, owner)}
    return [s for s, m in live.items() if m["gen_id"] == name] or [s for s in live if len(name) >= 8 and s.startswith(name)]


CHECKPOINT = re.compile(r":ckpt-step-\d+$")  # a job's checkpoint, as `fine_tuned_model_checkpoint` names it
CHECKPOINTS_KEPT = ("a job's last jobs.keep_checkpoints checkpoints (3 by default) are models once it succeeds, for as "
                    "long as its model is; a job that searched with Ray Tune keeps none")


@dataclass(frozen=True)
class Target:
    arm: str  # champion, candidate, or "pinned"
    sha: str
    name: str  # what the response's "model" field says


class Gateway:
    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.registry = Registry(settings.root)
        self.feedback = FeedbackStore(settings.root, settings.log)
        self._logs: dict[str, FeedbackStore] = {settings.log: self.feedback}
        self.router = ABRouter(settings.candidate_share)
        self.aliases: dict[str, Optional[str]] = {}
        self.state_path = self.registry.path.parent / "serving" / f"{settings.state_id}.json"
        self._seen: dict[str, tuple] = {}
        self._jobs: tuple[int, dict[str, dict]] = (-1, {})  # the jobs folder's mtime, and what it held then
        refresh(self.registry.path)  # a URI root: this replica's mirror starts from the remote state
        refresh(self.state_path)
        if self._stamp(self.state_path) is None:  # the first replica of this app sets the starting split
            atomic_write_json(self.state_path, {"candidate_share": self.router.candidate_share})
        self.sync_split()
        self.reload()

    @staticmethod
    def _stamp(path: Path) -> Optional[tuple]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def registry_changed(self) -> bool:
        """Whether registry.json changed since it was last applied here (another replica promoted)."""
        refresh(self.registry.path)  # a URI root: fetch it (a no-op for a folder)
        return self._stamp(self.registry.path) != self._seen.get("registry")

    def sync_split(self) -> None:
        """Take the split another replica set (it is kept in the shared state file)."""
        refresh(self.state_path)
        stamp = self._stamp(self.state_path)
        if stamp is not None and stamp != self._seen.get("state"):
            self._seen["state"] = stamp
            self.router.set_share(read_json(self.state_path)["candidate_share"])

    def read_registry(self) -> dict:
        stamp = self._stamp(self.registry.path)
        data = self.registry.load()
        data["stamp"] = stamp
        if not data["aliases"].get("champion"):
            raise APIError(503, f"{self.registry.path}: no champion to serve; run `evo run` or `evo demo` first")
        return data

    def apply(self, data: dict) -> dict:
        """Swap in new aliases in one assignment; requests already resolved keep their model."""
        self.aliases, self.models = dict(data["aliases"]), data["models"]
        self._seen["registry"] = data.get("stamp")
        return self.aliases

    def reload(self) -> dict:
        """Re-read the registry's aliases: how a promotion goes live without a restart."""
        return self.apply(self.read_registry())

    def promote(self, body: object = None) -> dict:
        """Admin: the candidate becomes the champion; {"gen": "gen-N"}: that generation does, a tenant's
        included, which joins the shared line only if the gate passed it against the champion of now
        (see `evo.lineage.decisions`)."""
        gen = body.get("gen") if isinstance(body, dict) else None
        if (body is not None and not isinstance(body, dict)) or (gen is not None and (not isinstance(gen, str) or not gen)):
            raise APIError(400, "promote takes no body or {} (the candidate), or {\"gen\": \"gen-N\"}", "gen")
        return self._decide(lambda d, why, note: d.promote(gen, why, ab_result=note), f"promoted {gen}" if gen else "promoted")

    def reject(self) -> dict:
        """Admin: the candidate is withdrawn and marked rejected; the champion stays."""
        return self._decide(lambda d, why, note: d.reject(None, why, ab_result=note), "rejected")

    def revert(self, body: object) -> dict:
        """Admin: {"to": "gen-N"}: the champion goes back to an earlier generation on its line."""
        to = body.get("to") if isinstance(body, dict) else None
        if not isinstance(to, str) or not to:
            raise APIError(400, "revert needs {\"to\": \"gen-N\"}, an earlier generation on the champion's line "
                                "(to withdraw the candidate, POST /admin/reject)", "to")
        return self._decide(lambda d, why, note: d.revert(to, why), f"reverted to {to}")

    def _decide(self, act, what: str) -> dict:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        why = f"admin: {what} over HTTP"
        try:
            act(Decisions(self.settings.root), why, f"{why} at {stamp}")
        except DecisionError as e:
            raise APIError(409, str(e), kind="conflict") from None
        return self.read_registry()

    def job_models(self) -> dict[str, dict]:
        """sha -> the fine-tuning job that made it (`evo.finetune.jobs`). Read again only when the jobs
        folder has changed (every write of a job file is a rename into it, which moves the folder's
        mtime), so a request that names an `ft:` model, or lists the models, stats one folder instead
        of reading every job file. A folder changed in the last 2 s is read each time: a file system's
        timestamps are coarse (a few ms), and two writes within one tick leave one mtime."""
        store = JobStore(self.settings.root)
        try:
            stamp = store.dir.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._jobs[0] == stamp and time.time_ns() - stamp > 2_000_000_000:
            return self._jobs[1]
        models = {j["evo"]["sha"]: j for j in store.all() if j["evo"].get("sha")}
        self._jobs = (stamp, models)
        return models

    def _entry(self, sha: str) -> Optional[dict]:
        """A model's registry entry: this replica's copy, or the registry itself for one added since."""
        return self.models.get(sha) or self.registry.model(sha)

    def resolve(self, name: str, user: Optional[str], owner: Optional[str] = None) -> Target:
        """The model a request names, as caller `owner` sees the lineage (`evo.lineage.registry.visible`:
        None, admin, sees every model; a tenant's key the shared line's and its own). The aliases (evo,
        champion, candidate) are the shared line's for everyone; a model on another tenant's branch, or
        withdrawn, is not there for it (404), by `ft:` name, generation id or sha alike."""
        if name.startswith("ft:"):
            job, sha = self._fine_tuned(name)
            entry = self._entry(job["evo"]["sha"]) if job else None
            if entry is None or entry["status"] == "withdrawn" or not visible(entry, owner):
                kept = f" ({CHECKPOINTS_KEPT})" if CHECKPOINT.search(name) else ""
                raise APIError(404, f"model '{name}' is not a fine-tuned model of yours here{kept}; GET /v1/models "
                                    "lists them", "model", "not_found_error")
            return Target(next((a for a, s in self.aliases.items() if s == sha), "pinned"), sha, name)
        return self._resolve(name, user, owner)

    def _fine_tuned(self, name: str) -> tuple[Optional[dict], str]:
        """(the job that made `ft:` model `name`, the model's sha): its fine-tuned model, or one of the
        checkpoints it kept (`evo.finetune.run_job.checkpoint_models`), which lives and is seen as long
        as the job's model is; (None, "") for a name no job made."""
        for job in self.job_models().values():
            if job["fine_tuned_model"] == name:
                return job, job["evo"]["sha"]
            if name in (job["evo"].get("checkpoints") or {}):
                return job, job["evo"]["checkpoints"][name]
        return None, ""

    def _resolve(self, name: str, user: Optional[str], owner: Optional[str] = None) -> Target:
        if name == "evo":
            arm = self.router.assign(user) if self.aliases.get("candidate") else "champion"
            return Target(arm, self.aliases[arm], "evo")
        if name in ("champion", "candidate"):
            if not self.aliases.get(name):
                raise APIError(404, f"no model is the {name} now", "model", "not_found_error")
            return Target(name, self.aliases[name], name)
        sha = self._pinned(name, owner)
        arm = next((a for a, s in self.aliases.items() if s == sha), "pinned")
        return Target(arm, sha, name)

    def _pinned(self, name: str, owner: Optional[str] = None) -> str:
        """A model `owner` may see by generation id or sha prefix; a withdrawn one (its job failed or was
        cancelled) is none, and another tenant's is not there (the same 404 as a name never made)."""
        found = _matches(self.models, name, owner)
        if not found and self.registry_changed():  # registered since this replica last followed the root
            found = _matches(self.registry.load()["models"], name, owner)
        if len(found) != 1:
            why = "is ambiguous" if found else "is not a model here"
            raise APIError(404, f"model '{name}' {why}; GET /v1/models lists them", "model", "not_found_error")
        return found[0]

    def model_list(self, owner: Optional[str] = None, names: Optional[dict[str, str]] = None) -> dict:
        """The aliases (the shared line's), and the generations and fine-tuned models `owner` may use
        (`evo.lineage.registry.visible`: None, admin, every one). Each is `owned_by` "evo" (the shared
        line) or its tenant's name (`names`: key id -> the name its key was given; the key id without
        one): a caller sees only the names of the branches it may see, its own (an admin: all)."""
        names = names or {}

        def owned_by(m: dict) -> str:
            return names.get(owner_of(m)) or owner_of(m) or "evo"

        aliases = ["evo", "champion"] + (["candidate"] if self.aliases.get("candidate") else [])
        data = [{"id": n, "object": "model", "created": self._created(self.aliases.get(n if n != "evo" else "champion")),
                 "owned_by": "evo", "sha": self.aliases.get(n)} for n in aliases]
        shown = {s: m for s, m in self.models.items() if m["status"] != "withdrawn" and visible(m, owner)}
        for sha, m in sorted(shown.items(), key=lambda kv: kv[1].get("created", 0)):
            data.append({"id": m["gen_id"], "object": "model", "created": self._created(sha),
                         "owned_by": owned_by(m), "sha": sha, "status": m["status"]})
        for sha, job in self.job_models().items():
            m = shown.get(sha) or self.registry.model(sha)  # a job finished since this replica read the registry
            if m is not None and m["status"] != "withdrawn" and visible(m, owner):
                data.append({"id": job["fine_tuned_model"], "object": "model",
                             "created": int(job.get("finished_at") or self._created(sha)),
                             "owned_by": owned_by(m), "sha": sha, "fine_tuning_job": job["id"]})
                data += [{"id": ckpt, "object": "model", "created": int(job.get("finished_at") or self._created(sha)),
                          "owned_by": owned_by(m), "sha": ckpt_sha, "fine_tuning_job": job["id"],
                          "checkpoint_of": job["fine_tuned_model"]}
                         for ckpt, ckpt_sha in (job["evo"].get("checkpoints") or {}).items()]
        return {"object": "list", "data": data}

    def _created(self, sha: Optional[str]) -> int:
        """When model `sha` was added to the registry (Unix seconds; an alias: its model's)."""
        return int((self.models.get(sha) or {}).get("created") or 0)

    def delete_model(self, model_id: str, owner: Optional[str] = None) -> dict:
        """`DELETE /v1/models/{id}`: a fine-tuned model the caller may see (a tenant: its own; an admin:
        any) is withdrawn: no longer listed or served, its generation's ledger row `withdrawn`. Its files
        stay (a model trained from it still loads). A live model (the champion or the candidate) or one
        on the champion's line is a 409: revert first; a generation not made by a fine-tuning job is a
        400 (`evo revert` decides the shared line)."""
        self.reload()  # the aliases and owners of now, not of this replica's last follow
        found = self.model(model_id, owner)
        if found.get("checkpoint_of"):
            raise APIError(400, f"model '{model_id}' is a checkpoint of {found['checkpoint_of']}, and goes with it: "
                                f"delete {found['checkpoint_of']}", "model")
        entry = self._entry(found.get("sha") or "") or {}
        if owner is not None and owner_of(entry) != owner:  # a tenant sees the shared line's models, deletes its own
            raise APIError(404, f"model '{model_id}' is not a fine-tuned model of yours here; GET /v1/models lists "
                                "yours", "model", "not_found_error")
        if found["sha"] not in self.job_models() or found["id"] in ("evo", "champion", "candidate"):
            raise APIError(400, f"model '{model_id}' was not made by a fine-tuning job: only a fine-tuned model can be "
                                "deleted (the lineage's own generations are decided by evo promote / reject / revert)",
                           "model")
        try:
            Decisions(self.settings.root).withdraw(entry["gen_id"], f"deleted over the API ({model_id})", live_ok=False)
        except DecisionError as e:
            raise APIError(409, str(e), "model", "conflict") from None
        self.reload()
        return {"id": model_id, "object": "model", "deleted": True}

    def model(self, model_id: str, owner: Optional[str] = None, names: Optional[dict[str, str]] = None) -> dict:
        """`GET /v1/models/{id}`: the model as the caller's list shows it; 404 for one it does not show."""
        found = next((m for m in self.model_list(owner, names)["data"] if m["id"] == model_id), None)
        if found is None:
            raise APIError(404, f"model '{model_id}' is not a model here; GET /v1/models lists them", "model",
                           "not_found_error")
        return found

    def current_round(self) -> Round:
        """The round the live aliases make: the champion against the candidate."""
        return Round(self.aliases["champion"], self.aliases.get("candidate"))

    def pair_round(self) -> Round:
        """The round a side-by-side pair is shown in now; 409 without a candidate."""
        if not self.aliases.get("candidate"):
            raise APIError(409, "side by side needs a candidate, and there is none now", kind="conflict")
        return self.current_round()

    def record_response(self, response_id: str, target: Target, user: Optional[str], said: Optional[dict] = None,
                        asker: str = "") -> None:
        """Responses of the A/B arms are logged in the round being served, so thumbs on them count
        for that arm of that round; `said` (the model input and the answer's text) is kept with it,
        so thumbs can become training pairs (`evo feedback export`). `asker`: the tenant key that
        asked ("" for the shared line's callers: an admin key, or a server without keys): a tenant's
        prompts never become the shared line's training pairs unless an admin exports them by name."""
        if target.arm != "pinned":
            self.feedback.append({**(said or {}), "kind": "response", "response_id": response_id, "arm": target.arm,
                                  "sha": target.sha, "user": user or "", "round": self.current_round().id,
                                  "asker": asker}, durable=False)

    def record_thumbs(self, body: object, voter: str = "") -> dict:
        """{"response_id", "value": "up" | "down"}: they go to the round the response was served in.
        `voter`: the key that sends them ("" on a server without keys); one thumbs per key and response
        counts (a second: 409), and only on a response an A/B arm served here (404 otherwise: thumbs
        on nothing would only grow the log)."""
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        fields = ("response_id", "value")
        rid = body.get("response_id")
        if not isinstance(rid, str) or not rid:
            raise APIError(400, "'response_id' must be the id of a response (its 'id')", "response_id")
        if body.get("value") not in ("up", "down"):
            raise APIError(400, f"'value' must be 'up' or 'down', got {body.get('value')!r}", "value")
        where = self.feedback.round_of(rid)
        if where is None or rid not in self.feedback.tally(where)[0].arm_of:  # a pair's id is no response
            raise APIError(404, f"no response {rid!r} of an A/B arm here (a model named by sha or generation is not "
                                "rated)", "response_id", "not_found_error")
        try:
            event = self.feedback.append({**{k: body.get(k) for k in fields if k in body}, "kind": "thumbs",
                                          "round": where, "voter": voter}, once_per_voter=True)
        except DuplicateVote as e:
            raise APIError(409, str(e), "response_id", "conflict") from None
        except FeedbackError as e:
            raise APIError(400, str(e)) from None
        event.pop("voter")
        return {"recorded": event}

    def open_pair(self, key: str, pair_round: Optional[Round] = None) -> tuple[str, dict[str, Target]]:
        """Both arms of the round (`pair_round`, default: the current one) for one prompt (`key`: its
        `prompt_key`), labelled "a" and "b" at random so a rater cannot tell which is which."""
        r = pair_round or self.pair_round()
        shas = {"champion": r.champion, "candidate": r.candidate}
        a = random.choice(["champion", "candidate"])
        b = "candidate" if a == "champion" else "champion"
        pair_id = new_id("pair")
        self.feedback.append({"kind": "pair", "pair_id": pair_id, "a": a, "prompt_key": key, "shas": shas,
                              "round": r.id})
        return pair_id, {"a": Target(a, shas[a], a), "b": Target(b, shas[b], b)}

    def record_answers(self, pair_id: str, pair_round: Round, said: dict, a: str, b: str, asker: str = "") -> None:
        """What side-by-side pair `pair_id` asked (`said["input"]`) and its two answers, by label:
        what a vote on it prefers (`evo feedback export`). Not fsynced, as responses are not: a crash
        can cost a pair its training use, never a vote. `asker`: as in `record_response`."""
        self.feedback.append({"kind": "answers", "pair_id": pair_id, "input": said["input"], "a": a, "b": b,
                              "round": pair_round.id, "asker": asker}, durable=False)

    def _shown_now(self, body: object, what: str) -> dict:
        """The pair a vote or a skip names, if it was shown in the current round: 404 for a pair never
        shown, 409 for one of a round that has ended (its votes are that round's, never this one's)."""
        pair_id = body.get("pair_id") if isinstance(body, dict) else None
        shown = self.feedback.pair(pair_id) if isinstance(pair_id, str) else None
        if shown is None:
            raise APIError(404, f"no side-by-side pair {pair_id!r}", "pair_id", "not_found_error")
        now = self.current_round().id
        if (shown.get("round") or LEGACY) != now:
            raise APIError(409, f"pair {pair_id} was shown in round {shown.get('round') or LEGACY}, which has ended "
                                f"(the round now is {now}: the champion or the candidate changed); its {what} is not "
                                "taken", "pair_id", "conflict")
        return shown

    def record_preference(self, body: object) -> dict:
        """{"pair_id", "preferred": "a" | "b" | "tie" | "both_bad"} -> a pairwise vote for the arm
        behind the label ("both_bad" is a tie: neither arm is preferred). The reply does not say which
        arm was which while the round is open (a rater who knew could tell the arms apart in the next
        pairs); once the round is decided it does, as the console and the leaderboard do."""
        if not isinstance(body, dict) or body.get("preferred") not in ("a", "b", "tie", "both_bad"):
            raise APIError(400, "'preferred' must be 'a', 'b', 'tie' or 'both_bad'", "preferred")
        shown = self._shown_now(body, "vote")
        other = "candidate" if shown["a"] == "champion" else "champion"
        winner = {"a": shown["a"], "b": other, "tie": "tie", "both_bad": "tie"}[body["preferred"]]
        vote = {"kind": "pairwise", "pair_id": body["pair_id"], "winner": winner, "round": shown["round"]}
        if body["preferred"] == "both_bad":
            vote["both_bad"] = True
        if shown.get("prompt_key"):
            vote["prompt_key"] = shown["prompt_key"]
        try:
            event = self.feedback.append(vote, once_per_pair=True)
        except DuplicateVote as e:
            raise APIError(409, str(e), "pair_id", "conflict") from None
        out = {"recorded": {"pair_id": event["pair_id"], "preferred": body["preferred"], "round": event["round"],
                            "time": event["time"]}}
        if self._decided(shown["round"]):
            shas = shown.get("shas") or {}
            out["revealed"] = {"a": {"arm": shown["a"], "sha": shas.get(shown["a"])},
                               "b": {"arm": other, "sha": shas.get(other)}}
        else:
            out["revealed"] = None
            out["reveal"] = "which arm answered a and b is shown on the console and the leaderboard once the round is decided"
        return out

    def record_skip(self, body: object) -> dict:
        """{"pair_id"}: a pair shown and passed over without a vote (the rating page sends it when the
        rater asks for the next prompt). A skip on a pair with a vote is refused; a second skip is one."""
        shown = self._shown_now(body, "skip")
        tally = self.feedback.tally(shown["round"])[0]
        if shown["pair_id"] in tally.voted:
            raise APIError(409, f"pair {shown['pair_id']} already has a vote; it cannot be skipped", "pair_id", "conflict")
        if shown["pair_id"] not in tally.skipped:
            self.feedback.append({"kind": "skip", "pair_id": shown["pair_id"], "round": shown["round"]})
        return {"skipped": {"pair_id": shown["pair_id"], "round": shown["round"]}}

    def _decided(self, round_id: str, tally: Optional[Tally] = None) -> bool:
        """A round is decided once its verdict is reached, or once it has ended (the champion or the
        candidate changed); until then it is open."""
        if round_id != self.current_round().id:
            return True
        tally = tally if tally is not None else self.feedback.tally(round_id)[0]
        return verdict_of(tally.cum_wins, self.settings.plan).verdict != UNDECIDED

    def lineage(self, owner: Optional[str] = None) -> dict:
        """The lineage tree for the console: every generation with its parent, decision and evals,
        and the aliases. A generation on another tenant's branch is left out for `owner`."""

        keep = ("GEN_ID", "parent_sha", "child_sha", "decision", "reason", "eval_recall", "eval_generalization",
                "eval_style_drift", "eval_general", "eval_kl_base", "eval_fake_words", "ab_result", "steps", "lr")
        jobs = self.job_models()
        rows = []
        for row in Ledger(self.settings.root).rows():
            job = jobs.get(row["child_sha"])
            if not visible(self._entry(row["child_sha"]) or {"owner": row["owner"]}, owner):
                continue
            rows.append({**{k: row.get(k, "") for k in keep},
                         "fine_tuned_model": job["fine_tuned_model"] if job else None})
        return {"aliases": self.aliases, "generations": rows}

    def leaderboard(self) -> dict:
        """Every generation that has been rated side by side, ranked by a Bradley-Terry fit of the
        counted decisive votes of every decided round of this lineage (every log), with 95%
        intervals. The open round's votes wait until it is decided: a rater who saw the board move
        after a vote would know which arm had been preferred."""

        wins: dict[tuple[str, str], int] = {}
        counted, waiting = [], 0
        for path in sorted((self.registry.path.parent / "ab").glob("*.jsonl")):
            store = self._logs.setdefault(path.stem, FeedbackStore(self.settings.root, path.stem))
            for rid, tally in store.rounds().items():
                if not self._decided(rid, tally):
                    waiting += sum(tally.sha_wins.values())
                    continue
                counted.append(f"{path.stem}/{rid}")
                for pair, n in tally.sha_wins.items():
                    wins[pair] = wins.get(pair, 0) + n
        rows = bradley_terry(wins)
        for r in rows:
            m = self.models.get(r["sha"]) or {}
            r["gen_id"] = m.get("gen_id")
        return {"object": "list", "data": rows, "votes": sum(wins.values()), "rounds": counted,
                "open_round_votes": waiting,
                "method": "Bradley-Terry (MM fit, strengths on the log scale relative to the mean; 95% intervals "
                          "from the observed information), counted decisive side-by-side votes of every decided "
                          "round (the open round's once it is decided)"}

    def _sha(self, prefix: str) -> Optional[str]:
        hits = [s for s in self.models if s.startswith(prefix)]
        return hits[0] if len(hits) == 1 else None

    def round_info(self, round_id: str, tally: Tally, verdict: dict) -> dict:
        """What a round is about: its two shas and generations, whether it is the current one and
        whether it is decided."""
        now = self.current_round()
        if round_id == now.id:
            shas = {"champion": now.champion, "candidate": now.candidate}
        elif round_id == LEGACY:  # before rounds were keyed: the pairs it shows say what it compared
            pairs = sorted(tally.model_pairs)
            shas = dict(zip(("champion", "candidate"), pairs[0])) if len(pairs) == 1 else {}
        else:
            head, _, tail = round_id.partition("-")
            shas = {"champion": tally.shas.get("champion") or self._sha(head),
                    "candidate": tally.shas.get("candidate") or (self._sha(tail) if tail != "none" else None)}
        info = {"id": round_id, "log": self.settings.log}
        for arm in ("champion", "candidate"):
            sha = shas.get(arm)
            info[arm] = sha
            info[f"{arm}_gen"] = (self.models.get(sha) or {}).get("gen_id") if sha else None
        if round_id == LEGACY:
            info["model_pairs"] = [list(p) for p in sorted(tally.model_pairs)]
        info.update(current=round_id == now.id, decided=round_id != now.id or verdict["verdict"] != UNDECIDED,
                    verdict=verdict["verdict"], first_event=tally.first_time, last_event=tally.last_time)
        return info

    def stats(self, round_id: Optional[str] = None, per_arm: bool = True) -> dict:
        """A round's statistics (default: the current round), naming the two shas it compares.
        `per_arm=False`: while the round is open, only how many prompts it has rated, skipped and
        counted, without which arm won, the thumbs per arm, or the verdict's reason."""
        rounds = self.feedback.rounds()
        rid = round_id or self.current_round().id
        if rid not in rounds and rid != self.current_round().id:
            known = ", ".join(rounds) or "none yet"
            raise APIError(404, f"no A/B round {rid!r} in {self.feedback.path.name} (rounds: {known}); GET /ab/rounds "
                                "lists them", "round", "not_found_error")
        tally, torn = self.feedback.tally(rid)
        out = tally.summary(self.settings.plan)
        out["round"] = self.round_info(rid, tally, out["verdict"])
        out["candidate_share"] = self.router.candidate_share
        out["aliases"] = self.aliases
        out["torn_lines"] = torn
        if not per_arm and not out["round"]["decided"]:
            out["arms"] = {arm: {"requests": a["requests"]} for arm, a in out["arms"].items()}
            out["pairwise"] = {k: out["pairwise"][k] for k in ("distinct_prompts", "votes_not_counted")}
            out["verdict"] = {"verdict": out["verdict"]["verdict"], "looks": out["verdict"]["looks"],
                              "reason": "which arm is ahead is shown once the round is decided (or to an admin)"}
            out["per_arm_hidden"] = True
        return out

    def rounds(self) -> dict:
        """Every round of this server's log, oldest first: what it compared, its verdict, and once it
        is decided its votes per arm."""
        data = []
        for rid, tally in self.feedback.rounds().items():
            s = tally.summary(self.settings.plan)
            info = self.round_info(rid, tally, s["verdict"])
            info["distinct_prompts"], info["skipped"] = s["pairwise"]["distinct_prompts"], s["skipped"]["pairs"]
            if info["decided"]:
                info["pairwise"] = s["pairwise"]
            data.append(info)
        data.sort(key=lambda r: r["first_event"] or 0)
        return {"object": "list", "data": data}

    def check_admin(self, authorization: Optional[str]) -> None:
        token = self.settings.admin_token
        if not token:
            raise APIError(403, "admin actions are disabled: no admin token is configured (EVO_ADMIN_TOKEN)",
                           kind="permission_error")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise APIError(401, "admin actions need 'Authorization: Bearer <token>'", kind="authentication_error")

    def set_split(self, body: object) -> dict:
        share = body.get("candidate_share") if isinstance(body, dict) else None
        try:
            self.router.set_share(share)
        except ValueError as e:
            raise APIError(400, str(e), "candidate_share") from None
        atomic_write_json(self.state_path, {"candidate_share": self.router.candidate_share})
        self._seen["state"] = self._stamp(self.state_path)
        return {"candidate_share": self.router.candidate_share}
