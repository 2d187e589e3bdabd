"""The MLflow view of a lineage root, made with MLflow's own client (`MlflowClient`).

Every function here makes one part of the view match the root's files, and changes nothing that
already matches: a run is found by its tags before one is made, a param, metric step, artifact,
logged model or model version is sent only when MLflow lacks it, an alias is set only where it
points elsewhere. So the driver's calls during a generation, the decisions module's alias moves and
`evo tracking sync` are one code path, and running any of them twice logs nothing twice.

An unreachable server never stops a generation: `View.guard` turns the first failure into one
warning and a `pending.json` mark, and the view sends nothing more until the next generation of
this process starts (`live.start` tries once again); the files it would have sent are the root's
own, so the next sync sends them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from evo.atomic import read_json
from evo.errors import EvoError
from evo.storage import location, refresh
from evo.tracking import files

GEN_KIND, TRIAL_KIND = "generation", "trial"
MODEL_TYPE = "evo-lora-adapter"
MAX_TAG = 5000  # MLflow's limit on a tag value
BASE_ARTIFACT_LIMIT = 64 << 20  # a base (gen-0) folder larger than this is named, not uploaded

_WARNED: set[str] = set()  # targets this process has warned about (once each)


class TrackingUnavailable(EvoError, RuntimeError):
    """The MLflow backend could not be reached or refused a request; the message names it and why."""


def _client(target: dict):
    # MLflow retries a failed request for minutes by default; evo tries once and syncs later.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", f"{int(max(1, target.get('timeout_s', 5)))}")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # evo prints where the view is
    from mlflow import MlflowClient

    if target["backend"] == "embedded":
        Path(target["uri"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=target["uri"], registry_uri=target["uri"])


class View:
    """One root's view in one MLflow backend. `strict`: raise `TrackingUnavailable` on a failure
    (`evo tracking sync`); else warn once, mark the root pending, and skip from then on."""

    def __init__(self, root: Path, target: dict, strict: bool = False, say: Callable[[str], None] | None = None):
        self.root, self.target, self.strict = root, target, strict
        self.say = say or (lambda m: print(f"evo tracking: {m}", file=sys.stderr))
        self.offline = False
        self.lock = threading.RLock()  # the step tailer and the main thread share the client
        self._client = None
        self._exp: Optional[str] = None
        self._runs: dict[tuple, str] = {}

    # ------------------------------------------------------------ reaching MLflow

    def guard(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()` under the view's failure rule; None when offline or failed (not strict)."""
        if self.offline:
            return None
        try:
            with self.lock:
                return fn()
        except Exception as e:  # MlflowException, requests' connection errors, SQLite's
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            text = text if len(text) <= 400 else f"{text[:180]} ... {text[-200:]}"  # the cause is at the end
            why = f"{what}: {type(e).__name__}: {text}"
            if self.strict:
                raise TrackingUnavailable(f"{self.target['uri']}: {why}") from e
            self.offline = True
            files.mark_pending(self.root, why)
            key = self.target["uri"]
            if key not in _WARNED:
                _WARNED.add(key)
                self.say(f"MLflow at {key} did not answer ({why}); the lineage goes on without it, and "
                         f"`evo tracking sync --root {self.root}` sends what is missing")
            return None

    @property
    def client(self):
        if self._client is None:
            self._client = _client(self.target)
        return self._client

    def experiment(self) -> str:
        if self._exp is None:
            c, name = self.client, self.target["experiment"]
            exp = c.get_experiment_by_name(name)
            self._exp = exp.experiment_id if exp is not None else \
                c.create_experiment(name, artifact_location=self.target.get("artifacts"),
                                    tags={"evo.root": location(self.root)})
        return self._exp

    # ------------------------------------------------------------ runs

    def _find_run(self, tags: dict[str, str]):
        flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        hits = self.client.search_runs([self.experiment()], flt, max_results=2)
        return hits[0] if hits else None

    def run_id(self, gid: str, trial: str = "", parent_run: str = "") -> str:
        """The run of generation `gid` (or of its sweep trial `trial`), made if MLflow has none."""
        key = (gid, trial)
        if key not in self._runs:
            tags = {"evo.kind": TRIAL_KIND if trial else GEN_KIND, "evo.gen_id": gid}
            if trial:
                tags["evo.trial_id"] = trial
            run = self._find_run(tags)
            if run is None:
                extra = {"mlflow.parentRunId": parent_run} if trial else {}
                run = self.client.create_run(self.experiment(), run_name=trial or gid, tags={**tags, **extra})
            self._runs[key] = run.info.run_id
        return self._runs[key]

    def _log(self, run: str, params: dict | None = None, metrics: dict[str, list[tuple]] | None = None,
             tags: dict | None = None) -> None:
        """Send what the run lacks: params not set, metric steps not logged, tags that differ. A metric
        point is (step, value) or (step, value, epoch seconds)."""
        from mlflow.entities import Metric, Param, RunTag

        data = self.client.get_run(run).data
        ps = [Param(k, str(v)) for k, v in (params or {}).items() if k not in data.params]
        ts = [RunTag(k, _tag(v)) for k, v in (tags or {}).items() if data.tags.get(k) != _tag(v)]
        ms = []
        for key, points in (metrics or {}).items():
            points = [p for p in points if p[1] is not None and p[1] == p[1]]
            if not points:
                continue
            if key in data.metrics and all(int(p[0]) == 0 for p in points):
                continue  # a final metric (one point, step 0) that is there already
            have = {m.step for m in self.client.get_metric_history(run, key)} if key in data.metrics else set()
            ms += [Metric(key, float(p[1]), int(1000 * p[2]) if len(p) > 2 else 0, int(p[0]))
                   for p in points if int(p[0]) not in have]
        for i in range(0, max(len(ms), 1), 900):  # MLflow takes at most 1000 metrics a batch
            chunk = ms[i:i + 900]
            if chunk or (i == 0 and (ps or ts)):
                self.client.log_batch(run, metrics=chunk, params=ps if i == 0 else [], tags=ts if i == 0 else [])

    def _artifacts(self, run: str, paths: list[Path]) -> None:
        have = {f.path for f in self.client.list_artifacts(run)}
        for p in paths:
            if p.exists() and p.name not in have:
                self.client.log_artifact(run, str(p))

    def _finish(self, run: str, status: str = "FINISHED") -> None:
        if self.client.get_run(run).info.status != status:
            self.client.set_terminated(run, status)

    # ------------------------------------------------------------ a generation

    def steps(self, gid: str, trial: str = "", parent_run: str = "") -> None:
        """The step curve of a generation's (or trial's) Ray Train run: the reports its rank 0 wrote
        (older roots: the val curve in the model's meta, or a trial's report log)."""
        run = self.run_id(gid, trial, parent_run)
        path = files.steps_path(self.root, f"{gid}/{trial}" if trial else gid)
        refresh(path)  # a URI root: the workers wrote it on their nodes
        rows = files.read_steps(path)
        if not rows and trial:
            rows = files.read_steps(self.root / "runs" / gid / "trial_reports" / f"{trial}.jsonl")
        if not rows and not trial:
            sha = _sha_of(self.root, gid)
            meta = _meta(self.root, sha) if sha else {}
            rows = [{"step": s, "val_loss": v} for s, v in meta.get("val_curve") or []]
        self._log(run, metrics={"train_loss": [(r["step"], r.get("train_loss"), r.get("time", 0)) for r in rows],
                                "val_loss": [(r["step"], r.get("val_loss"), r.get("time", 0)) for r in rows]})

    def generation(self, row: dict) -> str:
        """Generation `row["GEN_ID"]`'s run, made to match its ledger row, eval report, model meta,
        trials and fine-tuning job; its model logged; finished."""
        gid, sha = row["GEN_ID"], row["child_sha"]
        run = self.run_id(gid)
        meta = _meta(self.root, sha)
        mcfg = meta.get("config") or {}
        train = mcfg.get("train") or {}
        params = {"parent_sha": row["parent_sha"], "data_delta_sha": row["data_delta_sha"], "lr": row["lr"],
                  "steps": row["steps"], "replay_k": row["replay_k"],
                  "method": "base" if not row["parent_sha"] else train.get("method", "supervised"),  # older: no dpo
                  "seed": train.get("seed", ""), "config_hash": _config_hash(mcfg)}
        tags = {"evo.decision": row["decision"], "evo.reason": row["reason"], "evo.child_sha": sha,
                "evo.trial": row.get("trial", ""), "evo.compared_with": row.get("compared_with", ""),
                "evo.ab_result": row.get("ab_result", ""), "evo.restored": row.get("restored", "")}
        job = files.jobs_by_gen(self.root).get(gid)
        if job:
            tags.update({"evo.job_id": job.get("id", ""), "evo.tenant": job.get("owner", "")})
        metrics = {k: [(0, v)] for k, v in _final_metrics(self.root, gid, row).items()}
        rounds = files.read_jsonl(files.ab_path(self.root, gid))
        for i, r in enumerate(rounds, start=1):
            for k in ("candidate_wins", "champion_wins", "ties", "distinct_prompts"):
                metrics.setdefault(f"ab/{k}", []).append((i, r.get(k)))
        if rounds:  # the latest round's verdict, as `live.after_ab_round` tagged it
            tags["evo.ab_verdict"] = rounds[-1].get("verdict", "")
        self._log(run, params={k: "" if v is None else v for k, v in params.items()}, metrics=metrics, tags=tags)
        if not row.get("trial"):
            self.steps(gid)
        self._artifacts(run, [self.root / "evals" / f"{gid}.json", self.root / "models" / sha / "meta.json",
                              self.root / "trials" / f"{gid}.csv"])
        self.trials(gid, run)
        self.model(gid, sha, run)
        self._finish(run)
        return run

    def trials(self, gid: str, parent_run: str) -> None:
        """A sweep's trials as child runs of their generation's run."""
        import csv

        path = self.root / "trials" / f"{gid}.csv"
        if not path.exists():
            return
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for t in rows:
            run = self.run_id(gid, t["trial_id"], parent_run)
            self.steps(gid, t["trial_id"], parent_run)
            finals = {k: [(0, _num(t.get(k)))] for k in ("best_val_loss", "last_train_loss", "eval_generalization",
                                                         "eval_recall", "eval_style_drift", "seconds")}
            self._log(run, params={k: t[k] for k in ("lr", "steps", "replay_k")}, metrics=finals,
                      tags={"evo.status": t["status"], "evo.why_stopped": t["why_stopped"], "evo.gate": t["gate"],
                            "evo.chosen": t["chosen"] or "no", "evo.child_sha": t["child_sha"]})
            self._finish(run, "FAILED" if t["status"] == "error" else "FINISHED")

    # ------------------------------------------------------------ models and the registry

    def model(self, gid: str, sha: str, run: str):
        """The generation's model as a LoggedModel of its run (its adapter's files)."""
        from mlflow.entities import LoggedModelStatus

        exp = self.experiment()
        hits = [m for m in self.client.search_logged_models([exp], filter_string=f"name = '{gid}'")
                if m.tags.get("evo.sha") == sha]
        if hits and hits[0].status == LoggedModelStatus.READY:
            return hits[0]
        lm = hits[0] if hits else self.client.create_logged_model(
            exp, name=gid, source_run_id=run, model_type=MODEL_TYPE, tags={"evo.sha": sha, "evo.gen_id": gid})
        folder = self.root / "models" / sha
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
        if folder.is_dir() and size <= BASE_ARTIFACT_LIMIT:
            self.client.log_model_artifacts(lm.model_id, str(folder))
        else:
            self.client.set_logged_model_tags(lm.model_id, {"evo.path": str(folder)})
        self.client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        return self.client.get_logged_model(lm.model_id)

    def registry(self) -> None:
        """A registered version for every model that was ever champion (in the order each first
        became champion), and the aliases champion and candidate where evo's registry has them
        (candidate only while it names such a model: an A/B round's, or one waiting as pending)."""
        name = self.target["model_name"]
        reg = files.registry(self.root)
        order: list[str] = []
        for h in reg.get("history", []):
            if h.get("alias") == "champion" and h.get("to") and h["to"] not in order:
                order.append(h["to"])
        c = self.client
        from mlflow.exceptions import MlflowException

        try:
            c.get_registered_model(name)
        except MlflowException:
            c.create_registered_model(name, tags={"evo.root": location(self.root)})
        versions = {v.tags.get("evo.sha"): v for v in c.search_model_versions(f"name = '{name}'")}
        rows = {r["GEN_ID"]: r for r in files.ledger_rows(self.root)}
        for sha in order:
            m = reg["models"].get(sha) or {}
            gid = m.get("gen_id", "")
            if sha in versions:
                want = {"evo.status": m.get("status", ""), "evo.decision": (rows.get(gid) or {}).get("decision", "")}
                for k, v in want.items():
                    if versions[sha].tags.get(k) != v:
                        c.set_model_version_tag(name, versions[sha].version, k, v)
                continue
            run = self.run_id(gid)
            lm = self.model(gid, sha, run)
            versions[sha] = c.create_model_version(
                name, source=lm.artifact_location, run_id=run, model_id=lm.model_id,
                tags={"evo.sha": sha, "evo.gen_id": gid, "evo.status": m.get("status", ""),
                      "evo.decision": (rows.get(gid) or {}).get("decision", "")})
        for alias in ("champion", "candidate"):
            sha = reg.get("aliases", {}).get(alias)
            want = versions[sha].version if sha in versions else None
            try:
                have = c.get_model_version_by_alias(name, alias).version
            except MlflowException:
                have = None
            if want is not None and str(have) != str(want):
                c.set_registered_model_alias(name, alias, want)
            elif want is None and have is not None:
                c.delete_registered_model_alias(name, alias)

    # ------------------------------------------------------------ the whole view

    def sync(self) -> dict:
        """Every generation in the ledger, then the registry; what the view holds afterwards."""
        rows = files.ledger_rows(self.root)
        for row in rows:
            self.generation(row)
        self.registry()
        files.clear_pending(self.root)
        return {"generations": len(rows), "experiment": self.target["experiment"], "uri": self.target["uri"]}


def _tag(v: Any) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= MAX_TAG else s[: MAX_TAG - 3] + "..."


def _num(v: Any) -> Optional[float]:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def _sha_of(root: Path, gid: str) -> Optional[str]:
    return next((s for s, m in files.registry(root)["models"].items() if m["gen_id"] == gid), None)


def _meta(root: Path, sha: str) -> dict:
    path = root / "models" / sha / "meta.json"
    return read_json(path) if sha and path.exists() else {}


def _config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12] if cfg else ""


def _side(res: dict) -> dict[str, Optional[float]]:
    out = {"generalization": (res.get("generalization") or {}).get("value"), "recall": res.get("recall"),
           "style_drift": (res.get("style_drift") or {}).get("hits"), "perplexity": res.get("perplexity")}
    for k, v in (res.get("general") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"general_{k}"] = v
    return out


def _final_metrics(root: Path, gid: str, row: dict) -> dict[str, float]:
    """Every eval of the gate, child and parent (evals/<gen>.json), and the ledger's numbers."""
    out: dict[str, Any] = {}
    path = root / "evals" / f"{gid}.json"
    if path.exists():
        ev = read_json(path)
        for side in ("child", "parent"):
            if isinstance(ev.get(side), dict):
                out.update({f"{side}/{k}": v for k, v in _side(ev[side]).items()})
        for k, v in (ev.get("scores") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"gate/{k}"] = v
    for k in ("walltime_min", "loss_start", "loss_end", "best_step"):
        out[k] = _num(row.get(k))
    return {k: float(v) for k, v in out.items() if v is not None}
