"""Starting Ray for a verb: the auth mode, the environment the workers get, attaching or starting a cluster.

Ray itself is imported only inside `start_ray`: `choose_auth_mode` must run before anything imports it.
"""

from __future__ import annotations

import os

# Worker processes: no progress bars or deprecation chatter from libraries; evo reports progress.
WORKER_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def choose_auth_mode() -> None:
    """Token auth on purpose (Ray's default since 2.59): even a local cluster listens on the network.

    Must run before Ray is imported, which reads the mode once. Set RAY_AUTH_MODE to choose otherwise.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Attach to a cluster when given an address (or RAY_ADDRESS); otherwise start Ray in-process."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": WORKER_ENV}
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k != "PYTHONWARNINGS"})
    # Ray gives a new local GCS 30 s to come up; a busy laptop can need more (unless you set it).
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        # One machine: no node can be preempted apart from this one, so Ray Train's preemption watcher
        # has nothing to watch, and it logs an error-level line about its constructor arguments in
        # every run (ray-project/ray#53727). Off here, unless you set it; on a cluster it stays on.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env)
