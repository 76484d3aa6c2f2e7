"""Benchmark model bundles on held-out data with an independent judge:
``python jobs/evaluate.py --runs RUN_FOLDER --judge JUDGE_BUNDLE [--counterfactuals DIR] [--out DIR]``.

Writes quality.md / quality.html / quality.json with sample, reconstruction and edit grids (no Ray needed).
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("evaluate", __doc__))
