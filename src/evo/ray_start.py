"""Starting Ray for a verb: the auth mode, the environment the workers get, attaching or starting a cluster.

Ray itself is imported only inside `start_ray`: `choose_auth_mode` must run before anything imports it.
"""

from __future__ import annotations

import os
import platform

# The same numbers on every x86 CPU with AVX2: MKL's conditional numerical reproducibility and ATen's
# and oneDNN's kernels held to AVX2. Without them a CPU with AVX-512 sums in another order than one
# without, and training drifts apart: 60 steps of the demo's tiny Llama ended at loss 0.7976 with
# AVX-512 and 0.7939 with AVX2 on the same machine (2026-12-02), so two machines made different
# models and the demo's gate different decisions. With the threads Ray gives each worker (its CPUs)
# and the seeds in the config, a commit trains the same weights on one machine; not across vendors: an AMD
# EPYC machine trained other demo models than the Intel one (2026-12-03, README). One set in the environment wins.
NUMERICS_ENV = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"} \
    if platform.machine().lower() in ("x86_64", "amd64") else {}

# Worker processes: no progress bars or deprecation chatter from libraries (evo reports progress),
# and NUMERICS_ENV.
WORKER_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
    **{k: os.environ.get(k, v) for k, v in NUMERICS_ENV.items()},
}


def choose_auth_mode() -> None:
    """Token auth on purpose (Ray's default since 2.59): even a local cluster listens on the network.

    Must run before Ray is imported, which reads the mode once. Set RAY_AUTH_MODE to choose otherwise.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")


# Run in every worker process as it starts (Ray's worker_process_setup_hook): see `name_the_cluster`.
SETUP_HOOK = "evo.ray_start.name_the_cluster"


def name_the_cluster() -> None:
    """Set RAY_ADDRESS to the cluster this process is connected to (a worker: its own).

    Ray's helpers that find "the" cluster on their own (the state API, which Ray Train's
    PlacementGroupCleaner and Tune use inside their actors; `ray` CLIs run as subprocesses) read
    RAY_ADDRESS, else /tmp/ray/ray_current_cluster, else look for GCS processes on the machine. With a
    second Ray instance on the machine that last step finds two and raises "Found multiple active Ray
    instances" inside Ray's own actors (whose placement groups are then never cleaned up), or the
    file names the other cluster. Named, they always find evo's."""
    import ray

    if ray.is_initialized():
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def runtime_env(extra_env: dict | None = None) -> dict:
    """The runtime environment evo gives a cluster's workers: WORKER_ENV (and `extra_env`), and the
    setup hook that names the cluster in each of them."""
    return {"env_vars": {**WORKER_ENV, **(extra_env or {})}, "worker_process_setup_hook": SETUP_HOOK}


# A local cluster keeps up to 8 idle worker processes (Ray's default: as many as CPUs, 2 on a laptop of 2
# cores). Every Ray Train run starts actor processes of its own (controller, workers, a sync actor), and
# past the limit Ray kills idle workers: the eval tasks' ones, torch and transformers imported, so each
# generation's evals paid 3-5 s of imports again. An idle one holds about 0.5 GB (RSS); the tests' shared
# cluster uses the same setting (tests/helpers/shared_cluster.py).
LOCAL_SYSTEM_CONFIG = {"num_workers_soft_limit": 8}


def one_machine() -> None:
    """Settings for a cluster of this machine alone, before Ray starts (unless you set them).

    No node can be preempted apart from this one, so Ray Train's preemption watcher has nothing to
    watch: it is an actor process more in every run, and it logs an error-level line about its
    constructor arguments in each (ray-project/ray#53727). Off here; on a cluster it stays on."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Attach to a cluster when given an address (or RAY_ADDRESS); otherwise start Ray in-process.
    Either way the cluster is then named to everything evo starts: RAY_ADDRESS is set in this process
    (for its subprocesses and its own state-API calls) and in every worker (`name_the_cluster`)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        name_the_cluster()
        return
    env = runtime_env()
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k != "PYTHONWARNINGS"})
    # Ray gives a new local GCS 30 s to come up; a busy laptop can need more (unless you set it).
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    if address:
        ray.init(address=address, runtime_env=env)
    else:
        one_machine()
        ray.init(address="local", num_cpus=num_cpus, runtime_env=env, _system_config=LOCAL_SYSTEM_CONFIG)
    name_the_cluster()
