"""Run evo's generations as a Ray job.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/run_generations.py CONFIG --root /shared/lineage [--tune]

With --tune every generation is a Ray Tune sweep (see jobs/sweep.py for one generation at a time).

The job's driver attaches to the cluster it was submitted to (Ray sets RAY_ADDRESS), so training
and evals run on the cluster's workers; the lineage root must be a folder every node can see, or a
bucket URI (s3://, gs://; see evo.storage).
"""

import sys

from evo.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
