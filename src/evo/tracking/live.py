"""Tracking while a lineage runs: the driver's generation, the decisions module's alias moves, the
A/B round's counts, and `evo tracking sync`.

A generation (`start` ... `Live.finish`): its run is made when it starts, by a thread of its own
(off the driver's path: importing mlflow alone takes a second), which then sends each checkpoint
report the Ray Train workers write (`files.note_report`) as it appears, the trials' too; when it is
decided, its run is made to match the root (`View.generation`) and the registry follows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from evo.config import EvoConfig, TrackingConfig, saved_config
from evo.errors import EvoError
from evo.storage import open_root, refresh
from evo.tracking import files
from evo.tracking.view import View

_VIEWS: dict[tuple[str, str], View] = {}  # one per root and target in a process (offline from a failure to the next start)


def view_of(root: Path, target: dict, say: Optional[Callable[[str], None]] = None) -> View:
    key = (str(root), repr(sorted(target.items())))
    if key not in _VIEWS:
        _VIEWS[key] = View(root, target, say=say)
    return _VIEWS[key]


def configure(cfg: EvoConfig, root: Path) -> tuple[Optional[dict], bool]:
    """Write the root's target from the config (so the decisions module and sync find it): the
    target (None when tracking is off) and whether it is new or changed."""
    target = files.target_of(cfg.tracking, cfg.name, root)
    changed = files.write_target(root, target)
    return (None if target["backend"] == "off" else target), changed


class Live:
    """A generation being tracked (or, with no view, not)."""

    def __init__(self, view: Optional[View], gid: str, resync: bool = False):
        self.view, self.gid, self.resync = view, gid, resync
        self.stop = threading.Event()
        self.opened = threading.Event()  # the generation's run is made (or could not be)
        self.thread: Optional[threading.Thread] = None
        self.sent: dict[Path, int] = {}  # steps file -> lines sent
        if view is not None:
            self.thread = threading.Thread(target=self._tail, name=f"evo-tracking-{gid}", daemon=True)
            self.thread.start()
        else:
            self.opened.set()

    def _open(self) -> None:
        """Off the generation's path: importing mlflow, a new store's schema, the sync a new or pending
        root needs, the generation's run (the driver goes on meanwhile; the view's lock keeps order)."""
        v = self.view
        try:
            if self.resync:
                v.guard("the sync of what an earlier run could not send", v.sync)
            v.guard(f"{self.gid}'s run", lambda: v.run_id(self.gid))
        finally:
            self.opened.set()

    def _tail(self) -> None:
        self._open()
        while not self.stop.wait(1.0):
            self.send_new()

    def send_new(self) -> None:
        """Each report line written since the last look, to its run (a trial's: a child run)."""
        v = self.view
        if v is None or v.offline:
            return
        folder = files.folder(v.root) / "steps"
        refresh(folder / f"{self.gid}.jsonl")  # a URI root (its trials' files are read when the generation ends)
        paths = [folder / f"{self.gid}.jsonl", *sorted((folder / self.gid).glob("*.jsonl"))]
        for path in paths:
            if not path.exists():
                continue
            lines = path.read_text(encoding="utf-8").count("\n")
            if lines <= self.sent.get(path, 0):
                continue
            trial = path.stem if path.parent.name == self.gid else ""
            if trial:
                parent = v.guard("the generation's run", lambda: v.run_id(self.gid))
                if parent is None:
                    return
                v.guard(f"trial {trial}'s steps", lambda t=trial, p=parent: v.steps(self.gid, t, p))
            else:
                v.guard("the generation's steps", lambda: v.steps(self.gid))
            self.sent[path] = lines

    def finish(self, row: dict) -> None:
        """The generation is decided: its run made to match the root, the registry after it."""
        if self.view is None:
            return
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        v = self.view
        v.guard(f"{self.gid}'s run", lambda: v.generation(row))
        v.guard("the registered versions and aliases", v.registry)


def start(cfg: EvoConfig, root: Path, gid: str, say: Optional[Callable[[str], None]] = None) -> Live:
    """A generation starts: its run is made by the tracker's thread (and a root left pending by an
    unreachable server is synced first, if the server answers now, even one that failed earlier in this
    process; so is a root whose earlier generations were made before tracking was on, or sent
    elsewhere). The caller does not wait for any of it (`Live.opened` says when it is done)."""
    target, changed = configure(cfg, root)
    if target is None:
        return Live(None, gid)
    v = view_of(root, target, say)
    if (earlier := _LIVE.pop(str(root), None)) is not None:  # a generation of this root that raised
        earlier.stop.set()
    # a view that failed in an earlier generation of this process is tried again, once: a server back up
    # gets the sync; one still down costs one failed request (no second warning) and the view stays offline
    v.offline = False
    _LIVE[str(root)] = track = Live(v, gid, resync=changed or files.pending(root) is not None)
    return track


_LIVE: dict[str, Live] = {}  # the generation of each root being tracked in this process


def after_decision(decisions, effects: list) -> None:
    """The decisions module applied a decision: the runs of the generations whose ledger rows it
    wrote get their decision, and the registry's versions and aliases follow evo's registry."""
    root = decisions.root
    target = files.read_target(root)
    if target is None:
        return
    v = view_of(root, target)
    if v.offline:
        files.mark_pending(root, "a decision made while MLflow did not answer")
        return
    gids = {e[1]["GEN_ID"] if e[0] == "append_row" else e[1] for e in effects if e[0] in ("append_row", "update_row")}
    rows = {r["GEN_ID"]: r for r in files.ledger_rows(root)}
    for gid in sorted(gids):
        if gid in rows:
            v.guard(f"{gid}'s decision", lambda gid=gid: v._log(v.run_id(gid), tags={
                "evo.decision": rows[gid]["decision"], "evo.reason": rows[gid]["reason"],
                "evo.ab_result": rows[gid]["ab_result"], "evo.restored": rows[gid]["restored"]}))
    if any(e[0] in ("move", "set_status") for e in effects):
        v.guard("the registered versions and aliases", v.registry)


def after_ab_round(root: str | Path, gid: str, verdict: str, pairwise: dict) -> None:
    """An A/B round's counts and verdict, kept and sent to the candidate's run."""
    local = open_root(root)
    entry = files.note_ab(local, gid, verdict, pairwise)
    target = files.read_target(local)
    if target is None:
        return
    v = view_of(local, target)
    v.guard(f"{gid}'s A/B round", lambda: v._log(
        v.run_id(gid), tags={"evo.ab_verdict": verdict},
        metrics={f"ab/{k}": [(entry["round"], entry[k])] for k in ("candidate_wins", "champion_wins", "ties",
                                                                    "distinct_prompts")}))


def where(root: Path) -> Optional[str]:
    """How to see the root's view (printed at the end of a run), or None when tracking is off."""
    target = files.read_target(root)
    if target is None:
        return None
    note = " (not all sent: run `evo tracking sync`)" if files.pending(root) else ""
    return files.ui_command(target) + note


def cmd_sync(root: str, action: str, uri: Optional[str]) -> int:
    """`evo tracking sync`: the root's whole MLflow view rebuilt from its files (idempotent)."""
    local = open_root(root)
    if not (local / "ledger.csv").exists():
        raise EvoError(f"{local / 'ledger.csv'}: no lineage here; run `evo run` first")
    target = files.read_target(local)
    if uri is not None or target is None:
        try:
            cfg = saved_config(local)
            name, tc = cfg.name, cfg.tracking
        except Exception:  # a root without a saved run config: the defaults
            name, tc = "evo", TrackingConfig()
        if uri is not None:
            tc = tc.model_copy(update={"backend": "mlflow", "uri": uri})
        elif tc.backend == "off":
            tc = TrackingConfig()
        target = files.target_of(tc, name, local)
        files.write_target(local, target)
    v = View(local, target, strict=True)
    out = v.guard("the sync", v.sync)  # strict: an unreachable server is TrackingUnavailable, named
    print(f"synced {out['generations']} generation(s) of {local} to {out['uri']}, experiment {out['experiment']!r}, "
          f"registered model {target['model_name']!r}")
    print(f"  see it: {files.ui_command(target)}")
    return 0
