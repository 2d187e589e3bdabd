"""The evo A/B Serve application, for `serve run` and RayService.

    EVO_ROOT=/shared/lineage EVO_ADMIN_TOKEN=... serve run serve.app:app

Everything it does lives in evo.serving; this file only binds it to the lineage root.
"""

import os

from evo.serving.deployments import build_app

app = build_app(os.environ.get("EVO_ROOT", "lineage"), float(os.environ.get("EVO_CANDIDATE_SHARE", "0.5")))
