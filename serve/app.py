"""The evo A/B Serve application, for `serve run` and RayService.

    EVO_ROOT=/shared/lineage EVO_ADMIN_TOKEN=... serve run serve.app:app

Optional: EVO_CANDIDATE_SHARE (0.5), EVO_REPLICAS (1), EVO_NUM_GPUS (GPUs per replica; 0 = CPU).

Everything it does lives in evo.http.app; this file only binds it to the lineage root.
"""

import os

from evo.http.app import build_app

_gpus = float(os.environ.get("EVO_NUM_GPUS", "0"))
app = build_app(os.environ.get("EVO_ROOT", "lineage"), float(os.environ.get("EVO_CANDIDATE_SHARE", "0.5")),
                num_replicas=int(os.environ.get("EVO_REPLICAS", "1")),
                ray_actor_options={"num_gpus": _gpus, "num_cpus": 1} if _gpus else None)
