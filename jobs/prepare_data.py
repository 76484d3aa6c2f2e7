"""Write Parquet shards from a CelebA or FairFace folder or URI (``facegen prepare`` as a Ray job).

``python jobs/prepare_data.py --dataset celeba --src DIR_OR_URI --out DIR_OR_URI --resolution 64``
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("prepare", __doc__))
