"""One watchdog for every wait on Ray, and the clean-up of what a step left on the cluster.

Waits watched: Ray Train runs (`train.trainer`), Tune trials (`tune.sweep`), eval and self-replay
tasks (`get`), fine-tuning jobs (through the run they start) and Serve deployments (`serve_up`).

A wait is stalled when its progress (a report, a checkpoint, a finished task: whatever the caller
counts) has not moved for a while *and* the cluster has resource demands pending (something asks for
CPUs, GPUs or a placement group that cannot be placed). A wait whose work is all placed and computing
is not stalled, however long it takes. After `ray.warn_after_s` of a stall the watchdog says what it
waits for (through the caller's `say`: printed, and a job's event); after `ray.fail_after_s` it stops
the wait (`on_stall`) and the caller raises `Stalled` with the same message, which says what is
pending and what holds the cluster's resources (from Ray's GCS and state API).

`Leftovers` removes the placement groups and actors that a step created and did not remove: Ray's
own cleaners do it when they can; evo does not depend on that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

from evo.config import RayWaitsConfig
from evo.errors import EvoError


class Stalled(EvoError, RuntimeError):
    """A wait on Ray that made no progress for `ray.fail_after_s`; the message says what it waited for."""


def _fmt(resources: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items()) if not k.startswith("node:")
                           and k != "bundle_group" and "_group_" not in k) + "}"


def pending_demands() -> list[str]:
    """What the cluster is asked for and cannot place now: tasks and actors by shape, and placement
    groups (from the GCS's autoscaling state; no dashboard needed). Empty when nothing waits."""
    import ray

    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception:  # an old or busy GCS: the watchdog then sees no demand, so it never fails a wait
        return []
    d = status.resource_demands
    lines = [f"{r.count} x {_fmt(r.bundle)} (tasks or actors)" for dem in d.ray_task_actor_demand
             for r in dem.bundles_by_count]
    lines += [f"placement group {p.pg_id or ''} ({p.strategy or ''}): "
              + ", ".join(f"{r.count} x {_fmt(r.bundle)}" for r in p.bundles_by_count)
              for p in d.placement_group_demand]
    lines += [f"cluster constraint: {', '.join(f'{r.count} x {_fmt(r.bundle)}' for r in c.bundles_by_count)}"
              for c in d.cluster_constraint_demand]
    return lines


def holdings(limit: int = 12) -> list[str]:
    """What holds the cluster's resources: totals and what is free, the placement groups that reserve
    bundles, and the live actors and running tasks that use resources (state API, best effort)."""
    import ray

    lines = []
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
        lines.append("cluster: " + ", ".join(f"{k} {free.get(k, 0):g} free of {v:g}" for k, v in sorted(total.items())
                                             if k in ("CPU", "GPU") or k.startswith("accelerator")))
    except Exception:
        pass
    try:
        from ray.util import placement_group_table

        for pg in placement_group_table().values():
            if pg["state"] == "CREATED":
                bundles = ", ".join(_fmt(b) for b in pg["bundles"].values())
                lines.append(f"placement group {pg['placement_group_id']} {pg.get('name') or ''}(job "
                             f"{pg['placement_group_id'][-8:]}) reserves {bundles}")
    except Exception:
        pass
    try:
        from ray.util.state import list_actors, list_tasks

        actors = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=500, raise_on_missing_output=False)
                  if any(v for k, v in (a.required_resources or {}).items() if k in ("CPU", "GPU"))]
        for a in actors[:limit]:
            lines.append(f"actor {a.class_name} {a.actor_id[:12]} (job {a.job_id}) holds {_fmt(a.required_resources or {})}"
                         + (f" in placement group {a.placement_group_id[:12]}" if a.placement_group_id else ""))
        tasks = list_tasks(filters=[("state", "=", "RUNNING")], limit=500, raise_on_missing_output=False)
        for t in [t for t in tasks if t.type == "NORMAL_TASK"][:limit]:
            lines.append(f"task {t.name} (job {t.job_id}) running, holds {_fmt(t.required_resources or {})}")
    except Exception:  # no dashboard (ray minimal) or it is busy: the GCS's view above stays
        pass
    return lines


def describe(what: str, seconds: float) -> str:
    demands = pending_demands()
    held = holdings()
    return (f"{what}: no progress for {seconds:.0f} s. Waiting for resources that Ray cannot place: "
            + ("; ".join(demands) if demands else "(none reported)")
            + ". What holds the cluster's resources: " + ("; ".join(held) if held else "(not known)"))


class Watchdog:
    """Watches one wait (see the module's docstring). `progress()` returns anything that changes when
    the wait progresses; `say(message)` is told of a stall once, at warn_after_s; at fail_after_s,
    `on_stall()` is called (from the watchdog's thread) to stop the wait, and `check()` raises."""

    def __init__(self, what: str, waits: RayWaitsConfig, say: Callable[[str], None],
                 progress: Optional[Callable[[], Any]] = None, on_stall: Optional[Callable[[], None]] = None):
        self.what, self.waits, self.say = what, waits, say
        self.progress, self.on_stall = progress or (lambda: None), on_stall
        self.warned: Optional[str] = None
        self.failure: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last, self._token = time.monotonic(), object()

    def poll(self) -> None:
        """One look: has the wait progressed, is anything pending, how long has it been."""
        now = time.monotonic()
        try:
            token = self.progress()
        except Exception:  # a progress probe that failed (a file being written) says nothing
            token = self._token
        if token != self._token or not pending_demands():
            self._token, self._last = token, now
            return
        idle = now - self._last
        if idle >= self.waits.fail_after_s and self.failure is None:
            self.failure = describe(self.what, idle) + (f". evo gave up after {self.waits.fail_after_s:g} s "
                                                        "(ray.fail_after_s)")
            self.say(f"giving up: {self.failure}")
            if self.on_stall is not None:
                self.on_stall()
            self._stop.set()
        elif idle >= self.waits.warn_after_s and self.warned is None:
            self.warned = describe(self.what, idle) + (f". evo fails this step if nothing moves for "
                                                       f"{self.waits.fail_after_s:g} s (ray.fail_after_s)")
            self.say(self.warned)

    def _loop(self) -> None:
        interval = min(self.waits.poll_s, self.waits.warn_after_s / 2)
        while not self._stop.wait(interval):
            self.poll()

    def start(self) -> Watchdog:
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="evo-ray-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def check(self) -> None:
        if self.failure is not None:
            raise Stalled(self.failure)

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def get(refs: list, what: str, waits: RayWaitsConfig, say: Callable[[str], None]) -> list:
    """`ray.get(refs)` under the watchdog: each finished task is progress; a stall cancels the rest."""
    import ray

    done: set = set()
    dog = Watchdog(what, waits, say, progress=lambda: len(done))
    with dog:
        left = list(refs)
        while left:
            ready, left = ray.wait(left, num_returns=len(left), timeout=1.0)
            done.update(r.hex() for r in ready)
            if dog.failure is not None:
                for r in left:
                    ray.cancel(r, force=True)
                dog.check()
    return ray.get(list(refs))


def serve_up(app, name: str, route_prefix: str, waits: RayWaitsConfig, say: Callable[[str], None]):
    """`serve.run(app)` under the watchdog; Serve must be started. Progress is any change in the
    application's or its deployments' states or replica counts. A stall (replicas that Ray cannot
    place) is reported, then the application is deleted and the wait fails as `Stalled`, so that
    nothing half-deployed is left serving. A deployment that fails to start raises Serve's error."""
    from ray import serve

    box: dict = {}

    def deploy() -> None:
        try:
            box["handle"] = serve.run(app, name=name, route_prefix=route_prefix)
        except BaseException as e:  # handed to the caller's thread below
            box["error"] = e

    def progress():
        st = serve.status().applications.get(name)
        if st is None:
            return None
        return str(st.status), tuple(sorted((d, str(o.status), tuple(sorted((str(k), v) for k, v in
                                                                           o.replica_states.items())))
                                            for d, o in st.deployments.items()))

    thread = threading.Thread(target=deploy, name="evo-serve-run", daemon=True)
    dog = Watchdog(f"Serve application {name!r} (its replicas)", waits, say, progress=progress)
    with dog:
        thread.start()
        while thread.is_alive():
            thread.join(timeout=1.0)
            if dog.failure is not None:
                serve.delete(name, _blocking=False)  # its replicas stop; serve.run's wait then ends
                dog.check()
    if "error" in box:
        raise box["error"]
    return box["handle"]


def interrupt_main() -> Callable[[], None]:
    """An `on_stall` for a blocking Ray call on the main thread (Ray Train's fit): a SIGINT, which
    Ray Train answers by aborting the run gracefully (workers stopped, placement group removed)."""
    import _thread
    import signal

    def stop() -> None:
        _thread.interrupt_main(signal.SIGINT)

    return stop


class Leftovers:
    """The placement groups and actors of this process's Ray job that exist when it starts; `remove()`
    removes those created since and still there (a step's end: its trials', runs' and helpers')."""

    def __init__(self, keep_actors: Callable[[Any], bool] = lambda a: False):
        import ray

        self.job = ray.get_runtime_context().get_job_id()
        self.keep_actors = keep_actors
        self.pgs, self.actors = self._pgs(), self._actors()

    def _ours(self, hex_id: str) -> bool:  # a placement group's and an actor's id end with their job's
        return hex_id.endswith(self.job)

    def _pgs(self) -> set[str]:
        from ray.util import placement_group_table

        try:
            return {i for i, p in placement_group_table().items() if p["state"] != "REMOVED" and self._ours(i)}
        except Exception:
            return set()

    def _actors(self) -> dict:
        try:
            from ray.util.state import list_actors

            return {a.actor_id: a for a in list_actors(filters=[("job_id", "=", self.job), ("state", "!=", "DEAD")],
                                                       limit=10000, raise_on_missing_output=False)}
        except Exception:  # no dashboard: actors are left to Ray
            return {}

    def remove(self) -> list[str]:
        """Remove what the step left; what was removed, for the caller to log."""
        import ray
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        removed = []
        for a in (a for i, a in self._actors().items() if i not in self.actors and not self.keep_actors(a)):
            try:
                _kill(a)
                removed.append(f"actor {a.class_name} {a.actor_id[:12]}")
            except Exception:
                pass
        for i in self._pgs() - self.pgs:
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(i))))
                removed.append(f"placement group {i[:12]}")
            except Exception:
                pass
        return removed


def _kill(actor) -> None:
    """Kill an actor by name, or by id (an unnamed one: Ray Train's detached PlacementGroupCleaner)."""
    import ray

    if actor.name:
        ray.kill(ray.get_actor(actor.name, namespace=actor.ray_namespace), no_restart=True)
    else:
        core = ray._private.worker.global_worker.core_worker
        core.kill_actor(ray.ActorID(bytes.fromhex(actor.actor_id)), True)


@contextmanager
def cleaned_up(say: Callable[[str], None] = lambda m: None) -> Iterator[Leftovers]:
    """Run a step; at its end (finished or failed), remove the placement groups and actors it left."""
    left = Leftovers(keep_actors=lambda a: a.ray_namespace == "serve")
    try:
        yield left
    finally:
        removed = left.remove()
        if removed:
            say(f"removed what the step left on the cluster: {', '.join(removed)}")
