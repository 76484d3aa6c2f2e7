"""Make the repository importable when a job runs from a ``ray job submit --working-dir .`` checkout.

``python jobs/x.py`` puts ``jobs/`` on sys.path, not the repository root; on a cluster where facegen is not
pip-installed the root (the job's working_dir, which Ray also ships to every worker) must be added.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
