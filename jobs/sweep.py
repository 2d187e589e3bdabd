"""Search one generation with Ray Tune, as a Ray job.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/sweep.py CONFIG --root /shared/lineage [--set tune.num_samples=8]

The job's driver attaches to the cluster it was submitted to (Ray sets RAY_ADDRESS). Each trial is
a Ray Train run; pending trials ask the cluster for their workers' CPUs/GPUs, which is what makes
an autoscaling cluster add nodes for a sweep. Trials land in ROOT/trials/<GEN_ID>.csv, the winner
in ROOT/ledger.csv. Run it again after an interruption: the sweep is restored, not redone.
"""

import sys

from evo.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
