"""Edited variants of a folder of faces, made by a model bundle on Ray Data:
``python jobs/augment.py --bundle B --images DIR --out DIR --edits "Smiling:+1,Eyeglasses:+1" --variants K``.

Writes OUT/images/<stem>__v<k>.png (or a CelebA folder with --layout celeba) and OUT/manifest.jsonl.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("augment", __doc__))
