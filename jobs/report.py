"""Evaluate every bundle in a run folder on held-out data: ``python jobs/report.py RUN_FOLDER [--out DIR]``.

Writes one Markdown page with pictures and a JSON file of every metric.
"""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("report", __doc__))
