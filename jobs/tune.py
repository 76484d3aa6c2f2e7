"""Search hyper-parameters with Ray Tune: ``python jobs/tune.py --config configs/X.yaml --num-samples N``.

The search space is ``configs/X.tune.yaml`` (or ``--space``); every trial is a multi-worker Ray Train run,
ASHA stops weak trials early, the best trial is exported as a bundle, and ``--resume`` continues an
interrupted search with ``Tuner.restore``.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("tune", __doc__))
