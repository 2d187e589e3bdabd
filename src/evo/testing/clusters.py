"""Starting local Ray clusters that a slow or busy machine cannot make flaky.

Two things made fresh clusters fail here, neither of them evo's own work:

- Token authentication is on (evo's choice), and a cluster started by anything but `ray.init()` (a
  `ray.cluster_utils.Cluster`, `ray start`) expects a token to exist already: on a machine where
  `~/.ray/auth_token` was never written, its GCS aborts at once ("Token authentication is enabled
  but Ray couldn't find an authentication token") and the caller sees only a timeout.
  `use_private_token` gives the process (and its children) a token of its own in a file.
- Ray waits 30 s for a new GCS to publish its port, and on a loaded 2-core machine it can take
  longer. `RAY_gcs_server_port_wait_time_s` (Ray's own knob) is raised to `START_WAIT_S`, and a
  start that still times out is tried once more before failing with a message that says so.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

START_WAIT_S = 180  # generous: a fresh GCS on a loaded 2-core machine has been seen to take over 30 s
T = TypeVar("T")


def use_private_token() -> str:
    """A Ray auth token for this process and its children, in a file of its own, unless one is
    configured already (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH). Nothing is written under ~/.ray.
    Call before Ray starts or connects."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    token = secrets.token_hex(32)
    fd, path = tempfile.mkstemp(prefix="evo-ray-token-")
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.environ["RAY_AUTH_TOKEN_PATH"] = path
    return token


def generous_start_waits() -> None:
    """Let Ray wait up to START_WAIT_S for a new GCS (unless set already). Call before Ray starts."""
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(START_WAIT_S))


def _is_start_timeout(e: BaseException) -> bool:
    text = str(e).lower()
    return any(s in text for s in ("timed out waiting for file", "timed out during startup",
                                   "did not come up", "gcs_server_port", "failed to connect to gcs"))


def start_patiently(start: Callable[[], T], what: str, cleanup: Callable[[], None] = lambda: None,
                    attempts: int = 2) -> T:
    """`start()`, tried again once if it fails because Ray came up too slowly; then a clear error."""
    for attempt in range(1, attempts + 1):
        t0 = time.monotonic()
        try:
            return start()
        except Exception as e:  # Ray raises plain Exception/RuntimeError for these
            cleanup()
            if not _is_start_timeout(e):
                raise
            if attempt == attempts:
                raise RuntimeError(
                    f"{what} did not start after {attempts} attempts (the last one gave up after "
                    f"{time.monotonic() - t0:.0f} s; Ray waits up to {os.environ.get('RAY_gcs_server_port_wait_time_s', 30)} s "
                    f"for its GCS): is the machine overloaded? Ray said: {e}") from e
            time.sleep(2)
    raise AssertionError("unreachable")
