"""Train one model with Ray Train: ``python jobs/train.py --config configs/X.yaml [key=value ...]``.

On a cluster: ``ray job submit --working-dir . -- python jobs/train.py --config configs/vae_synth64.yaml``.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("train", __doc__))
