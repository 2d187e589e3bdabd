"""Run evo's generations as a Ray job.

    ray job submit --working-dir . -- python jobs/run_generations.py CONFIG --root /shared/lineage

The job's driver attaches to the cluster it was submitted to (Ray sets RAY_ADDRESS), so training
and evals run on the cluster's workers; the lineage root must be a folder every node can see.
"""

import sys

from evo.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
