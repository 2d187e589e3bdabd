"""What tracking keeps under the lineage root, with no MLflow import (the training workers use it).

    tracking/target.json     where this root's MLflow view is (backend, URI, experiment, model name),
                             written when a run starts; absent: tracking was never on for this root
    tracking/mlflow.db       the embedded store (backend `embedded`), and tracking/artifacts/ its files
    tracking/steps/<label>.jsonl   every checkpoint report of a Ray Train run, as rank 0 made it
                             (label `gen-1`, or `gen-1/<trial>` for a sweep's trial)
    tracking/ab/<gen>.jsonl  each A/B round's counts and verdict
    tracking/pending.json    something could not be sent (the server was unreachable): the next sync
                             sends it

Everything else the view shows is read from the root's own files (ledger, registry, evals, model
metas, trials CSVs, the fine-tuning jobs), so `sync` can rebuild the whole view from the root.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Optional

from evo.atomic import atomic_write_json, read_json
from evo.config import TrackingConfig
from evo.storage import after_write, location, resolve

FOLDER = "tracking"


def folder(root: str | Path) -> Path:
    return resolve(root) / FOLDER


def embedded_uri(root: str | Path) -> str:
    """The embedded store of a root: a SQLite file in this machine's folder for it."""
    return f"sqlite:///{folder(root) / 'mlflow.db'}"


def target_of(cfg_tracking: TrackingConfig, name: str, root: str | Path) -> dict:
    """The view a config asks for, for this root."""
    where = location(root)
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    t = cfg_tracking
    return {"backend": t.backend, "uri": embedded_uri(root) if t.backend == "embedded" else t.uri,
            "experiment": t.experiment or f"evo {where}", "model_name": t.model_name or f"{name}-{digest}",
            "timeout_s": t.timeout_s,
            "artifacts": (folder(root) / "artifacts").as_uri() if t.backend == "embedded" else None}


def write_target(root: str | Path, target: dict) -> bool:
    """Write the root's target; True when it is new or changed (the view is then synced whole)."""
    path = folder(root) / "target.json"
    if path.exists() and read_target(root, off_too=True) == target:
        return False
    atomic_write_json(path, {**target, **({"uri": None, "artifacts": None} if target["backend"] == "embedded" else {})})
    return True


def read_target(root: str | Path, off_too: bool = False) -> Optional[dict]:
    """This root's view, or None when tracking is off or was never on. The embedded store's URI is
    this machine's folder for the root (kept out of the file, so a copied root has its own)."""
    path = folder(root) / "target.json"
    if not path.exists():
        return None
    t = read_json(path)
    if t.get("backend") == "embedded":
        t.update(uri=embedded_uri(root), artifacts=(folder(root) / "artifacts").as_uri())
    return t if off_too or t.get("backend") != "off" else None


def ui_command(target: dict) -> str:
    if target["backend"] == "embedded":
        return f"mlflow ui --backend-store-uri {target['uri']}"
    return f"open {target['uri']} (experiment {target['experiment']!r})"


# ---------------------------------------------------------------- what the workers and the A/B round write


def steps_path(root: str | Path, label: str) -> Path:
    return folder(root) / "steps" / f"{label}.jsonl"


def note_report(root: str, label: str, metrics: dict) -> None:
    """A Ray Train run's checkpoint report (rank 0), appended as it is made; the driver's tracker
    sends each line to MLflow as it appears, and a sync sends any it could not."""
    path = steps_path(root, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"step": metrics["step"], "train_loss": metrics["train_loss"], "val_loss": metrics["val_loss"],
            "time": time.time()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    after_write(path)  # a URI root: uploaded whole


def read_steps(path: Path) -> list[dict]:
    """The reports of a steps file, the first one of each step (a resumed run reports a step again);
    a line cut short by a crash is skipped."""
    if not path.exists():
        return []
    out: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(int(r["step"]), r)
    return [out[s] for s in sorted(out)]


def ab_path(root: str | Path, gid: str) -> Path:
    return folder(root) / "ab" / f"{gid}.jsonl"


def note_ab(root: str | Path, gid: str, verdict: str, pairwise: dict) -> dict:
    """An A/B round's counts and verdict, kept for the candidate's run."""
    path = ab_path(root, gid)
    path.parent.mkdir(parents=True, exist_ok=True)
    rounds = read_jsonl(path)
    entry = {"round": len(rounds) + 1, "verdict": verdict, "time": time.time(),
             **{k: pairwise.get(k) for k in ("candidate_wins", "champion_wins", "ties", "distinct_prompts")}}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    after_write(path)
    return entry


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def mark_pending(root: str | Path, why: str) -> None:
    path = folder(root) / "pending.json"
    if not path.exists():
        atomic_write_json(path, {"since": time.time(), "why": why})


def pending(root: str | Path) -> Optional[dict]:
    path = folder(root) / "pending.json"
    return read_json(path) if path.exists() else None


def clear_pending(root: str | Path) -> None:
    path = folder(root) / "pending.json"
    if path.exists():
        path.unlink()


# ---------------------------------------------------------------- the root's own files, read as they are


def ledger_rows(root: Path) -> list[dict[str, str]]:
    path = root / "ledger.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def registry(root: Path) -> dict[str, Any]:
    path = root / "registry.json"
    return read_json(path) if path.exists() else {"models": {}, "aliases": {}, "history": []}


def jobs_by_gen(root: Path) -> dict[str, dict]:
    """Fine-tuning jobs by the generation each ran (service/jobs/<id>.json)."""
    out = {}
    for path in sorted((root / "service" / "jobs").glob("*.json")):
        try:
            job = read_json(path)
        except (OSError, ValueError):
            continue
        gid = (job.get("evo") or {}).get("gen_id") if isinstance(job, dict) else None
        if gid:
            out[gid] = job
    return out
