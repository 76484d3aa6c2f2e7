"""Latent analysis of one generative bundle: ``python jobs/analyze.py --bundle B [--classifier C] [--out DIR]``.

Writes analysis.md / analysis.json / analysis.html with pictures (traversals, named dimensions, directions,
edit evaluation, disentanglement, latent maps) and stores the fitted attribute directions in the bundle.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("analyze", __doc__))
